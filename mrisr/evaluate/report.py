"""A visual evaluation report: PNG figures and an ``index.html`` page, written atomically.

Figures (no plotting library: PNGs are written with numpy and zlib, labels with a 3x5 bitmap font):

- ``view_0.png``, ``view_1.png``, ``view_2.png``: the planes through the mask's centre
  perpendicular to voxel axes 0, 1, 2. Each is named by the anatomical plane closest to it
  (axial, coronal or sagittal, from the RAS affine; an oblique one says by how many degrees it
  is tilted) and drawn in the **radiological convention** whatever the voxel order
  (:func:`plane_layout`): axial planes seen from the feet and coronal planes seen from the front,
  both with the patient's right on the image's left (anterior, resp. superior, at the top);
  sagittal planes seen from the patient's left (anterior on the image's left, superior at the
  top). Letters at the middle of each image edge (R/L, A/P, S/I) name the patient direction
  there, and each figure states the convention in its title. Columns: LR (nearest-neighbour on
  the reference grid, showing its thick voxels), tricubic (:func:`mrisr.preprocess.cubic_baseline`),
  SR, HR, |cubic-HR| and |SR-HR|; the LR and cubic columns are present only when given. The
  second row is a 3x zoomed inset of the yellow box around the centre. Intensities share one
  window (HR's 0.5-99.5 percentiles in the mask); the error maps share another (0 to the 99.5th
  percentile of the errors), drawn as the colour bar on the right in the reference's intensity units.
- ``slice_psnr.png``: PSNR (dB) per slice along the evaluation axis, SR (blue) and cubic (orange);
  the x axis is the slice index along that voxel axis, its title names the axis, its direction
  and the slice spacing (mm).
"""

from __future__ import annotations

import html
import json
import math
import os
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OutputError
from ..export.sidecar import json_ready
from ..infer.grid import coarse_axis
from ..io.atomic import _sibling, atomic_output
from ..preprocess import cubic_baseline
from ..volume import PLANE_NAMES, Volume, axcodes, slice_plane, spacing
from .metrics import check_same_grid, evaluate, resolve_mask, volume_name

__all__ = ["write_report", "write_png", "CONVENTION", "PlaneLayout", "plane_layout", "oriented_plane", "edge_labels",
           "colour_bar_ticks", "slice_axis_title", "curve_labels", "report_names"]

#: Marks a folder as an mrisr report, which ``force`` may replace.
_MARKER = '<meta name="generator" content="mrisr evaluate">'
_REPORT_FILES = (".png", ".html", ".json")

#: How the view figures are oriented (see the module docstring and :func:`plane_layout`).
CONVENTION = "radiological"
#: The opposite of each RAS direction code (nibabel's axis codes: the direction an index increases towards).
_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}
#: Radiological display of each plane: (the patient direction on the image's left, the one at its top).
_DISPLAY = {"axial": ("R", "A"), "coronal": ("R", "S"), "sagittal": ("A", "S")}
#: The convention in words, as each figure states it.
_CONVENTION_NOTE = {
    "axial": "radiological: seen from the feet, patient's right on the image's left",
    "coronal": "radiological: seen from the front, patient's right on the image's left",
    "sagittal": "radiological: seen from the patient's left, anterior on the image's left",
}
#: The colour of the direction letters on the images (on a black box).
_LETTER = (80, 220, 255)
_BLACK = (0, 0, 0)

