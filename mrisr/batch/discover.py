"""Find the work of a batch: every volume file and DICOM series under a folder tree.

``discover(root)`` walks ``root`` (hidden folders and files skipped) and the zip and tar
archives found in it. Each NIfTI, NRRD or MetaImage file is an :class:`Item`; each DICOM
series is an item with its files, grouped as :func:`mrisr.io.list_series` groups them
(SeriesInstanceUID, then orientation, matrix and image type). Archives are extracted
only through :func:`mrisr.io.archive.extracted`, which refuses absolute, ``..`` and link
entries before anything is written, into a temporary folder removed afterwards.

Identity: ``Item.id`` is a content hash, the SHA-256 of the item's kind and the SHA-256
digests of its files' bytes (sorted, so file names and order do not matter). It is
computed during discovery (the files of an archive exist only then), by streaming each
file once; SHA-256 runs at about 1 GB/s, well below the cost of reading and upscaling the
same files. Two exact copies of a study have the same id, wherever they are; the ledger
keys its rows by this id plus the processing parameters.

Problems never make an item vanish silently: a file that looks like a scan but cannot be
read, a folder of broken DICOM files, a series with broken geometry or an archive that
cannot be extracted (unsafe entry, damaged) becomes an item with ``error`` set, which a
runner records as failed with that reason. ``strict=True`` raises the error instead.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import InputError, MrisrError
from ..io import detect_format
from ..io.archive import extracted
from ..io.dicom_read import scan_records
from ..io.dicom_series import SeriesCandidate, describe, group_candidates, stack_volumes
from ..io.formats import ARCHIVE_ENDINGS, scan_kind

__all__ = ["Item", "discover", "plan_table", "plan_json", "item_files", "KINDS"]

KINDS = ("nifti", "nrrd", "mha", "dicom")

#: Files skipped when walking: never scans, often present.
_SKIP_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini", "DICOMDIR"}
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Item:
    """One unit of batch work: a volume file or a DICOM series.

    Attributes:
        id: content hash (hex SHA-256) of the item's files, see the module docstring.
        kind: ``nifti``, ``nrrd``, ``mha`` or ``dicom``.
        paths: the item's files. Absolute paths for files on disk; for an item inside an
            archive, paths relative to the archive's root (see :func:`item_files`).
        rel_paths: the files relative to the discovery root (POSIX), an archive's
            members as ``archive.zip/member``; what include/exclude globs match.
        display: a short, readable relative name: the file; a DICOM series' folder, with ``#``
            and its series number (else its description, else its UID) when the folder holds
            several series; a series lying in the discovery root itself is named
            ``series-<number>_<description>`` (what its mirror output is named after).
        container: the archive holding the files, else ``None``.
        folder: a DICOM series' folder relative to the discovery root (POSIX, ``.`` for the
            root itself), where its mirror output goes; ``None``: the part of ``display``
            before ``#``.
        series_id: the id :func:`mrisr.io.load` takes as ``series`` (DICOM only).
        series_uid, description, modality, series_number: DICOM attributes, when known.
        shape: ``(X, Y, Z)`` voxels of one volume, when known.
        spacing: voxel size (mm) along X, Y, Z, when known.
        n_slices: slices along the through-plane axis (the coarsest one), when known.
        size_bytes: total size of the files.
        error: why the item cannot be processed (found while discovering), else ``None``.
    """

    id: str
    kind: str
    paths: tuple[Path, ...]
    rel_paths: tuple[str, ...]
    display: str
    container: Path | None = None
    series_id: str | None = None
    series_uid: str | None = None
    description: str | None = None
    modality: str | None = None
    series_number: int | None = None
    shape: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None
    n_slices: int | None = None
    size_bytes: int = 0
    error: str | None = field(default=None, compare=False)
    folder: str | None = None

    @property
    def through_plane_mm(self) -> float | None:
        """The coarsest voxel size (mm): the slice spacing of a low-resolution scan."""
        return None if not self.spacing else max(self.spacing)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (paths as strings), plus ``through_plane_mm``."""
        return {
            "id": self.id,
            "kind": self.kind,
            "display": self.display,
            "paths": [str(p) for p in self.paths],
            "rel_paths": list(self.rel_paths),
            "container": None if self.container is None else str(self.container),
            "series_id": self.series_id,
            "series_uid": self.series_uid,
            "description": self.description,
            "modality": self.modality,
            "series_number": self.series_number,
            "shape": None if self.shape is None else list(self.shape),
            "spacing": None if self.spacing is None else [round(s, 6) for s in self.spacing],
            "through_plane_mm": None if self.through_plane_mm is None else round(self.through_plane_mm, 6),
            "n_slices": self.n_slices,
            "size_bytes": self.size_bytes,
            "error": self.error,
            "folder": self.folder,
        }


