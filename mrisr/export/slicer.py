"""3D Slicer scene bundles (``.mrb``): volumes, display settings and the slice-view layout in one file.

An ``.mrb`` is a zip laid out as Slicer saves one::

    <scene>/<scene>.mrml        the MRML scene (XML)
    <scene>/Data/<name>.nrrd    one NRRD per volume (Slicer's own NRRD: LPS space)
    <scene>/<scene>.png         an optional thumbnail

The MRML follows the node types, attribute names and reference syntax that
Slicer 5 writes (see ``tests/export/reference_scene.mrml`` and the Slicer files
it cites):

- per volume a ``Volume`` node (``vtkMRMLScalarVolumeNode<n>``) whose
  ``ijkToRASDirections`` (the 3x3 unit direction matrix, row-major: rows are
  R, A, S; columns the i, j, k axes), ``spacing`` and ``origin`` are in **RAS**,
  as ``vtkMRMLVolumeNode::WriteXML`` writes them, while the NRRD holds the same
  geometry in LPS; it names its display and storage nodes in
  ``references="display:<id>;storage:<id>;"``;
- a ``VolumeDisplay`` node (grey colour table, window/level from the 1st-99th
  intensity percentiles, ``autoWindowLevel="0"`` so Slicer keeps them);
- a ``VolumeArchetypeStorage`` node whose ``fileName`` is relative to the
  ``.mrml`` (``Data/<name>.nrrd``);
- the Red, Yellow and Green ``SliceComposite`` singletons showing the result
  (foreground, opacity 0.5) over the input (background) with linked control,
  so that one slider fades between them in all three views;
- the ``Layout`` singleton (four-up view).

Slicer places every volume by its own geometry, so volumes on different grids
(a low-resolution input and its super-resolved result) are shown aligned.
"""

from __future__ import annotations

import re
import struct
import tempfile
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path

import numpy as np

from ..errors import InputError, OutputError
from ..io.atomic import atomic_output
from ..io.formats import SCENE_ENDING, WRITE_ENDINGS
from ..io.intensity import to_numpy
from ..io.itk import write_itk
from ..volume import GEOMETRY_ATOL_MM, Volume, canonical

__all__ = ["write_mrb", "window_level", "thumbnail_png", "MRML_VERSION"]

#: The scene-format version string Slicer 5 writes in ``<MRML version=...>``.
MRML_VERSION = "Slicer4.4.0"
#: Slicer's built-in colour tables (ids of nodes every Slicer scene has).
GREY = "vtkMRMLColorTableNodeGrey"
DIVERGING = "vtkMRMLColorTableNodeFileDivergingBlueRed.txt"
#: The three slice views: (layout name, node id suffix).
SLICE_VIEWS = ("Red", "Yellow", "Green")
#: ``vtkMRMLLayoutNode::SlicerLayoutFourUpView``.
FOUR_UP_VIEW = 3
#: The foreground opacity of the slice views: half result, half input.
FOREGROUND_OPACITY = 0.5
#: The thumbnail's longer side (pixels).
THUMBNAIL_SIZE = 256
#: At most this many voxels are sampled for the intensity percentiles.
_PERCENTILE_SAMPLES = 2_000_000

VolumeRef = int | str | None


def _number(value: float) -> str:
    """A float as the shortest text that reads back exactly (no ``-0``)."""
    value = float(value)
    if value == 0.0:
        return "0"
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _numbers(values: Sequence[float] | np.ndarray, sep: str = " ") -> str:
    return sep.join(_number(v) for v in np.asarray(values, dtype=np.float64).ravel())