# 3x5 bitmap glyphs, one row per string, '#' on.
_GLYPHS = {
    "0": ("###", "#.#", "#.#", "#.#", "###"), "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"), "3": ("###", "..#", "###", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"), "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"), "7": ("###", "..#", "..#", "..#", "..#"),
    "8": ("###", "#.#", "###", "#.#", "###"), "9": ("###", "#.#", "###", "..#", "###"),
    "A": (".#.", "#.#", "###", "#.#", "#.#"), "B": ("##.", "#.#", "##.", "#.#", "##."),
    "C": ("###", "#..", "#..", "#..", "###"), "D": ("##.", "#.#", "#.#", "#.#", "##."),
    "E": ("###", "#..", "##.", "#..", "###"), "F": ("###", "#..", "##.", "#..", "#.."),
    "G": ("###", "#..", "#.#", "#.#", "###"), "H": ("#.#", "#.#", "###", "#.#", "#.#"),
    "I": ("###", ".#.", ".#.", ".#.", "###"), "J": ("..#", "..#", "..#", "#.#", "###"),
    "K": ("#.#", "#.#", "##.", "#.#", "#.#"), "L": ("#..", "#..", "#..", "#..", "###"),
    "M": ("#.#", "###", "###", "#.#", "#.#"), "N": ("##.", "#.#", "#.#", "#.#", "#.#"),
    "O": (".#.", "#.#", "#.#", "#.#", ".#."), "P": ("###", "#.#", "###", "#..", "#.."),
    "Q": (".#.", "#.#", "#.#", "##.", ".##"), "R": ("##.", "#.#", "##.", "#.#", "#.#"),
    "S": ("###", "#..", "###", "..#", "###"), "T": ("###", ".#.", ".#.", ".#.", ".#."),
    "U": ("#.#", "#.#", "#.#", "#.#", "###"), "V": ("#.#", "#.#", "#.#", "#.#", ".#."),
    "W": ("#.#", "#.#", "###", "###", "#.#"), "X": ("#.#", "#.#", ".#.", "#.#", "#.#"),
    "Y": ("#.#", "#.#", ".#.", ".#.", ".#."), "Z": ("###", "..#", ".#.", "#..", "###"),
    "|": (".#.", ".#.", ".#.", ".#.", ".#."), "-": ("...", "...", "###", "...", "..."),
    ".": ("...", "...", "...", "...", ".#."), " ": ("...", "...", "...", "...", "..."),
    "(": ("..#", ".#.", ".#.", ".#.", "..#"), ")": ("#..", ".#.", ".#.", ".#.", "#.."),
    ":": ("...", ".#.", "...", ".#.", "..."), ",": ("...", "...", "...", ".#.", "#.."),
    "/": ("..#", "..#", ".#.", "#..", "#.."), "+": ("...", ".#.", "###", ".#.", "..."),
    "=": ("...", "###", "...", "###", "..."), "'": (".#.", ".#.", "...", "...", "..."),
}


@dataclass(frozen=True)
class PlaneLayout:
    """How the plane perpendicular to one voxel axis is drawn (see :func:`plane_layout`).

    Attributes:
        axis: the voxel axis the plane is perpendicular to.
        name: ``"axial"``, ``"coronal"`` or ``"sagittal"``: the anatomical plane closest to it.
        tilt_deg: angle (degrees) between the plane's normal and that anatomical plane's normal
            (0 for a plane aligned with the RAS axes; an oblique volume names its closest plane).
        across: the voxel axis drawn from the image's left to its right.
        across_reversed: ``across`` is drawn with its index decreasing from left to right.
        down: the voxel axis drawn from the image's top to its bottom.
        down_reversed: ``down`` is drawn with its index decreasing from top to bottom.
        sides: the patient direction (``R L A P S I``) at each edge of the drawn image, keyed
            ``"left"``, ``"right"``, ``"top"``, ``"bottom"`` (the viewer's left, right, top, bottom).
    """

    axis: int
    name: str
    tilt_deg: float
    across: int
    across_reversed: bool
    down: int
    down_reversed: bool
    sides: dict[str, str]


def plane_layout(affine: np.ndarray, axis: int) -> PlaneLayout:
    """The radiological layout of the plane perpendicular to voxel ``axis`` of a volume with ``affine``.

    The plane is named by the RAS direction closest to ``axis`` (nibabel's axis codes, which
    assign each voxel axis its closest world axis, one each, so oblique volumes work): S/I
    axial, A/P coronal, R/L sagittal. It is drawn as :data:`_DISPLAY` says (axial and coronal:
    the patient's right on the image's left; sagittal: anterior on the image's left; superior,
    or for axial anterior, at the top), flipping and transposing the voxel axes as needed.

    Args:
        affine: ``(4, 4)`` voxel -> RAS (mm).
        axis: the voxel axis (0, 1 or 2) the plane is perpendicular to.
    """
    affine = np.asarray(affine, dtype=np.float64)
    codes = axcodes(affine)
    name, tilt = slice_plane(affine, axis)
    left, top = _DISPLAY[name]
    rest = [a for a in range(3) if a != axis]
    across = next(a for a in rest if codes[a] in (left, _OPPOSITE[left]))
    down = next(a for a in rest if a != across)
    return PlaneLayout(
        axis=axis, name=name, tilt_deg=tilt,
        across=across, across_reversed=codes[across] == left,  # an index increasing towards the left side
        down=down, down_reversed=codes[down] == top,  # an index increasing towards the top
        sides={"left": left, "right": _OPPOSITE[left], "top": top, "bottom": _OPPOSITE[top]},
    )


