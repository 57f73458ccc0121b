"""ESPCN (Shi, Caballero, Huszár, Totz, Aitken, Bishop, Rueckert and Wang, "Real-Time Single Image
and Video Super-Resolution Using an Efficient Sub-Pixel Convolutional Neural Network", CVPR 2016),
in 2D and 3D.

Kept from the paper:
- post-upsampling: every convolution runs on the acquired low-resolution grid; the last one makes
  ``out_channels * prod(scale)`` maps that a periodic shuffle rearranges onto the HR grid.
- the layer table of the paper's main configuration: 5x5 (64), 3x3 (32), 3x3 to the shuffle;
  tanh after the hidden layers, no activation on the output (the widths, kernels and activation
  are arguments).

Changed for MRI, and why:
- the shuffle grows each axis by its own factor (:class:`mrisr.nets.shuffle.AxisSubpixel`): a
  thick-slice volume needs ``1 x 1 x 4`` (one axis), which an isotropic pixel shuffle cannot do.
- ``skip=True`` (default) adds ``upsample_linear(x[:, :out_channels], scale)``, so the network
  learns the residual over linear interpolation; it trains in minutes on a CPU. ``skip=False`` is
  the paper.
- 3D kernels are cubes (5^3, 3^3, 3^3).
- initialisation: hidden layers variance-preserving normal for the activation (fan_in, tanh gain
  5/3 or ReLU gain sqrt(2)), the last layer ICNR (Aitken et al. 2017), so the shuffled output
  starts free of checkerboard artefacts, scaled by 0.1 with the skip so the network starts near
  linear interpolation; zero biases. The paper does not state its initialisation.
- ``activation="relu"`` is offered beside the paper's tanh.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from monai.networks.layers.factories import Act, Conv
from torch import nn

from ..errors import InputError
from .checks import check_input, check_int, int_list
from .shuffle import AxisSubpixel, as_factors, icnr_, upsample_linear

__all__ = ["ESPCN"]

_ACTIVATIONS = {"tanh": Act.TANH, "relu": Act.RELU}
#: With the skip, the sub-pixel convolution's ICNR weights are scaled by this, so the network starts
#: as linear interpolation plus a small smooth correction (on the test phantoms: 400 Adam steps reach
#: ~0.2 of linear interpolation's MSE, against 0.4-0.9 with the full ICNR scale).
_SKIP_INIT_GAIN = 0.1


class ESPCN(nn.Module):
    """ESPCN: convolutions on the low-resolution grid, then an axis-wise sub-pixel convolution.

    Input ``(N, in_channels, *S)`` on the acquired grid, output
    ``(N, out_channels, *(s * f for s, f in zip(S, scale)))``.

    Args:
        spatial_dims: 2 (inputs ``(N, C, H, W)``) or 3 (inputs ``(N, C, D, H, W)``).
        in_channels: channels of the input (the image, then any guidance channels).
        out_channels: channels of the output; at most ``in_channels`` when ``skip``.
        scale: upsampling factors, one per spatial axis, or an int for the LAST axis only
            (the slice axis of mrisr's patch layout); see :func:`mrisr.nets.shuffle.as_factors`.
        features: widths of the hidden layers (``[64, 32]`` in the paper).
        kernel_sizes: odd kernel size of each convolution, one more than ``features``; the last
            is the sub-pixel convolution's (``[5, 3, 3]`` in the paper).
        activation: ``"tanh"`` (the paper) or ``"relu"``, after each hidden layer.
        skip: add the linear interpolation of the first ``out_channels`` input channels.

    Attributes:
        config: the constructor arguments as a JSON-serialisable dict; ``ESPCN(**config)`` rebuilds it.
        spatial_dims, in_channels, out_channels: as given.
        scale: the per-axis factors, a tuple of ``spatial_dims`` ints.
        upsampling: ``"post"``, the input is on the acquired low-resolution grid.
        body: ``nn.Sequential`` of the hidden convolutions and activations.
        subpixel: the last convolution and the axis shuffle.

    Raises:
        InputError: an argument out of range, naming it; an input of the wrong layout (forward).

    Example:
        >>> net = ESPCN(spatial_dims=3, scale=4, features=[4, 2])
        >>> net(torch.zeros(1, 1, 6, 6, 3)).shape
        torch.Size([1, 1, 6, 6, 12])
        >>> ESPCN(spatial_dims=2, scale=[2, 2], features=[4, 2])(torch.zeros(1, 1, 5, 7)).shape
        torch.Size([1, 1, 10, 14])
    """

    upsampling: ClassVar[str] = "post"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        scale: int | Sequence[int] = 4,
        features: Sequence[int] = (64, 32),
        kernel_sizes: Sequence[int] = (5, 3, 3),
        activation: str = "tanh",
        skip: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
            raise InputError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}", "spatial_dims", "give 2 or 3")
        check_int("in_channels", in_channels, 1)
        check_int("out_channels", out_channels, 1)
        factors = as_factors(scale, int(spatial_dims))
        widths = int_list("features", features, 1)
        kernels = int_list("kernel_sizes", kernel_sizes, 1, odd=True)
        if len(kernels) != len(widths) + 1:
            raise InputError(
                f"kernel_sizes has {len(kernels)} entries and features {len(widths)}; each hidden layer has one "
                "width and the sub-pixel convolution has none",
                "kernel_sizes",
                "give one more kernel size than features, e.g. kernel_sizes=[5, 3, 3] with features=[64, 32]",
            )
        if not isinstance(activation, str) or activation not in _ACTIVATIONS:
            raise InputError(f"activation must be 'tanh' or 'relu', got {activation!r}", "activation",
                             "give 'tanh' (the paper) or 'relu'")
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
            "features": widths,
            "kernel_sizes": kernels,
            "activation": activation,
            "skip": skip,
        }
        self.spatial_dims = int(spatial_dims)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.scale: tuple[int, ...] = factors
        self.activation = activation
        self.skip = skip

        conv = Conv[Conv.CONV, self.spatial_dims]
        act = Act[_ACTIVATIONS[activation]]
        channels = [in_channels, *widths]
        layers: list[nn.Module] = []
        for i, k in enumerate(kernels[:-1]):
            layers.append(conv(channels[i], channels[i + 1], kernel_size=k, padding=k // 2, bias=True))
            layers.append(act())
        self.body = nn.Sequential(*layers)
        self.subpixel = AxisSubpixel(self.spatial_dims, widths[-1], out_channels, factors, kernel_size=kernels[-1])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Hidden convolutions: normal, fan_in, the activation's gain; the sub-pixel one ICNR (x 0.1 with
        the skip); zero biases."""
        for module in self.body:
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity=self.activation)
                nn.init.zeros_(module.bias)
        icnr_(self.subpixel.conv, self.scale)
        if self.skip:  # start near the linear interpolation the skip already gives
            with torch.no_grad():
                self.subpixel.conv.weight.mul_(_SKIP_INIT_GAIN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``shuffle(conv(body(x)))`` (plus ``upsample_linear(x[:, :out_channels], scale)`` when ``skip``)."""
        check_input(self, x)
        y = self.subpixel(self.body(x))
        if self.skip:
            y = y + upsample_linear(x[:, : self.out_channels], self.scale)
        return y

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())