def window_level(values: np.ndarray, symmetric: bool = False) -> tuple[float, float]:
    """(window, level) spanning the 1st to 99th percentile of ``values``.

    With ``symmetric`` (a difference image) the window is centred on 0 and spans
    +-(99th percentile of the absolute values). A constant image gets window 1.
    """
    flat = np.asarray(values, dtype=np.float32).ravel()
    if flat.size > _PERCENTILE_SAMPLES:
        flat = flat[:: flat.size // _PERCENTILE_SAMPLES + 1]
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return 1.0, 0.0
    if symmetric:
        half = float(np.percentile(np.abs(flat), 99))
        return (2.0 * half if half > 0 else 1.0), 0.0
    lo, hi = (float(v) for v in np.percentile(flat, [1, 99]))
    window = hi - lo
    return (window if window > 0 else 1.0), (lo + hi) / 2.0


def _file_stem(name: str, taken: set[str]) -> str:
    """A portable file name stem for ``name``, unique (case-insensitively) among ``taken``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-") or "volume"
    candidate, n = stem, 1
    while candidate.lower() in taken:
        n += 1
        candidate = f"{stem}_{n}"
    taken.add(candidate.lower())
    return candidate


def _resolve(ref: VolumeRef, names: list[str], default: int | None, what: str) -> int | None:
    """The index of the volume ``ref`` names (index or name), or ``default``."""
    if ref is None:
        return default
    if isinstance(ref, bool) or not isinstance(ref, (int, str)):
        raise InputError(f"{what} must be a volume name or index, got {ref!r}", what)
    if isinstance(ref, int):
        if not -len(names) <= ref < len(names):
            raise InputError(f"{what} index {ref} is out of range for {len(names)} volumes", what)
        return ref % len(names)
    if ref not in names:
        raise InputError(f"{what} {ref!r} is none of the volumes ({', '.join(names)})", what,
                         "give one of the volume names")
    return names.index(ref)


def _named_volumes(
    volumes: Sequence[Volume] | Mapping[str, Volume], names: Sequence[str] | None
) -> tuple[list[str], list[Volume]]:
    if isinstance(volumes, Mapping):
        if names is not None:
            raise InputError("names given twice: as the mapping's keys and as names=", "names",
                             "pass a sequence of volumes with names=, or a mapping without it")
        names, volumes = list(volumes.keys()), list(volumes.values())
    else:
        volumes = list(volumes)
        names = list(names) if names is not None else [f"volume{i + 1}" for i in range(len(volumes))]
    if not volumes:
        raise InputError("no volumes to write", "volumes", "give at least one volume")
    if len(names) != len(volumes):
        raise InputError(f"{len(names)} names for {len(volumes)} volumes", "names", "give one name per volume")
    names = [str(n) for n in names]
    for name in names:
        if not name.strip():
            raise InputError("a volume name is empty", "names", "give every volume a name")
    if len(set(names)) != len(names):
        raise InputError(f"volume names must be unique, got {names}", "names", "give distinct names")
    for name, volume in zip(names, volumes, strict=True):
        if not isinstance(volume, Volume):
            raise InputError(f"volume {name!r} is a {type(volume).__name__}, not a Volume", "volumes")
        if volume.n_channels != 1:
            raise InputError(
                f"volume {name!r} has {volume.n_channels} channels; a Slicer scalar volume holds one",
                "volumes", "export one channel at a time (volume.replace(array=volume.array[c:c + 1]))",
            )
    return names, volumes


def _same_grid(a: Volume, b: Volume) -> bool:
    return a.shape == b.shape and bool(np.allclose(a.affine, b.affine, rtol=0, atol=GEOMETRY_ATOL_MM))


def _difference(names: list[str], volumes: list[Volume], fg: int | None, bg: int | None) -> tuple[str, Volume]:
    if fg is None or bg is None or fg == bg:
        raise InputError("a difference needs two distinct volumes (foreground and background)", "difference",
                         "give at least two volumes, or leave out the difference")
    if not _same_grid(volumes[fg], volumes[bg]):
        raise InputError(
            f"cannot subtract {names[bg]!r} from {names[fg]!r}: they are on different grids "
            f"(shapes {list(volumes[bg].shape)} and {list(volumes[fg].shape)})",
            "difference", "resample one onto the other's grid first, or leave out the difference",
        )
    array = to_numpy(volumes[fg].array).astype(np.float32) - to_numpy(volumes[bg].array).astype(np.float32)
    name, n = "difference", 1
    while name in names:
        n += 1
        name = f"difference_{n}"
    return name, Volume(array, volumes[fg].affine, {"dtype": "float32"})


def _node(parent: ET.Element, tag: str, attributes: dict[str, str]) -> ET.Element:
    return ET.SubElement(parent, tag, attributes)


def _scene_xml(
    names: list[str], volumes: list[Volume], files: list[str], colors: list[str], windows: list[tuple[float, float]],
    fg: int | None, bg: int | None,
) -> bytes:
    root = ET.Element("MRML", {"version": MRML_VERSION, "userTags": ""})
    ids = [f"vtkMRMLScalarVolumeNode{i + 1}" for i in range(len(volumes))]
    for i, (name, volume, file, color, (window, level)) in enumerate(
        zip(names, volumes, files, colors, windows, strict=True)
    ):
        n = i + 1
        display, storage = f"vtkMRMLScalarVolumeDisplayNode{n}", f"vtkMRMLVolumeArchetypeStorageNode{n}"
        values = to_numpy(volume.array)
        _node(root, "VolumeDisplay", {
            "id": display, "name": "VolumeDisplay", "hideFromEditors": "true", "selectable": "true",
            "selected": "false", "visibility": "true", "colorNodeID": color,
            "window": f"{window:.6g}", "level": f"{level:.6g}",
            "upperThreshold": _number(float(np.max(values))), "lowerThreshold": _number(float(np.min(values))),
            "interpolate": "1", "windowLevelLocked": "false", "autoWindowLevel": "0",
            "applyThreshold": "0", "autoThreshold": "0",
        })
        _node(root, "VolumeArchetypeStorage", {
            "id": storage, "name": "VolumeArchetypeStorage", "hideFromEditors": "true", "selectable": "true",
            "selected": "false", "fileName": file, "useCompression": "1", "defaultWriteFileExtension": "nrrd",
            "readState": "0", "writeState": "0", "centerImage": "0", "UseOrientationFromFile": "1",
        })
        spacing = volume.spacing
        directions = volume.affine[:3, :3] / spacing  # rows R, A, S; columns i, j, k
        _node(root, "Volume", {
            "id": ids[i], "name": name, "hideFromEditors": "false", "selectable": "true", "selected": "false",
            "references": f"display:{display};storage:{storage};", "userTags": "",
            "spacing": _numbers(spacing), "origin": _numbers(volume.affine[:3, 3]),
            "voxelVectorType": "undefined", "ijkToRASDirections": _numbers(directions),
        })
    background = "" if bg is None else ids[bg]
    foreground = "" if fg is None else ids[fg]
    refs = "".join(f"{role}:{node};" for role, node in (("backgroundVolume", background),
                                                        ("foregroundVolume", foreground)) if node)
    for view in SLICE_VIEWS:
        composite = {
            "id": f"vtkMRMLSliceCompositeNode{view}", "name": f"SliceComposite{view}", "hideFromEditors": "true",
            "selectable": "true", "selected": "false", "singletonTag": view,
        }
        if refs:
            composite["references"] = refs
        composite.update({
            "backgroundVolumeID": background, "foregroundVolumeID": foreground, "labelVolumeID": "",
            "compositing": "0", "foregroundOpacity": _number(FOREGROUND_OPACITY if fg is not None else 0.0),
            "labelOpacity": "1", "linkedControl": "1", "hotLinkedControl": "0", "fiducialVisibility": "1",
            "fiducialLabelVisibility": "1", "layoutName": view, "doPropagateVolumeSelection": "1",
        })
        _node(root, "SliceComposite", composite)
    _node(root, "Layout", {
        "id": "vtkMRMLLayoutNodevtkMRMLLayoutNode", "name": "Layout", "hideFromEditors": "true",
        "selectable": "true", "selected": "false", "singletonTag": "vtkMRMLLayoutNode",
        "currentViewArrangement": str(FOUR_UP_VIEW), "guiPanelVisibility": "1", "bottomPanelVisibility": "1",
        "guiPanelLR": "0", "collapseSliceControllers": "0", "numberOfCompareViewRows": "1",
        "numberOfCompareViewColumns": "1", "numberOfLightboxRows": "6", "numberOfLightboxColumns": "6",
        "mainPanelSize": "400", "secondaryPanelSize": "400",
    })
    ET.indent(root, space=" ")
    # As Slicer writes it: a double-quoted declaration and explicit end tags.
    body = ET.tostring(root, encoding="unicode", short_empty_elements=False)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n").encode("utf-8")


def _png(gray: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG of a 2D uint8 array (rows top to bottom)."""
    height, width = gray.shape
    raw = b"".join(b"\x00" + np.ascontiguousarray(row).tobytes() for row in gray)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def thumbnail_png(volume: Volume, window: float, level: float, size: int = THUMBNAIL_SIZE) -> bytes:
    """PNG bytes of the middle axial slice of ``volume``, shown as Slicer's Red view shows it.

    The volume is reordered (no interpolation) to the closest RAS axes; the slice
    is drawn with anterior up and patient right on the left, at the physical
    aspect ratio, the longer side ``size`` pixels (nearest neighbour).
    """
    ras = canonical(volume)
    values = to_numpy(ras.array)[0, :, :, ras.shape[2] // 2]  # (X: L->R, Y: P->A)
    image = values[::-1, ::-1].T  # rows: A->P, columns: R->L
    sx, sy = ras.spacing[0], ras.spacing[1]
    height_mm, width_mm = image.shape[0] * sy, image.shape[1] * sx
    scale = size / max(height_mm, width_mm)
    height, width = max(1, round(height_mm * scale)), max(1, round(width_mm * scale))
    rows = np.minimum((np.arange(height) + 0.5) * image.shape[0] / height, image.shape[0] - 1).astype(int)
    cols = np.minimum((np.arange(width) + 0.5) * image.shape[1] / width, image.shape[1] - 1).astype(int)
    picked = image[np.ix_(rows, cols)]
    scaled = (picked - (level - window / 2.0)) / window
    return _png(np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8))


def _sources(volumes: list[Volume]) -> list[str]:
    return [p for v in volumes for p in v.meta.get("source_paths", []) if isinstance(p, (str, PathLike))]


def write_mrb(
    path: str | PathLike[str],
    volumes: Sequence[Volume] | Mapping[str, Volume],
    *,
    names: Sequence[str] | None = None,
    foreground: VolumeRef = None,
    background: VolumeRef = None,
    difference: bool = False,
    thumbnail: bool = True,
    force: bool = False,
) -> Path:
    """Write ``volumes`` as a 3D Slicer scene bundle (``.mrb``) at ``path``; returns ``path``.

    Args:
        path: the output, ending in ``.mrb``; its stem names the scene (the
            zip's folder, ``.mrml`` and thumbnail).
        volumes: single-channel volumes, as a sequence or a mapping name -> volume.
        names: the node names of a sequence of volumes (default ``volume1``...);
            the NRRD files get portable versions of them.
        foreground: the volume shown on top in the slice views (name or index;
            default the last volume, none when there is only one).
        background: the volume shown below (default the first).
        difference: add a volume ``difference`` = foreground - background with a
            diverging colour table; both must be on the same grid.
        thumbnail: add ``<scene>.png``, the foreground's middle axial slice.
        force: replace an existing ``path``.

    Raises:
        InputError: no volumes, names missing, repeated or given twice, a
            multi-channel volume, an unknown foreground/background, or a
            difference between volumes on different grids.
        OutputError: ``path`` does not end in ``.mrb``, exists without ``force``,
            is one of the volumes' source files, or cannot be written.
    """
    path = Path(path)
    if path.suffix.lower() != SCENE_ENDING:
        raise OutputError(f"a Slicer scene bundle must end in .mrb, got {path.suffix!r}", path,
                          "name the output <scene>.mrb")
    names, volumes = _named_volumes(volumes, names)
    bg = _resolve(background, names, 0, "background")
    fg = _resolve(foreground, names, len(names) - 1 if len(names) > 1 else None, "foreground")
    windows = [window_level(to_numpy(v.array)) for v in volumes]
    colors = [GREY] * len(volumes)
    if difference:
        diff_name, diff = _difference(names, volumes, fg, bg)
        names, volumes = [*names, diff_name], [*volumes, diff]
        windows.append(window_level(to_numpy(diff.array), symmetric=True))
        colors.append(DIVERGING)
    scene = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).strip("._-") or "scene"
    taken: set[str] = set()
    files = [f"Data/{_file_stem(name, taken)}{WRITE_ENDINGS['nrrd'][0]}" for name in names]
    mrml = _scene_xml(names, volumes, files, colors, windows, fg, bg)
    shown = fg if fg is not None else bg
    with atomic_output(path, force, sources=_sources(volumes)) as tmp, tempfile.TemporaryDirectory() as work:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
            bundle.writestr(f"{scene}/{scene}.mrml", mrml)
            for volume, file in zip(volumes, files, strict=True):
                local = Path(work) / Path(file).name
                write_itk(volume, local)
                # gzip-encoded already: store it as it is
                bundle.write(local, f"{scene}/{file}", compress_type=zipfile.ZIP_STORED)
                local.unlink()
            if thumbnail and shown is not None:
                bundle.writestr(f"{scene}/{scene}.png", thumbnail_png(volumes[shown], *windows[shown]))
    return path