# --- hashing and walking ---------------------------------------------------------------


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def content_hash(kind: str, files: Iterable[Path]) -> str:
    """The id of an item: SHA-256 of its kind and its files' sorted byte digests."""
    digests = sorted(_file_digest(p) for p in files)
    return hashlib.sha256(json.dumps([kind, digests]).encode()).hexdigest()


def _walk(folder: Path, skip_dirs: Sequence[Path]) -> list[Path]:
    skip = {os.path.realpath(d) for d in skip_dirs}
    files = []
    for top, dirs, names in os.walk(folder):
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and os.path.realpath(os.path.join(top, d)) not in skip
        )
        for name in sorted(names):
            if name in _SKIP_NAMES or name.startswith("."):
                continue
            path = Path(top) / name
            if path.is_file():
                files.append(path)
    return files


def _posix(path: Path) -> str:
    return PurePosixPath(*path.parts).as_posix()


# --- geometry, read cheaply ------------------------------------------------------------


def _volume_geometry(path: Path, kind: str) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(shape, spacing) of the first three axes from the header only, as :func:`mrisr.load` reads them.

    NIfTI spacing is the length of the affine's columns (sform, else qform, else pixdim), as
    the reader's affine gives it, not ``pixdim``: a 2D image's singleton axis has the spacing
    its affine says (``pixdim`` lists none for it), and ``pixdim`` may disagree with the sform.
    NRRD and MetaImage: SimpleITK's spacing, 1 mm on a 2D image's singleton axis (as the reader).
    """
    if kind == "nifti":
        import nibabel as nib
        import numpy as np

        header = nib.load(path).header  # the data stays on disk
        shape = tuple(int(n) for n in header.get_data_shape()[:3])
        affine = np.asarray(header.get_best_affine(), dtype=np.float64)
        zooms = tuple(float(z) for z in np.linalg.norm(affine[:3, :3], axis=0))
    else:
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        shape = tuple(int(n) for n in reader.GetSize()[:3])
        zooms = tuple(float(z) for z in reader.GetSpacing()[:3])
    shape = shape + (1,) * (3 - len(shape))
    zooms = zooms + (1.0,) * (3 - len(zooms))
    return shape, zooms


def _through_plane_slices(shape: Sequence[int], spacing: Sequence[float]) -> int:
    axis = max(range(3), key=lambda a: (spacing[a], a))
    return int(shape[axis])


# --- the walk of one scope (the root, or an extracted archive) ------------------------


@dataclass
class _Scope:
    """Where files are found: on disk (``container`` None) or in an extracted archive."""

    folder: Path  # the folder walked
    prefix: str  # rel_paths prefix ("" for the root, "archive.zip/" in an archive)
    container: Path | None

    def rel(self, path: Path) -> str:
        return self.prefix + _posix(path.relative_to(self.folder))

    def stored(self, path: Path) -> Path:
        """What an item keeps: the absolute path, or the path inside the archive."""
        return path.relative_to(self.folder) if self.container is not None else path


def _volume_item(path: Path, kind: str, scope: _Scope) -> Item:
    rel = scope.rel(path)
    size = path.stat().st_size
    try:
        shape, spacing = _volume_geometry(path, kind)
        n_slices, error = _through_plane_slices(shape, spacing), None
    except Exception as exc:  # nibabel and SimpleITK raise many types for damaged headers
        shape = spacing = n_slices = None
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        error = f"{rel}: unreadable {kind} header ({reason})"
    return Item(
        id=content_hash(kind, [path]),
        kind=kind,
        paths=(scope.stored(path),),
        rel_paths=(rel,),
        display=rel,
        container=scope.container,
        shape=shape,
        spacing=spacing,
        n_slices=n_slices,
        size_bytes=size,
        error=error,
    )


def _error_item(kind: str, files: Sequence[Path], scope: _Scope, display: str, error: str) -> Item:
    return Item(
        id=content_hash(kind, files),
        kind=kind,
        paths=tuple(scope.stored(p) for p in files),
        rel_paths=tuple(scope.rel(p) for p in files),
        display=display,
        container=scope.container,
        size_bytes=sum(p.stat().st_size for p in files),
        error=error,
    )


def _split_duplicates(candidate: SeriesCandidate) -> list[SeriesCandidate]:
    """A candidate whose images repeat (two copies of one series in two folders) splits by folder."""
    keys = [(r.sop_instance_uid, r.frame, r.tile) for r in candidate.records]
    if len(set(keys)) == len(keys):
        return [candidate]
    by_folder: dict[Path, list] = {}
    for r in candidate.records:
        by_folder.setdefault(r.path.parent, []).append(r)
    return [c for _, recs in sorted(by_folder.items()) for c in group_candidates(recs)]


def _common_folder(rels: Sequence[str]) -> str:
    parents = [PurePosixPath(r).parent.as_posix() for r in rels]
    common = os.path.commonpath(parents) if parents else "."
    return common if common not in ("", ".") else "."


def _series_display(folder: str, shared: bool, number: int | None, description: str | None, uid: str) -> str:
    """A series' readable name: its folder; ``folder#<number>`` (else ``#<description>``, else
    ``#<UID>``) when the folder holds several; ``series-<number>_<description>`` in the root."""
    text = "_".join(re.sub(r"[\s/\\]+", " ", description or "").split())
    if folder == ".":
        label = "_".join(p for p in (f"series-{number}" if number is not None else "series", text) if p)
        return label if (number is not None or text) else f"series-{uid}"
    if not shared:
        return folder
    return f"{folder}#{number if number is not None else (text or uid)}"


