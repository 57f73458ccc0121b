"""SRCNN (Dong, Loy, He and Tang, "Image Super-Resolution Using Deep Convolutional Networks",
ECCV 2014 / IEEE TPAMI 2016), in 2D and 3D.

Kept from the paper:
- pre-upsampling: the input is the low-resolution image already interpolated onto the HR grid.
- three convolutions, patch extraction 9x9 (64), non-linear mapping 1x1 (32), reconstruction 5x5,
  ReLU after the first two and none after the reconstruction ("9-1-5"; the widths and kernel
  sizes are arguments, so the paper's other variants such as 9-5-5 or 9-1-1-5 are the same class).

Changed for MRI, and why:
- same padding (``k // 2``) where the paper used valid convolutions on 33x33 sub-images: whole
  volumes keep their grid, voxel for voxel with the pre-upsampled input and its affine, with no
  border to crop from the target or to pad back at inference.
- 3D kernels are cubes (9^3, 1^3, 5^3), as in 3D SRCNN for brain MRI (Pham et al., "Brain MRI
  super-resolution using deep 3D convolutional networks", ISBI 2017).
- He initialisation instead of the paper's Gaussian with std 0.001: that value was tuned for SGD
  at learning rate 1e-4 over ~1e8 back-propagations; He keeps the activations' variance whatever
  the kernel size and dimension (fan-in 81 in 2D, 729 in 3D), so Adam starts at once (as VDSR here).
- optional ``residual=True`` adds the input to the output (VDSR's residual learning); off by
  default, which is the paper.
- channels: the paper's luminance (Y) becomes the MRI image channel(s); further input channels
  may be guidance on the same grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from monai.networks.layers.factories import Act, Conv
from torch import nn

from ..errors import InputError
from .checks import check_input, check_int, int_list

__all__ = ["SRCNN"]


class SRCNN(nn.Module):
    """SRCNN: patch extraction, non-linear mapping and reconstruction on the pre-upsampled input.

    Input ``(N, in_channels, *S)`` on the HR grid, output ``(N, out_channels, *S)`` (same size).

    Args:
        spatial_dims: 2 (inputs ``(N, C, H, W)``) or 3 (inputs ``(N, C, D, H, W)``).
        in_channels: channels of the input (the image, then any guidance channels).
        out_channels: channels of the output; at most ``in_channels`` when ``residual``.
        kernel_sizes: odd kernel size of each convolution (cubes in 3D), ``[9, 1, 5]`` in the paper.
        features: widths of the hidden layers, one fewer than ``kernel_sizes`` (``[64, 32]``).
        residual: add the first ``out_channels`` input channels to the output (not in the paper).

    Attributes:
        config: the constructor arguments as a JSON-serialisable dict; ``SRCNN(**config)`` rebuilds it.
        spatial_dims, in_channels, out_channels: as given.
        upsampling: ``"pre"``, the input is already on the HR grid.
        body: ``nn.Sequential`` of convolutions with a ReLU after all but the last.

    Raises:
        InputError: an argument out of range, naming it; an input of the wrong layout (forward).

    Example:
        >>> net = SRCNN(spatial_dims=3, kernel_sizes=[3, 1, 3], features=[4, 2])
        >>> net(torch.zeros(1, 1, 6, 6, 6)).shape
        torch.Size([1, 1, 6, 6, 6])
        >>> sum(p.numel() for p in SRCNN(2).parameters())  # the paper's 9-1-5, 8,032 weights + 97 biases
        8129
    """

    upsampling: ClassVar[str] = "pre"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        kernel_sizes: Sequence[int] = (9, 1, 5),
        features: Sequence[int] = (64, 32),
        residual: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
            raise InputError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}", "spatial_dims", "give 2 or 3")
        check_int("in_channels", in_channels, 1)
        check_int("out_channels", out_channels, 1)
        kernels = int_list("kernel_sizes", kernel_sizes, 1, odd=True)
        widths = int_list("features", features, 1)
        if len(kernels) != len(widths) + 1:
            raise InputError(
                f"kernel_sizes has {len(kernels)} entries and features {len(widths)}; each hidden layer has one "
                "width and the reconstruction layer has none",
                "kernel_sizes",
                "give one more kernel size than features, e.g. kernel_sizes=[9, 1, 5] with features=[64, 32]",
            )
        if not isinstance(residual, bool):
            raise InputError(f"residual must be True or False, got {residual!r}", "residual", "give a boolean")
        if residual and out_channels > in_channels:
            raise InputError(
                f"out_channels ({out_channels}) exceeds in_channels ({in_channels}); the residual is added to the "
                "first out_channels input channels",
                "out_channels",
                "give out_channels <= in_channels, or residual=False",
            )
        self.config = {
            "spatial_dims": int(spatial_dims),
            "in_channels": in_channels,
            "out_channels": out_channels,
            "kernel_sizes": kernels,
            "features": widths,
            "residual": residual,
        }
        self.spatial_dims = int(spatial_dims)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.residual = residual

        conv = Conv[Conv.CONV, self.spatial_dims]
        relu = Act[Act.RELU]
        channels = [in_channels, *widths, out_channels]
        layers: list[nn.Module] = []
        for i, k in enumerate(kernels):
            layers.append(conv(channels[i], channels[i + 1], kernel_size=k, padding=k // 2, bias=True))
            if i < len(kernels) - 1:
                layers.append(relu(inplace=True))
        self.body = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation (normal, fan_in, ReLU gain) of every convolution's weights; zero biases."""
        for module in self.body:
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``body(x)`` (plus ``x[:, :out_channels]`` when ``residual``), the same size as ``x``."""
        check_input(self, x)
        y = self.body(x)
        if self.residual:
            y = x[:, : self.out_channels] + y
        return y

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())
