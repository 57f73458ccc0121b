"""NRRD (``.nrrd``/``.nhdr``) and MetaImage (``.mha``/``.mhd``) through SimpleITK.

ITK is LPS: its (origin, direction, spacing) are converted to and from our RAS
affine with ``diag(-1, -1, 1, 1)`` here and nowhere else. ITK's index order
(x fastest) is our voxel order ``(X, Y, Z)``; ``sitk.GetArrayFromImage`` returns
``(Z, Y, X[, C])``, hence the transposes. Multi-component (vector) pixels are
channels; 2D images become ``(C, X, Y, 1)`` with 1 mm along the singleton axis.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import GeometryError, InputError, OutputError
from ..volume import Volume
from .formats import SCAN_ENDINGS, WRITE_ENDINGS
from .intensity import cast_for_storage, check_finite, intensity_meta, storage_dtype, to_numpy
from .lps import flip_lps_ras

__all__ = ["read_itk", "write_itk"]

#: mrisr's format kind -> SimpleITK's ImageIO.
_IMAGE_IO = {"nrrd": "NrrdImageIO", "mha": "MetaImageIO"}
# suffix -> (meta source_format, SimpleITK ImageIO); .nhdr/.mhd keep data in a second file.
_READ = {e: (kind, _IMAGE_IO[kind]) for e, kind in SCAN_ENDINGS.items() if kind in _IMAGE_IO}
_LABEL = {"nrrd": "NRRD", "mha": "MetaImage"}
# Only single-file formats: a detached header would name the temporary data file
# of an atomic write.
_WRITE = {e: _IMAGE_IO[kind] for kind in _IMAGE_IO for e in WRITE_ENDINGS[kind]}
#: How much of a file is read to find its format and a detached header's data files.
_HEAD_BYTES = 1 << 20
#: At most this many data files of a LIST or pattern are listed in ``source_paths``.
_MAX_DATA_FILES = 100_000


def _reason(exc: RuntimeError) -> str:
    """SimpleITK's message without ITK's source file, line and object address."""
    text = " ".join(str(exc).split())
    text = re.sub(r"^.*?ITK ERROR: \w+\(0x[0-9a-fA-F]+\): ", "", text)
    return text[-200:]


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def _geometry_to_affine(image: sitk.Image) -> np.ndarray:
    """The RAS voxel -> mm affine of a 2D or 3D SimpleITK image."""
    dim = image.GetDimension()
    direction = np.eye(3)
    direction[:dim, :dim] = np.array(image.GetDirection(), dtype=np.float64).reshape(dim, dim)
    spacing = np.ones(3)
    spacing[:dim] = image.GetSpacing()
    origin = np.zeros(3)
    origin[:dim] = image.GetOrigin()
    lps = np.eye(4)
    lps[:3, :3] = direction * spacing  # columns: index axis -> LPS mm
    lps[:3, 3] = origin
    return flip_lps_ras(lps)


def _unreadable(path: Path, exc: OSError) -> InputError:
    return InputError(
        f"cannot read: {exc.strerror or exc}",
        path,
        fix="check that the file exists and is readable (permissions)",
    )


def _read_head(path: Path) -> bytes:
    """The first ``_HEAD_BYTES`` of ``path``: the header, and a detached header's file list."""
    try:
        with open(path, "rb") as fh:
            return fh.read(_HEAD_BYTES)
    except OSError as exc:
        raise _unreadable(path, exc) from exc


def _header_lines(head: bytes, source_format: str) -> list[str]:
    """The header's lines (NRRD: up to its blank line; MetaImage: all that decode)."""
    text = head.decode("latin-1")
    if source_format == "nrrd":
        text = re.split(r"\r?\n\r?\n", text, maxsplit=1)[0]
    return text.splitlines()


def _data_file_spec(lines: list[str], source_format: str) -> tuple[str, list[str]] | None:
    """The detached-data field's value and the lines after it, or None if the data is attached."""
    for n, line in enumerate(lines):
        if source_format == "nrrd":
            match = re.match(r"\s*data ?file\s*:\s?(.*)$", line, re.IGNORECASE)
        else:
            match = re.match(r"\s*ElementDataFile\s*=\s*(.*)$", line)
        if match:
            value = match.group(1).strip()
            if source_format == "mha" and value.upper() == "LOCAL":
                return None
            return value, lines[n + 1 :]
    return None


def _pattern_files(parts: list[str]) -> list[str]:
    """``<printf format> <first> <last> <step>`` -> the file names, or [] if not that form."""
    if len(parts) < 4 or "%" not in parts[0]:
        return []
    try:
        first, last, step = (int(p) for p in parts[1:4])
        if step == 0 or abs(last - first) // abs(step) > _MAX_DATA_FILES:
            return []
        stop = last + (1 if step > 0 else -1)
        return [parts[0] % i for i in range(first, stop, step)]
    except (ValueError, TypeError):
        return []


def _data_files(path: Path, head: bytes, source_format: str) -> list[Path]:
    """The data files a detached header (``.nhdr``, ``.mhd``) names, relative to its folder.

    Handles a single name, ``LIST`` (names on the following lines) and the
    ``printf``-pattern form; anything else gives ``[]``.
    """
    spec = _data_file_spec(_header_lines(head, source_format), source_format)
    if spec is None:
        return []
    value, rest = spec
    parts = value.split()
    if parts and parts[0].upper() == "LIST":
        names = [line.strip() for line in rest if line.strip() and not line.startswith("#")]
    elif _pattern_files(parts):
        names = _pattern_files(parts)
    else:
        names = [value] if value else []
    return [path.parent / name for name in names[:_MAX_DATA_FILES]]