def oriented_plane(volume: np.ndarray, layout: PlaneLayout, index: int, voxel_mm: np.ndarray) -> np.ndarray:
    """The plane ``index`` along ``layout.axis`` of an ``(X, Y, Z)`` array as drawn: ``(rows, cols)``,
    row 0 at the top, column 0 at the left, as ``layout`` says; pixels resampled (nearest) to square
    millimetres at the finer of the two in-plane spacings ``voxel_mm`` (mm per voxel axis)."""
    rest = [a for a in range(3) if a != layout.axis]
    plane = np.take(volume, index, axis=layout.axis)  # (n_rest0, n_rest1)
    if rest[0] != layout.down:
        plane = plane.T  # (down, across)
    if layout.down_reversed:
        plane = plane[::-1]
    if layout.across_reversed:
        plane = plane[:, ::-1]
    step = float(min(voxel_mm[layout.down], voxel_mm[layout.across]))
    for k, a in enumerate((layout.down, layout.across)):
        n = plane.shape[k]
        size = max(1, int(round(n * voxel_mm[a] / step)))
        plane = np.take(plane, np.minimum(((np.arange(size) + 0.5) * n / size).astype(int), n - 1), axis=k)
    return np.ascontiguousarray(plane)


def edge_labels(layout: PlaneLayout, height: int, width: int, scale: int = 2) -> list[tuple[str, int, int]]:
    """Where the direction letters go on a drawn plane of ``height`` x ``width`` pixels.

    Returns:
        ``(letter, row, col)`` of each glyph's top-left corner: ``layout.sides`` at the middle of
        the left, right, top and bottom edges, just inside them.
    """
    gh, gw, margin = 5 * scale, 3 * scale, 1 + scale
    row, col = (height - gh) // 2, (width - gw) // 2
    return [(layout.sides["left"], row, margin), (layout.sides["right"], row, width - margin - gw),
            (layout.sides["top"], margin, col), (layout.sides["bottom"], height - margin - gh, col)]


def slice_axis_title(affine: np.ndarray, axis: int) -> str:
    """The per-slice PSNR curve's x-axis title: the voxel axis, its slices' plane, direction and spacing (mm)."""
    code = axcodes(np.asarray(affine, dtype=np.float64))[axis]
    step = float(spacing(np.asarray(affine, dtype=np.float64))[axis])
    return (f"slice index along voxel axis {axis} ({PLANE_NAMES[code]} slices, {_OPPOSITE[code]} to {code}, "
            f"{step:.3g} mm apart)")


