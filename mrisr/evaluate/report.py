"""A visual evaluation report: PNG figures and an ``index.html`` page, written atomically.

Figures (no plotting library: PNGs are written with numpy and zlib, labels with a 3x5 bitmap font):

- ``view_0.png``, ``view_1.png``, ``view_2.png``: the planes through the mask's centre
  perpendicular to voxel axes 0, 1, 2. Columns: LR (nearest-neighbour on the reference grid,
  showing its thick voxels), tricubic (:func:`mrisr.preprocess.pre_upsample`), SR, HR, |cubic-HR|
  and |SR-HR|; the LR and cubic columns are present only when given. The second row is a 3x
  zoomed inset of the yellow box around the centre. Intensities share one window (HR's 0.5-99.5
  percentiles in the mask); the error maps share another (0 to the 99.5th percentile of the errors).
- ``slice_psnr.png``: PSNR per slice along the evaluation axis, SR (blue) and cubic (orange).
"""

from __future__ import annotations

import html
import json
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import OutputError
from ..export.sidecar import json_ready
from ..io.atomic import _sibling, atomic_output
from ..preprocess import pre_upsample
from ..volume import Volume
from .metrics import check_same_grid, evaluate, resolve_mask, volume_name

__all__ = ["write_report", "write_png"]

#: Marks a folder as an mrisr report, which ``force`` may replace.
_MARKER = '<meta name="generator" content="mrisr evaluate">'
_REPORT_FILES = (".png", ".html", ".json")

# 3x5 bitmap glyphs, one row per string, '#' on.
_GLYPHS = {
    "0": ("###", "#.#", "#.#", "#.#", "###"), "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"), "3": ("###", "..#", "###", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"), "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"), "7": ("###", "..#", "..#", "..#", "..#"),
    "8": ("###", "#.#", "###", "#.#", "###"), "9": ("###", "#.#", "###", "..#", "###"),
    "A": (".#.", "#.#", "###", "#.#", "#.#"), "B": ("##.", "#.#", "##.", "#.#", "##."),
    "C": ("###", "#..", "#..", "#..", "###"), "D": ("##.", "#.#", "#.#", "#.#", "##."),
    "E": ("###", "#..", "##.", "#..", "###"), "H": ("#.#", "#.#", "###", "#.#", "#.#"),
    "I": ("###", ".#.", ".#.", ".#.", "###"), "L": ("#..", "#..", "#..", "#..", "###"),
    "N": ("##.", "#.#", "#.#", "#.#", "#.#"), "P": ("###", "#.#", "###", "#..", "#.."),
    "R": ("##.", "#.#", "##.", "#.#", "#.#"), "S": ("###", "#..", "###", "..#", "###"),
    "U": ("#.#", "#.#", "#.#", "#.#", "###"), "X": ("#.#", "#.#", ".#.", "#.#", "#.#"),
    "|": (".#.", ".#.", ".#.", ".#.", ".#."), "-": ("...", "...", "###", "...", "..."),
    ".": ("...", "...", "...", "...", ".#."), " ": ("...", "...", "...", "...", "..."),
}


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


def _plane(volume: np.ndarray, axis: int, index: int, spacing: np.ndarray) -> np.ndarray:
    """The plane through ``index`` perpendicular to voxel ``axis``: the first remaining axis runs left to
    right, the second bottom to top; pixels resampled (nearest) to square millimetres."""
    rest = [a for a in range(3) if a != axis]
    plane = np.take(volume, index, axis=axis)  # (n_rest0, n_rest1)
    step = float(min(spacing[rest]))
    for k, a in enumerate(rest):
        n = plane.shape[k]
        size = max(1, int(round(n * spacing[a] / step)))
        plane = np.take(plane, np.minimum(((np.arange(size) + 0.5) * n / size).astype(int), n - 1), axis=k)
    return plane.T[::-1]


