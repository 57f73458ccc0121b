"""Pixel losses for progressive (multi-level) super-resolution networks such as LapSRN.

Lai et al. (CVPR 2017) train LapSRN with the Charbonnier penalty ``sqrt(d^2 + eps^2)``, a smooth
L1 that is robust to outliers, at every pyramid level (deep supervision) against the HR image
brought down to that level's grid. Here that grid change is a box average along each axis
(:func:`pyramid_targets`): along the slice axis this is a thick-slice acquisition with a box slice
profile, the same degradation that made the low-resolution input, so every level's target is the
image a scanner would give at that level's slice thickness.

Layout: tensors ``(N, C, *S)`` with one to three spatial axes; factors are one integer per
spatial axis (as ``LapSRN.level_scales``).

Pure functions of tensors, differentiable in ``pred``/``outputs``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..errors import InputError

__all__ = ["PIXEL_LOSSES", "charbonnier", "pixel_loss", "pyramid_targets", "multilevel_loss"]


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """``mean(sqrt((pred - target)^2 + eps^2))``: the Charbonnier penalty, a differentiable L1.

    Equals ``eps`` where ``pred == target`` and tends to ``mean(|pred - target|)`` for errors much
    larger than ``eps``. Computed in at least float32 (bf16 outputs of autocast included).

    Args:
        pred, target: tensors of the same shape (any, e.g. ``(N, C, *S)``).
        eps: the smoothing constant, > 0 (1e-3 in the paper).

    Returns:
        A scalar (0-dimensional) tensor.

    Raises:
        InputError: shapes differ (no broadcasting) or ``eps`` is not positive.
    """
    if pred.shape != target.shape:
        raise InputError(f"charbonnier: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ",
                         "target", "give tensors of the same shape")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise InputError(f"charbonnier: eps must be a positive number, got {eps!r}", "eps", "give e.g. 1e-3")
    dtype = torch.promote_types(torch.promote_types(pred.dtype, target.dtype), torch.float32)
    diff = pred.to(dtype) - target.to(dtype)
    return torch.sqrt(diff * diff + float(eps) ** 2).mean()


def _as_scales(level_scales: Sequence[Sequence[int]], spatial_dims: int) -> list[tuple[int, ...]]:
    try:
        scales = [tuple(s) for s in level_scales]
    except TypeError:
        scales = []
    ok = bool(scales) and all(
        len(s) == spatial_dims and all(isinstance(f, int) and not isinstance(f, bool) and f >= 1 for f in s)
        for s in scales)
    if not ok:
        raise InputError(f"level_scales must be a non-empty list of {spatial_dims} positive integers per level, got "
                         f"{level_scales!r}", "level_scales", "give e.g. net.level_scales, [(1, 2), (1, 4)]")
    finest = scales[-1]
    for s in scales:
        if any(fine % f for fine, f in zip(finest, s, strict=True)):
            raise InputError(f"level_scales: {list(s)} does not divide the finest level's {list(finest)}",
                             "level_scales", "give the levels coarse to fine, each dividing the last")
    return scales


def pyramid_targets(target: torch.Tensor, level_scales: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """The HR target on each level's grid, coarse to fine, by box averaging.

    Level ``l`` is ``target`` average-pooled with kernel = stride = ``finest / level_scales[l]`` per
    axis (``finest = level_scales[-1]``, the grid of ``target``); along the slice axis this is a
    thick slice with a box profile, ``finest / level`` HR slices thick. Box averaging over whole
    blocks keeps the mean. The finest level is ``target`` itself.

    Args:
        target: ``(N, C, *S)``, the HR image on the finest level's grid (1 to 3 spatial axes).
        level_scales: one tuple of per-axis factors per level, coarse to fine (``net.level_scales``),
            each dividing the last.

    Returns:
        One tensor per level, ``(N, C, *(s * f // F for s, f, F in zip(S, level, finest)))``.

    Raises:
        InputError: malformed ``level_scales``, or ``S`` not divisible by the pooling factors.
    """
    spatial_dims = target.ndim - 2
    if spatial_dims not in (1, 2, 3):
        raise InputError(f"pyramid_targets takes (N, C, *S) with 1 to 3 spatial axes, got {tuple(target.shape)}",
                         "target", "give a batch of images")
    scales = _as_scales(level_scales, spatial_dims)
    finest = scales[-1]
    pool = {1: torch.nn.functional.avg_pool1d, 2: torch.nn.functional.avg_pool2d,
            3: torch.nn.functional.avg_pool3d}[spatial_dims]
    size = tuple(target.shape[2:])
    targets = []
    for s in scales:
        kernel = tuple(fine // f for fine, f in zip(finest, s, strict=True))
        if all(k == 1 for k in kernel):
            targets.append(target)
            continue
        if any(n % k for n, k in zip(size, kernel, strict=True)):
            raise InputError(f"pyramid_targets: target size {list(size)} is not divisible by the pooling {list(kernel)}"
                             f" of level {list(s)}", "target", f"crop the patches to multiples of {list(finest)}")
        targets.append(pool(target, kernel_size=kernel, stride=kernel))
    return targets


def multilevel_loss(outputs: Sequence[torch.Tensor], target: torch.Tensor, level_scales: Sequence[Sequence[int]],
                    pixel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                    eps: float = 1e-3) -> torch.Tensor:
    """Deep supervision: the SUM over levels of ``pixel`` (default :func:`charbonnier` with ``eps``)
    between each level's output and :func:`pyramid_targets` of ``target``.

    Summed, as in the paper's loss (Lai et al. 2017, Eq. 3): every level weighs the same, and a level's
    share does not shrink when a network has more levels. Each term is already a per-voxel mean, so
    levels with more voxels do not dominate.

    Args:
        outputs: one tensor per level, coarse to fine (``net.forward_levels(x)``), level ``l`` shaped as
            ``pyramid_targets(target, level_scales)[l]``.
        target: ``(N, C, *S)``, the HR image on the finest level's grid.
        level_scales: the per-axis factors of each level, coarse to fine (``net.level_scales``).
        pixel: the per-level loss ``(prediction, target) -> scalar`` (:func:`pixel_loss`).
        eps: the Charbonnier constant (1e-3) when ``pixel`` is None.

    Returns:
        A scalar tensor.

    Raises:
        InputError: as many outputs as levels are not given, or a shape differs from its target.
    """
    outputs = list(outputs)
    targets = pyramid_targets(target, level_scales)
    if len(outputs) != len(targets):
        raise InputError(f"multilevel_loss: {len(outputs)} output(s) for {len(targets)} level(s)",
                         "outputs", "give one output per level, coarse to fine (net.forward_levels)")
    total = None
    for level, (out, goal) in enumerate(zip(outputs, targets, strict=True)):
        if out.shape != goal.shape:
            raise InputError(f"multilevel_loss: level {level + 1} output {tuple(out.shape)} differs from its "
                             f"target {tuple(goal.shape)}", "outputs",
                             "give the levels coarse to fine, on the grids of level_scales")
        term = charbonnier(out, goal, eps) if pixel is None else pixel(out, goal)
        total = term if total is None else total + term
    assert total is not None
    return total


#: The pixel losses a protocol's ``train.loss`` names.
PIXEL_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": torch.nn.functional.mse_loss,
    "l1": torch.nn.functional.l1_loss,
    "charbonnier": charbonnier,
}


def pixel_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss ``train.loss`` names: ``mse`` (VDSR), ``l1`` or ``charbonnier`` (eps 1e-3, LapSRN).

    Raises:
        InputError: another name.
    """
    if name not in PIXEL_LOSSES:
        raise InputError(f"unknown loss {name!r}", "train.loss", f"use one of: {', '.join(PIXEL_LOSSES)}")
    return PIXEL_LOSSES[name]