def _kind(path: Path, head: bytes) -> tuple[str, str]:
    """(source_format, SimpleITK ImageIO) of a file: by its magic, else by its suffix."""
    head = head[:1024]
    if head.startswith(b"NRRD"):
        return "nrrd", _IMAGE_IO["nrrd"]
    if _suffix(path) in _READ:
        return _READ[_suffix(path)]
    if b"ObjectType" in head or b"NDims" in head:
        return "mha", _IMAGE_IO["mha"]
    raise InputError(
        f"not an NRRD or MetaImage file (suffix {path.suffix!r}, no NRRD or MetaImage header)",
        path,
        fix="give a .nrrd, .nhdr, .mha or .mhd file",
    )


def read_itk(path: str | Path) -> Volume:
    """Read an NRRD (``.nrrd``, ``.nhdr``) or MetaImage (``.mha``, ``.mhd``) image.

    The format is recognised by the NRRD magic, else by the suffix (a MetaImage
    header has no magic).

    Returns:
        A Volume: float32 ``(C, X, Y, Z)``, affine voxel -> RAS mm, meta
        ``source_format`` (``"nrrd"`` or ``"mha"``), ``source_paths`` (the
        header, then for a detached header the data files it names, so that no
        output replaces them), ``dtype`` (on-disk component type), ``range``.

    Raises:
        InputError: missing, unreadable, truncated or corrupt file (or data
            file), a 4D+ or complex image, NaN or infinite voxels.
        GeometryError: a singular geometry (zero spacing).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path, fix="check the path")
    head = _read_head(path)
    source_format, image_io = _kind(path, head)
    data_files = _data_files(path, head, source_format)
    reader = sitk.ImageFileReader()
    reader.SetImageIO(image_io)
    reader.SetFileName(str(path))
    try:
        image = reader.Execute()
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    except RuntimeError as exc:
        if len(data_files) == 1 and not data_files[0].is_file():
            raise InputError(
                f"its data file {data_files[0]} is missing",
                path,
                fix="keep the header and its data file together, or fix the header's data file line",
            ) from exc
        raise InputError(
            f"truncated or corrupt {_LABEL[source_format]}: {_reason(exc)}",
            path,
            fix="re-export or re-download the file",
        ) from exc
    dim = image.GetDimension()
    if dim not in (2, 3):
        raise InputError(
            f"{dim}D images are not supported (size {list(image.GetSize())})",
            path,
            fix="split it into 3D files, or store the extra axis as vector components",
        )
    values = sitk.GetArrayViewFromImage(image)  # (Z, Y, X[, C]) or (Y, X[, C])
    if values.dtype.kind not in "biuf":
        raise InputError(
            f"unsupported pixel type {image.GetPixelIDTypeAsString()}",
            path,
            fix="convert it to a real-valued scalar or vector image",
        )
    if image.GetNumberOfComponentsPerPixel() == 1:
        values = values[..., None]
    if dim == 2:
        values = values[None]
    array = np.ascontiguousarray(np.transpose(values, (3, 2, 1, 0)), dtype=np.float32)
    check_finite(array, path)
    meta = {
        "source_format": source_format,
        "source_paths": [str(path), *(str(p) for p in data_files)],
        **intensity_meta(array, values.dtype),
    }
    try:
        return Volume(array, _geometry_to_affine(image), meta)
    except GeometryError as exc:
        raise GeometryError(exc.problem, path, fix="fix the header's spacing/directions") from exc


def write_itk(volume: Volume, path: str | Path) -> None:
    """Write ``volume`` as NRRD (``.nrrd``, gzip) or MetaImage (``.mha``, zlib).

    The format follows the suffix. One channel gives a scalar image, ``C``
    channels a ``C``-component vector image. NRRD is written as 3D Slicer writes
    it: ``space: left-posterior-superior``, ``space directions`` and
    ``space origin`` in LPS mm. The dtype is
    :func:`~mrisr.io.intensity.storage_dtype`'s. The file is written in place:
    use :func:`~mrisr.io.atomic.atomic_output` around it for safe replacement.
    """
    path = Path(path)
    if _suffix(path) not in _WRITE:
        raise OutputError(
            f"cannot write {path.suffix!r} with the NRRD/MetaImage writer",
            path,
            fix="use a single-file format: .nrrd or .mha",
        )
    array = to_numpy(volume.array)
    dtype = storage_dtype(array, volume.meta)
    values = np.transpose(array, (3, 2, 1, 0))  # (Z, Y, X, C)
    values = cast_for_storage(values, dtype)
    if values.shape[-1] == 1:
        image = sitk.GetImageFromArray(np.ascontiguousarray(values[..., 0]))
    else:
        image = sitk.GetImageFromArray(np.ascontiguousarray(values), isVector=True)
    lps = flip_lps_ras(volume.affine)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    writer = sitk.ImageFileWriter()
    writer.SetImageIO(_WRITE[_suffix(path)])
    writer.SetFileName(str(path))
    writer.SetUseCompression(True)
    try:
        writer.Execute(image)
    except RuntimeError as exc:
        raise OutputError(
            f"cannot write image: {_reason(exc)}",
            path,
            fix="check the folder exists, is writable and has space",
        ) from exc
