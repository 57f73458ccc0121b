"""RFDN, the residual feature distillation network (Jie Liu, Jie Tang and Gangshan Wu, "Residual Feature
Distillation Network for Lightweight Image Super-Resolution", ECCV 2020 workshops; first in the AIM 2020
efficient super-resolution challenge), in 2D and 3D, post-upsampling.

Kept from the published configuration (the authors' AIM 2020 code: 50 features, 4 blocks, 433,448
parameters for 3-channel x4, the challenge report's 0.433M):

- a 3x3 feature convolution; ``blocks`` residual feature distillation blocks (RFDB); the blocks' outputs
  concatenated, fused by a 1x1 convolution + LeakyReLU(0.05); a 3x3 convolution plus the long skip from
  the feature convolution; a sub-pixel upsampler (3x3 convolution to ``out * prod(scale)`` maps + shuffle).
- RFDB: three distillation steps, each a 1x1 convolution keeping ``distilled`` channels (``features // 2``)
  beside a shallow residual block (3x3 convolution + identity, then LeakyReLU) that refines all
  ``features`` channels for the next step; a last 3x3 convolution to ``distilled`` channels; the four
  distilled parts concatenated, a 1x1 convolution back to ``features``, then enhanced spatial attention.
- ESA: 1x1 reduction to ``features // 4`` channels, a stride-2 3x3 convolution (no padding), max-pooling
  7 / stride 3, three 3x3 convolutions (ReLU between), (bi/tri)linear interpolation back, plus a 1x1
  convolution of the reduced maps, a 1x1 expansion, a sigmoid gate multiplying the block's features.

Changed for anisotropic MRI, and why:

- the upsampler grows each axis by its own factor (:class:`mrisr.nets.shuffle.AxisSubpixel`): 1 x 4
  for thick slices in one pass on the acquired grid, [2, 2] for in-plane loss.
- ESA is safe for any input size: its stride-2 convolution and 7/3 pooling need 15 voxels along every
  axis, more than a thick-slice patch (e.g. 64 x 16, or 32 x 32 x 8 in 3D) or a small inference window
  has along its coarse axis. The reduced maps are replicate-padded by :data:`ESA_PAD` (7) voxels on both
  sides of every axis before the downsampling and the attention cropped back after the interpolation
  (which runs on the padded grid), so every axis of every size works, the same rule on every axis and at
  every size (no size-dependent branch: the ONNX graph is the same for any input), and borders see
  replicated context instead of zeros.
- ``skip=True`` (default) adds ``upsample_linear(x[:, :out_channels], scale)``, so the network learns the
  residual over linear interpolation, with the upsampler's ICNR weights scaled by 0.1: it starts as linear
  interpolation and trains in minutes on a CPU. ``skip=False`` is the published network.
- initialisation: He-normal (fan_in, LeakyReLU gain) instead of PyTorch's default uniform, the shallow
  residual blocks' convolutions at a tenth of it (so the blocks start near identity and do not double
  the activations each); the upsampler ICNR (no checkerboard at the start); zero biases. 3D kernels are
  cubes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from monai.networks.layers.factories import Act, Conv, Pool
from torch import nn

from ..errors import InputError
from .checks import check_input, check_int
from .shuffle import AxisSubpixel, as_factors, icnr_, upsample_linear

__all__ = ["ESA_PAD", "RFDN"]

#: Voxels of replicate padding on both sides of every axis before ESA's downsampling: the stride-2 3x3
#: convolution and the 7/3 max-pool need 15 voxels, so an axis of 1 voxel padded to 15 still works.
ESA_PAD = 7
#: With the skip, the upsampler's ICNR weights are scaled by this (as ESPCN's).
_SKIP_INIT_GAIN = 0.1
#: The shallow residual blocks' convolutions start at this share of their He scale: at the full scale each
#: of the three doubles the activations' variance, so every RFDB doubled their size (x 17 after 4 blocks,
#: measured) and the network started at 25x linear interpolation's L1 error on real patches.
_RESIDUAL_INIT_GAIN = 0.1
_LINEAR = {2: "bilinear", 3: "trilinear"}


class _ESA(nn.Module):
    """Enhanced spatial attention: ``x * sigmoid(expand(up(group(pool(down(pad(r))))) + skip(r)))``,
    ``r = reduce(x)``; the same size as ``x``."""

    def __init__(self, spatial_dims: int, features: int, channels: int) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.spatial_dims = spatial_dims
        self.reduce = conv(features, channels, kernel_size=1)
        self.skip = conv(channels, channels, kernel_size=1)
        self.down = conv(channels, channels, kernel_size=3, stride=2)
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=7, stride=3)
        self.group = nn.Sequential(
            conv(channels, channels, kernel_size=3, padding=1), Act[Act.RELU](),
            conv(channels, channels, kernel_size=3, padding=1), Act[Act.RELU](),
            conv(channels, channels, kernel_size=3, padding=1),
        )
        self.expand = conv(channels, features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.reduce(x)
        padded = nn.functional.pad(r, [ESA_PAD] * (2 * self.spatial_dims), mode="replicate")
        m = self.group(self.pool(self.down(padded)))
        m = nn.functional.interpolate(m, size=padded.shape[2:], mode=_LINEAR[self.spatial_dims], align_corners=False)
        crop = (slice(None), slice(None), *([slice(ESA_PAD, -ESA_PAD)] * self.spatial_dims))
        return x * torch.sigmoid(self.expand(m[crop] + self.skip(r)))


class _RFDB(nn.Module):
    """Residual feature distillation block: three distillation steps, a last 3x3 step, 1x1 fusion, ESA."""

    def __init__(self, spatial_dims: int, features: int, distilled: int, esa_channels: int, slope: float) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.distill = nn.ModuleList(conv(features, distilled, kernel_size=1) for _ in range(3))
        self.refine = nn.ModuleList(conv(features, features, kernel_size=3, padding=1) for _ in range(3))
        self.last = conv(features, distilled, kernel_size=3, padding=1)
        self.fuse = conv(4 * distilled, features, kernel_size=1)
        self.act = Act[Act.LEAKYRELU](negative_slope=slope)
        self.esa = _ESA(spatial_dims, features, esa_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        for distill, refine in zip(self.distill, self.refine, strict=True):
            parts.append(self.act(distill(x)))
            x = self.act(refine(x) + x)  # the shallow residual block
        parts.append(self.act(self.last(x)))
        return self.esa(self.fuse(torch.cat(parts, dim=1)))


class RFDN(nn.Module):
    """RFDN: residual feature distillation blocks on the acquired grid, then an axis-wise sub-pixel upsampler.

    Input ``(N, in_channels, *S)`` on the acquired grid (any size >= 1 per axis), output
    ``(N, out_channels, *(s * f for s, f in zip(S, scale)))``.

    Args:
        spatial_dims: 2 (inputs ``(N, C, H, W)``) or 3 (inputs ``(N, C, D, H, W)``).
        in_channels: channels of the input (the image, then any guidance channels).
        out_channels: channels of the output; at most ``in_channels`` when ``skip``.
        scale: upsampling factors, one per spatial axis, or an int for the LAST axis only (the slice
            axis of mrisr's patch layout); see :func:`mrisr.nets.shuffle.as_factors`.
        features: width of the trunk (50 in the published network).
        blocks: RFDBs (4).
        distilled: channels each distillation step keeps (default ``features // 2``, the published rule).
        esa_channels: ESA's reduced width (default ``features // 4``, the published rule).
        negative_slope: of the LeakyReLUs (0.05).
        skip: add the linear interpolation of the first ``out_channels`` input channels.

    Attributes:
        config: the constructor arguments as a JSON-serialisable dict (defaults resolved);
            ``RFDN(**config)`` rebuilds it.
        spatial_dims, in_channels, out_channels: as given.
        scale: the per-axis factors, a tuple of ``spatial_dims`` ints.
        upsampling: ``"post"``, the input is on the acquired low-resolution grid.
        head, body, fuse, trunk, upsample: the feature convolution, the RFDBs, the 1x1 fusion of their
            outputs (+ LeakyReLU), the 3x3 convolution before the long skip, the sub-pixel upsampler.

    Raises:
        InputError: an argument out of range, naming it; an input of the wrong layout (forward).

    Example:
        >>> net = RFDN(spatial_dims=2, scale=4, features=8, blocks=1)
        >>> net(torch.zeros(1, 1, 6, 3)).shape
        torch.Size([1, 1, 6, 12])
        >>> RFDN(spatial_dims=3, scale=[2, 2, 1], features=8, blocks=1)(torch.zeros(1, 1, 4, 4, 1)).shape
        torch.Size([1, 1, 8, 8, 1])
    """

    upsampling: ClassVar[str] = "post"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        scale: int | Sequence[int] = 4,
        features: int = 50,
        blocks: int = 4,
        distilled: int | None = None,
        esa_channels: int | None = None,
        negative_slope: float = 0.05,
        skip: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
            raise InputError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}", "spatial_dims", "give 2 or 3")
        check_int("in_channels", in_channels, 1)
        check_int("out_channels", out_channels, 1)
        factors = as_factors(scale, int(spatial_dims))
        check_int("features", features, 4)
        check_int("blocks", blocks, 1)
        distilled = features // 2 if distilled is None else check_int("distilled", distilled, 1)
        esa_channels = features // 4 if esa_channels is None else check_int("esa_channels", esa_channels, 1)
        if (isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float))
                or not 0 <= negative_slope < 1):
            raise InputError(f"negative_slope must be a number in [0, 1), got {negative_slope!r}", "negative_slope",
                             "give e.g. 0.05 (the published network)")
        if not isinstance(skip, bool):
            raise InputError(f"skip must be True or False, got {skip!r}", "skip", "give a boolean")
        if skip and out_channels > in_channels:
            raise InputError(
                f"out_channels ({out_channels}) exceeds in_channels ({in_channels}); the skip interpolates the "
                "first out_channels input channels",
                "out_channels",
                "give out_channels <= in_channels, or skip=False",
            )
        self.config = {
            "spatial_dims": int(spatial_dims),
            "in_channels": in_channels,
            "out_channels": out_channels,
            "scale": list(factors),
            "features": features,
            "blocks": blocks,
            "distilled": distilled,
            "esa_channels": esa_channels,
            "negative_slope": float(negative_slope),
            "skip": skip,
        }
        self.spatial_dims = int(spatial_dims)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.scale: tuple[int, ...] = factors
        self.negative_slope = float(negative_slope)
        self.skip = skip

        conv = Conv[Conv.CONV, self.spatial_dims]
        self.head = conv(in_channels, features, kernel_size=3, padding=1)
        self.body = nn.ModuleList(
            _RFDB(self.spatial_dims, features, distilled, esa_channels, self.negative_slope) for _ in range(blocks))
        self.fuse = nn.Sequential(conv(blocks * features, features, kernel_size=1),
                                  Act[Act.LEAKYRELU](negative_slope=self.negative_slope))
        self.trunk = conv(features, features, kernel_size=3, padding=1)
        self.upsample = AxisSubpixel(self.spatial_dims, features, out_channels, factors, kernel_size=3)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal convolutions (fan_in, LeakyReLU gain; x 0.1 in the shallow residual blocks), the upsampler
        ICNR (x 0.1 with the skip); zero biases."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d)) and module is not self.upsample.conv:
                nn.init.kaiming_normal_(module.weight, a=self.negative_slope, mode="fan_in",
                                        nonlinearity="leaky_relu")
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            for block in self.body:
                for refine in block.refine:
                    refine.weight.mul_(_RESIDUAL_INIT_GAIN)
        icnr_(self.upsample.conv, self.scale)
        if self.skip:
            with torch.no_grad():
                self.upsample.conv.weight.mul_(_SKIP_INIT_GAIN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``upsample(trunk(fuse(cat(block outputs))) + head(x))`` (plus
        ``upsample_linear(x[:, :out_channels], scale)`` when ``skip``)."""
        check_input(self, x)
        h = self.head(x)
        outputs, y = [], h
        for block in self.body:
            y = block(y)
            outputs.append(y)
        y = self.upsample(self.trunk(self.fuse(torch.cat(outputs, dim=1))) + h)
        if self.skip:
            y = y + upsample_linear(x[:, : self.out_channels], self.scale)
        return y

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())
