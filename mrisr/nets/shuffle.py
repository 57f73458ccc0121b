"""Sub-pixel convolution along chosen axes: depth-to-space that grows only the axes asked for.

Post-upsampling networks compute features on the acquired grid and grow it at the end by a
convolution to ``C * prod(factors)`` channels followed by a pixel shuffle (Shi et al., ESPCN,
CVPR 2016). MONAI's ``SubpixelUpsample`` and torch's ``PixelShuffle`` grow every spatial axis
by the same factor; a thick-slice MRI volume needs ``1 x 1 x 4`` (one axis) and an in-plane
k-space loss ``2 x 2 x 1``, so the shuffle here takes one factor per spatial axis.

Channel order (the same as ``torch.nn.PixelShuffle`` when all factors are equal): input
channel ``c * prod(f) + flat(i)`` lands in output channel ``c`` at sub-position ``i``, with
``flat`` the row-major index over ``f``.

Layout: inputs are ``(N, C, *S)`` with ``len(S) == len(factors)`` (2D ``(N, C, H, W)``, 3D
``(N, C, D, H, W)``); in mrisr's patch layout the coarse (slice) axis is the last one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from ..errors import InputError

__all__ = ["as_factors", "axis_shuffle", "axis_unshuffle", "AxisShuffle", "AxisUnshuffle", "AxisSubpixel",
           "icnr_", "upsample_linear"]


def as_factors(scale: int | Sequence[int], spatial_dims: int, name: str = "scale") -> tuple[int, ...]:
    """Per-axis integer factors: an int ``r`` means ``r`` along the LAST axis only (the coarse axis
    of the patch layout), others 1; a sequence gives one factor per spatial axis.

    Raises:
        InputError: not positive integers, the wrong count, or all factors 1.
    """
    if isinstance(scale, bool):
        raise InputError(f"{name} must be an integer or {spatial_dims} integers, got {scale!r}", name,
                         "give e.g. 4 (the last axis) or [1, 4]")
    if isinstance(scale, int):
        factors: tuple[int, ...] = (1,) * (spatial_dims - 1) + (scale,)
    else:
        try:
            factors = tuple(scale)
        except TypeError:
            raise InputError(f"{name} must be an integer or {spatial_dims} integers, got {scale!r}", name,
                             "give e.g. 4 (the last axis) or [1, 4]") from None
    if len(factors) != spatial_dims or not all(isinstance(f, int) and not isinstance(f, bool) and f >= 1
                                               for f in factors):
        raise InputError(f"{name} must be {spatial_dims} positive integers (one per spatial axis), got {scale!r}",
                         name, f"give {spatial_dims} factors, e.g. {[1] * (spatial_dims - 1) + [4]}")
    if math.prod(factors) == 1:
        raise InputError(f"{name} {list(factors)} upsamples nothing", name, "give a factor above 1 on some axis")
    return tuple(int(f) for f in factors)


def axis_shuffle(x: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """``(N, C * prod(f), *S)`` -> ``(N, C, *(s * f))``: depth-to-space along each axis by its factor."""
    factors = tuple(int(f) for f in factors)
    d = len(factors)
    n, channels, *size = x.shape
    block = math.prod(factors)
    if len(size) != d or channels % block:
        raise InputError(f"axis shuffle by {list(factors)} needs (N, C*{block}, {d} spatial axes); "
                         f"got {tuple(x.shape)}", "input",
                         f"give {d} spatial axes and a channel count divisible by {block}")
    c = channels // block
    x = x.reshape(n, c, *factors, *size)
    # (N, C, f0..fd-1, s0..sd-1) -> (N, C, s0, f0, s1, f1, ...)
    order = [0, 1] + [axis for i in range(d) for axis in (2 + d + i, 2 + i)]
    return x.permute(*order).reshape(n, c, *(s * f for s, f in zip(size, factors, strict=True)))


def axis_unshuffle(x: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """The inverse of :func:`axis_shuffle`: ``(N, C, *(s * f))`` -> ``(N, C * prod(f), *S)``."""
    factors = tuple(int(f) for f in factors)
    d = len(factors)
    n, c, *size = x.shape
    if len(size) != d or any(s % f for s, f in zip(size, factors, strict=True)):
        raise InputError(f"axis unshuffle by {list(factors)} needs {d} spatial axes divisible by the factors; "
                         f"got {tuple(x.shape)}", "input", "crop or pad the input to multiples of the factors")
    small = [s // f for s, f in zip(size, factors, strict=True)]
    x = x.reshape(n, c, *[v for s, f in zip(small, factors, strict=True) for v in (s, f)])
    order = [0, 1] + [2 + 2 * i + 1 for i in range(d)] + [2 + 2 * i for i in range(d)]
    return x.permute(*order).reshape(n, c * math.prod(factors), *small)


class AxisShuffle(nn.Module):
    """:func:`axis_shuffle` as a layer (no parameters)."""

    def __init__(self, factors: Sequence[int]) -> None:
        super().__init__()
        self.factors = tuple(int(f) for f in factors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return axis_shuffle(x, self.factors)

    def extra_repr(self) -> str:
        return f"factors={list(self.factors)}"


class AxisUnshuffle(nn.Module):
    """:func:`axis_unshuffle` as a layer (no parameters)."""

    def __init__(self, factors: Sequence[int]) -> None:
        super().__init__()
        self.factors = tuple(int(f) for f in factors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return axis_unshuffle(x, self.factors)

    def extra_repr(self) -> str:
        return f"factors={list(self.factors)}"


def icnr_(conv: nn.Module, factors: Sequence[int]) -> None:
    """ICNR initialisation (Aitken et al. 2017) of the convolution feeding an axis shuffle: He-normal
    weights for ``out / prod(f)`` filters, each repeated ``prod(f)`` times, so the shuffled output
    starts as a nearest-neighbour upsampling of one feature map (no checkerboard); zero bias."""
    block = math.prod(int(f) for f in factors)
    weight = conv.weight
    out = weight.shape[0]
    if out % block:
        raise InputError(f"ICNR: {out} output channels do not divide into blocks of {block}", "conv",
                         "give the convolution C * prod(factors) output channels")
    base = torch.empty((out // block, *weight.shape[1:]), dtype=weight.dtype, device=weight.device)
    nn.init.kaiming_normal_(base, mode="fan_in", nonlinearity="relu")
    with torch.no_grad():
        weight.copy_(base.repeat_interleave(block, dim=0))
        if conv.bias is not None:
            conv.bias.zero_()


class AxisSubpixel(nn.Module):
    """Convolution to ``out_channels * prod(factors)`` channels, then :func:`axis_shuffle` (ICNR init).

    Args:
        spatial_dims: 2 or 3. in_channels, out_channels: channels before and after.
        factors: one integer factor per spatial axis (see :func:`as_factors`).
        kernel_size: odd size of the convolution (same padding).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, factors: Sequence[int],
                 kernel_size: int = 3) -> None:
        super().__init__()
        self.factors = tuple(int(f) for f in factors)
        if len(self.factors) != spatial_dims:
            raise InputError(f"{len(self.factors)} factors for a {spatial_dims}D layer", "factors",
                             f"give {spatial_dims} factors")
        conv = Conv[Conv.CONV, spatial_dims]
        self.conv = conv(in_channels, out_channels * math.prod(self.factors), kernel_size=kernel_size,
                         padding=kernel_size // 2)
        self.shuffle = AxisShuffle(self.factors)
        icnr_(self.conv, self.factors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(x))


def upsample_linear(x: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """``(N, C, *S)`` -> ``(N, C, *(s * f))`` by (bi/tri)linear interpolation with mrisr's grid
    convention (``align_corners=False``: the two grids share their field of view, sample ``j`` at
    input index ``(j + 0.5) / f - 0.5``, edges replicated). Axes with factor 1 are unchanged.
    The skip connection of post-upsampling networks: they learn the residual over it."""
    factors = tuple(int(f) for f in factors)
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(factors)]
    return torch.nn.functional.interpolate(x, scale_factor=tuple(float(f) for f in factors), mode=mode,
                                           align_corners=False)
