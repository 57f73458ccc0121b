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
from ..nets import level_scales, upsampling
from ..preprocess import clip_like_magnitude, resample_to_shape
from .precision import channels_last, resolve_precision

__all__ = ["DEFAULT_ROI_3D", "NetworkRun", "input_window", "plan_run", "run_network", "predict_normalised"]

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

    def __init__(self, net: nn.Module, dev: torch.device, amp: bool, bar: Any = None, bf16: bool = False,
                 call: dict[str, Any] | None = None) -> None:
        self.net, self.dev, self.amp, self.bar = net, dev, amp and dev.type == "cuda", bar
        self.bf16 = bf16 and dev.type == "cpu"
        self.call = dict(call or {})  # keyword arguments of each call (a progressive network's ``levels``)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dev)
        if self.bf16:
            x = x.contiguous(memory_format=channels_last(x.ndim))
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=self.amp), \
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            y = self.net(x, **self.call).float()
        if self.bar is not None:
            self.bar.update(int(x.shape[0]))
        return y.contiguous()


class _HaloPredictor:
    """A sliding-window predictor (``with_coord``) that runs each window with ``halo`` voxels of
    context from ``image`` on each side, clipped at the image's faces, and crops them off."""

    def __init__(self, forward: _Forward, image: torch.Tensor, halo: int, factors: Sequence[int] | None = None) -> None:
        self.forward, self.image, self.halo = forward, image, halo
        self.factors = tuple(factors) if factors is not None else (1,) * (image.ndim - 2)  # output / input size

    def __call__(self, windows: torch.Tensor, coords: Sequence[Sequence[slice]] | None = None) -> torch.Tensor:
        if self.halo == 0 or coords is None:
            return self.forward(windows)
        sizes = self.image.shape[2:]
        regions, crops = [], []
        for s in coords:
            lo = [max(0, sl.start - self.halo) for sl in s[2:]]
            hi = [min(n, sl.stop + self.halo) for sl, n in zip(s[2:], sizes, strict=True)]
            regions.append((s[0], *[slice(a, b) for a, b in zip(lo, hi, strict=True)]))
            crops.append(tuple(slice((sl.start - a) * f, (sl.stop - a) * f)
                               for sl, a, f in zip(s[2:], lo, self.factors, strict=True)))
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


def _progress_total(dims: int, shape: Sequence[int], axis: int, partners: Sequence[int], order: Sequence[int],
                    roi: Sequence[int] | None, overlap: float) -> int:
    """Items per channel that the progress bar counts over the network's input grid ``shape``: planes
    of every fused family (2D, whole planes), or sliding windows (3D; 2D with ``roi``); 0 (an
    open-ended bar) if MONAI's window rule cannot be read."""
    if dims == 2 and roi is None:
        return sum(shape[3 - axis - p] for p in partners)
    try:
        if dims == 3:
            return _window_count([shape[a] for a in order], roi, overlap)
        return sum(shape[3 - axis - p] * _window_count([shape[p], shape[axis]], roi, overlap)
                   for p in partners)
    except (ImportError, TypeError, ValueError):  # a MONAI whose private helper changed
        return 0


def _inferer(roi: Sequence[int], batch: int, overlap: float, dev: torch.device, out_dev: torch.device,
             halo: int) -> SlidingWindowInferer:
    return SlidingWindowInferer(roi_size=tuple(int(r) for r in roi), sw_batch_size=batch, overlap=overlap,
                                mode="gaussian", sw_device=dev, device=out_dev, with_coord=halo > 0)


def _run_planes(fwd: _Forward, x: torch.Tensor, axis: int, partner: int, *, batch: int,
                roi: Sequence[int] | None, overlap: float, halo: int,
                factors: Sequence[int] = (1, 1)) -> torch.Tensor:
    """A 2D network over the planes ``(partner, axis)`` of ``x`` ``(X, Y, Z)``, batched along the
    third axis; CPU float32 ``(X, Y, Z)``, grown by ``factors`` (a post-upsampling network's, per
    plane axis) along ``partner`` and ``axis``."""
    rest = 3 - axis - partner
    planes = x.permute(rest, partner, axis)[:, None]  # (n_rest, 1, n_partner, n_axis)
    grown = (planes.shape[0], 1, planes.shape[2] * factors[0], planes.shape[3] * factors[1])
    result = torch.empty(grown, dtype=torch.float32)
    if roi is not None:
        clipped = [min(int(r), n) for r, n in zip(roi, planes.shape[2:], strict=True)]
        inferer = _inferer(clipped, batch, overlap, fwd.dev, torch.device("cpu"), halo)
        predictor = _HaloPredictor(fwd, planes, halo, factors)
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


