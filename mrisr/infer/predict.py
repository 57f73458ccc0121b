"""``upscale(volume, model) -> Volume``: a trained network applied to a whole volume.

What happens, per channel (a 4D series goes volume by volume):

1. the target grid (:func:`~mrisr.infer.grid.target_grid`) keeps the field of view; the
   coarse axis is the one that grows most (:func:`~mrisr.infer.grid.coarse_axis`);
2. the channel is put on it with :func:`mrisr.preprocess.pre_upsample` and divided by
   :func:`mrisr.preprocess.intensity_scale` of that pre-upsampled image, exactly as
   :func:`mrisr.train.data.make_pair` builds training inputs;
3. the network runs (below), and its output is multiplied back by the same scale.

Decisions:

- **2D models** see the planes that contain the coarse axis, laid out as in training
  (``(h, w)`` = (the partner axis, the coarse axis)), batched along the third axis. Both
  plane families that contain the coarse axis are run and averaged (``fuse_orthogonal``);
  without fusion only the family whose partner is the lowest other axis runs, as in
  validation. Axes with one voxel are never partners. Planes are whole unless ``roi_size``
  (2 values) asks for 2D sliding windows.
- **3D models** run through MONAI's :class:`~monai.inferers.SlidingWindowInferer` with
  Gaussian blending, on the volume permuted to the training patch layout (in-plane axes in
  voxel order, then the coarse axis). ``roi_size`` (patch layout) defaults to the model
  card's training patch size when the card has one, else 64^3, and is clipped to the volume
  (no zero padding beyond it). The windows run on the compute device (``sw_device``); the
  output is assembled there when ``3 x`` its size fits in the free CUDA memory
  (``torch.cuda.mem_get_info``), else on the CPU. AMP autocast (float16) is on under CUDA.
- **Halo.** Gaussian blending still gives a little weight to each window's border, where a
  window lacks context. ``halo=h`` gives every window ``h`` voxels of real context on each
  side (read from the volume, clipped at its faces) and crops them off the output, so that
  for a network whose receptive radius is at most ``h`` (VDSR: ``depth`` voxels) the
  sliding-window result equals one full-volume forward pass. Default 0 (plain MONAI
  windows: cheaper; the border mismatch is small and blended away).
- **Batch size** (``sw_batch_size``: windows, or planes in 2D) unless given: a budget of half
  the free CUDA memory, or on the CPU a quarter of the available memory capped at 1 GiB,
  divided by ``3 x voxels x width x bytes`` per item (``width`` = the network's ``features``,
  64 when unknown; 2 bytes under AMP, else 4), clipped to 1..16 windows or 1..64 planes.
- **Identity grid.** When the target grid equals the input grid (nothing to upscale, e.g. a
  single 2D image at its own spacing) the network still runs as a same-grid restoration
  filter, so the result does not depend on whether a resize happened; but never silently:
  a warning says so, and the ``upscale`` record holds ``identity_grid: true`` and ``ran``.
- **Magnitude images stay non-negative.** When every input value is >= 0 (magnitude MRI),
  the output is clipped at 0: cubic pre-upsampling and the network's residual overshoot at
  the tissue-to-air edge, and a negative magnitude is never real (``clipped_below_zero`` in
  the record counts the voxels). Inputs with negative values (phase, difference images)
  are left as they are.
- **Progress** (``progress=True``): one tqdm bar on stderr over the planes (2D models, all
  plane families and channels) or the sliding windows (3D), with rate and ETA.
- **Normalisation** is per channel (the scale of that channel's pre-upsampled image), so a
  4D series gives exactly the per-volume results.
- The output Volume is float32 on the target grid (affine from ``target_grid``, exact),
  ``meta`` = the source's (``source_paths`` kept, so a writer refuses to overwrite the input)
  plus ``dtype: float32``, the new ``range`` and an ``upscale`` record.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer
from torch import nn

from ..device import resolve_device
from ..errors import InputError, MrisrError
from ..models import resolve_model
from ..models.loaded import LoadedModel, load_model
from ..preprocess import clip_like_magnitude, denormalize, normalize, pre_upsample
from ..volume import Volume
from ..volume import spacing as voxel_spacing
from .grid import coarse_axis, target_grid, upsampled_axes

__all__ = ["load_model", "upscale"]

#: Default 3D window (training patch layout) when the model card names no patch size.
DEFAULT_ROI_3D = (64, 64, 64)


def _spatial_dims(net: nn.Module, config: dict[str, Any]) -> int:
    dims = config.get("spatial_dims", getattr(net, "spatial_dims", None))
    if isinstance(dims, bool) or dims not in (2, 3):
        raise InputError(f"model's spatial_dims is {dims!r}; upscale runs 2D or 3D networks", "model",
                         "give a network with spatial_dims 2 or 3 (its .config or model card says which)")
    return int(dims)


def _model_info(net: nn.Module, card: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    from ..nets import network_name

    try:
        name = card.get("architecture", {}).get("name") or network_name(net)
    except MrisrError:
        name = type(net).__name__
    return {"name": name, "shipped_name": card.get("name"), "config": dict(config),
            "sha256": card.get("weights", {}).get("sha256"),
            "mrisr_version": card.get("mrisr_version")}


# --------------------------------------------------------------------------- memory


def _available_cpu_bytes() -> int:
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def _free_cuda_bytes(dev: torch.device) -> int:
    free, _total = torch.cuda.mem_get_info(dev)
    return int(free)


def _auto_batch(voxels: int, width: int, dev: torch.device, amp: bool, limit: int, reserved: int = 0) -> int:
    """Items per forward pass from free memory (the rule in the module docstring)."""
    per_item = 3 * voxels * max(1, width) * (2 if amp else 4)
    if dev.type == "cuda":
        budget = max(0, _free_cuda_bytes(dev) - reserved) // 2
    else:
        budget = min(_available_cpu_bytes() // 4, 1 << 30)
    return int(max(1, min(limit, budget // per_item)))


# --------------------------------------------------------------------------- running the network


class _Forward:
    """``net(x)`` on the compute device, in float32 out, autocast under CUDA when ``amp``; each
    call advances ``bar`` (a tqdm bar or None) by the items (planes or windows) it ran."""

    def __init__(self, net: nn.Module, dev: torch.device, amp: bool, bar: Any = None) -> None:
        self.net, self.dev, self.amp, self.bar = net, dev, amp and dev.type == "cuda", bar

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=self.amp):
            y = self.net(x.to(self.dev)).float()
        if self.bar is not None:
            self.bar.update(int(x.shape[0]))
        return y


class _HaloPredictor:
    """A sliding-window predictor (``with_coord``) that runs each window with ``halo`` voxels of
    context from ``image`` on each side, clipped at the image's faces, and crops them off."""

    def __init__(self, forward: _Forward, image: torch.Tensor, halo: int) -> None:
        self.forward, self.image, self.halo = forward, image, halo

    def __call__(self, windows: torch.Tensor, coords: Sequence[Sequence[slice]] | None = None) -> torch.Tensor:
        if self.halo == 0 or coords is None:
            return self.forward(windows)
        sizes = self.image.shape[2:]
        regions, crops = [], []
        for s in coords:
            lo = [max(0, sl.start - self.halo) for sl in s[2:]]
            hi = [min(n, sl.stop + self.halo) for sl, n in zip(s[2:], sizes, strict=True)]
            regions.append((s[0], *[slice(a, b) for a, b in zip(lo, hi, strict=True)]))
            crops.append(tuple(slice(sl.start - a, sl.stop - a) for sl, a in zip(s[2:], lo, strict=True)))
        out: list[torch.Tensor | None] = [None] * len(coords)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, region in enumerate(regions):
            groups.setdefault(tuple(r.stop - r.start for r in region[1:]), []).append(i)
        for members in groups.values():
            batch = torch.cat([self.image[(regions[i][0], slice(None), *regions[i][1:])] for i in members])
            result = self.forward(batch)
            for j, i in enumerate(members):
                out[i] = result[(slice(j, j + 1), slice(None), *crops[i])]
        return torch.cat(out)  # type: ignore[arg-type]


