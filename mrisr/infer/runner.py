"""How a network runs over a whole volume: the one path shared by ``upscale``, training
validation and model shipping (:func:`plan_run`, :func:`run_network`, :func:`predict_normalised`).

The input is a normalised, pre-upsampled ``(X, Y, Z)`` image on the target grid (what
:func:`mrisr.preprocess.pre_upsample` and :func:`mrisr.preprocess.normalize` make, for
inference and for training pairs alike); the output is the network's image on the same grid.
The rules (planes and their fusion for 2D models, sliding windows and the card's training
window for 3D models, halo, batch size from free memory, AMP on CUDA) are those of
:mod:`mrisr.infer.predict`'s docstring.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer
from torch import nn

from ..errors import InputError
from ..models.loaded import LoadedModel
from ..preprocess import clip_like_magnitude
from .precision import channels_last, resolve_precision

__all__ = ["DEFAULT_ROI_3D", "NetworkRun", "plan_run", "run_network", "predict_normalised"]

#: Default 3D window (training patch layout) when the model card names no patch size.
DEFAULT_ROI_3D = (64, 64, 64)


def _spatial_dims(net: nn.Module, config: dict[str, Any]) -> int:
    dims = config.get("spatial_dims", getattr(net, "spatial_dims", None))
    if isinstance(dims, bool) or dims not in (2, 3):
        raise InputError(f"model's spatial_dims is {dims!r}; upscale runs 2D or 3D networks", "model",
                         "give a network with spatial_dims 2 or 3 (its .config or model card says which)")
    return int(dims)


# --------------------------------------------------------------------------- memory


def _available_cpu_bytes() -> int:
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def _free_cuda_bytes(dev: torch.device) -> int:
    free, _total = torch.cuda.mem_get_info(dev)
    return int(free)


#: CPU budget of a 2D plane batch's activations: cache-sized. Measured (benchmarks/RESULTS.md,
#: ``benchmarks/inference.py --threads``): 197 x 189 planes of vdsr2d-thick ran 1.2-1.3x faster
#: per plane in batches of 1-4 than of 16-64, in float32 and bfloat16 alike.
CPU_PLANE_BATCH_BYTES = 32 << 20


def _auto_batch(voxels: int, width: int, dev: torch.device, amp: bool, limit: int, reserved: int = 0,
                cpu_budget: int = 1 << 30) -> int:
    """Items per forward pass from free memory (the rule in the module docstring)."""
    per_item = 3 * voxels * max(1, width) * (2 if amp else 4)
    if dev.type == "cuda":
        budget = max(0, _free_cuda_bytes(dev) - reserved) // 2
    else:
        budget = min(_available_cpu_bytes() // 4, cpu_budget)
    return int(max(1, min(limit, budget // per_item)))


# --------------------------------------------------------------------------- running the network


class _Forward:
    """``net(x)`` on the compute device, in float32 out: float16 autocast under CUDA when ``amp``,
    bfloat16 autocast with channels-last input on the CPU when ``bf16`` (the network itself was put
    in channels-last by :func:`plan_run`); each call advances ``bar`` (a tqdm bar or None) by the
    items (planes or windows) it ran."""

    def __init__(self, net: nn.Module, dev: torch.device, amp: bool, bar: Any = None, bf16: bool = False) -> None:
        self.net, self.dev, self.amp, self.bar = net, dev, amp and dev.type == "cuda", bar
        self.bf16 = bf16 and dev.type == "cpu"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dev)
        if self.bf16:
            x = x.contiguous(memory_format=channels_last(x.ndim))
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=self.amp), \
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            y = self.net(x).float()
        if self.bar is not None:
            self.bar.update(int(x.shape[0]))
        return y.contiguous()


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



@dataclass(frozen=True)
class NetworkRun:
    """How one network runs over volumes of one target shape (see :func:`plan_run`).

    Attributes:
        loaded: the model (network and card).
        dims: 2 or 3 (the network's spatial dims).
        axis: the coarse (upsampled) voxel axis of the target grid.
        partners: 2D: the partner axis of each plane family run (fused when two); 3D: ().
        roi: window size in the training patch layout (3D always; 2D only for 2D windows).
        batch: windows (3D) or planes (2D) per forward pass.
        overlap: sliding-window overlap fraction. halo: voxels of context per window side.
        device: where the network runs. out_device: where 3D windows are assembled.
        amp: float16 autocast (CUDA only).
        precision: ``float32`` or ``bfloat16`` (CPU autocast, see :mod:`mrisr.infer.precision`).
    """

    loaded: LoadedModel
    dims: int
    axis: int
    partners: tuple[int, ...]
    roi: tuple[int, ...] | None
    batch: int
    overlap: float
    halo: int
    device: torch.device
    out_device: torch.device
    amp: bool
    precision: str = "float32"

    @property
    def unit(self) -> str:
        """What the progress bar counts: ``plane`` (2D whole planes) or ``window``."""
        return "plane" if self.dims == 2 and self.roi is None else "window"

    def items(self, hr_shape: Sequence[int]) -> int:
        """Planes or windows per channel (0 when MONAI's window rule cannot be read)."""
        return _progress_total(self.dims, hr_shape, self.axis, self.partners, self.roi, self.overlap)


def plan_run(loaded: LoadedModel, hr_shape: Sequence[int], axis: int, *, roi_size: Sequence[int] | int | None = None,
             sw_batch_size: int | None = None, overlap: float = 0.25, fuse_orthogonal: bool = True, halo: int = 0,
             amp: bool = True, precision: str = "float32") -> NetworkRun:
    """How ``loaded`` runs over a target grid of ``hr_shape`` whose coarse axis is ``axis``.

    Args:
        loaded: the model, on its device (:func:`mrisr.models.loaded.load_model`).
        hr_shape: the target grid's ``(X, Y, Z)``. axis: its coarse voxel axis.
        roi_size: window size in the training patch layout (coarse axis last); 3D default: the
            card's training patch size, else :data:`DEFAULT_ROI_3D`; 2D default: whole planes.
        sw_batch_size: windows or planes per forward pass; default from free memory.
        overlap, fuse_orthogonal, halo, amp: see :func:`mrisr.infer.upscale`.
        precision: ``auto``, ``float32`` or ``bfloat16`` (:func:`mrisr.infer.precision.resolve_precision`);
            with bfloat16 the network is put in channels-last memory (its values unchanged).

    Raises:
        InputError: a model that is not 2D/3D or takes more than one channel, bad options (a
            precision among them), a 2D model on a grid with one axis only.
    """
    net, config = loaded.net, loaded.config
    dims = _spatial_dims(net, config)
    in_channels = config.get("in_channels", getattr(net, "in_channels", 1))
    if in_channels != 1:
        raise InputError(f"model takes {in_channels} input channels; upscale feeds it one image at a time",
                         "model", "use a single-channel model")
    roi = _check_options(roi_size, dims, overlap, halo, sw_batch_size)
    partners = [a for a in range(3) if a != axis and hr_shape[a] > 1] if dims == 2 else []
    if dims == 2 and not partners:
        raise InputError(f"a 2D model needs planes; the grid of shape {list(hr_shape)} has one axis only",
                         "volume", "give an image with at least two axes of more than one voxel")
    if dims == 2 and not fuse_orthogonal:
        partners = partners[:1]
    dev = torch.device(loaded.device)
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
        batch = sw_batch_size or _auto_batch(plane, width, dev, use_amp, 64, cpu_budget=CPU_PLANE_BATCH_BYTES)
    chosen = resolve_precision(precision, dev)
    if chosen == "bfloat16":
        net.to(memory_format=channels_last(dims + 2))
    return NetworkRun(loaded, dims, int(axis), tuple(partners), roi, int(batch), float(overlap), int(halo), dev,
                      out_dev, use_amp, chosen)


def run_network(run: NetworkRun, x: torch.Tensor, bar: Any = None) -> torch.Tensor:
    """The network's output for one normalised, pre-upsampled image ``x`` ``(X, Y, Z)``: CPU
    float32 ``(X, Y, Z)``; 2D plane families averaged. ``bar`` (tqdm) counts planes or windows."""
    fwd = _Forward(run.loaded.net, run.device, run.amp, bar, bf16=run.precision == "bfloat16")
    if run.dims == 3:
        assert run.roi is not None
        return _run_volume(fwd, x, run.axis, roi=run.roi, batch=run.batch, overlap=run.overlap, halo=run.halo,
                           out_dev=run.out_device)
    y = None
    for p in run.partners:
        one = _run_planes(fwd, x, run.axis, p, batch=run.batch, roi=run.roi, overlap=run.overlap, halo=run.halo)
        y = one if y is None else y + one
    assert y is not None
    return y / len(run.partners)


@torch.no_grad()
def predict_normalised(loaded: LoadedModel, image: torch.Tensor, axis: int, *,
                       roi_size: Sequence[int] | int | None = None, precision: str = "float32") -> torch.Tensor:
    """``upscale``'s network step on a normalised, pre-upsampled ``(C, X, Y, Z)`` image (a training
    pair's input): each channel run as :func:`run_network`, and clipped at 0 when ``image`` has no
    negative value, exactly as ``upscale`` does before it multiplies the scale back. CPU float32.

    Training validation and model shipping score this, so a card's validation PSNR is what users get.
    """
    image = image.detach().to("cpu", torch.float32)
    run = plan_run(loaded, image.shape[1:], axis, roi_size=roi_size, precision=precision)
    out = torch.stack([run_network(run, image[c]) for c in range(image.shape[0])])
    return clip_like_magnitude(out, image)[0]
