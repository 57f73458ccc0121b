"""Every file ending mrisr knows, in one table: what a file so named holds, and what mrisr writes.

Readers recognise content, not names (:func:`mrisr.io.detect_format`); endings matter
where there is no content yet (an output path), where a name promises a scan (a batch
walk reports such a file that cannot be read), and where names are made from names
(sidecars, batch outputs, Slicer node names). Endings are lower case and compared
case-insensitively; where one ending ends another (``.gz``, ``.nii.gz``) the longest wins.
"""

from __future__ import annotations

from collections.abc import Collection

__all__ = [
    "SCAN_ENDINGS",
    "VOLUME_ENDINGS",
    "ARCHIVE_ENDINGS",
    "WRITE_ENDINGS",
    "WRITE_FILE_ENDINGS",
    "SCENE_ENDING",
    "DICOM_FILE_ENDING",
    "FILE_ENDINGS",
    "endings_of",
    "ending",
    "scan_kind",
    "strip_ending",
    "with_tag",
]

#: Ending -> kind of a scan file. ``.nhdr``/``.mhd`` are detached headers (data in further files).
SCAN_ENDINGS: dict[str, str] = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "mha",
    ".mhd": "mha",
    ".dcm.gz": "dicom",
    ".dcm": "dicom",
    ".ima": "dicom",
    ".dicom": "dicom",
}

#: Endings of scan files that hold one whole volume (not a DICOM slice).
VOLUME_ENDINGS: tuple[str, ...] = tuple(e for e, kind in SCAN_ENDINGS.items() if kind != "dicom")

#: Endings of the zip/tar archives DICOM exports come in.
ARCHIVE_ENDINGS: tuple[str, ...] = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".zip", ".tar")

#: Output format -> the endings that select it, the default first. ``dicom`` is a folder.
#: Detached headers (.nhdr, .mhd) are read but not written: their two files cannot be
#: renamed atomically.
WRITE_ENDINGS: dict[str, tuple[str, ...]] = {
    "nifti": (".nii.gz", ".nii"),
    "nrrd": (".nrrd",),
    "mha": (".mha",),
    "dicom": (),
}

#: The endings of the single files ``mrisr.io.save`` writes.
WRITE_FILE_ENDINGS: tuple[str, ...] = tuple(e for endings in WRITE_ENDINGS.values() for e in endings)

#: The ending of each file of a derived DICOM series (:mod:`mrisr.io.dicom_write`).
DICOM_FILE_ENDING = ".dcm"

#: A 3D Slicer scene bundle (written by :mod:`mrisr.export.slicer`).
SCENE_ENDING = ".mrb"

#: Every ending of a single file mrisr reads or writes (plus a bare ``.gz``): a DICOM
#: series folder, the only folder output, must not end so.
FILE_ENDINGS: tuple[str, ...] = (*SCAN_ENDINGS, *ARCHIVE_ENDINGS, SCENE_ENDING, ".gz")


def endings_of(kind: str) -> tuple[str, ...]:
    """The scan endings of one kind (``nifti``, ``nrrd``, ``mha``, ``dicom``)."""
    return tuple(e for e, k in SCAN_ENDINGS.items() if k == kind)


def ending(name: str, endings: Collection[str] = FILE_ENDINGS) -> str | None:
    """The longest of ``endings`` that ``name`` ends in (lower case), else None."""
    lower = name.lower()
    found = [e for e in endings if lower.endswith(e)]
    return max(found, key=len) if found else None


def scan_kind(name: str) -> str | None:
    """The kind of scan a file name promises (``nifti``, ``nrrd``, ``mha``, ``dicom``), else None."""
    found = ending(name, tuple(SCAN_ENDINGS))
    return SCAN_ENDINGS[found] if found else None


def strip_ending(name: str, endings: Collection[str] = FILE_ENDINGS) -> str:
    """``name`` without its longest known ending; unchanged when nothing would be left."""
    found = ending(name, endings)
    return name[: -len(found)] if found and len(name) > len(found) else name


def with_tag(name: str, tag: str, endings: Collection[str] = FILE_ENDINGS) -> str:
    """``<stem>-<tag><ending>``: ``t1-2.nii.gz`` for ``t1.nii.gz``; ``<name>-<tag>`` for a folder."""
    found = ending(name, endings)
    if found and len(name) > len(found):
        return f"{name[: -len(found)]}-{tag}{name[-len(found):]}"
    return f"{name}-{tag}"
