"""Readers and writers with exact geometry: ``load``, ``save``, ``list_series``.

Inputs are recognised by content, not only by extension: NIfTI-1/2 (plain or
gzip), DICOM (file, folder, list, zip/tar, DICOMDIR, gzip-compressed file),
NRRD and MetaImage.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from contextlib import ExitStack
from os import PathLike
from pathlib import Path

from ..errors import InputError, OutputError
from ..volume import Volume
from .archive import dicom_files, extracted, is_archive
from .atomic import atomic_output
from .dicom_read import list_dicom_series, read_dicom
from .dicom_series import SeriesInfo
from .dicom_slices import DICOMDIR_SOP_CLASS
from .dicom_write import write_dicom_series
from .formats import FILE_ENDINGS, WRITE_ENDINGS
from .itk import read_itk, write_itk
from .nifti import read_nifti, write_nifti

__all__ = ["load", "save", "list_series", "detect_format", "SeriesInfo", "FORMATS"]

PathArg = str | PathLike[str]

#: Output formats and the extensions that select them (see :mod:`mrisr.io.formats`).
FORMATS = WRITE_ENDINGS

_PICTURES = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"BM": "BMP", b"II*\x00": "TIFF"}


def _is_nifti_header(head: bytes) -> bool:
    if len(head) < 348:
        return False
    size_le, size_be = int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")
    if 348 in (size_le, size_be):
        return head[344:348] in (b"n+1\x00", b"ni1\x00")
    if 540 in (size_le, size_be):
        return head[4:8] in (b"n+2\x00", b"ni2\x00")
    return False


def _is_dicom_header(head: bytes) -> bool:
    if head[128:132] == b"DICM":
        return True
    # No preamble (old ACR-NEMA style): the first tag is in group 0x0002 or 0x0008.
    return len(head) >= 8 and (
        int.from_bytes(head[:2], "little") in (2, 8) or int.from_bytes(head[:2], "big") in (2, 8)
    )


def _dicom_kind(head: bytes) -> str:
    """``dicomdir`` when the file meta names the Media Storage Directory class, else ``dicom``."""
    return "dicomdir" if DICOMDIR_SOP_CLASS.encode() in head[128:1024] else "dicom"


def detect_format(path: Path) -> str:
    """What a file holds, by content: ``nifti``, ``dicom`` (plain or gzip), ``dicomdir``,
    ``nrrd``, ``mha``, ``archive``.

    Raises:
        InputError: unknown content, with what it looks like and a fix.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(1024)
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror})", path, "check its permissions") from None
    if not head:
        raise InputError("file is empty", path, "check the path; the file holds no data")
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as fh:
                inner = fh.read(1024)
        except (OSError, EOFError) as exc:
            raise InputError(f"broken gzip file ({exc})", path, "copy or export it again") from None
        if _is_nifti_header(inner):
            return "nifti"
        if _is_dicom_header(inner):
            return "dicom"  # read_header decompresses it
        if inner[257:262] == b"ustar":
            return "archive"
        raise InputError(
            "gzip file holding neither NIfTI, DICOM nor a tar archive",
            path,
            "give a .nii.gz, a .dcm.gz or a .tar.gz of DICOM files",
        )
    if _is_nifti_header(head):
        return "nifti"
    if head.startswith(b"NRRD000"):
        return "nrrd"
    if b"ObjectType" in head[:256] and b"=" in head[:256]:
        return "mha"
    if head[128:132] == b"DICM":  # before the picture magics: a DICOM preamble may hold a TIFF header
        return _dicom_kind(head)
    for magic, name in _PICTURES.items():
        if head.startswith(magic):
            raise InputError(
                f"a single 2D {name} picture, not a scan with 3D geometry",
                path,
                "export the scan from the scanner or PACS as DICOM (or convert it to NIfTI)",
            )
    if _is_dicom_header(head):
        return _dicom_kind(head)
    if is_archive(path):
        return "archive"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        raise InputError("broken zip archive (truncated or damaged)", path, "download or re-create the archive")
    suffix = "".join(path.suffixes[-2:]) or "(no extension)"
    raise InputError(
        f"unrecognised content for a {suffix} file: not NIfTI, DICOM, NRRD, MetaImage or an archive",
        path,
        "check that the file is a complete scan export",
    )


def _as_paths(path: PathArg | Sequence[PathArg]) -> list[Path]:
    items = [path] if isinstance(path, (str, PathLike)) else list(path)
    if any(str(p) == "" for p in items):  # Path("") would silently mean the current folder
        raise InputError("empty path", "input", "give a file, a folder or a list of files")
    paths = [Path(p) for p in items]
    if not paths:
        raise InputError("empty list of input files", "input", "give a file, a folder or a list of files")
    return paths


def _dicomdir_files(path: Path) -> list[Path]:
    from pydicom import dcmread
    from pydicom.fileset import FileSet

    try:
        fileset = FileSet(dcmread(path))
    except Exception as exc:  # pydicom raises several types for broken DICOMDIRs
        raise InputError(f"broken DICOMDIR ({exc})", path, "point mrisr at the folder instead") from None
    return [Path(instance.path) for instance in fileset]