def _dicom_items(files: Sequence[Path], scope: _Scope, strict: bool) -> list[Item]:
    by_folder: dict[Path, list[Path]] = {}
    for p in files:
        by_folder.setdefault(p.parent, []).append(p)
    records, datasets, items = [], {}, []
    for folder, folder_files in sorted(by_folder.items()):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                recs, sets = scan_records(folder_files, folder, strict=False)
        except MrisrError as exc:
            if exc.problem.startswith("DICOM without pixel data"):
                continue  # reports, structure sets, presentation states: not images to upscale
            if strict:
                raise
            rel_folder = scope.rel(folder) if folder != scope.folder else (scope.prefix.rstrip("/") or ".")
            items.append(_error_item("dicom", folder_files, scope, rel_folder, exc.one_line()))
            continue
        records.extend(recs)
        datasets.update(sets)
    candidates = [c for cand in group_candidates(records) for c in _split_duplicates(cand)]
    folders: dict[str, int] = {}
    described = []
    for cand in candidates:
        paths = sorted({r.path for r in cand.records})
        rels = [scope.rel(p) for p in paths]
        folder = _common_folder(rels)
        folders[folder] = folders.get(folder, 0) + 1
        described.append((cand, paths, rels, folder))
    for cand, paths, rels, folder in described:
        first = cand.first
        info = describe(cand)
        display = _series_display(folder, folders[folder] > 1, first.series_number, first.series_description, cand.id)
        shape = spacing = None
        error = None
        try:
            volumes, _, affine = stack_volumes(cand.records, Path(folder))
            import numpy as np

            spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
            shape = (first.cols, first.rows, len(volumes[0]))
        except MrisrError as exc:
            if strict:
                raise
            error = f"{display}: {exc.problem}"
        modality = datasets[first.path].get("Modality") if first.path in datasets else None
        items.append(
            Item(
                id=content_hash("dicom", paths),
                kind="dicom",
                paths=tuple(scope.stored(p) for p in paths),
                rel_paths=tuple(rels),
                display=display,
                container=scope.container,
                series_id=cand.id,
                series_uid=first.series_uid,
                description=first.series_description,
                modality=None if modality is None else str(modality),
                series_number=first.series_number,
                shape=shape,
                spacing=spacing,
                n_slices=info.n_slices if shape is None else shape[2],
                size_bytes=sum(p.stat().st_size for p in paths),
                error=error,
                folder=folder,
            )
        )
    return items


