"""VDSR (Kim, Lee and Lee, "Accurate Image Super-Resolution Using Very Deep Convolutional
Networks", CVPR 2016), in 2D and 3D.

The network sees the low-resolution image already interpolated onto the high-resolution
grid (:func:`mrisr.preprocess.pre_upsample`) and learns only the residual, the missing high
frequencies: ``output = input + residual``. ``depth`` convolutions in all, 3x3 (3x3x3 in 3D),
padding 1 so every layer keeps the size, ReLU after all but the last, He initialisation.
The layers come from MONAI's factories, so one class serves 2D and 3D.

Channels: ``out_channels`` may be at most ``in_channels``. The residual is added to the first
``out_channels`` input channels, which are the images being super-resolved; any further input
channels are guidance (e.g. another contrast on the same grid) that the network reads but
does not reproduce. ``out_channels > in_channels`` has no input to add the residual to and is
refused.
"""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Act, Conv
from torch import nn

from ..errors import InputError
from .checks import check_input, check_int

__all__ = ["VDSR"]


class VDSR(nn.Module):
    """VDSR: ``depth`` same-size convolutions predicting the residual over the pre-upsampled input.

    Args:
        spatial_dims: 2 (inputs ``(N, C, H, W)``) or 3 (inputs ``(N, C, D, H, W)``).
        in_channels: channels of the input (the image, then any guidance channels).
        out_channels: channels of the output, at most ``in_channels``; the residual is added to
            the first ``out_channels`` input channels.
        features: channels of the hidden layers (64 in the paper).
        depth: number of convolution layers in all, >= 2 (20 in the paper).

    Attributes:
        config: the constructor arguments as a dict (recorded in the model card, and enough
            to rebuild the network with ``VDSR(**config)``).
        body: the layers, an ``nn.Sequential`` of convolutions and ReLUs ending in a convolution.

    Raises:
        InputError: an argument out of range, naming it.

    Example:
        >>> net = VDSR(spatial_dims=3, features=8, depth=5)
        >>> net(torch.zeros(1, 1, 6, 6, 6)).shape
        torch.Size([1, 1, 6, 6, 6])
    """

    def __init__(
        self, spatial_dims: int, in_channels: int = 1, out_channels: int = 1, features: int = 64, depth: int = 20
    ) -> None:
        super().__init__()
        if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
            raise InputError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}", "spatial_dims", "give 2 or 3")
        check_int("in_channels", in_channels, 1)
        check_int("out_channels", out_channels, 1)
        check_int("features", features, 1)
        check_int("depth", depth, 2)
        if out_channels > in_channels:
            raise InputError(
                f"out_channels ({out_channels}) exceeds in_channels ({in_channels}); VDSR adds its residual "
                "to the first out_channels input channels",
                "out_channels",
                "give out_channels <= in_channels",
            )
        self.config = {
            "spatial_dims": int(spatial_dims),
            "in_channels": in_channels,
            "out_channels": out_channels,
            "features": features,
            "depth": depth,
        }
        self.spatial_dims = int(spatial_dims)
        self.in_channels = in_channels
        self.out_channels = out_channels

        conv = Conv[Conv.CONV, self.spatial_dims]
        relu = Act[Act.RELU]
        widths = [in_channels] + [features] * (depth - 1) + [out_channels]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(conv(c_in, c_out, kernel_size=3, padding=1, bias=True))
            if i < depth - 1:
                layers.append(relu(inplace=True))
        self.body = nn.Sequential(*layers)
        self.reset_parameters()

    @property
    def last_conv(self) -> nn.Module:
        """The last convolution (the one that produces the residual)."""
        return self.body[-1]

    def reset_parameters(self) -> None:
        """He initialisation (normal, fan_in, ReLU gain) of every convolution's weights; zero biases."""
        for module in self.body:
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x[:, :out_channels] + residual(x)``, the same size as ``x``."""
        check_input(self, x)
        residual = self.body(x)
        return x[:, : self.out_channels] + residual

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())

