"""SRGAN's networks (Ledig, Theis, Huszár, Caballero, Cunningham, Acosta, Aitken, Tejani, Totz, Wang and
Shi, "Photo-Realistic Single Image Super-Resolution Using a Generative Adversarial Network", CVPR 2017),
in 2D and 3D: the generator :class:`SRResNet`, the :class:`Discriminator`, and :class:`MRIFeatureNet`,
an MRI-trained stand-in for the paper's ImageNet VGG19 feature network. The losses are in
:mod:`mrisr.train.gan`.

Kept from the paper (Fig. 4):

- SRResNet: 9x9 convolution + PReLU; ``blocks`` (16) residual blocks conv3-BN-PReLU-conv3-BN + identity;
  conv3-BN + a long skip from the first convolution's output; sub-pixel x2 stages (conv3 to
  ``features * 4`` maps for 2D x2, pixel shuffle, PReLU); a last 9x9 convolution; 64 features.
- Discriminator: eight 3x3 convolutions of 64, 64, 128, 128, 256, 256, 512, 512 channels with strides
  1, 2, 1, 2, ...; LeakyReLU 0.2; batch norm on all but the first; dense 1024, LeakyReLU, dense 1.

Changed for anisotropic MRI, and why:

- the x2 stages grow only the axes whose factor is above 1 (:class:`~mrisr.nets.shuffle.AxisSubpixel`,
  ``features * 2^k`` maps for ``k`` grown axes): a thick-slice volume grows its slice axis only. A power of
  two takes ``log2(f)`` x2 stages along its axis, any other factor one stage of ``f`` (as the paper's
  successors do for x3); axes with fewer stages take factor 1 in the later stages.
- ``skip=True`` (default) adds ``upsample_linear(x[:, :out_channels], scale)``, so the generator learns
  the residual over linear interpolation, with its last convolution starting at a tenth of its initial
  scale: it starts as linear interpolation and trains in minutes on a CPU, and the adversarial term
  then only has to add high frequencies instead of learning the image. ``skip=False`` is the paper.
- ``norm``: ``"batch"`` (the paper), ``"instance"`` or ``None`` (EDSR's finding that batch norm hurts
  super-resolution; also free of batch-size and train/eval effects on small MRI batches). Convolutions
  followed by a norm layer carry no bias (the norm's shift replaces it).
- PReLU is channel-wise (He et al.'s default; the paper does not say), initialised at 0.25.
- no tanh / [-1, 1] range on the output: mrisr's intensities are normalised by the foreground mean,
  not bounded.
- the discriminator averages its last feature maps over space (global average pooling) before the
  dense layers, so it takes patches of any size and shape (the paper's dense layer fixed 96x96
  inputs); it outputs logits (the sigmoid is in the loss), and strides 2 on every axis (HR patches
  are on the fine grid, so e.g. 64x16 is fine: four stride-2 layers leave 4x1).
- 3D kernels are cubes.

MRIFeatureNet, the perceptual feature network: the paper's content loss compares VGG19 features
pretrained on ImageNet photographs. Those weights cannot be downloaded here, describe natural-image
statistics rather than MRI, and are 2D RGB only, so mrisr trains its own feature network on MRI
patches: a small VGG-like encoder (per block ``convs_per_block`` 3x3 conv + ReLU, max-pooling x2
between blocks) with a light decoder (nearest-neighbour x2 + conv3 + ReLU per block, no skip
connections, so everything the decoder needs must pass through the deepest features) trained as a
denoising autoencoder (:func:`train_feature_net`): the input is a clean patch blurred by a random
Gaussian per axis and given Gaussian noise of random level, the target the clean patch. Undoing
blur and noise needs filters that respond to edges, textures and anatomy rather than to noise, which is
what a perceptual loss should compare; self-supervised, it needs no labels and adapts to any contrast,
dimension (2D/3D) and channel count. The decoder is used only for that training;
:meth:`MRIFeatureNet.features` returns each encoder block's output (after ReLU, before pooling, like
VGG's ``phi_{i,j}``), and ``feature_scale`` (a buffer set by :func:`train_feature_net`) is each block's
mean squared activation on clean patches, by which the perceptual loss divides, the analogue of the
paper's constant 1/12.75 rescaling of VGG features.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import ClassVar

import torch
from monai.networks.layers.factories import Act, Conv, Norm, Pool
from torch import nn

from ..errors import InputError
from .checks import check_input, check_int, int_list
from .shuffle import AxisSubpixel, as_factors, icnr_, upsample_linear

__all__ = ["SRResNet", "Discriminator", "MRIFeatureNet", "gaussian_blur", "subpixel_stages", "train_feature_net"]

#: With the skip, the last convolution's He weights are scaled by this, so the generator starts as linear
#: interpolation plus a small correction (as ESPCN's sub-pixel convolution).
_SKIP_INIT_GAIN = 0.1
#: PReLU's initial negative slope (He et al. 2015), also the gain of the He initialisation before it.
_PRELU_INIT = 0.25
#: Without norm layers, each residual block's second convolution starts at this share of its He scale
#: (ESRGAN's "smaller initialisation"): with the full scale every block doubles the activations'
#: variance (16 blocks: x 65,536) and training diverges from the first step (measured: MSE ~4e5).
_RESIDUAL_INIT_GAIN = 0.1
_NORMS = ("batch", "instance", None)


def _check_dims(spatial_dims: object) -> int:
    if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
        raise InputError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}", "spatial_dims", "give 2 or 3")
    return int(spatial_dims)  # type: ignore[call-overload]


def _check_norm(norm: object) -> str | None:
    if norm not in _NORMS or isinstance(norm, bool):
        raise InputError(f"norm must be 'batch', 'instance' or None, got {norm!r}", "norm",
                         "give 'batch' (the paper), 'instance' or None")
    return norm  # type: ignore[return-value]


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{name} must be True or False, got {value!r}", name, "give a boolean")
    return value


def _check_odd(name: str, value: object) -> int:
    check_int(name, value, 1)
    if value % 2 == 0:  # type: ignore[operator]
        raise InputError(f"{name} must be odd (same padding keeps the size), got {value}", name, "give e.g. 9")
    return value  # type: ignore[return-value]


def _norm_layer(norm: str | None, spatial_dims: int, channels: int) -> nn.Module:
    if norm == "batch":
        return Norm[Norm.BATCH, spatial_dims](channels)
    if norm == "instance":
        return Norm[Norm.INSTANCE, spatial_dims](channels, affine=True)
    return nn.Identity()


def subpixel_stages(scale: Sequence[int]) -> list[tuple[int, ...]]:
    """The per-axis factors of SRResNet's sub-pixel stages for per-axis ``scale``: a power of two
    ``2^k`` is ``k`` x2 stages along its axis, any other factor one stage of itself; axes with fewer
    stages take 1 in the later ones. ``(1, 4)`` -> ``[(1, 2), (1, 2)]``, ``(4, 4)`` -> ``[(2, 2), (2, 2)]``,
    ``(2, 3)`` -> ``[(2, 3)]``, ``(4, 3, 1)`` -> ``[(2, 3, 1), (2, 1, 1)]``."""
    per_axis = [[2] * (f.bit_length() - 1) if f & (f - 1) == 0 else [f] for f in (int(f) for f in scale)]
    count = max(len(p) for p in per_axis)
    return [tuple(p[i] if i < len(p) else 1 for p in per_axis) for i in range(count)]


class _ResidualBlock(nn.Module):
    """conv3 - norm - PReLU - conv3 - norm, plus the identity."""

    def __init__(self, spatial_dims: int, features: int, norm: str | None) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        bias = norm is None
        self.body = nn.Sequential(
            conv(features, features, kernel_size=3, padding=1, bias=bias),
            _norm_layer(norm, spatial_dims, features),
            Act[Act.PRELU](num_parameters=features, init=_PRELU_INIT),
            conv(features, features, kernel_size=3, padding=1, bias=bias),
            _norm_layer(norm, spatial_dims, features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SRResNet(nn.Module):
    """SRResNet, SRGAN's generator: residual blocks on the low-resolution grid, then axis-wise x2 sub-pixel stages.

    Input ``(N, in_channels, *S)`` on the acquired grid, output
    ``(N, out_channels, *(s * f for s, f in zip(S, scale)))``.

    Args:
        spatial_dims: 2 (inputs ``(N, C, H, W)``) or 3 (inputs ``(N, C, D, H, W)``).
        in_channels: channels of the input (the image, then any guidance channels).
        out_channels: channels of the output; at most ``in_channels`` when ``skip``.
        scale: upsampling factors, one per spatial axis, or an int for the LAST axis only (the slice
            axis of mrisr's patch layout); see :func:`mrisr.nets.shuffle.as_factors`. The paper: ``[4, 4]``.
        features: width of every hidden layer (64 in the paper).
        blocks: number of residual blocks, >= 1 (16 in the paper).
        kernel_size: odd kernel size of the first and last convolutions (9 in the paper).
        norm: ``"batch"`` (the paper), ``"instance"`` or ``None``, after the residual blocks' and the
            post-residual convolutions.
        skip: add the linear interpolation of the first ``out_channels`` input channels.

    Attributes:
        config: the constructor arguments as a JSON-serialisable dict; ``SRResNet(**config)`` rebuilds it.
        spatial_dims, in_channels, out_channels: as given.
        scale: the per-axis factors, a tuple of ``spatial_dims`` ints.
        stages: the per-axis factors of each sub-pixel stage (:func:`subpixel_stages`).
        upsampling: ``"post"``, the input is on the acquired low-resolution grid.
        head, body, upsample, tail: the first convolution + PReLU; the residual blocks and the
            post-residual conv + norm; the sub-pixel stages; the last convolution.

    Raises:
        InputError: an argument out of range, naming it; an input of the wrong layout (forward).

    Example:
        >>> net = SRResNet(spatial_dims=2, scale=4, features=8, blocks=2)
        >>> net(torch.zeros(1, 1, 16, 4)).shape
        torch.Size([1, 1, 16, 16])
        >>> SRResNet(spatial_dims=3, scale=[2, 2, 1], features=4, blocks=1, norm=None)(torch.zeros(1, 1, 4, 4, 3)).shape
        torch.Size([1, 1, 8, 8, 3])
    """

    upsampling: ClassVar[str] = "post"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        scale: int | Sequence[int] = 4,
        features: int = 64,
        blocks: int = 16,
        kernel_size: int = 9,
        norm: str | None = "batch",
        skip: bool = True,
    ) -> None:
        super().__init__()
        dims = _check_dims(spatial_dims)
        check_int("in_channels", in_channels, 1)
        check_int("out_channels", out_channels, 1)
        factors = as_factors(scale, dims)
        check_int("features", features, 1)
        check_int("blocks", blocks, 1)
        _check_odd("kernel_size", kernel_size)
        _check_norm(norm)
        _check_bool("skip", skip)
        if skip and out_channels > in_channels:
            raise InputError(
                f"out_channels ({out_channels}) exceeds in_channels ({in_channels}); the skip interpolates the "
                "first out_channels input channels",
                "out_channels",
                "give out_channels <= in_channels, or skip=False",
            )
        self.config = {
            "spatial_dims": dims,
            "in_channels": in_channels,
            "out_channels": out_channels,
            "scale": list(factors),
            "features": features,
            "blocks": blocks,
            "kernel_size": kernel_size,
            "norm": norm,
            "skip": skip,
        }
        self.spatial_dims = dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.scale: tuple[int, ...] = factors
        self.stages = subpixel_stages(factors)
        self.skip = skip
        self.norm = norm

        conv = Conv[Conv.CONV, dims]
        prelu = Act[Act.PRELU]
        self.head = nn.Sequential(conv(in_channels, features, kernel_size=kernel_size, padding=kernel_size // 2),
                                  prelu(num_parameters=features, init=_PRELU_INIT))
        self.body = nn.Sequential(
            *[_ResidualBlock(dims, features, norm) for _ in range(blocks)],
            conv(features, features, kernel_size=3, padding=1, bias=norm is None),
            _norm_layer(norm, dims, features),
        )
        self.upsample = nn.Sequential(*[
            layer for stage in self.stages
            for layer in (AxisSubpixel(dims, features, features, stage, kernel_size=3),
                          prelu(num_parameters=features, init=_PRELU_INIT))
        ])
        self.tail = conv(features, out_channels, kernel_size=kernel_size, padding=kernel_size // 2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal (fan_in, PReLU gain at slope 0.25) convolutions, ICNR sub-pixel convolutions (no
        checkerboard at the start), a linear-gain last convolution (x 0.1 with the skip); zero biases;
        norm layers at weight 1, bias 0; without norm layers, the residual blocks' second convolutions
        x 0.1. The paper does not state its initialisation."""
        subpixel = {id(m.conv) for m in self.upsample if isinstance(m, AxisSubpixel)}
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d)) and id(module) not in subpixel:
                linear = module is self.tail
                nn.init.kaiming_normal_(module.weight, a=_PRELU_INIT, mode="fan_in",
                                        nonlinearity="linear" if linear else "leaky_relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, AxisSubpixel):
                icnr_(module.conv, module.factors)
        if self.norm is None:  # no norm layer rescales the residual branches: start them small
            with torch.no_grad():
                for block in self.body:
                    if isinstance(block, _ResidualBlock):
                        block.body[3].weight.mul_(_RESIDUAL_INIT_GAIN)
        if self.skip:
            with torch.no_grad():
                self.tail.weight.mul_(_SKIP_INIT_GAIN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``tail(upsample(head(x) + body(head(x))))`` (plus ``upsample_linear(x[:, :out_channels], scale)``
        when ``skip``)."""
        check_input(self, x)
        h = self.head(x)
        y = self.tail(self.upsample(h + self.body(h)))
        if self.skip:
            y = y + upsample_linear(x[:, : self.out_channels], self.scale)
        return y

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())


class Discriminator(nn.Module):
    """SRGAN's discriminator: eight 3x3 convolutions (strides 1, 2, ...), global average pooling, two dense layers.

    Input an HR (or super-resolved) patch ``(N, in_channels, *S)`` of any size (every axis >= 1; the
    four stride-2 layers reduce 16 voxels to 1), output ``(N, out_channels)`` logits (real > 0).

    Args:
        spatial_dims: 2 (inputs ``(N, C, H, W)``) or 3 (inputs ``(N, C, D, H, W)``).
        in_channels: channels of the patches.
        out_channels: logits per patch (1 in the paper).
        features: width of the first two convolutions; the others are 2, 4 and 8 times it
            (64 -> 64, 64, 128, 128, 256, 256, 512, 512 in the paper).
        dense: width of the hidden dense layer (1024 in the paper).
        norm: ``"batch"`` (the paper), ``"instance"`` or ``None``, after every convolution but the first.
            Instance norm needs the last maps to keep more than one voxel (an axis above 16 voxels; torch
            refuses a single one in training, and it would normalise to 0).
        negative_slope: of the LeakyReLUs (0.2 in the paper).

    Attributes:
        config: the constructor arguments as a JSON-serialisable dict; ``Discriminator(**config)`` rebuilds it.
        spatial_dims, in_channels, out_channels: as given.
        body: the convolutions, norms and LeakyReLUs. head: the dense layers.

    Raises:
        InputError: an argument out of range, naming it; an input of the wrong layout (forward).

    Example:
        >>> d = Discriminator(spatial_dims=2, features=4, dense=8)
        >>> d(torch.zeros(2, 1, 64, 16)).shape
        torch.Size([2, 1])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        features: int = 64,
        dense: int = 1024,
        norm: str | None = "batch",
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        dims = _check_dims(spatial_dims)
        check_int("in_channels", in_channels, 1)
        check_int("out_channels", out_channels, 1)
        check_int("features", features, 1)
        check_int("dense", dense, 1)
        _check_norm(norm)
        if (isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float))
                or not 0 <= negative_slope < 1):
            raise InputError(f"negative_slope must be a number in [0, 1), got {negative_slope!r}", "negative_slope",
                             "give e.g. 0.2 (the paper)")
        self.config = {
            "spatial_dims": dims,
            "in_channels": in_channels,
            "out_channels": out_channels,
            "features": features,
            "dense": dense,
            "norm": norm,
            "negative_slope": float(negative_slope),
        }
        self.spatial_dims = dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.negative_slope = float(negative_slope)

        conv = Conv[Conv.CONV, dims]
        widths = [features * m for m in (1, 1, 2, 2, 4, 4, 8, 8)]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip([in_channels, *widths[:-1]], widths, strict=True)):
            normed = i > 0 and norm is not None
            layers.append(conv(c_in, c_out, kernel_size=3, stride=1 + i % 2, padding=1, bias=not normed))
            if normed:
                layers.append(_norm_layer(norm, dims, c_out))
            layers.append(Act[Act.LEAKYRELU](negative_slope=self.negative_slope))
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(widths[-1], dense), Act[Act.LEAKYRELU](negative_slope=self.negative_slope),
                                  nn.Linear(dense, out_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal (fan_in, LeakyReLU gain) convolutions and hidden dense layer, a linear-gain output layer;
        zero biases. The paper does not state its initialisation."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear)):
                last = module is self.head[-1]
                nn.init.kaiming_normal_(module.weight, a=self.negative_slope, mode="fan_in",
                                        nonlinearity="linear" if last else "leaky_relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``head(mean over space of body(x))``: ``(N, out_channels)`` logits."""
        check_input(self, x)
        h = self.body(x)
        return self.head(h.mean(dim=tuple(range(2, h.ndim))))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())


class MRIFeatureNet(nn.Module):
    """A VGG-like encoder trained on MRI as a denoising autoencoder, for SRGAN's perceptual loss (no VGG weights).

    ``features(x)`` gives the output of each encoder block (``convs_per_block`` conv3 + ReLU, max-pooling
    x2 between blocks): block ``i`` is ``(N, features[i], *(s // 2^i))``. ``forward(x)`` is the
    reconstruction ``(N, out_channels, *S)`` by the light decoder, used only to train the encoder
    (:func:`train_feature_net`). Every spatial axis needs at least ``2^(len(features) - 1)`` voxels.

    Args:
        spatial_dims: 2 (inputs ``(N, C, H, W)``) or 3 (inputs ``(N, C, D, H, W)``).
        in_channels: channels of the input.
        out_channels: channels of the decoder's reconstruction (``in_channels`` for a denoising autoencoder).
        features: width of each encoder block.
        convs_per_block: 3x3 convolutions per encoder block (2 as in VGG's first blocks).

    Attributes:
        config: the constructor arguments as a JSON-serialisable dict; ``MRIFeatureNet(**config)`` rebuilds it.
        spatial_dims, in_channels, out_channels: as given.
        widths: the encoder blocks' widths (``config["features"]``).
        encoder, decoder: ``nn.ModuleList`` of the blocks; ``decoder[-1]`` is the output convolution.
        feature_scale: buffer, each block's mean squared activation on clean training patches (ones until
            :func:`train_feature_net` sets it); in the state dict.

    Raises:
        InputError: an argument out of range, naming it; an input of the wrong layout (forward).

    Example:
        >>> net = MRIFeatureNet(spatial_dims=2, features=[4, 8])
        >>> [tuple(f.shape) for f in net.features(torch.zeros(1, 1, 16, 8))]
        [(1, 4, 16, 8), (1, 8, 8, 4)]
        >>> net(torch.zeros(1, 1, 16, 8)).shape
        torch.Size([1, 1, 16, 8])
    """

    feature_scale: torch.Tensor

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        features: Sequence[int] = (32, 64, 128),
        convs_per_block: int = 2,
    ) -> None:
        super().__init__()
        dims = _check_dims(spatial_dims)
        check_int("in_channels", in_channels, 1)
        check_int("out_channels", out_channels, 1)
        widths = int_list("features", features, 1)
        check_int("convs_per_block", convs_per_block, 1)
        self.config = {
            "spatial_dims": dims,
            "in_channels": in_channels,
            "out_channels": out_channels,
            "features": widths,
            "convs_per_block": convs_per_block,
        }
        self.spatial_dims = dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.widths = widths

        conv = Conv[Conv.CONV, dims]
        relu = Act[Act.RELU]
        self.pool = Pool[Pool.MAX, dims](kernel_size=2, stride=2)
        self.encoder = nn.ModuleList()
        for c_in, c_out in zip([in_channels, *widths[:-1]], widths, strict=True):
            layers: list[nn.Module] = []
            for j in range(convs_per_block):
                layers += [conv(c_in if j == 0 else c_out, c_out, kernel_size=3, padding=1), relu()]
            self.encoder.append(nn.Sequential(*layers))
        # decoder: from the deepest block up, x2 (to the size of the block above) + conv3 + ReLU; then conv3 out
        self.decoder = nn.ModuleList(
            nn.Sequential(conv(c_in, c_out, kernel_size=3, padding=1), relu())
            for c_in, c_out in zip(widths[:0:-1], widths[-2::-1], strict=True)
        )
        self.decoder.append(conv(widths[0], out_channels, kernel_size=3, padding=1))
        self.register_buffer("feature_scale", torch.ones(len(widths)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal (fan_in, ReLU gain) convolutions, linear gain for the output one; zero biases."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                last = module is self.decoder[-1]
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="linear" if last else "relu")
                nn.init.zeros_(module.bias)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of each encoder block (after its last ReLU, before pooling), shallow to deep."""
        check_input(self, x)
        out = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else self.pool(x))
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's reconstruction of ``x`` from the deepest features, ``(N, out_channels, *S)``."""
        feats = self.features(x)
        y = feats[-1]
        for block, above in zip(self.decoder[:-1], feats[-2::-1], strict=True):
            y = block(nn.functional.interpolate(y, size=above.shape[2:], mode="nearest"))
        return self.decoder[-1](y)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())