def _run_volume(fwd: _Forward, x: torch.Tensor, order: Sequence[int], *, roi: Sequence[int], batch: int,
                overlap: float, halo: int, out_dev: torch.device, factors: Sequence[int] = (1, 1, 1)) -> torch.Tensor:
    """A 3D network over ``x`` ``(X, Y, Z)`` permuted to ``order`` (the training patch layout);
    CPU float32 ``(X, Y, Z)``, grown by ``factors`` (per layout axis) for a post-upsampling network:
    MONAI's sliding-window inferer places zoomed window outputs itself."""
    back = [list(order).index(a) for a in range(3)]
    laid = x.permute(*order).contiguous()[None, None]
    clipped = [min(int(r), n) for r, n in zip(roi, laid.shape[2:], strict=True)]
    inferer = _inferer(clipped, batch, overlap, fwd.dev, out_dev, halo)
    return inferer(laid, _HaloPredictor(fwd, laid, halo, factors))[0, 0].cpu().permute(*back)


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
        axis: the voxel axis that is last in the network's layout (the coarse, upsampled axis).
        partners: 2D: the partner axis of each plane family run (fused when two); 3D: ().
        order: 3D: the voxel axes in the network's layout order (coarse last); 2D: ().
        roi: window size in the network's input layout (3D always; 2D only for 2D windows).
        batch: windows (3D) or planes (2D) per forward pass.
        overlap: sliding-window overlap fraction. halo: voxels of context per window side.
        device: where the network runs. out_device: where 3D windows are assembled.
        amp: float16 autocast (CUDA only).
        precision: ``float32`` or ``bfloat16`` (CPU autocast, see :mod:`mrisr.infer.precision`).
        upsampling: ``pre`` (input on the target grid) or ``post`` (input on the acquired grid).
        in_shape: the network's input grid ``(X, Y, Z)``: the target grid (pre), the acquired grid (post).
        out_shape: the target grid ``(X, Y, Z)``.
        factors: post: the network's integer factor per voxel axis (1 elsewhere; pre: all 1).
        level: a progressive network's level run (``levels=`` of its forward), else None.
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
    upsampling: str = "pre"
    order: tuple[int, ...] = ()
    in_shape: tuple[int, int, int] = (0, 0, 0)
    out_shape: tuple[int, int, int] = (0, 0, 0)
    factors: tuple[int, int, int] = (1, 1, 1)
    level: int | None = None

    @property
    def unit(self) -> str:
        """What the progress bar counts: ``plane`` (2D whole planes) or ``window``."""
        return "plane" if self.dims == 2 and self.roi is None else "window"

    @property
    def network_shape(self) -> tuple[int, int, int]:
        """The grid the network's output lands on (``in_shape`` x ``factors``); post-upsampling
        networks' results are resampled from it onto ``out_shape`` (one cubic step per axis)."""
        return tuple(n * f for n, f in zip(self.in_shape, self.factors, strict=True))  # type: ignore[return-value]

    @property
    def resampled_axes(self) -> list[int]:
        """Voxel axes on which the network's grid differs from the target grid (post only)."""
        return [a for a in range(3) if self.network_shape[a] != self.out_shape[a]]

    def items(self) -> int:
        """Planes or windows per channel (0 when MONAI's window rule cannot be read)."""
        return _progress_total(self.dims, self.in_shape, self.axis, self.partners, self.order, self.roi,
                               self.overlap)


