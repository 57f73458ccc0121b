"""Where a batch writes: output paths per item (mirror or BIDS derivatives), all inside ``OUT``.

Paths here are relative to the output folder ``OUT`` (POSIX, :class:`~pathlib.PurePosixPath`)
until :func:`inside` joins them to it and checks that the result stays inside ``OUT``;
every component is sanitised (:func:`safe_name`), so no item name, archive member or
DICOM description can climb out of it.

Layouts:

- ``mirror``: the input tree under ``OUT``. A volume file keeps its folder and stem
  (``sub-01/anat/sub-01_T2w.nii.gz`` -> ``OUT/sub-01/anat/sub-01_T2w.nii.gz``); an archive
  stands for a folder named after it without its suffix (``pacs/export.zip/s1`` ->
  ``OUT/pacs/export/s1/...``); a DICOM series becomes ``<its folder>/series-<number>[_<description>]``.
- ``bids``: ``OUT/derivatives/mrisr/`` with ``dataset_description.json``
  (:func:`write_dataset_description`). A BIDS-named input ``sub-01[_ses-1]..._<suffix>``
  keeps its entities and folder (``sub-01/[ses-1/]anat/``) and gains ``desc-sr`` before its
  suffix. Other inputs (DICOM series, files named otherwise) are named
  ``sub-<first folder>/anat/sub-<first folder>_acq-<description>[_run-<series number>]_desc-sr_<suffix>``
  (the first folder's letters and digits, or its label when it is ``sub-<label>``), the
  suffix read from the description or file name (:func:`guess_suffix`); when none can be
  read the item fails with that reason (a wrong contrast label would be worse).

Each output gets its JSON sidecar beside it (:func:`mrisr.export.sidecar_path`).
Two items that would land on one path are told apart by the first 8 hex digits of their
ledger key (:func:`assign`); paths already recorded for done items are kept for them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from .. import __version__
from ..errors import InputError, OutputError
from ..io.formats import ARCHIVE_ENDINGS, SCAN_ENDINGS, WRITE_ENDINGS, strip_ending, with_tag
from .discover import Item

__all__ = [
    "LAYOUTS",
    "FORMATS",
    "BIDS_ROOT",
    "safe_name",
    "item_format",
    "relative_output",
    "assign",
    "inside",
    "guess_suffix",
    "bids_sources",
    "write_dataset_description",
    "remove_stale_temporaries",
    "relative_to_out",
]

LAYOUTS = ("mirror", "bids")
#: Output formats of a batch and their endings; ``dicom`` is a folder (derived DICOM series).
FORMATS = {fmt: (WRITE_ENDINGS[fmt] or ("",))[0] for fmt in ("nifti", "nrrd", "dicom")}
#: The BIDS derivatives folder inside OUT.
BIDS_ROOT = PurePosixPath("derivatives/mrisr")
#: The endings of a batch's file outputs; BIDS derivatives are always NIfTI.
_OUTPUT_ENDINGS = tuple(e for e in FORMATS.values() if e)
_BIDS_ENDING = FORMATS["nifti"]
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_BIDS_ENTITY = re.compile(r"^([a-zA-Z0-9]+)-([a-zA-Z0-9]+)$")
_BIDS_DATATYPES = {"anat", "func", "dwi", "fmap", "perf", "pet", "micr", "beh", "eeg", "meg", "ieeg", "nirs", "motion"}


def safe_name(text: str, fallback: str = "item") -> str:
    """One path component: letters, digits, ``.``, ``_`` and ``-`` (others become ``_``), no
    leading dot (never ``.`` or ``..``), at most 120 characters; ``fallback`` when nothing is left."""
    name = _UNSAFE.sub("_", text).strip("_").lstrip(".")[:120]
    return name or fallback


def _alnum(text: str, fallback: str) -> str:
    """A BIDS label: letters and digits only."""
    return re.sub(r"[^A-Za-z0-9]+", "", text)[:64] or fallback


def item_format(item: Item, fmt: str) -> str:
    """The format an item is written in: ``dicom`` only for DICOM items (others get NIfTI)."""
    if fmt == "dicom" and item.kind != "dicom":
        return "nifti"
    return fmt


def _series_label(item: Item) -> str:
    number = f"series-{item.series_number}" if item.series_number is not None else f"series-{item.id[:8]}"
    return safe_name(f"{number}_{item.description}" if item.description else number)


def _folder_parts(display: str) -> list[str]:
    """The folders of a display name, archives named without their suffix, each sanitised."""
    parts = [p for p in PurePosixPath(display).parts if p not in ("", ".", "/")]
    return [safe_name(strip_ending(p, ARCHIVE_ENDINGS), "folder") for p in parts]


def _series_folder(item: Item) -> str:
    """A DICOM series' folder relative to the input (``.`` for the input itself)."""
    return item.folder if item.folder is not None else item.display.split("#", 1)[0]