def _resolve(paths: list[Path], stack: ExitStack) -> tuple[str, list[Path], Path, bool, Path | None]:
    """(kind, files, where, strict, container) for the inputs.

    Archives are extracted into a temporary folder that ``stack`` removes; then the
    archive is the ``container`` and the files are temporary. A DICOMDIR is the container
    of the files it references. ``container`` is None otherwise.
    """
    for p in paths:
        if not p.exists():
            raise InputError("does not exist", p, "check the path (and quote paths with spaces)")
    where = paths[0]
    if len(paths) > 1:
        return "dicom", dicom_files(paths), where, True, None
    path = paths[0]
    if path.is_dir():
        files = dicom_files([path])
        if not files:
            raise InputError("folder is empty", path, "point mrisr at a folder of DICOM images")
        return "dicom", files, where, False, None
    kind = detect_format(path)
    if kind == "archive":
        folder = stack.enter_context(extracted(path))
        return "dicom", dicom_files([folder]), where, False, path
    if kind == "dicomdir":
        return "dicom", _dicomdir_files(path), where, True, path
    return kind, [path], where, True, None


def load(path: PathArg | Sequence[PathArg], series: str | None = None) -> Volume:
    """Read a scan with exact geometry.

    Args:
        path: a NIfTI, NRRD or MetaImage file; a DICOM file, folder (searched
            recursively), list of files, zip/tar archive or DICOMDIR.
        series: for DICOM inputs holding several series, the id to read (see
            :func:`list_series`).

    Returns:
        ``Volume``: float32 ``(C, X, Y, Z)``, 4x4 RAS affine (voxel centres, mm),
        ``meta`` with the source format, original dtype and range, and for DICOM
        the header template and UIDs that the writers use.

    Raises:
        InputError, GeometryError: bad input, with the file, the problem and a fix.
    """
    paths = _as_paths(path)
    with ExitStack() as stack:
        kind, files, where, strict, container = _resolve(paths, stack)
        if kind == "dicom":
            volume = read_dicom(files, where, series, strict)
            if container is None:
                return volume
            # An archive's files are temporary: the archive is the input. A DICOMDIR's are real.
            extracted_files = is_archive(container)
            sources = [str(container)] + ([] if extracted_files else volume.meta["source_paths"])
            return volume.replace(meta={**volume.meta, "source_paths": sources})
        if series is not None:
            raise InputError(f"series={series!r} applies to DICOM inputs only", where, "drop --series")
        if kind == "nifti":
            return read_nifti(files[0])
        return read_itk(files[0])
    raise AssertionError("unreachable")  # pragma: no cover


def list_series(path: PathArg | Sequence[PathArg]) -> list[SeriesInfo]:
    """The DICOM image series in ``path`` (empty for NIfTI, NRRD, MetaImage)."""
    paths = _as_paths(path)
    with ExitStack() as stack:
        kind, files, where, strict, _ = _resolve(paths, stack)
        if kind != "dicom":
            return []
        return list_dicom_series(files, where, strict)


def output_format(path: Path, format: str | None) -> str:
    """The output format named, or the one the extension implies."""
    name = path.name.lower()
    if format is not None:
        if format not in FORMATS:
            raise OutputError(
                f"unknown format {format!r}", path, f"use one of {', '.join(FORMATS)}"
            )
        if format == "dicom" and name.endswith(FILE_ENDINGS):
            raise OutputError(
                "a DICOM series is written to a folder, but the path ends like a file name",
                path,
                "give a folder name without an extension, or drop --format dicom",
            )
        if FORMATS[format] and not name.endswith(FORMATS[format]):
            raise OutputError(
                f"format {format} needs a path ending in {' or '.join(FORMATS[format])}",
                path,
                "change the extension or the format",
            )
        return format
    for fmt, suffixes in FORMATS.items():
        if suffixes and name.endswith(suffixes):
            return fmt
    raise OutputError(
        "cannot tell the output format from the extension",
        path,
        "end the path in .nii.gz, .nii, .nrrd or .mha, or give format='dicom' (--format dicom) for a series folder",
    )


def save(volume: Volume, path: PathArg, format: str | None = None, force: bool = False) -> Path:
    """Write ``volume`` atomically (temporary file, then rename).

    Args:
        volume: what to write.
        path: the output file, or folder for a DICOM series.
        format: ``nifti``, ``nrrd``, ``mha`` or ``dicom``; by default from the extension.
        force: replace an existing output. An input of ``volume`` is never replaced.

    Returns:
        The path written.
    """
    dest = Path(path)
    fmt = output_format(dest, format)
    with atomic_output(dest, force, volume.meta.get("source_paths", [])) as tmp:
        if fmt == "nifti":
            write_nifti(volume, tmp)
        elif fmt == "dicom":
            write_dicom_series(volume, tmp)
        else:
            write_itk(volume, tmp)
    return dest