def input_window(net: nn.Module, patch_size: Sequence[int]) -> tuple[int, ...]:
    """The sliding window, in the network's input voxels, that covers a training patch of
    ``patch_size`` (target voxels, patch layout): the patch itself for pre-upsampling networks, the
    patch over the finest factors for post-upsampling ones."""
    scales = level_scales(net)
    factors = scales[-1] if scales else (1,) * len(patch_size)
    return tuple(max(1, int(p) // int(f)) for p, f in zip(patch_size, factors, strict=True))


#: Relative tolerance below which an axis counts as not upsampled (FOV-preserving grids round).
_GROWTH_TOLERANCE = 1e-6


def _post_layout(net: nn.Module, dims: int, lr_shape: Sequence[int], hr_shape: Sequence[int],
                 axis: int) -> tuple[tuple[int, ...], list[int], int | None]:
    """A post-upsampling network's level, its grown voxel axes and that level's layout factors.

    The network grows the last ``k`` axes of its layout; they are put on the ``k`` voxel axes that
    grow most (``axis`` first; ties in voxel order). A progressive network runs the level whose
    factor is nearest the needed one (in log scale; ties: the larger).
    """
    levels = level_scales(net)
    ratio = [hr / lr if lr else 1.0 for hr, lr in zip(hr_shape, lr_shape, strict=True)]
    k = sum(f > 1 for f in levels[-1])
    if any(f > 1 for f in levels[-1][: dims - k]):
        raise InputError(f"the network grows layout axes {list(levels[-1])}; mrisr lays the grown axes last",
                         "model", "give the network a scale of the form [1, ..., r] (coarse axis last)")
    growing = sorted((a for a in range(3) if ratio[a] > 1 + _GROWTH_TOLERANCE), key=lambda a: (-ratio[a], a))
    ranked = [axis] + [a for a in growing if a != axis] + [a for a in range(3) if a != axis and a not in growing]
    if k > max(1, len(growing)):
        raise InputError(f"the model upsamples {k} axes at once; this target grid grows "
                         f"{len(growing)} ({', '.join('XYZ'[a] for a in growing) or 'none'})", "model",
                         f"give a spacing or scale that grows {k} axes, or use a model that upsamples one")
    grown = sorted(ranked[:k])
    needed = max(ratio[a] for a in grown)
    chosen = 0
    if len(levels) > 1:
        scores = [abs(np.log(max(level)) - np.log(max(needed, 1e-9))) for level in levels]
        best = min(scores)
        chosen = max(i for i, v in enumerate(scores) if v <= best + 1e-9)
    return levels[chosen], grown, (chosen + 1 if len(levels) > 1 else None)


def plan_run(loaded: LoadedModel, hr_shape: Sequence[int], axis: int, *, lr_shape: Sequence[int] | None = None,
             roi_size: Sequence[int] | int | None = None, sw_batch_size: int | None = None, overlap: float = 0.25,
             fuse_orthogonal: bool = True, halo: int = 0, amp: bool = True, precision: str = "float32") -> NetworkRun:
    """How ``loaded`` runs over a target grid of ``hr_shape`` whose coarse axis is ``axis``.

    Args:
        loaded: the model, on its device (:func:`mrisr.models.loaded.load_model`).
        hr_shape: the target grid's ``(X, Y, Z)``. axis: its coarse voxel axis.
        lr_shape: the acquired grid's ``(X, Y, Z)`` (same field of view): the input of a
            post-upsampling network (required for those; pre-upsampling ones ignore it).
        roi_size: window size in the network's input layout (coarse axis last; post-upsampling
            networks: acquired-grid voxels); 3D default: the card's training patch size (over the
            network's factors for post-upsampling), else :data:`DEFAULT_ROI_3D`; 2D: whole planes.
        sw_batch_size: windows or planes per forward pass; default from free memory.
        overlap, fuse_orthogonal, halo, amp: see :func:`mrisr.infer.upscale`.
        precision: ``auto``, ``float32`` or ``bfloat16`` (:func:`mrisr.infer.precision.resolve_precision`);
            with bfloat16 the network is put in channels-last memory (its values unchanged).

    Raises:
        InputError: a model that is not 2D/3D or takes more than one channel, bad options (a
            precision among them), a 2D model on a grid with one axis only, a post-upsampling model
            that grows more axes than the target grid does.
    """
    net, config = loaded.net, loaded.config
    dims = _spatial_dims(net, config)
    in_channels = config.get("in_channels", getattr(net, "in_channels", 1))
    if in_channels != 1:
        raise InputError(f"model takes {in_channels} input channels; upscale feeds it one image at a time",
                         "model", "use a single-channel model")
    roi = _check_options(roi_size, dims, overlap, halo, sw_batch_size)
    kind = upsampling(net)
    out_shape = tuple(int(n) for n in hr_shape)
    if kind == "post" and lr_shape is None:
        raise ValueError("plan_run: a post-upsampling network needs lr_shape (its input grid)")
    in_shape = tuple(int(n) for n in (lr_shape if kind == "post" else hr_shape))  # type: ignore[union-attr]
    layout_factors: tuple[int, ...] = (1,) * dims
    level = None
    grown = [int(axis)]
    if kind == "post":
        layout_factors, grown, level = _post_layout(net, dims, in_shape, out_shape, int(axis))
    factors = [1, 1, 1]
    order: tuple[int, ...] = ()
    if dims == 2:
        if kind == "post" and len(grown) == 2:  # in-plane: the one plane of both grown axes
            axis, partners = grown[1], [grown[0]]
        else:
            axis = grown[0] if kind == "post" else axis
            partners = [a for a in range(3) if a != axis and out_shape[a] > 1]
        if not partners:
            raise InputError(f"a 2D model needs planes; the grid of shape {list(out_shape)} has one axis only",
                             "volume", "give an image with at least two axes of more than one voxel")
        if not fuse_orthogonal:
            partners = partners[:1]
        for p_ in partners:
            factors[p_] = layout_factors[0]
        factors[axis] = layout_factors[1]
    else:
        order = tuple([a for a in range(3) if a not in grown] + grown)
        for a, f in zip(order, layout_factors, strict=True):
            factors[a] = f
        axis = order[-1]
        partners = []
    dev = torch.device(loaded.device)
    width = int(config.get("features", 64)) if isinstance(config.get("features", 64), int) else 64
    use_amp = bool(amp) and dev.type == "cuda"
    voxels = int(np.prod(out_shape))
    out_dev = torch.device("cpu")
    if dims == 3:
        if roi is None:
            roi = input_window(net, loaded.patch_size(3) or DEFAULT_ROI_3D)
        if dev.type == "cuda" and 3 * voxels * 4 < _free_cuda_bytes(dev):
            out_dev = dev
        reserved = 2 * voxels * 4 if out_dev.type == "cuda" else 0
        window = int(np.prod([(r + 2 * halo) * f for r, f in zip(roi, layout_factors, strict=True)]))
        batch = sw_batch_size or _auto_batch(window, width, dev, use_amp, 16, reserved)
    else:
        grow = int(np.prod(layout_factors))
        plane = (max(in_shape[axis] * in_shape[p_] for p_ in partners) if roi is None else int(np.prod(roi))) * grow
        batch = sw_batch_size or _auto_batch(plane, width, dev, use_amp, 64, cpu_budget=CPU_PLANE_BATCH_BYTES)
    chosen = resolve_precision(precision, dev)
    if chosen == "bfloat16":
        net.to(memory_format=channels_last(dims + 2))
    return NetworkRun(loaded, dims, int(axis), tuple(partners), roi, int(batch), float(overlap), int(halo), dev,
                      out_dev, use_amp, chosen, kind, order, in_shape, out_shape,  # type: ignore[arg-type]
                      tuple(factors), level)  # type: ignore[arg-type]


def run_network(run: NetworkRun, x: torch.Tensor, bar: Any = None) -> torch.Tensor:
    """The network's output for one normalised image ``x`` on its input grid ``run.in_shape`` (pre:
    pre-upsampled onto the target grid; post: the acquired grid): CPU float32 on the target grid
    ``run.out_shape``; 2D plane families averaged. A post-upsampling network's result lands on
    ``run.network_shape`` and is put on the target grid by one cubic resampling per differing axis
    (:func:`mrisr.preprocess.resample_to_shape`: non-integer factors such as a field-of-view-preserving
    4.022, or a factor the network was not trained for). ``bar`` (tqdm) counts planes or windows."""
    if tuple(x.shape) != run.in_shape:
        raise ValueError(f"run_network: input of shape {tuple(x.shape)}, planned for {run.in_shape}")
    call = {"levels": run.level} if run.level is not None else None
    fwd = _Forward(run.loaded.net, run.device, run.amp, bar, bf16=run.precision == "bfloat16", call=call)
    if run.dims == 3:
        assert run.roi is not None
        layout = [run.factors[a] for a in run.order]
        y = _run_volume(fwd, x, run.order, roi=run.roi, batch=run.batch, overlap=run.overlap, halo=run.halo,
                        out_dev=run.out_device, factors=layout)
    else:
        y = None
        for p in run.partners:  # summed in place: one family's output at a time beside the sum
            one = _run_planes(fwd, x, run.axis, p, batch=run.batch, roi=run.roi, overlap=run.overlap, halo=run.halo,
                              factors=(run.factors[p], run.factors[run.axis]))
            y = one if y is None else y.add_(one)
            del one
        assert y is not None
        y = y.div_(len(run.partners))
    return resample_to_shape(y, run.out_shape) if run.upsampling == "post" else y


@torch.no_grad()
def predict_normalised(loaded: LoadedModel, image: torch.Tensor, axis: int, *,
                       target_shape: Sequence[int] | None = None, roi_size: Sequence[int] | int | None = None,
                       precision: str = "float32") -> torch.Tensor:
    """``upscale``'s network step on a normalised ``(C, X, Y, Z)`` image (a training pair's input:
    pre-upsampled for pre-upsampling networks, on the acquired grid for post-upsampling ones, which
    need ``target_shape``): each channel run as :func:`run_network`, and clipped at 0 when ``image``
    has no negative value, exactly as ``upscale`` does before it multiplies the scale back. CPU
    float32 on the target grid.

    Training validation and model shipping score this, so a card's validation PSNR is what users get.
    """
    image = image.detach().to("cpu", torch.float32)
    spatial = tuple(image.shape[1:])
    hr_shape = tuple(target_shape) if target_shape is not None else spatial
    run = plan_run(loaded, hr_shape, axis, lr_shape=spatial, roi_size=roi_size, precision=precision)
    out = torch.stack([run_network(run, image[c]) for c in range(image.shape[0])])
    return clip_like_magnitude(out, image)[0]