def _gaussian_kernel(sigma: float, radius: int) -> torch.Tensor:
    if sigma <= 0:
        kernel = torch.zeros(2 * radius + 1)
        kernel[radius] = 1.0
        return kernel
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(x: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """``(N, C, *S)`` blurred by a separable Gaussian of standard deviation ``sigmas[a]`` voxels along
    spatial axis ``a`` (0: none), edges replicated; the same size."""
    n, c, *size = x.shape
    d = len(size)
    conv = {1: nn.functional.conv1d, 2: nn.functional.conv2d, 3: nn.functional.conv3d}[d]
    y = x.reshape(n * c, 1, *size)
    for axis, sigma in enumerate(sigmas):
        if sigma <= 0:
            continue
        radius = max(1, math.ceil(3 * sigma))
        shape = [1] * d
        shape[axis] = 2 * radius + 1
        kernel = _gaussian_kernel(float(sigma), radius).to(y).reshape(1, 1, *shape)
        pad = [0] * (2 * d)
        pad[2 * (d - 1 - axis)] = pad[2 * (d - 1 - axis) + 1] = radius  # F.pad lists the last axis first
        y = conv(nn.functional.pad(y, pad, mode="replicate"), kernel)
    return y.reshape(n, c, *size)


def _batches(images: Iterable[torch.Tensor] | Callable[[], torch.Tensor] | torch.Tensor, batch_size: int,
             generator: torch.Generator) -> Iterator[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        while True:
            yield images[torch.randint(0, len(images), (min(batch_size, len(images)),), generator=generator)]
    elif callable(images):
        while True:
            yield images()
    else:
        yield from itertools.cycle(images)


def train_feature_net(
    images: Iterable[torch.Tensor] | Callable[[], torch.Tensor] | torch.Tensor,
    steps: int = 1000,
    lr: float = 1e-3,
    *,
    features: Sequence[int] = (32, 64, 128),
    convs_per_block: int = 2,
    batch_size: int = 16,
    noise: float = 0.1,
    blur: float = 1.5,
    seed: int = 0,
    generator: torch.Generator | None = None,
    net: MRIFeatureNet | None = None,
    calibration_batches: int = 4,
) -> MRIFeatureNet:
    """An :class:`MRIFeatureNet` trained on MRI patches as a denoising autoencoder (self-supervised).

    Each step takes a clean batch ``(N, C, *S)``, blurs it by a Gaussian of standard deviation drawn
    uniformly in ``[0, blur]`` voxels independently per axis, adds Gaussian noise of standard deviation
    ``u * noise * std(patch)`` (``u`` uniform in [0, 1] per patch), and takes one Adam step on the MSE
    between the reconstruction and the clean batch. Then ``feature_scale`` is set to each block's mean
    squared activation over ``calibration_batches`` further clean batches, and the network is returned
    frozen (eval mode, ``requires_grad`` off), ready for :func:`mrisr.train.gan.perceptual_loss`.

    Args:
        images: clean (normalised) patches: a tensor ``(M, C, *S)`` sampled ``batch_size`` at a time, an
            iterable of batches ``(N, C, *S)`` (cycled), or a callable returning a batch on each call.
        steps: Adam steps, >= 1. lr: Adam's learning rate.
        features, convs_per_block: the new network's (ignored when ``net`` is given).
        batch_size: patches per step when ``images`` is a tensor.
        noise: the largest noise level, relative to each patch's standard deviation, >= 0.
        blur: the largest Gaussian standard deviation in voxels, >= 0.
        seed: seeds the new network's initialisation and the corruption (with no ``generator``); the
            global random state is left as it was.
        generator: the random generator of the corruption and sampling (CPU), instead of ``seed``.
        net: a network to train further instead of a new one.
        calibration_batches: clean batches averaged for ``feature_scale``, >= 1.

    Returns:
        The trained, frozen network (on the device of the batches).

    Raises:
        InputError: an argument out of range, or batches that are not ``(N, C, *S)`` with 2 or 3 spatial axes.
    """
    check_int("steps", steps, 1)
    check_int("batch_size", batch_size, 1)
    check_int("calibration_batches", calibration_batches, 1)
    check_int("seed", seed, 0)
    for name, value in (("lr", lr), ("noise", noise), ("blur", blur)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or (
                name == "lr" and not value > 0):
            raise InputError(f"{name} must be a {'positive' if name == 'lr' else 'non-negative'} number, got "
                             f"{value!r}", name, "give e.g. 1e-3" if name == "lr" else "give e.g. 0.1")
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    stream = _batches(images, batch_size, generator)

    def draw() -> torch.Tensor:
        try:
            batch = next(stream)
        except StopIteration:
            raise InputError("train_feature_net: images gave no batch", "images",
                             "give a non-empty tensor, iterable or callable of (N, C, *S) batches") from None
        if not isinstance(batch, torch.Tensor) or batch.ndim not in (4, 5) or batch.shape[0] == 0:
            raise InputError(f"train_feature_net: a batch must be an (N, C, *S) tensor with 2 or 3 spatial axes, "
                             f"got {getattr(batch, 'shape', type(batch).__name__)}", "images",
                             "give (N, C, H, W) or (N, C, D, H, W) patches")
        return batch.float()

    first = draw()
    if net is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = MRIFeatureNet(first.ndim - 2, first.shape[1], first.shape[1], features, convs_per_block)
    net = net.to(first.device).train().requires_grad_(True)
    opt = torch.optim.Adam(net.parameters(), lr=float(lr))
    d = first.ndim - 2
    batch = first
    for step in range(steps):
        if step:
            batch = draw().to(first.device)
        n = batch.shape[0]
        sigmas = (torch.rand(d, generator=generator) * blur).tolist()
        level = torch.rand(n, generator=generator) * noise
        std = batch.reshape(n, -1).std(dim=1, correction=0)
        shape = (n,) + (1,) * (batch.ndim - 1)
        eps = torch.randn(batch.shape, generator=generator).to(batch)
        corrupted = gaussian_blur(batch, sigmas) + (level * std.cpu()).to(batch).reshape(shape) * eps
        loss = nn.functional.mse_loss(net(corrupted), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval().requires_grad_(False)
    with torch.no_grad():
        total = torch.zeros(len(net.widths), dtype=torch.float64)
        for _ in range(calibration_batches):
            feats = net.features(draw().to(first.device))
            total += torch.stack([f.double().square().mean().cpu() for f in feats])
        scale = (total / calibration_batches).clamp_min(1e-12)
        net.feature_scale.copy_(scale.to(net.feature_scale))
    return net
