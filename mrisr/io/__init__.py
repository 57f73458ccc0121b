"""Readers and writers with exact geometry: ``load``, ``save``, ``list_series``.

Inputs are recognised by content, not only by extension: NIfTI-1/2 (plain or
gzip), DICOM (file, folder, list, zip/tar, DICOMDIR, gzip-compressed file),
NRRD and MetaImage.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
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
from .itk import read_itk, write_itk
from .nifti import read_nifti, write_nifti

__all__ = ["load", "save", "list_series", "detect_format", "SeriesInfo", "FORMATS"]

PathArg = str | PathLike[str]

#: Output formats and the extensions that select them. Detached-header formats
#: (.nhdr, .mhd) are read but not written: their two files cannot be renamed atomically.
FORMATS = {"nifti": (".nii.gz", ".nii"), "nrrd": (".nrrd",), "mha": (".mha",), "dicom": ()}

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
    """What a file holds, by content: ``nifti``, ``dicom``, ``dicom-gz``, ``dicomdir``,
    ``nrrd``, ``mha``, ``archive``.

    Raises:
        InputError: unknown content, with what it looks like and a fix.
    """
    with open(path, "rb") as fh:
        head = fh.read(1024)
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
            return "dicom-gz"
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
    if isinstance(path, (str, PathLike)):
        return [Path(path)]
    paths = [Path(p) for p in path]
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


def _resolve(paths: list[Path], stack: ExitStack) -> tuple[str, list[Path], Path, bool]:
    """(kind, files, where, strict) for the inputs; archives are extracted into ``stack``.

    For extracted inputs (archives, ``.dcm.gz``) ``files`` lie in a temporary folder.
    """
    for p in paths:
        if not p.exists():
            raise InputError("does not exist", p, "check the path (and quote paths with spaces)")
    where = paths[0]
    if len(paths) > 1:
        return "dicom", dicom_files(paths), where, True
    path = paths[0]
    if path.is_dir():
        files = dicom_files([path])
        if not files:
            raise InputError("folder is empty", path, "point mrisr at a folder of DICOM images")
        return "dicom", files, where, False
    kind = detect_format(path)
    if kind == "archive":
        folder = stack.enter_context(extracted(path))
        return "dicom", dicom_files([folder]), where, False
    if kind == "dicomdir":
        return "dicom", _dicomdir_files(path), where, True
    if kind == "dicom-gz":
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mrisr-gz-")))
        inner = tmp / (path.name[:-3] if path.name.endswith(".gz") else path.name + ".dcm")
        with gzip.open(path, "rb") as src, open(inner, "wb") as dst:
            shutil.copyfileobj(src, dst)
        return "dicom", [inner], where, True
    return kind, [path], where, True


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
        kind, files, where, strict = _resolve(paths, stack)
        if kind == "dicom":
            volume = read_dicom(files, where, series, strict)
            if paths[0].is_file() and files[0] != paths[0]:  # extracted: the archive is the source
                volume.meta["source_paths"] = [str(paths[0])]
            return volume
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
        kind, files, where, strict = _resolve(paths, stack)
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
    sources = [Path(p).resolve() for p in volume.meta.get("source_paths", [])]
    target = dest.resolve()
    if any(target == s or target in s.parents for s in sources):
        raise OutputError(
            "would overwrite or delete an input of this volume",
            dest,
            "write to a new path; inputs are never modified",
        )
    with atomic_output(dest, force, sources) as tmp:
        if fmt == "nifti":
            write_nifti(volume, tmp)
        elif fmt == "dicom":
            write_dicom_series(volume, tmp)
        else:
            write_itk(volume, tmp)
    return dest
