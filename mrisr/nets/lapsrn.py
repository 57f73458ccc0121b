"""LapSRN (Lai, Huang, Ahuja and Yang, "Deep Laplacian Pyramid Networks for Fast and Accurate
Super-Resolution", CVPR 2017), in 2D and 3D, growing only the axes asked for.

A post-upsampling network in ``L = log2(r)`` progressive x2 stages. Two branches run side by side:

- feature extraction: one input convolution, then per level ``depth`` 3x3 convolutions, a
  transposed convolution growing the feature maps x2 and a convolution predicting that level's
  residual (the Laplacian sub-band); LeakyReLU 0.2 after every convolution but the residual ones;
- image reconstruction: per level a transposed convolution growing the previous level's image x2,
  initialised as linear interpolation; plus that level's residual, it is the level's image.

Every level's image is an output (coarse to fine), so one network serves x2, x4 and x8 and is
trained with supervision at every level (:func:`mrisr.train.losses.multilevel_loss`).

Kept from the paper: the two branches, ``depth`` convolutions of 64 features per level (10 for the
paper's x4 model), LeakyReLU 0.2, biases on the feature branch and none on the image branch,
3x3 feature-branch transposed convolutions (as in the authors' MatConvNet code: this is what gives
the paper's 812K parameters), a learnable image-branch kernel initialised bilinear, no weight sharing
across levels (that is MS-LapSRN), He initialisation of the feature branch.

Changed for anisotropic MRI, and why:

- the x2 happens only along the axes whose factor grows (a thick-slice volume grows its slice axis
  only): transposed kernels of 3 (features) or 4 (image) with stride 2 along grown axes, 3
  (features, stride 1) or 1 (image) along the others;
- ``scale`` (the contract's per-axis factors) sets the levels: a power of two, the same on every
  grown axis;
- the image branch pads its input by edge replication and crops, so at initialisation each level is
  exactly :func:`~mrisr.nets.shuffle.upsample_linear` by 2 (mrisr's grid convention, edges
  included) instead of darkening the border as the zero-padded original does; this is the global
  skip of the other post-upsampling networks, so no separate one is added;
- the image branch is grouped (one kernel per output channel) so that several output channels are
  not mixed; further input channels are guidance, read only by the feature branch;
- the residual convolutions start at a tenth of He's scale, so the untrained network is close to the
  linear-interpolation pyramid (what lets it train in minutes on a CPU).

Layout: inputs ``(N, C, *S)`` on the acquired grid; level ``l`` (1-based) outputs
``(N, out_channels, *(s * f for s, f in zip(S, level_scales[l - 1])))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from monai.networks.layers.factories import Act, Conv
from torch import nn

from ..errors import InputError
from .checks import check_input, check_int
from .shuffle import as_factors

__all__ = ["LapSRN"]

#: the 1D linear-interpolation kernel of a x2 transposed convolution (stride 2, kernel 4)
_BILINEAR_X2 = (0.25, 0.75, 0.75, 0.25)


def _pyramid(scale: tuple[int, ...]) -> tuple[int, list[tuple[int, ...]]]:
    """``(levels, level_scales)`` of a per-axis factor tuple, or an InputError for factors that are
    not one power of two on every grown axis."""
    grown = sorted({f for f in scale if f > 1})
    if len(grown) != 1 or grown[0] & (grown[0] - 1):
        raise InputError(
            f"LapSRN grows by x2 per level, so scale must be one power of two (2, 4, 8...) on every axis it "
            f"grows and 1 elsewhere; got {list(scale)}",
            "scale",
            f"give e.g. 4 (the last axis) or {[2] * (len(scale) - 1) + [1]}",
        )
    levels = grown[0].bit_length() - 1
    return levels, [tuple(2**level if f > 1 else 1 for f in scale) for level in range(1, levels + 1)]


class _LinearUp(nn.Module):
    """x2 along the grown axes by a grouped transposed convolution (kernel 4 and stride 2 along grown
    axes, 1 along others, no bias) initialised as linear interpolation, on an edge-replicated input:
    at initialisation it equals ``upsample_linear(x, factors)``."""

    def __init__(self, spatial_dims: int, channels: int, grown: tuple[bool, ...]) -> None:
        super().__init__()
        self.grown = grown
        self.conv = Conv[Conv.CONVTRANS, spatial_dims](
            channels, channels, kernel_size=tuple(4 if g else 1 for g in grown),
            stride=tuple(2 if g else 1 for g in grown), padding=tuple(3 if g else 0 for g in grown),
            groups=channels, bias=False)
        # F.pad lists (before, after) from the last axis backwards
        self.pad = tuple(p for g in reversed(grown) for p in ((1, 1) if g else (0, 0)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        kernel = torch.ones(())
        for g in self.grown:
            axis = torch.tensor(_BILINEAR_X2 if g else (1.0,))
            kernel = kernel[..., None] * axis
        with torch.no_grad():
            self.conv.weight.copy_(kernel.expand_as(self.conv.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.pad(x, self.pad, mode="replicate"))


class LapSRN(nn.Module):
    """LapSRN: progressive x2 stages along the grown axes, each predicting a residual over the
    (learnable, linear-initialised) x2 upsampling of the previous level's image.

    Args:
        spatial_dims: 2 (inputs ``(N, C, H, W)``) or 3 (inputs ``(N, C, D, H, W)``).
        in_channels: channels of the input (the image, then any guidance channels).
        out_channels: channels of the output, at most ``in_channels``; the image branch starts from
            the first ``out_channels`` input channels.
        scale: the finest level's factor per spatial axis (see :func:`~mrisr.nets.shuffle.as_factors`:
            an int ``r`` is ``r`` along the last axis): one power of two ``2**L`` on every axis that
            grows, 1 elsewhere; the network has ``L`` levels (4: two levels, x2 and x4).
        features: channels of the feature branch (64 in the paper).
        depth: convolutions per level in the feature branch, >= 1 (10 in the paper's x4 model).
        up_kernel: size along the grown axes of the feature branch's transposed convolutions: 3 (the
            authors' code and parameter count; padding 1, output padding 1) or 4 (padding 1: centred
            on the fine grid, as in common PyTorch ports).

    Attributes:
        config: the constructor arguments as a dict (JSON-serialisable; ``LapSRN(**config)`` rebuilds it).
        scale: the finest level's factor per spatial axis, a tuple.
        levels: the number of x2 levels ``L``.
        level_scales: the factor per spatial axis of each level's output, coarse to fine
            (``[(1, 2), (1, 4)]`` for ``scale=4`` in 2D).
        head: the input convolution; ``features``, ``residuals``, ``images``: one module per level
            (feature extraction ending in the x2 transposed convolution, residual convolution,
            image upsampling).

    Raises:
        InputError: an argument out of range, naming it.

    Example:
        >>> net = LapSRN(spatial_dims=2, scale=4, features=8, depth=2)
        >>> net.level_scales
        [(1, 2), (1, 4)]
        >>> x = torch.zeros(1, 1, 6, 5)
        >>> net(x).shape, net(x, levels=1).shape
        (torch.Size([1, 1, 6, 20]), torch.Size([1, 1, 6, 10]))
        >>> [tuple(y.shape) for y in net.forward_levels(x)]
        [(1, 1, 6, 10), (1, 1, 6, 20)]
    """

    upsampling: ClassVar[str] = "post"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        scale: int | Sequence[int] = 4,
        features: int = 64,
        depth: int = 10,
        up_kernel: int = 3,
    ) -> None:
        super().__init__()
        if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
            raise InputError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}", "spatial_dims", "give 2 or 3")
        check_int("in_channels", in_channels, 1)
        check_int("out_channels", out_channels, 1)
        check_int("features", features, 1)
        check_int("depth", depth, 1)
        if isinstance(up_kernel, bool) or up_kernel not in (3, 4):
            raise InputError(f"up_kernel must be 3 or 4, got {up_kernel!r}", "up_kernel",
                             "give 3 (the authors' code) or 4")
        if out_channels > in_channels:
            raise InputError(
                f"out_channels ({out_channels}) exceeds in_channels ({in_channels}); LapSRN's image branch "
                "upsamples the first out_channels input channels",
                "out_channels",
                "give out_channels <= in_channels",
            )
        self.spatial_dims = int(spatial_dims)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.scale = as_factors(scale, self.spatial_dims)
        self.levels, self.level_scales = _pyramid(self.scale)
        self.config = {
            "spatial_dims": self.spatial_dims,
            "in_channels": in_channels,
            "out_channels": out_channels,
            "scale": list(self.scale),
            "features": features,
            "depth": depth,
            "up_kernel": up_kernel,
        }

        conv = Conv[Conv.CONV, self.spatial_dims]
        convt = Conv[Conv.CONVTRANS, self.spatial_dims]
        act = Act[Act.LEAKYRELU]
        grown = tuple(f > 1 for f in self.scale)
        self.head = nn.Sequential(conv(in_channels, features, kernel_size=3, padding=1),
                                  act(negative_slope=0.2, inplace=True))
        self.features = nn.ModuleList()
        self.residuals = nn.ModuleList()
        self.images = nn.ModuleList()
        for _ in range(self.levels):
            body: list[nn.Module] = []
            for _ in range(depth):
                body += [conv(features, features, kernel_size=3, padding=1), act(negative_slope=0.2, inplace=True)]
            body += [
                convt(features, features, kernel_size=tuple(up_kernel if g else 3 for g in grown),
                      stride=tuple(2 if g else 1 for g in grown), padding=1,
                      output_padding=tuple(1 if g and up_kernel == 3 else 0 for g in grown)),
                act(negative_slope=0.2, inplace=True),
            ]
            self.features.append(nn.Sequential(*body))
            self.residuals.append(conv(features, out_channels, kernel_size=3, padding=1))
            self.images.append(_LinearUp(self.spatial_dims, out_channels, grown))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation (normal, fan_in, LeakyReLU 0.2 gain) of the feature branch, zero biases;
        residual convolutions at a tenth of that scale; image branch linear interpolation."""
        feature_layers = [m for branch in (self.head, *self.features) for m in branch
                          if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d))]
        for module in feature_layers + list(self.residuals):
            nn.init.kaiming_normal_(module.weight, a=0.2, mode="fan_in", nonlinearity="leaky_relu")
            nn.init.zeros_(module.bias)
        with torch.no_grad():
            for module in self.residuals:
                module.weight.mul_(0.1)
        for module in self.images:
            module.reset_parameters()

    def _run(self, x: torch.Tensor, levels: int) -> list[torch.Tensor]:
        check_input(self, x)
        feats = self.head(x)
        image = x[:, : self.out_channels]
        outputs = []
        for level in range(levels):
            feats = self.features[level](feats)
            image = self.images[level](image) + self.residuals[level](feats)
            outputs.append(image)
        return outputs

    def forward(self, x: torch.Tensor, levels: int | None = None) -> torch.Tensor:
        """The image of level ``levels`` (1..``self.levels``; default the finest), running only the
        stages up to it: ``(N, out_channels, *(s * f for s, f in zip(S, level_scales[levels - 1])))``."""
        if levels is None:
            levels = self.levels
        elif isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= self.levels:
            raise InputError(f"levels must be an integer in 1..{self.levels}, got {levels!r}", "levels",
                             f"give 1 (x2) to {self.levels} ({list(self.scale)}), or None for the finest")
        return self._run(x, levels)[-1]

    def forward_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every level's image, coarse to fine (shapes as :meth:`forward` at ``levels=1..L``)."""
        return self._run(x, self.levels)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())