def _window_count(image_size: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """How many windows MONAI's sliding-window inferer runs over ``image_size``: its own rule, from
    its helpers (the scan interval is not public API, so the count is only the progress bar's total)."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    size = tuple(int(n) for n in image_size)
    clipped = tuple(min(int(r), n) for r, n in zip(roi, size, strict=True))
    interval = _get_scan_interval(size, clipped, len(size), (float(overlap),) * len(size))
    return len(dense_patch_slices(size, clipped, interval))


def _progress_total(dims: int, hr_shape: Sequence[int], axis: int, partners: Sequence[int],
                    roi: Sequence[int] | None, overlap: float) -> int:
    """Items per channel that the progress bar counts: planes of every fused family (2D, whole
    planes), or sliding windows (3D; 2D with ``roi``); 0 (an open-ended bar) if MONAI's window
    rule cannot be read."""
    if dims == 2 and roi is None:
        return sum(hr_shape[3 - axis - p] for p in partners)
    try:
        if dims == 3:
            order = [a for a in range(3) if a != axis] + [axis]
            return _window_count([hr_shape[a] for a in order], roi, overlap)
        return sum(hr_shape[3 - axis - p] * _window_count([hr_shape[p], hr_shape[axis]], roi, overlap)
                   for p in partners)
    except (ImportError, TypeError, ValueError):  # a MONAI whose private helper changed
        return 0


def _inferer(roi: Sequence[int], batch: int, overlap: float, dev: torch.device, out_dev: torch.device,
             halo: int) -> SlidingWindowInferer:
    return SlidingWindowInferer(roi_size=tuple(int(r) for r in roi), sw_batch_size=batch, overlap=overlap,
                                mode="gaussian", sw_device=dev, device=out_dev, with_coord=halo > 0)


def _run_planes(fwd: _Forward, x: torch.Tensor, axis: int, partner: int, *, batch: int,
                roi: Sequence[int] | None, overlap: float, halo: int) -> torch.Tensor:
    """A 2D network over the planes ``(partner, axis)`` of ``x`` ``(X, Y, Z)``, batched along the
    third axis; CPU float32 ``(X, Y, Z)``."""
    rest = 3 - axis - partner
    planes = x.permute(rest, partner, axis)[:, None]  # (n_rest, 1, n_partner, n_axis)
    result = torch.empty(planes.shape, dtype=torch.float32)
    if roi is not None:
        clipped = [min(int(r), n) for r, n in zip(roi, planes.shape[2:], strict=True)]
        inferer = _inferer(clipped, batch, overlap, fwd.dev, torch.device("cpu"), halo)
        predictor = _HaloPredictor(fwd, planes, halo)
    for start in range(0, planes.shape[0], batch):
        chunk = planes[start : start + batch]
        if roi is None:
            result[start : start + batch] = fwd(chunk).cpu()
        else:
            predictor.image = chunk
            result[start : start + batch] = inferer(chunk, predictor).cpu()
    back = [0, 0, 0]
    back[rest], back[partner], back[axis] = 0, 1, 2
    return result[:, 0].permute(*back)


def _run_volume(fwd: _Forward, x: torch.Tensor, axis: int, *, roi: Sequence[int], batch: int, overlap: float,
                halo: int, out_dev: torch.device) -> torch.Tensor:
    """A 3D network over ``x`` ``(X, Y, Z)`` in the training patch layout; CPU float32 ``(X, Y, Z)``."""
    order = [a for a in range(3) if a != axis] + [axis]
    back = [order.index(a) for a in range(3)]
    laid = x.permute(*order).contiguous()[None, None]
    clipped = [min(int(r), n) for r, n in zip(roi, laid.shape[2:], strict=True)]
    inferer = _inferer(clipped, batch, overlap, fwd.dev, out_dev, halo)
    return inferer(laid, _HaloPredictor(fwd, laid, halo))[0, 0].cpu().permute(*back)


# --------------------------------------------------------------------------- upscale


def _check_options(roi_size: Sequence[int] | int | None, dims: int, overlap: float, halo: int,
                   sw_batch_size: int | None) -> tuple[int, ...] | None:
    if not (isinstance(overlap, (int, float)) and 0.0 <= float(overlap) < 1.0):
        raise InputError(f"overlap must be in [0, 1), got {overlap!r}", "overlap", "give e.g. 0.25")
    if isinstance(halo, bool) or not isinstance(halo, int) or halo < 0:
        raise InputError(f"halo must be a non-negative integer, got {halo!r}", "halo",
                         "give 0, or the network's receptive radius (VDSR: its depth)")
    if sw_batch_size is not None and (isinstance(sw_batch_size, bool) or not isinstance(sw_batch_size, int)
                                      or sw_batch_size < 1):
        raise InputError(f"sw_batch_size must be a positive integer, got {sw_batch_size!r}", "sw_batch_size",
                         "give e.g. 4, or leave it out to choose from free memory")
    if roi_size is None:
        return None
    roi = (roi_size,) * dims if isinstance(roi_size, int) else tuple(roi_size)
    if len(roi) != dims or not all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in roi):
        raise InputError(f"roi_size must be {dims} positive integers for a {dims}D model, got {roi_size!r}",
                         "roi_size", f"give {dims} window sizes (the training patch layout: coarse axis last)")
    return tuple(int(r) for r in roi)


def _as_tensor(array: Any) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.detach().to("cpu", torch.float32)
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def upscale(
    volume: Volume,
    model: LoadedModel | nn.Module | str | os.PathLike[str] | None = None,
    *,
    spacing: float | Sequence[float] | None = None,
    scale: float | Sequence[float] | None = None,
    device: str | torch.device = "auto",
    roi_size: Sequence[int] | int | None = None,
    sw_batch_size: int | None = None,
    overlap: float = 0.25,
    fuse_orthogonal: bool = True,
    halo: int = 0,
    amp: bool = True,
    progress: bool = False,
) -> Volume:
    """Super-resolve ``volume`` with ``model`` onto a field-of-view-preserving grid.

    Args:
        volume: the input, ``(C, X, Y, Z)``; any orientation, oblique included.
        model: a :class:`~mrisr.models.loaded.LoadedModel` (its card decides the 3D window),
            a network, a checkpoint path (card, weights, folder or run folder) or a shipped
            model's name (see :func:`mrisr.models.loaded.load_model`); ``None``: the shipped
            default for the input's voxel spacing (:func:`mrisr.models.resolve_model`).
        spacing: target spacing, mm (one value or one per voxel axis).
        scale: upsampling factor per voxel axis (one or three); not with ``spacing``.
            Neither: isotropic at the finest input spacing.
        device: ``auto`` (CUDA when there is one), ``cpu``, ``cuda`` or ``cuda:N``.
        roi_size: window size in the training patch layout (coarse axis last); 3D default:
            the card's training patch size, else 64^3; 2D default: whole planes.
        sw_batch_size: windows (3D) or planes (2D) per forward pass; default from free memory.
        overlap: sliding-window overlap fraction, in ``[0, 1)``.
        fuse_orthogonal: 2D models: average the two plane families that contain the coarse axis.
        halo: voxels of extra context per window side (see the module docstring).
        amp: float16 autocast on CUDA (ignored on the CPU).
        progress: a tqdm bar on stderr over the planes (2D) or windows (3D), with ETA.

    Returns:
        A float32 Volume on the target grid with the source's meta plus an ``upscale`` record;
        clipped at 0 when the input has no negative value (magnitude images).

    Warns:
        UserWarning: the target grid equals the input grid (nothing to upscale).

    Raises:
        InputError: bad spacing/scale (see :func:`~mrisr.infer.grid.target_grid`), an unknown
            model or device, no model given and the default not shipped, a model that is not
            2D/3D or takes more than one channel, a 3D model on a single image, a 2D model asked
            to upscale a single image in-plane along more than one axis.
    """
    start = time.perf_counter()
    if not isinstance(volume, Volume):
        raise InputError(f"volume must be a mrisr Volume, got {type(volume).__name__}", "volume",
                         "read it with mrisr.load(path)")
    hr_affine, hr_shape = target_grid(volume.affine, volume.shape, spacing=spacing, scale=scale)
    lr_shape = volume.shape
    axis = coarse_axis(volume.affine, lr_shape, hr_affine, hr_shape)
    dev = resolve_device(device)
    loaded = load_model(resolve_model(model, volume), dev)
    net, card, config = loaded.net, loaded.card, loaded.config
    dims = _spatial_dims(net, config)
    in_channels = config.get("in_channels", getattr(net, "in_channels", 1))
    if in_channels != 1:
        raise InputError(f"model takes {in_channels} input channels; upscale feeds it one image at a time",
                         "model", "use a single-channel model")
    roi = _check_options(roi_size, dims, overlap, halo, sw_batch_size)
    singles = [a for a in range(3) if lr_shape[a] == 1]
    if dims == 3 and singles:
        raise InputError(f"a 3D model needs a 3D volume; this one has a single voxel along "
                         f"{', '.join('XYZ'[a] for a in singles)} (shape {list(lr_shape)})", "volume",
                         "use a 2D model for single images")
    grown = upsampled_axes(volume.affine, lr_shape, hr_affine, hr_shape)
    if dims == 2 and singles and len(grown) > 1:
        raise InputError(f"a 2D model upscales through slices along one axis; this single image is asked to grow "
                         f"in-plane along {', '.join('XYZ'[a] for a in grown)}", "spacing/scale",
                         "give a spacing or scale that upsamples one axis only")
    partners = [a for a in range(3) if a != axis and hr_shape[a] > 1]
    if dims == 2 and not partners:
        raise InputError(f"a 2D model needs planes; the volume of shape {list(lr_shape)} has one axis only",
                         "volume", "give an image with at least two axes of more than one voxel")
    if dims == 2 and not fuse_orthogonal:
        partners = partners[:1]

    width = int(config.get("features", 64)) if isinstance(config.get("features", 64), int) else 64
    use_amp = bool(amp) and dev.type == "cuda"
    voxels = int(np.prod(hr_shape))
    out_dev = torch.device("cpu")
    if dims == 3:
        roi = roi or loaded.patch_size(3) or DEFAULT_ROI_3D
        if dev.type == "cuda" and 3 * voxels * 4 < _free_cuda_bytes(dev):
            out_dev = dev
        reserved = 2 * voxels * 4 if out_dev.type == "cuda" else 0
        window = int(np.prod([r + 2 * halo for r in roi]))
        batch = sw_batch_size or _auto_batch(window, width, dev, use_amp, 16, reserved)
    else:
        plane = max(hr_shape[axis] * hr_shape[p] for p in partners) if roi is None else int(np.prod(roi))
        batch = sw_batch_size or _auto_batch(plane, width, dev, use_amp, 64)

    identity = tuple(hr_shape) == tuple(lr_shape) and np.allclose(hr_affine, volume.affine, rtol=0, atol=1e-6)
    if identity:
        warnings.warn(
            f"nothing to upscale: the target grid equals the input grid ({' x '.join(map(str, lr_shape))} at "
            f"{' x '.join(f'{v:.3g}' for v in voxel_spacing(volume.affine))} mm); the model runs as a same-grid "
            "restoration filter (give --spacing or --scale to upsample)",
            stacklevel=2,
        )
    from tqdm.auto import tqdm

    total = _progress_total(dims, hr_shape, axis, partners, roi, float(overlap)) * volume.n_channels if progress else 0
    bar = tqdm(total=total or None, desc="upscale", unit="window" if dims == 3 or roi is not None else "plane",
               disable=not progress, dynamic_ncols=True)
    fwd = _Forward(net, dev, use_amp, bar)
    source = _as_tensor(volume.array)
    non_negative = bool(source.numel()) and float(source.min()) >= 0.0
    clipped = 0
    out = torch.empty((volume.n_channels, *hr_shape), dtype=torch.float32)
    for c in range(volume.n_channels):
        upsampled = pre_upsample(source[c : c + 1], volume.affine, hr_affine, hr_shape).to(torch.float32)
        x, s = normalize(upsampled)
        x = x[0]
        if dims == 3:
            y = _run_volume(fwd, x, axis, roi=roi, batch=batch, overlap=float(overlap), halo=halo, out_dev=out_dev)
        else:
            y = None
            for p in partners:
                one = _run_planes(fwd, x, axis, p, batch=batch, roi=roi, overlap=float(overlap), halo=halo)
                y = one if y is None else y + one
            y = y / len(partners)
        y, below = clip_like_magnitude(denormalize(y, s), source)
        clipped += below
        out[c] = y
    bar.close()

    seconds = time.perf_counter() - start
    record = {
        "model": _model_info(net, card, config),
        "spatial_dims": dims,
        "input_shape": list(lr_shape),
        "input_spacing_mm": [float(v) for v in voxel_spacing(volume.affine)],
        "target_shape": list(hr_shape),
        "target_spacing_mm": [float(v) for v in voxel_spacing(hr_affine)],
        "coarse_axis": int(axis),
        "upsampled_axes": grown,
        "fused_orthogonal": bool(dims == 2 and len(partners) > 1),
        "roi_size": list(roi) if roi is not None else None,
        "sw_batch_size": int(batch),
        "overlap": float(overlap),
        "halo": int(halo),
        "identity_grid": bool(identity),
        "ran": ("same-grid restoration (the target grid equals the input grid: nothing upscaled)" if identity
                else f"{dims}D super-resolution along voxel axes {grown}"),
        "non_negative_input": non_negative,
        "clipped_below_zero": clipped,
        "device": str(dev),
        "amp": use_amp,
        "seconds": round(seconds, 3),
    }
    array = out.numpy()
    meta = {**volume.meta, "dtype": "float32", "range": [float(array.min()), float(array.max())] if array.size
            else None, "upscale": record}
    return Volume(array, hr_affine, meta)