def colour_bar_ticks(hi: float) -> list[tuple[float, str]]:
    """The error colour bar's ticks, bottom to top: ``(value, label)`` at 0, ``hi / 2`` and ``hi`` (intensity units)."""
    return [(v, f"{v:.3g}") for v in (0.0, hi / 2, hi)]


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write an ``(H, W)`` or ``(H, W, 3)`` uint8 array as an 8-bit PNG (grey or RGB)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    height, width = image.shape[:2]
    colour = 2 if image.ndim == 3 else 0
    rows = image.reshape(height, -1)
    raw = b"".join(b"\x00" + rows[i].tobytes() for i in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    Path(path).write_bytes(data)
    return Path(path)


def _text(canvas: np.ndarray, text: str, row: int, col: int, colour: tuple[int, int, int], scale: int = 2) -> None:
    """Draw ``text`` (upper-cased; unknown characters as blanks) with its top-left corner at (row, col)."""
    for ch in text.upper():
        glyph = _GLYPHS.get(ch, _GLYPHS[" "])
        for r, line in enumerate(glyph):
            for c, on in enumerate(line):
                if on == "#":
                    r0, c0 = row + r * scale, col + c * scale
                    canvas[max(r0, 0):max(r0 + scale, 0), max(c0, 0):max(c0 + scale, 0)] = colour
        col += 4 * scale


def _text_width(text: str, scale: int = 2) -> int:
    return 4 * scale * len(text) - scale


def _grey(plane: np.ndarray, lo: float, hi: float) -> np.ndarray:
    v = np.clip((plane - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    g = (255 * v).astype(np.uint8)
    return np.stack([g, g, g], -1)


def _hot(plane: np.ndarray, hi: float) -> np.ndarray:
    """Black -> red -> yellow -> white."""
    v = np.clip(plane / max(hi, 1e-12), 0.0, 1.0) * 3.0
    rgb = np.stack([np.clip(v, 0, 1), np.clip(v - 1, 0, 1), np.clip(v - 2, 0, 1)], -1)
    return (255 * rgb).astype(np.uint8)


def _nearest_on_grid(low: Volume, shape: tuple[int, int, int]) -> np.ndarray:
    """LR's first channel on a grid of ``shape`` with the same field of view, nearest neighbour."""
    out = np.asarray(low.array)[0]
    for axis, n in enumerate(shape):
        m = out.shape[axis]
        index = np.minimum(((np.arange(n) + 0.5) * m / n).astype(int), m - 1)
        out = np.take(out, index, axis=axis)
    return out


def _colour_bar(height: int, hi: float, scale: int = 2) -> np.ndarray:
    """The error maps' colour bar, ``height`` pixels tall: black (0, bottom) to white (``hi``, top) as
    :func:`_hot` draws them, with :func:`colour_bar_ticks`' values on its right (intensity units)."""
    bar = 12
    ticks = colour_bar_ticks(hi)
    canvas = np.full((height, bar + 6 + max(_text_width(label, scale) for _, label in ticks), 3), 255, np.uint8)
    canvas[:, :bar] = _hot(np.linspace(hi, 0.0, height)[:, None].repeat(bar, 1), hi)
    canvas[[0, -1], :bar] = _BLACK
    canvas[:, [0, bar - 1]] = _BLACK
    glyph_h = 5 * scale
    for value, label in ticks:
        row = int(round((height - 1) * (1 - value / hi)))
        canvas[max(row - 1, 0):row + 1, bar:bar + 3] = _BLACK
        _text(canvas, label, min(max(row - glyph_h // 2, 0), height - glyph_h), bar + 6, _BLACK, scale)
    return canvas


def _view_figure(panels: list[tuple[str, np.ndarray, str]], window: tuple[float, float], err_max: float,
                 title: list[str], layout: PlaneLayout, zoom: int = 3) -> np.ndarray:
    """Panels side by side under the ``title`` lines and their names, with ``layout``'s direction
    letters on their edges; below each, a ``zoom``x inset of its centre (yellow box); on the right,
    the error maps' colour bar (0 to ``err_max``, intensity units)."""
    grow = max(1, 128 // max(panels[0][1].shape))  # small volumes: enlarge to be visible
    panels = [(name, plane.repeat(grow, 0).repeat(grow, 1), kind) for name, plane, kind in panels]
    h, w = panels[0][1].shape
    ch, cw = max(4, h // (2 * zoom) * 2), max(4, w // (2 * zoom) * 2)
    r0, c0 = h // 2 - ch // 2, w // 2 - cw // 2
    pad, label, line = 6, 18, 14
    head = pad + line * len(title)
    ih, iw = ch * zoom, cw * zoom
    cell_w = max(w, iw, max(_text_width(name) for name, _, _ in panels))
    bar = _colour_bar(h, err_max)
    bar_titles = ("|ERROR|", "INTENSITY")
    bar_w = max(bar.shape[1], *(_text_width(text) for text in bar_titles))
    width = max(len(panels) * (cell_w + pad) + pad + bar_w + pad, max(_text_width(text) for text in title) + 2 * pad)
    canvas = np.full((head + label + h + pad + ih + pad, width, 3), 255, np.uint8)
    for k, text in enumerate(title):
        _text(canvas, text, pad + k * line, pad, _BLACK)
    top = head + label
    for i, (name, plane, kind) in enumerate(panels):
        rgb = _grey(plane, *window) if kind == "image" else _hot(plane, err_max)
        inset = rgb[r0:r0 + ch, c0:c0 + cw].repeat(zoom, 0).repeat(zoom, 1)
        yellow = (255, 220, 0)
        boxed = rgb.copy()
        boxed[r0, c0:c0 + cw] = boxed[r0 + ch - 1, c0:c0 + cw] = yellow
        boxed[r0:r0 + ch, c0] = boxed[r0:r0 + ch, c0 + cw - 1] = yellow
        for letter, row, col in edge_labels(layout, h, w):
            boxed[max(row - 1, 0):row + 11, max(col - 1, 0):col + 7] = _BLACK
            _text(boxed, letter, row, col, _LETTER)
        x = pad + i * (cell_w + pad)
        _text(canvas, name, head + 4, x, _BLACK)
        canvas[top:top + h, x:x + w] = boxed
        canvas[top + h + pad:top + h + pad + ih, x:x + iw] = inset
    x = pad + len(panels) * (cell_w + pad)
    _text(canvas, bar_titles[0], head + 4, x, _BLACK)
    canvas[top:top + h, x:x + bar.shape[1]] = bar
    _text(canvas, bar_titles[1], top + h + pad, x, _BLACK)
    return canvas


def view_figure(panels: Sequence[tuple[str, np.ndarray, str]], affine: np.ndarray, axis: int, index: int,
                window: tuple[float, float], err_max: float) -> tuple[np.ndarray, list[str]]:
    """One view of a comparison figure, as ``write_report`` draws it (the quality benchmark too).

    Args:
        panels: ``(name, array (X, Y, Z) on the grid of affine, kind)`` per column, kind ``"image"``
            or ``"error"`` (drawn in the hot map against the colour bar).
        affine: ``(4, 4)`` voxel -> RAS (mm) of the arrays.
        axis: the voxel axis the plane is perpendicular to; index: the plane along it.
        window: the grey images' intensity window (low, high); err_max: the colour bar's top.

    Returns:
        ``(RGB uint8 image (rows, cols, 3), title lines)``: the plane named and drawn radiologically
        (:func:`plane_layout`), direction letters on the edges, a zoomed inset below each panel.
    """
    layout = plane_layout(affine, axis)
    voxel_mm = spacing(affine)
    drawn = [(name, oriented_plane(a, layout, index, voxel_mm), kind) for name, a, kind in panels]
    title = [_view_title(layout, index), _CONVENTION_NOTE[layout.name]]
    return _view_figure(drawn, window, err_max, title, layout), title


def _view_title(layout: PlaneLayout, index: int) -> str:
    """A view figure's first title line: the plane's name, where it is, how oblique."""
    text = f"{layout.name} plane: slice {index} of voxel axis {layout.axis}"
    if layout.tilt_deg >= 0.5:
        text += f", oblique ({layout.tilt_deg:.0f} deg from {layout.name})"
    return text


def _line(canvas: np.ndarray, p: tuple[float, float], q: tuple[float, float], colour: tuple[int, int, int]) -> None:
    n = int(max(abs(q[0] - p[0]), abs(q[1] - p[1]))) + 2
    rows = np.round(np.linspace(p[0], q[0], n)).astype(int)
    cols = np.round(np.linspace(p[1], q[1], n)).astype(int)
    for dr in (0, 1):
        canvas[np.clip(rows + dr, 0, canvas.shape[0] - 1), np.clip(cols, 0, canvas.shape[1] - 1)] = colour


#: The per-slice PSNR figure's margins around the plot (pixels): left, right, top, bottom.
_CURVE_MARGINS = (60, 20, 36, 56)


def _curve_point(i: float, v: float, n: int, lo: float, hi: float, width: int, height: int) -> tuple[float, float]:
    """Where slice ``i`` at PSNR ``v`` goes on the per-slice figure: (row, col)."""
    left, right, top, bottom = _CURVE_MARGINS
    x = left + (width - left - right) * (i / max(n - 1, 1))
    y = top + (height - top - bottom) * (1 - (v - lo) / (hi - lo))
    return y, x


def curve_labels(names: list[str], n: int, lo: float, hi: float, x_title: str, y_title: str = "PSNR (dB)",
                 width: int = 640, height: int = 340) -> list[tuple[str, int, int]]:
    """The texts of the per-slice PSNR figure and where they go: ``(text, row, col)`` of each top-left corner.

    In order: ``y_title`` above the y axis (top left); ``x_title`` centred under the x axis; the
    y ticks (``lo``, the middle and ``hi``, dB) left of the y axis; the x ticks (slice indices 0,
    the middle and ``n - 1``) under the x axis; the legend (``names``) at the top right.
    """
    left, right, top, bottom = _CURVE_MARGINS
    out = [(y_title, 10, 4), (x_title, height - 18, (width - _text_width(x_title)) // 2)]
    for value in (lo, (lo + hi) / 2, hi):
        row, _ = _curve_point(0, value, n, lo, hi, width, height)
        text = f"{value:.1f}"
        out.append((text, int(row) - 5, left - 8 - _text_width(text)))
    for i in sorted({0, (n - 1) // 2, n - 1}):
        _, col = _curve_point(i, lo, n, lo, hi, width, height)
        out.append((str(i), height - bottom + 9, int(col) - _text_width(str(i)) // 2))
    col = width - right - sum(_text_width(name) + 24 for name in names) + 24
    for name in names:
        out.append((name, 10, col))
        col += _text_width(name) + 24
    return out


def _curve_figure(curves: list[tuple[str, list[float | None], tuple[int, int, int]]], x_title: str,
                  y_title: str = "PSNR (dB)", width: int = 640, height: int = 340) -> np.ndarray:
    """PSNR per slice: one polyline per curve, y from the lowest to the highest finite value, with
    axis titles, ticks and legend as :func:`curve_labels` places them."""
    width = max(width, _text_width(x_title) + 16)
    canvas = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = _CURVE_MARGINS
    finite = [v for _, c, _ in curves for v in c if v is not None and math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if hi - lo < 1e-6:
        lo, hi = lo - 1.0, hi + 1.0
    n = max(len(c) for _, c, _ in curves)
    _line(canvas, (top, left), (height - bottom, left), _BLACK)
    _line(canvas, (height - bottom, left), (height - bottom, width - right), _BLACK)
    for _, values, colour in curves:
        points = [(i, v) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
        for (i, v), (j, u) in zip(points, points[1:], strict=False):
            if j == i + 1:
                _line(canvas, _curve_point(i, v, n, lo, hi, width, height),
                      _curve_point(j, u, n, lo, hi, width, height), colour)
        for i, v in points:
            y, x = _curve_point(i, v, n, lo, hi, width, height)
            canvas[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2] = colour
    for value in (lo, (lo + hi) / 2, hi):
        y, _ = _curve_point(0, value, n, lo, hi, width, height)
        _line(canvas, (y, left - 5), (y, left), _BLACK)
    for i in {0, (n - 1) // 2, n - 1}:
        _, x = _curve_point(i, lo, n, lo, hi, width, height)
        _line(canvas, (height - bottom, x), (height - bottom + 5, x), _BLACK)
    labels = curve_labels([name for name, _, _ in curves], n, lo, hi, x_title, y_title, width, height)
    legend = len(labels) - len(curves)  # the legend comes last, one entry per curve in its colour
    for k, (text, row, col) in enumerate(labels):
        _text(canvas, text, row, col, curves[k - legend][2] if k >= legend else _BLACK)
    return canvas


def _fmt(value: Any, digits: int) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


#: How the page lists the inputs, in the order the pipeline makes them: role -> label.
_ROLES = {
    "reference": "reference (HR)",
    "low_resolution": "low-resolution input (LR)",
    "cubic": "tricubic baseline (CUBIC)",
    "prediction": "prediction (SR)",
}
#: What each figure column shows.
_COLUMNS = {
    "LR": "the low-resolution input, nearest neighbour",
    "CUBIC": "the tricubic baseline",
    "SR": "the prediction",
    "HR": "the reference",
    "|CUBIC-HR|": "the baseline's absolute error",
    "|SR-HR|": "the prediction's absolute error",
}


def _html(title: str, metrics: dict[str, Any], figures: list[tuple[str, str]], columns: list[str],
          sources: dict[str, str], window: tuple[float, float], err_max: float) -> str:
    rows = [("SR (prediction)", metrics)]
    if "cubic" in metrics:
        rows.append(("tricubic", metrics["cubic"]))
    table = "\n".join(
        f"<tr><td>{html.escape(name)}</td><td>{_fmt(m['psnr_db'], 3)}</td><td>{_fmt(m['ssim'], 4)}</td>"
        f"<td>{_fmt(m['nrmse'], 4)}</td></tr>" for name, m in rows)
    if "cubic" in metrics:
        gain = metrics["psnr_db"] - metrics["cubic"]["psnr_db"]
        table += f"\n<tr><td>SR - tricubic</td><td>{_fmt(gain, 3)}</td>" \
                 f"<td>{_fmt(metrics['ssim'] - metrics['cubic']['ssim'], 4)}</td><td></td></tr>"
    inputs = "\n".join(f"<li>{html.escape(_ROLES[k])}: <code>{html.escape(v)}</code></li>" for k, v in sources.items())
    described = ", ".join(f"{name} ({_COLUMNS[name]})" for name in columns)
    images = "\n".join(
        f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>" for src, caption in figures)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
{_MARKER}
<title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #999; padding: 0.3em 0.8em; text-align: right; }}
td:first-child {{ text-align: left; }}
img {{ image-rendering: pixelated; max-width: 100%; }}
</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<ul>
{inputs}
</ul>
<p>Inside the foreground mask ({html.escape(str(metrics.get('mask', 'auto')))}: {metrics['mask_voxels']} voxels,
{100 * metrics['mask_fraction']:.1f} % of the volume). PSNR's peak is the reference's range in the mask;
SSIM: 3D Gaussian window (11 voxels, sigma 1.5) over the mask's bounding box; NRMSE: RMSE / that range.</p>
<table>
<tr><th></th><th>PSNR (dB)</th><th>SSIM</th><th>NRMSE</th></tr>
{table}
</table>
<h2>Views through the mask's centre</h2>
<p>Columns: {html.escape(described)}. Second row: 3x zoom of the yellow box.
Images share one intensity window ({window[0]:.4g} to {window[1]:.4g}); the error maps share another, in the
reference's intensity units, black at 0 to white at {err_max:.4g} (the colour bar on the right).</p>
<p>Each view is the anatomical plane closest to it (from the RAS affine), drawn in the {CONVENTION}
convention: axial planes seen from the feet and coronal planes from the front, the patient's right on the
image's left; sagittal planes seen from the patient's left, anterior on the image's left. The letters on the
image edges name the patient's directions there (R/L right/left, A/P anterior/posterior, S/I superior/inferior).</p>
{images}
<p><a href="metrics.json">metrics.json</a></p>
</body>
</html>
"""


def check_replaceable_report(folder: Path) -> None:
    """Refuse to replace an existing folder that is not an mrisr report (``--force`` replaces only reports).

    Raises:
        OutputError: ``folder`` holds anything but what :func:`write_report` writes.
    """
    if not _is_report(folder):
        raise OutputError("exists and is not an mrisr report folder; refusing to delete it", folder,
                          "choose a new folder")


def _is_report(folder: Path) -> bool:
    """An mrisr report folder: index.html with the generator marker, and only report files."""
    index = folder / "index.html"
    try:
        if _MARKER not in index.read_text(encoding="utf-8", errors="replace"):
            return False
        return all(e.is_file(follow_symlinks=False) and e.name.endswith(_REPORT_FILES) for e in os.scandir(folder))
    except OSError:
        return False


def _own_name(volume: Volume, default: str, others: list[Volume | None]) -> str:
    """The file ``volume`` was read from, unless it is another input's (an in-memory result that kept
    that input's meta): then ``default`` marked as in memory."""
    name = volume_name(volume, "")
    if not name:
        return default
    if any(other is not None and volume_name(other, "") == name for other in others):
        return f"{default} (in memory)"
    return name


def report_names(reference: Volume, prediction: Volume, *, low_resolution: Volume | None = None,
                 cubic: Volume | None = None, metrics: Mapping[str, Any] | None = None,
                 names: Mapping[str, str] | None = None) -> dict[str, str]:
    """How a report names its inputs: role -> a path or a description, for ``reference``,
    ``low_resolution`` and ``cubic`` (when LR or a baseline is given) and ``prediction``, in that order.

    Taken from, in order: ``names``; the paths ``metrics`` records under ``reference``,
    ``prediction`` and ``low_resolution`` (as ``mrisr evaluate`` and the demo record them); the
    file each volume was read from (``meta["source_paths"]``). A volume whose recorded file is
    another input's (a result made in memory keeps its input's meta) is not named by that file.
    Without a name, the tricubic baseline is described as the interpolation of the LR input.
    """
    given = {role: str(value) for role, value in (names or {}).items()}
    for role in ("reference", "prediction", "low_resolution"):
        value = (metrics or {}).get(role)
        if role not in given and isinstance(value, str):
            given[role] = value
    out = {"reference": given.get("reference") or volume_name(reference, "the reference")}
    if low_resolution is not None:
        out["low_resolution"] = given.get("low_resolution") or _own_name(
            low_resolution, "the low-resolution input", [reference])
    if low_resolution is not None or cubic is not None:
        if "cubic" in given:
            out["cubic"] = given["cubic"]
        elif low_resolution is not None:
            out["cubic"] = f"tricubic interpolation of {out['low_resolution']} (mrisr.preprocess.cubic_baseline)"
        else:
            out["cubic"] = _own_name(cubic, "the tricubic baseline", [reference])  # type: ignore[arg-type]
    out["prediction"] = given.get("prediction") or _own_name(
        prediction, "the prediction", [reference, low_resolution, cubic])
    return out


def write_report(folder: str | os.PathLike[str], reference: Volume, prediction: Volume, *,
                 low_resolution: Volume | None = None, cubic: Volume | None = None,
                 metrics: dict[str, Any] | None = None, mask: Any = "auto", axis: int | None = None,
                 names: Mapping[str, str] | None = None, force: bool = False) -> Path:
    """Write a visual report into the new folder ``folder`` (atomically) and return its path.

    Args:
        reference, prediction: HR and SR on the same grid.
        low_resolution: the thick-slice input; shown as its voxels (nearest neighbour) and, unless
            ``cubic`` is given, tricubically upsampled with :func:`~mrisr.preprocess.cubic_baseline`.
        cubic: the tricubic baseline on the reference grid.
        metrics: the output of :func:`~mrisr.evaluate.evaluate` (with a ``cubic`` entry for the
            baseline's); computed when absent.
        mask: the foreground mask (see :func:`~mrisr.evaluate.evaluate`); its centre places the views.
        axis: the per-slice axis when ``metrics`` is computed here (default: LR's coarse axis, else 2).
        names: how the page names the inputs, role (``reference``, ``low_resolution``, ``cubic``,
            ``prediction``) -> path; missing roles as :func:`report_names` finds them.
        force: replace an existing report folder (only one mrisr wrote).

    Raises:
        OutputError: the folder exists (without ``force``, or is not an mrisr report).
        InputError: the volumes are on different grids.
    """
    folder = Path(folder)
    sources = report_names(reference, prediction, low_resolution=low_resolution, cubic=cubic, metrics=metrics,
                           names=names)
    ref_name, pred_name = sources["reference"], sources["prediction"]
    check_same_grid(reference, prediction, ref_name, pred_name)
    if low_resolution is not None and cubic is None:
        cubic = cubic_baseline(low_resolution, reference, meta={"source_paths": ["tricubic"]})
    if cubic is not None:
        check_same_grid(reference, cubic, ref_name, "the cubic baseline")
    if metrics is None:
        if axis is None:
            axis = 2 if low_resolution is None else coarse_axis(low_resolution.affine, low_resolution.shape,
                                                                reference.affine, reference.shape)
        metrics = evaluate(reference, prediction, mask, axis=axis, names=(ref_name, pred_name))
        if cubic is not None:
            metrics["cubic"] = evaluate(reference, cubic, mask, axis=axis, names=(ref_name, "the cubic baseline"))
    mask3 = resolve_mask(reference, mask)
    centre = np.round(np.argwhere(mask3).mean(0)).astype(int)

    hr = np.asarray(reference.array)[0]
    sr = np.asarray(prediction.array)[0]
    cu = None if cubic is None else np.asarray(cubic.array)[0]
    lr = None if low_resolution is None else _nearest_on_grid(low_resolution, reference.shape)
    inside = hr[mask3]
    window = (float(np.percentile(inside, 0.5)), float(np.percentile(inside, 99.5)))
    errors = [np.abs(sr - hr)] + ([] if cu is None else [np.abs(cu - hr)])
    err_max = max(float(np.percentile(np.concatenate([e[mask3] for e in errors]), 99.5)), 1e-6)
    columns = (["LR"] if lr is not None else []) + (["CUBIC"] if cu is not None else []) + ["SR", "HR"] \
        + (["|CUBIC-HR|"] if cu is not None else []) + ["|SR-HR|"]

    if os.path.lexists(folder) and force and folder.is_dir() and not folder.is_symlink():
        check_replaceable_report(folder)
        aside = _sibling(folder, "old")
        os.replace(folder, aside)
    else:
        aside = None
    try:
        with atomic_output(folder, force) as tmp:
            tmp.mkdir()
            figures = []
            volumes = ([lr] if lr is not None else []) + ([cu] if cu is not None else []) + [sr, hr] \
                + ([errors[1]] if cu is not None else []) + [errors[0]]
            kinds = ["image"] * (len(volumes) - len(errors)) + ["error"] * len(errors)
            panels3d = list(zip(columns, volumes, kinds, strict=True))
            for view in range(3):
                image, title = view_figure(panels3d, reference.affine, view, int(centre[view]), window, err_max)
                write_png(tmp / f"view_{view}.png", image)
                figures.append((f"view_{view}.png", f"{title[0]} through the mask's centre ({title[1]})"))
            curves = [("SR", metrics["slice_psnr_db"], (31, 119, 180))]
            if "cubic" in metrics:
                curves.append(("CUBIC", metrics["cubic"]["slice_psnr_db"], (255, 127, 14)))
            x_title = slice_axis_title(reference.affine, int(metrics["axis"]))
            write_png(tmp / "slice_psnr.png", _curve_figure(curves, x_title))
            figures.append(("slice_psnr.png", f"PSNR (dB) per slice; x: {x_title}"))
            metrics_json = json.dumps(json_ready(metrics, nan=None), indent=2) + "\n"
            (tmp / "metrics.json").write_text(metrics_json, encoding="utf-8")
            (tmp / "index.html").write_text(
                _html(f"mrisr evaluation: {Path(pred_name).name}", metrics, figures, columns, sources, window,
                      err_max),
                encoding="utf-8")
    except BaseException:
        if aside is not None and not os.path.lexists(folder):
            os.replace(aside, folder)
        raise
    if aside is not None:
        import shutil

        shutil.rmtree(aside, ignore_errors=True)
    return folder