def _scan_scope(scope: _Scope, strict: bool, skip_dirs: Sequence[Path]) -> list[Item]:
    items: list[Item] = []
    dicom: list[Path] = []
    for path in _walk(scope.folder, skip_dirs):
        try:
            kind = detect_format(path)
        except InputError as exc:
            promised = scan_kind(path.name)  # an ending that promises a scan: unreadable is an error item
            if promised is None and not path.name.lower().endswith(ARCHIVE_ENDINGS):
                continue  # README, JSON sidecar, spreadsheet...: not a scan
            if strict:
                raise
            items.append(_error_item(promised or "dicom", [path], scope, scope.rel(path), exc.one_line()))
            continue
        if kind in ("nifti", "nrrd", "mha"):
            items.append(_volume_item(path, kind, scope))
        elif kind == "dicom":
            dicom.append(path)
        elif kind == "archive":
            if scope.container is not None:
                # Archives inside archives are not opened (one level only): say so, never drop it silently.
                error = f"{scope.rel(path)}: an archive inside an archive; extract the outer archive first"
                if strict:
                    raise InputError("an archive inside an archive", scope.rel(path), "extract the outer archive")
                items.append(_error_item("dicom", [path], scope, scope.rel(path), error))
            else:
                items.extend(_archive_items(path, scope, strict))
        # dicomdir: its referenced files are in the tree and found by the walk
    if dicom:
        items.extend(_dicom_items(dicom, scope, strict))
    return items


def _archive_items(archive: Path, scope: _Scope, strict: bool) -> list[Item]:
    rel = scope.rel(archive)
    try:
        with extracted(archive) as folder:
            inner = _Scope(folder, rel + "/", archive.resolve())
            return _scan_scope(inner, strict, ())
    except MrisrError as exc:
        if strict:
            raise
        return [_error_item("dicom", [archive], scope, rel, exc.one_line())]


# --- filters -----------------------------------------------------------------------------


def _matches(item: Item, patterns: Sequence[str]) -> bool:
    """Any of the item's relative paths (or its display name) matches any glob; ``*`` crosses '/'."""
    names = (*item.rel_paths, item.display)
    return any(fnmatch.fnmatchcase(n, pat) for n in names for pat in patterns)


def _keep(
    item: Item,
    include: Sequence[str],
    exclude: Sequence[str],
    description: re.Pattern | None,
    modality: str | None,
    min_slices: int,
    min_through_plane_mm: float | None,
) -> bool:
    if include and not _matches(item, include):
        return False
    if exclude and _matches(item, exclude):
        return False
    if item.error is not None:
        return True  # kept so that its reason is reported, whatever it would have matched
    if description is not None:
        text = item.description if item.kind == "dicom" else PurePosixPath(item.display).name
        if text is None or not description.search(text):
            return False
    if modality is not None and item.modality is not None and item.modality.upper() != modality.upper():
        return False
    if item.n_slices is not None and item.n_slices < min_slices:
        return False
    thick = item.through_plane_mm
    return not (min_through_plane_mm is not None and thick is not None and thick < min_through_plane_mm)


def discover(
    root: str | os.PathLike[str],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    series_description: str | None = None,
    modality: str | None = None,
    min_slices: int = 1,
    min_through_plane_mm: float | None = None,
    strict: bool = False,
    skip_dirs: Sequence[str | os.PathLike[str]] = (),
) -> list[Item]:
    """The items under ``root`` (a folder, an archive or a single scan file), filtered.

    Args:
        root: where to look.
        include: globs on the paths relative to ``root`` (``archive.zip/member`` inside an
            archive); an item is kept when one of its files (or its display name) matches.
            ``*`` matches across ``/`` (fnmatch), so ``*.nii.gz`` finds them at any depth.
        exclude: globs as ``include``; an item is dropped when one of its files matches.
        series_description: a regular expression searched (``re.search``) in the DICOM
            SeriesDescription; for NIfTI, NRRD and MetaImage, in the file name.
        modality: DICOM Modality (``MR``); volume files, which record none, pass.
        min_slices: the fewest slices along the through-plane axis.
        min_through_plane_mm: the smallest through-plane (coarsest) voxel size that makes a
            scan low resolution enough to process.
        strict: raise the first discovery error instead of returning an item with ``error``.
        skip_dirs: folders not walked (the output folder, when it lies inside ``root``).

    Items with ``error`` set pass every filter except include/exclude: their reason must be
    reported. Items are sorted by display name, then id.

    Raises:
        InputError: ``root`` does not exist; with ``strict``, any discovery error.
    """
    root = Path(root)
    if not root.exists():
        raise InputError("does not exist", root, "check the path")
    if root.is_dir():
        items = _scan_scope(_Scope(root, "", None), strict, [Path(d) for d in skip_dirs])
    else:
        parent = _Scope(root.parent, "", None)
        kind = detect_format(root)
        if kind == "archive":
            items = _archive_items(root, parent, strict)
        elif kind in ("nifti", "nrrd", "mha"):
            items = [_volume_item(root, kind, parent)]
        else:
            items = _dicom_items([root], parent, strict)
    pattern = re.compile(series_description) if series_description is not None else None
    kept = [
        it
        for it in items
        if _keep(it, include, exclude, pattern, modality, min_slices, min_through_plane_mm)
    ]
    return sorted(kept, key=lambda it: (it.display, it.id))