def _mirror(item: Item, fmt: str) -> PurePosixPath:
    ext = FORMATS[item_format(item, fmt)]
    if item.kind == "dicom":
        folders = _folder_parts(_series_folder(item))
        return PurePosixPath(*folders, _series_label(item) + ext)
    *folders, name = PurePosixPath(item.display).parts
    stem = safe_name(strip_ending(name, SCAN_ENDINGS))
    return PurePosixPath(*_folder_parts("/".join(folders)), stem + ext)


def guess_suffix(text: str) -> str | None:
    """The BIDS anatomical suffix a series description or file name names, else None.

    FLAIR; T2star (``T2*``, ``T2star``) -> ``T2starw``; ``PD`` -> ``PDw``; T1 (also MPRAGE,
    SPGR, BRAVO) -> ``T1w``; T2 -> ``T2w``. Checked in that order, case-insensitively.
    """
    s = text.lower()
    if "flair" in s:
        return "FLAIR"
    if re.search(r"t2(\*|star|s(?![a-z]))", s):
        return "T2starw"
    if re.search(r"(?<![a-z])pd(w|(?![a-z]))", s):
        return "PDw"
    if re.search(r"t1|mprage|spgr|bravo", s):
        return "T1w"
    if "t2" in s:
        return "T2w"
    return None


def _bids(item: Item) -> PurePosixPath:
    parts = PurePosixPath(_series_folder(item) if item.kind == "dicom" else item.display).parts
    if item.kind != "dicom":
        stem = strip_ending(parts[-1], SCAN_ENDINGS)
        *entities, suffix = stem.split("_")
        pairs = [_BIDS_ENTITY.match(e) for e in entities]
        if entities and all(pairs) and pairs[0].group(1) == "sub" and re.fullmatch(r"[A-Za-z0-9]+", suffix):
            kept = [e for e, m in zip(entities, pairs, strict=True) if m.group(1) != "desc"]
            sub = entities[0]
            ses = [e for e in kept if e.startswith("ses-")]
            datatype = parts[-2] if len(parts) > 1 and parts[-2] in _BIDS_DATATYPES else "anat"
            name = "_".join([*kept, "desc-sr", suffix]) + _BIDS_ENDING
            return BIDS_ROOT / PurePosixPath(sub, *ses[:1], datatype, name)
    named_by = parts[-1] if parts else ""  # a series lying in the input itself has no folder of its own
    text = item.description if item.kind == "dicom" and item.description else strip_ending(named_by, SCAN_ENDINGS)
    suffix = guess_suffix(text or "")
    if suffix is None:
        raise InputError(f"cannot tell the BIDS suffix (T1w, T2w, FLAIR, PDw, T2starw) from {text!r}",
                         item.display, "name the file in BIDS style, filter the batch, or use --layout mirror")
    folder = [p for p in parts[:-1] if p not in (".", "")] if item.kind != "dicom" else list(parts)
    first = strip_ending(folder[0], ARCHIVE_ENDINGS) if folder and folder[0] != "." else text
    named = re.fullmatch(r"sub-([A-Za-z0-9]+)", first)
    sub = named.group(1) if named else _alnum(first, "unknown")
    entities = [f"sub-{sub}", f"acq-{_alnum(text, 'x')}"]
    if item.kind == "dicom" and item.series_number is not None:
        entities.append(f"run-{item.series_number}")
    name = "_".join([*entities, "desc-sr", suffix]) + _BIDS_ENDING
    return BIDS_ROOT / PurePosixPath(f"sub-{sub}", "anat", name)


def relative_output(item: Item, layout: str, fmt: str) -> PurePosixPath:
    """The output path of ``item`` relative to OUT (before collisions are resolved).

    Raises:
        InputError: ``bids`` layout and no BIDS suffix can be read for the item.
    """
    if layout == "bids":
        return _bids(item)
    return _mirror(item, fmt)