def _view_figure(panels: list[tuple[str, np.ndarray, str]], window: tuple[float, float], err_max: float,
                 zoom: int = 3) -> np.ndarray:
    """Panels side by side with labels above; below each, a ``zoom``x inset of its centre (yellow box)."""
    grow = max(1, 128 // max(panels[0][1].shape))  # small volumes: enlarge to be visible
    panels = [(name, plane.repeat(grow, 0).repeat(grow, 1), kind) for name, plane, kind in panels]
    h, w = panels[0][1].shape
    ch, cw = max(4, h // (2 * zoom) * 2), max(4, w // (2 * zoom) * 2)
    r0, c0 = h // 2 - ch // 2, w // 2 - cw // 2
    pad, label = 6, 18
    ih, iw = ch * zoom, cw * zoom
    cell_w = max(w, iw, max(_text_width(name) for name, _, _ in panels))
    canvas = np.full((label + h + pad + ih + pad, len(panels) * (cell_w + pad) + pad, 3), 255, np.uint8)
    for i, (name, plane, kind) in enumerate(panels):
        rgb = _grey(plane, *window) if kind == "image" else _hot(plane, err_max)
        inset = rgb[r0:r0 + ch, c0:c0 + cw].repeat(zoom, 0).repeat(zoom, 1)
        yellow = (255, 220, 0)
        boxed = rgb.copy()
        boxed[r0, c0:c0 + cw] = boxed[r0 + ch - 1, c0:c0 + cw] = yellow
        boxed[r0:r0 + ch, c0] = boxed[r0:r0 + ch, c0 + cw - 1] = yellow
        x = pad + i * (cell_w + pad)
        _text(canvas, name, 4, x, (0, 0, 0))
        canvas[label:label + h, x:x + w] = boxed
        canvas[label + h + pad:label + h + pad + ih, x:x + iw] = inset
    return canvas


def _line(canvas: np.ndarray, p: tuple[float, float], q: tuple[float, float], colour: tuple[int, int, int]) -> None:
    n = int(max(abs(q[0] - p[0]), abs(q[1] - p[1]))) + 2
    rows = np.round(np.linspace(p[0], q[0], n)).astype(int)
    cols = np.round(np.linspace(p[1], q[1], n)).astype(int)
    for dr in (0, 1):
        canvas[np.clip(rows + dr, 0, canvas.shape[0] - 1), np.clip(cols, 0, canvas.shape[1] - 1)] = colour


def _curve_figure(curves: list[tuple[str, list[float | None], tuple[int, int, int]]],
                  width: int = 640, height: int = 320) -> np.ndarray:
    """PSNR per slice: one polyline per curve, y from the lowest to the highest finite value."""
    canvas = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 60, 20, 30, 30
    finite = [v for _, c, _ in curves for v in c if v is not None and math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if hi - lo < 1e-6:
        lo, hi = lo - 1.0, hi + 1.0
    n = max(len(c) for _, c, _ in curves)
    black = (0, 0, 0)
    _line(canvas, (top, left), (height - bottom, left), black)
    _line(canvas, (height - bottom, left), (height - bottom, width - right), black)

    def at(i: int, v: float) -> tuple[float, float]:
        x = left + (width - left - right) * (i / max(n - 1, 1))
        y = top + (height - top - bottom) * (1 - (v - lo) / (hi - lo))
        return y, x

    for _, values, colour in curves:
        points = [(i, v) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
        for (i, v), (j, u) in zip(points, points[1:], strict=False):
            if j == i + 1:
                _line(canvas, at(i, v), at(j, u), colour)
        for i, v in points:
            y, x = at(i, v)
            canvas[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2] = colour
    _text(canvas, f"{hi:.1f}", top - 4, 4, black)
    _text(canvas, f"{lo:.1f}", height - bottom - 6, 4, black)
    _text(canvas, "PSNR DB", 8, 4, black)
    _text(canvas, "0", height - bottom + 8, left - 2, black)
    _text(canvas, str(n - 1), height - bottom + 8, width - right - _text_width(str(n - 1)), black)
    x = left + 20
    for name, _, colour in curves:
        _text(canvas, name, 8, x, colour)
        x += _text_width(name) + 24
    return canvas


def _fmt(value: Any, digits: int) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def _html(title: str, metrics: dict[str, Any], figures: list[tuple[str, str]], columns: list[str],
          sources: dict[str, str]) -> str:
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
    inputs = "\n".join(f"<li>{html.escape(k)}: <code>{html.escape(v)}</code></li>" for k, v in sources.items())
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
<p>Columns: {html.escape(', '.join(columns))}. Second row: 3x zoom of the yellow box.
Images share one intensity window, error maps another.</p>
{images}
<p><a href="metrics.json">metrics.json</a></p>
</body>
</html>
"""


def _is_report(folder: Path) -> bool:
    """An mrisr report folder: index.html with the generator marker, and only report files."""
    index = folder / "index.html"
    try:
        if _MARKER not in index.read_text(encoding="utf-8", errors="replace"):
            return False
        return all(e.is_file(follow_symlinks=False) and e.name.endswith(_REPORT_FILES) for e in os.scandir(folder))
    except OSError:
        return False


def write_report(folder: str | os.PathLike[str], reference: Volume, prediction: Volume, *,
                 low_resolution: Volume | None = None, cubic: Volume | None = None,
                 metrics: dict[str, Any] | None = None, mask: Any = "auto", axis: int | None = None,
                 force: bool = False) -> Path:
    """Write a visual report into the new folder ``folder`` (atomically) and return its path.

    Args:
        reference, prediction: HR and SR on the same grid.
        low_resolution: the thick-slice input; shown as its voxels (nearest neighbour) and, unless
            ``cubic`` is given, tricubically upsampled with :func:`~mrisr.preprocess.pre_upsample`.
        cubic: the tricubic baseline on the reference grid.
        metrics: the output of :func:`~mrisr.evaluate.evaluate` (with a ``cubic`` entry for the
            baseline's); computed when absent.
        mask: the foreground mask (see :func:`~mrisr.evaluate.evaluate`); its centre places the views.
        axis: the per-slice axis when ``metrics`` is computed here (default: LR's coarse axis, else 2).
        force: replace an existing report folder (only one mrisr wrote).

    Raises:
        OutputError: the folder exists (without ``force``, or is not an mrisr report).
        InputError: the volumes are on different grids.
    """
    folder = Path(folder)
    ref_name, pred_name = volume_name(reference, "reference"), volume_name(prediction, "prediction")
    check_same_grid(reference, prediction, ref_name, pred_name)
    if low_resolution is not None and cubic is None:
        up = pre_upsample(torch.as_tensor(np.asarray(low_resolution.array)), low_resolution.affine,
                          reference.affine, reference.shape)
        cubic = reference.replace(array=up.numpy(), meta={"source_paths": ["tricubic"]})
    if cubic is not None:
        check_same_grid(reference, cubic, ref_name, "the cubic baseline")
    if metrics is None:
        if axis is None:
            axis = 2 if low_resolution is None else int(np.argmax(
                np.asarray(low_resolution.spacing) / np.asarray(reference.spacing)))
        metrics = evaluate(reference, prediction, mask, axis=axis)
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
    spacing = np.asarray(reference.spacing, dtype=float)

    if os.path.lexists(folder) and force and folder.is_dir() and not folder.is_symlink():
        if not _is_report(folder):
            raise OutputError("exists and is not an mrisr report folder; refusing to delete it", folder,
                              "choose a new folder")
        aside = _sibling(folder, "old")
        os.replace(folder, aside)
    else:
        aside = None
    try:
        with atomic_output(folder, force) as tmp:
            tmp.mkdir()
            figures = []
            for view in range(3):
                volumes = ([lr] if lr is not None else []) + ([cu] if cu is not None else []) + [sr, hr] \
                    + ([errors[1]] if cu is not None else []) + [errors[0]]
                kinds = ["image"] * (len(volumes) - len(errors)) + ["error"] * len(errors)
                panels = [(name, _plane(v, view, int(centre[view]), spacing), kind)
                          for name, v, kind in zip(columns, volumes, kinds, strict=True)]
                write_png(tmp / f"view_{view}.png", _view_figure(panels, window, err_max))
                figures.append((f"view_{view}.png", f"plane {int(centre[view])} perpendicular to voxel axis {view}"))
            curves = [("SR", metrics["slice_psnr_db"], (31, 119, 180))]
            if "cubic" in metrics:
                curves.append(("CUBIC", metrics["cubic"]["slice_psnr_db"], (255, 127, 14)))
            write_png(tmp / "slice_psnr.png", _curve_figure(curves))
            figures.append(("slice_psnr.png", f"PSNR (dB) per slice along voxel axis {metrics['axis']}"))
            sources = {"reference (HR)": ref_name, "prediction (SR)": pred_name}
            if low_resolution is not None:
                sources["low resolution (LR)"] = volume_name(low_resolution, "low resolution")
            metrics_json = json.dumps(json_ready(metrics, nan=None), indent=2) + "\n"
            (tmp / "metrics.json").write_text(metrics_json, encoding="utf-8")
            (tmp / "index.html").write_text(
                _html(f"mrisr evaluation: {Path(pred_name).name}", metrics, figures, columns, sources),
                encoding="utf-8")
    except BaseException:
        if aside is not None and not os.path.lexists(folder):
            os.replace(aside, folder)
        raise
    if aside is not None:
        import shutil

        shutil.rmtree(aside, ignore_errors=True)
    return folder