def _extract_folders(archive: Path, folders: set[PurePosixPath], dest: Path) -> None:
    """Extract the regular files of ``archive`` that lie directly in ``folders`` into ``dest``.

    Every entry is checked first, as :func:`mrisr.io.archive.extracted` checks them (absolute,
    ``..`` and link entries refuse the whole archive), so nothing lands outside ``dest``. The
    files beside an item's own (a detached NRRD/MetaImage data file) come along.
    """
    import tarfile
    import zipfile

    from ..io.archive import _check_member  # the one rule for unsafe entries

    if zipfile.is_zipfile(archive):
        try:
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                for info in infos:
                    _check_member(info.filename, (info.external_attr >> 16) & 0o170000 == 0o120000, archive)
                for info in infos:
                    if not info.is_dir() and PurePosixPath(info.filename).parent in folders:
                        zf.extract(info, dest)
        except zipfile.BadZipFile as exc:
            raise InputError(f"broken zip archive ({exc})", archive, "re-create the archive") from None
        return
    try:
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for m in members:
                _check_member(m.name, m.issym() or m.islnk(), archive)
            wanted = [m for m in members if m.isfile() and PurePosixPath(m.name).parent in folders]
            tf.extractall(dest, members=wanted, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InputError(f"broken tar archive ({exc})", archive, "re-create the archive") from None


@contextmanager
def item_files(item: Item):
    """Yield the item's files as real paths: as they are, or extracted from its archive.

    Only the archive's folders that hold the item's files are extracted (a study zip of many
    series is not unpacked whole for each), through the same entry checks as
    :func:`mrisr.io.archive.extracted`, into a temporary folder removed afterwards.
    """
    if item.container is None:
        yield list(item.paths)
        return
    import tempfile

    folders = {PurePosixPath(p.as_posix()).parent for p in item.paths}
    with tempfile.TemporaryDirectory(prefix="mrisr-item-") as tmp:
        _extract_folders(item.container, folders, Path(tmp))
        yield [Path(tmp) / p for p in item.paths]


# --- the plan (--dry-run) -----------------------------------------------------------------


def plan_json(items: Sequence[Item]) -> list[dict[str, Any]]:
    """The plan as JSON-ready dicts, one per item (see :meth:`Item.as_dict`)."""
    return [it.as_dict() for it in items]


def _fmt_spacing(item: Item) -> str:
    return "" if item.spacing is None else "x".join(f"{s:.3g}" for s in item.spacing)


def plan_table(items: Sequence[Item]) -> str:
    """The plan as a text table: id prefix, kind, slices, spacing, description, name; and a total."""
    header = ("ID", "KIND", "SLICES", "SPACING_MM", "DESCRIPTION", "ITEM")
    rows = [
        (
            it.id[:12],
            it.kind,
            "" if it.n_slices is None else str(it.n_slices),
            _fmt_spacing(it),
            (it.description or "") if it.error is None else "ERROR: " + it.error,
            it.display,
        )
        for it in items
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in [header, *rows]]
    errors = sum(it.error is not None for it in items)
    total = f"{len(items)} item{'s' if len(items) != 1 else ''}"
    if errors:
        total += f", {errors} with errors"
    lines.append(total)
    return "\n".join(line.rstrip() for line in lines)