def _with_tag(path: PurePosixPath, tag: str, layout: str) -> PurePosixPath:
    """``path`` told apart by ``tag``: ``stem-<tag>`` (mirror), ``desc-sr<tag>`` (BIDS labels are alphanumeric)."""
    name = path.name
    if layout == "bids" and "_desc-sr_" in name:
        return path.with_name(name.replace("_desc-sr_", f"_desc-sr{tag}_", 1))
    return path.with_name(with_tag(name, tag, _OUTPUT_ENDINGS))


def assign(
    wanted: Mapping[str, PurePosixPath], reserved: Mapping[str, str], layout: str
) -> dict[str, PurePosixPath]:
    """One distinct output path per ledger key.

    Args:
        wanted: key -> the path :func:`relative_output` gives, in the order items were found.
        reserved: relative path (POSIX text) -> the key of a done item that wrote it; kept for it.
        layout: ``mirror`` or ``bids`` (how a clash is told apart, see :func:`_with_tag`).

    Returns:
        key -> path. A key whose path another key reserved, or that an earlier key took, gets
        its key's first 8 hex digits added. Paths compare case-insensitively (macOS, Windows).
    """
    taken = {p.lower(): k for p, k in reserved.items()}
    out: dict[str, PurePosixPath] = {}
    for key, path in wanted.items():
        if taken.get(str(path).lower(), key) != key:
            path = _with_tag(path, key[:8], layout)
        taken.setdefault(str(path).lower(), key)
        out[key] = path
    return out


def inside(out: Path, relative: PurePosixPath) -> Path:
    """``out / relative``, refused unless it lies inside ``out`` (nothing is written outside OUT).

    Raises:
        OutputError: an absolute path or one that climbs out of ``out``.
    """
    base = Path(os.path.abspath(out))
    dest = Path(os.path.abspath(base / Path(*relative.parts)))
    if relative.is_absolute() or ".." in relative.parts or base not in dest.parents:
        raise OutputError(f"output path {str(relative)!r} lies outside the output folder; refusing to write it",
                          out, "report this as a bug in mrisr")
    return dest


def bids_sources(item: Item, dataset: str) -> list[str]:
    """BIDS URIs of the item's files in the raw dataset named ``dataset`` in DatasetLinks."""
    return [f"bids:{dataset}:{rel}" for rel in item.rel_paths]


def write_dataset_description(out: Path, links: Mapping[str, str]) -> Path:
    """Write ``OUT/derivatives/mrisr/dataset_description.json`` (atomically).

    ``DatasetType: derivative``, ``GeneratedBy`` (mrisr and its version) and ``DatasetLinks``
    (the raw datasets the ``Sources`` of the sidecars name, as ``file://`` URIs); links an
    earlier run recorded are kept. The content is deterministic, so parts of one batch that
    write it at the same time write the same file.
    """
    from ..io.atomic import atomic_output

    path = inside(out, BIDS_ROOT / "dataset_description.json")
    merged: dict[str, str] = {}
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(old.get("DatasetLinks"), dict):
            merged.update({str(k): str(v) for k, v in old["DatasetLinks"].items()})
    except (OSError, ValueError):
        pass
    merged.update(links)
    description: dict[str, Any] = {
        "Name": "mrisr super-resolution",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "mrisr", "Version": __version__,
                         "Description": "MRI super-resolution (mrisr batch --layout bids)"}],
        "DatasetLinks": dict(sorted(merged.items())),
    }
    text = json.dumps(description, indent=2) + "\n"
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return path
    with atomic_output(path, force=True) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def remove_stale_temporaries(dest: Path) -> list[Path]:
    """Remove what an interrupted atomic write of ``dest`` left beside it (``.<name>.tmp-*``,
    ``.<name>.old-*``, files or folders); returns what was removed."""
    removed = []
    if not dest.parent.is_dir():
        return removed
    for entry in dest.parent.iterdir():
        if entry.name.startswith((f".{dest.name}.tmp-", f".{dest.name}.old-")):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def relative_to_out(out: Path, paths: Sequence[str]) -> list[str]:
    """``paths`` relative to the batch output folder ``out`` (POSIX), as the ledger records outputs."""
    base = Path(os.path.abspath(out))
    return [Path(os.path.abspath(p)).relative_to(base).as_posix() for p in paths]
