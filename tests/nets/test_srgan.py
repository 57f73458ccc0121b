"""SRGAN's networks: SRResNet (shapes, paper parameter count, x2 stages, linear skip, config, bf16 channels-last,
gradients, bad arguments, ONNX, phantom fit), the Discriminator (any patch size, paper layer table) and the
MRI-trained perceptual feature network (blocks, denoising training, freezing, reproducibility)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import blob_phantoms, onnx_output
from torch import nn

from mrisr.errors import InputError
from mrisr.nets.shuffle import upsample_linear
from mrisr.nets.srgan import Discriminator, MRIFeatureNet, SRResNet, gaussian_blur, subpixel_stages, train_feature_net


def expected_srresnet(spatial_dims: int, in_channels: int = 1, out_channels: int = 1, scale: tuple = (1, 4),
                      features: int = 64, blocks: int = 16, kernel_size: int = 9, norm: str | None = "batch",
                      **_: object) -> int:
    """Ledig et al.'s Fig. 4: k9n64 conv + PReLU; B x (k3n64 conv, BN, PReLU, k3n64 conv, BN); k3n64 conv + BN;
    per x2 stage a k3 conv to 64 * prod(stage) maps + PReLU; k9 conv to the output. Channel-wise PReLU (f
    slopes), BN 2f parameters, no conv bias where a norm follows."""
    f, k, big = features, 3**spatial_dims, kernel_size**spatial_dims
    norm_p, bias = (2 * f, 0) if norm else (0, f)
    head = in_channels * big * f + f + f
    block = 2 * (f * k * f + bias + norm_p) + f
    post = f * k * f + bias + norm_p
    up = sum(f * k * f * math.prod(s) + f * math.prod(s) + f for s in subpixel_stages(scale))
    tail = f * big * out_channels + out_channels
    return head + blocks * block + post + up + tail


def expected_discriminator(spatial_dims: int, in_channels: int = 1, out_channels: int = 1, features: int = 64,
                           dense: int = 1024, norm: str | None = "batch", **_: object) -> int:
    """Ledig et al.'s Fig. 4: k3 convs n64 s1, n64 s2, n128 s1, n128 s2, n256 s1, n256 s2, n512 s1, n512 s2,
    BN on all but the first (bias only without BN), dense 1024, dense 1; here after a global average pool."""
    widths = [features * m for m in (1, 1, 2, 2, 4, 4, 8, 8)]
    total = 0
    for i, (c_in, c_out) in enumerate(zip([in_channels, *widths[:-1]], widths, strict=True)):
        normed = i > 0 and norm is not None
        total += c_in * 3**spatial_dims * c_out + (2 * c_out if normed else c_out)
    return total + widths[-1] * dense + dense + dense * out_channels + out_channels


def count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# (kwargs, per-axis factors, input shape, output shape)
TABLE = [
    (dict(spatial_dims=2, features=4, blocks=1), (1, 4), (2, 1, 6, 5), (2, 1, 6, 20)),  # int: last axis only
    (dict(spatial_dims=2, scale=[2, 2], features=4, blocks=2), (2, 2), (1, 1, 5, 7), (1, 1, 10, 14)),
    (dict(spatial_dims=2, scale=[3, 1], features=4, blocks=1, norm=None), (3, 1), (1, 1, 4, 4), (1, 1, 12, 4)),
    (dict(spatial_dims=2, scale=[4, 3], features=4, blocks=1, norm="instance"), (4, 3), (2, 1, 4, 5),
     (2, 1, 16, 15)),
    (dict(spatial_dims=2, in_channels=3, out_channels=2, scale=8, features=4, blocks=1, kernel_size=3), (1, 8),
     (2, 3, 4, 3), (2, 2, 4, 24)),
    (dict(spatial_dims=2, scale=[4, 4], skip=False), (4, 4), (1, 1, 6, 6), (1, 1, 24, 24)),  # the paper's
    (dict(spatial_dims=3, features=4, blocks=1), (1, 1, 4), (2, 1, 3, 4, 5), (2, 1, 3, 4, 20)),
    (dict(spatial_dims=3, scale=[2, 2, 1], features=4, blocks=1, kernel_size=5), (2, 2, 1), (1, 1, 3, 4, 5),
     (1, 1, 6, 8, 5)),
    (dict(spatial_dims=3, scale=[1, 3, 2], features=4, blocks=2, norm=None), (1, 3, 2), (2, 1, 2, 3, 4),
     (2, 1, 2, 9, 8)),
    (dict(spatial_dims=3, out_channels=2, scale=2, features=4, blocks=1, skip=False), (1, 1, 2), (2, 1, 3, 3, 3),
     (2, 2, 3, 3, 6)),
]


@pytest.mark.parametrize(("kwargs", "factors", "in_shape", "out_shape"), TABLE, ids=lambda v: str(v))
def test_shapes_and_parameter_counts(kwargs: dict, factors: tuple, in_shape: tuple, out_shape: tuple) -> None:
    torch.manual_seed(0)
    net = SRResNet(**kwargs)
    assert net.scale == factors and net.config["scale"] == list(factors)
    with torch.no_grad():
        y = net(torch.randn(in_shape))
    assert tuple(y.shape) == out_shape
    assert count(net) == expected_srresnet(**{**kwargs, "scale": factors})
    blocks = kwargs.get("blocks", 16)
    assert len(net.body) == blocks + 2 and len(net.upsample) == 2 * len(net.stages)
    assert sum(isinstance(m, nn.PReLU) for m in net.modules()) == 1 + blocks + len(net.stages)
    assert SRResNet.upsampling == "post"


def test_paper_parameter_count() -> None:
    # Ledig et al. (CVPR 2017), SRResNet x4: 16 blocks of 64 features, two x2 pixel-shuffle stages (the
    # paper's Fig. 4). The paper prints no total; the ~1.5M usually quoted for it (RGB) is matched:
    # RGB 1,548,547 and greyscale 1,527,809 by the formula (channel-wise PReLU, no bias before BN).
    assert count(SRResNet(2, 3, 3, scale=[4, 4])) == expected_srresnet(2, 3, 3, (4, 4)) == 1_548_547
    assert count(SRResNet(2, scale=[4, 4])) == expected_srresnet(2, scale=(4, 4)) == 1_527_809
    assert count(SRResNet(2, scale=[4, 4], skip=False)) == 1_527_809  # the skip has no parameters
    # one axis x4 (the MRI slice axis): each x2 stage makes 128 maps instead of 256
    assert count(SRResNet(2, scale=4)) == expected_srresnet(2, scale=(1, 4)) == 1_527_809 - 2 * (36_864 * 2 + 128)


def test_subpixel_stages() -> None:
    assert subpixel_stages((1, 4)) == [(1, 2), (1, 2)]
    assert subpixel_stages((4, 4)) == [(2, 2), (2, 2)]
    assert subpixel_stages((1, 1, 8)) == [(1, 1, 2)] * 3
    assert subpixel_stages((3, 1)) == [(3, 1)]
    assert subpixel_stages((4, 3, 1)) == [(2, 3, 1), (2, 1, 1)]
    assert subpixel_stages((1, 6)) == [(1, 6)]  # not a power of two: one stage
    net = SRResNet(2, scale=[2, 4], features=4, blocks=1)
    assert [m.factors for m in net.upsample if hasattr(m, "factors")] == [(2, 2), (1, 2)]


@pytest.mark.parametrize(("spatial_dims", "scale"), [(2, 4), (2, [2, 2]), (3, [1, 1, 4]), (3, [2, 2, 1])])
def test_skip_is_linear_interpolation(spatial_dims: int, scale: object) -> None:
    torch.manual_seed(1)
    x = torch.randn((2, 1) + (4,) * spatial_dims)
    for skip in (True, False):
        net = SRResNet(spatial_dims, scale=scale, features=4, blocks=1, skip=skip)
        with torch.no_grad():
            net.tail.weight.zero_()
            net.tail.bias.zero_()
            y = net(x)
        expected = upsample_linear(x, net.scale) if skip else torch.zeros_like(y)
        torch.testing.assert_close(y, expected)
    net = SRResNet(2, in_channels=3, out_channels=2, scale=2, features=4, blocks=1)
    with torch.no_grad():
        net.tail.weight.zero_()
        x = torch.randn(1, 3, 4, 4)
        torch.testing.assert_close(net(x), upsample_linear(x[:, :2], (1, 2)))


def test_initialisation() -> None:
    torch.manual_seed(2)
    plain, skipped = SRResNet(2, scale=[1, 4], skip=False), SRResNet(2, scale=[1, 4], skip=True)
    conv = plain.body[0].body[0]
    target = math.sqrt(2 / (1 + 0.25**2)) / math.sqrt(64 * 9)  # He normal, fan_in, PReLU slope 0.25
    assert abs(float(conv.weight.detach().std()) - target) < 0.05 * target
    ratio = float(skipped.tail.weight.detach().std() / plain.tail.weight.detach().std())
    assert 0.08 < ratio < 0.12  # the skip's generator starts near linear interpolation
    assert all(float(m.weight.detach().mean()) == 0.25 for m in plain.modules() if isinstance(m, nn.PReLU))
    convs = [m for m in plain.modules() if isinstance(m, nn.Conv2d)]
    assert all(torch.count_nonzero(m.bias) == 0 for m in convs if m.bias is not None)
    # convs before batch norm have no bias; the first, the sub-pixel ones and the last have one
    assert [m.bias is None for m in convs].count(True) == 2 * 16 + 1


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_config_rebuilds_the_networks(spatial_dims: int) -> None:
    scale = [2, 1] if spatial_dims == 2 else [1, 2, 3]
    net = SRResNet(spatial_dims, in_channels=2, scale=tuple(scale), features=4, blocks=2, kernel_size=3,
                   norm="instance", skip=True)
    config = json.loads(json.dumps(net.config))
    assert config == net.config == {"spatial_dims": spatial_dims, "in_channels": 2, "out_channels": 1,
                                    "scale": scale, "features": 4, "blocks": 2, "kernel_size": 3,
                                    "norm": "instance", "skip": True}
    d = Discriminator(spatial_dims, in_channels=2, out_channels=3, features=2, dense=8, norm=None,
                      negative_slope=0.1)
    assert json.loads(json.dumps(d.config)) == d.config == {
        "spatial_dims": spatial_dims, "in_channels": 2, "out_channels": 3, "features": 2, "dense": 8,
        "norm": None, "negative_slope": 0.1}
    f = MRIFeatureNet(spatial_dims, in_channels=2, out_channels=2, features=(4, 8), convs_per_block=1)
    with torch.no_grad():
        f.feature_scale.copy_(torch.tensor([2.0, 3.0]))
    assert json.loads(json.dumps(f.config)) == f.config == {
        "spatial_dims": spatial_dims, "in_channels": 2, "out_channels": 2, "features": [4, 8], "convs_per_block": 1}
    x = torch.randn((2, 2) + (8,) * spatial_dims)
    for original in (net, d, f):
        twin = type(original)(**json.loads(json.dumps(original.config)))
        twin.load_state_dict(original.state_dict())
        original.eval()
        twin.eval()
        with torch.no_grad():
            assert torch.equal(twin(x), original(x))
        assert (twin.spatial_dims, twin.in_channels) == (spatial_dims, 2)
    assert twin.feature_scale.tolist() == [2.0, 3.0]


def _close_in_bf16(net: nn.Module, x: torch.Tensor, fmt: torch.memory_format, tolerance: float = 2e-2) -> None:
    with torch.no_grad():
        expected = net(x)
        net = net.to(memory_format=fmt)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = net(x.to(memory_format=fmt))
    assert got.shape == expected.shape
    span = float(expected.max() - expected.min())
    assert float((got.float() - expected).abs().max()) < tolerance * span


@pytest.mark.parametrize(("spatial_dims", "scale", "norm"),
                         [(2, [1, 4], "batch"), (2, [2, 2], None), (3, [1, 1, 4], "instance"), (3, [2, 2, 1], "batch")])
def test_bf16_channels_last_close_to_float32(spatial_dims: int, scale: list, norm: str | None) -> None:
    torch.manual_seed(4)
    fmt = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
    _close_in_bf16(SRResNet(spatial_dims, scale=scale, features=8, blocks=2, norm=norm).eval(),
                   torch.randn((2, 1) + (6,) * spatial_dims), fmt)
    _close_in_bf16(SRResNet(spatial_dims, scale=scale, features=8, blocks=2, norm=norm, skip=False).eval(),
                   torch.randn((2, 1) + (6,) * spatial_dims), fmt)
    _close_in_bf16(MRIFeatureNet(spatial_dims, features=(4, 8)), torch.randn((2, 1) + (8,) * spatial_dims), fmt)


@pytest.mark.parametrize(("spatial_dims", "norm"), [(2, "batch"), (2, None), (3, "batch"), (3, None)])
def test_discriminator_bf16_channels_last_close_to_float32(spatial_dims: int, norm: str | None) -> None:
    """One logit per patch after ten bf16 layers: within 3% of the logits' range over patches of
    varied level (instance norm, which removes the level, is left out: its logits barely differ)."""
    torch.manual_seed(4)
    fmt = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
    level = torch.linspace(-3, 3, 8).reshape(8, 1, *(1,) * spatial_dims)
    x = torch.randn((8, 1) + (16,) * spatial_dims) * level.abs() + level
    _close_in_bf16(Discriminator(spatial_dims, features=4, dense=16, norm=norm).eval(), x, fmt, tolerance=3e-2)


@pytest.mark.parametrize(("skip", "norm"), [(True, "batch"), (False, None), (True, "instance")])
def test_gradients_reach_every_parameter(skip: bool, norm: str | None) -> None:
    net = SRResNet(3, scale=[1, 2, 2], features=4, blocks=2, norm=norm, skip=skip)
    net(torch.randn(2, 1, 4, 4, 4)).square().mean().backward()
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in net.parameters())
    d = Discriminator(2, features=2, dense=4, norm=norm)
    d(torch.randn(3, 1, 32, 16)).sum().backward()  # instance norm: more than one voxel in the last maps
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in d.parameters())
    f = MRIFeatureNet(2, features=(4, 8, 8))
    (f(torch.randn(2, 1, 8, 8)) - 1).square().mean().backward()
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in f.parameters())


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        (dict(spatial_dims=1), "spatial_dims"),
        (dict(spatial_dims=True), "spatial_dims"),
        (dict(spatial_dims=2, in_channels=0), "in_channels"),
        (dict(spatial_dims=2, out_channels=2), "out_channels"),  # skip needs out <= in
        (dict(spatial_dims=2, scale=1), "scale"),
        (dict(spatial_dims=3, scale=[2, 2]), "scale"),
        (dict(spatial_dims=2, features=0), "features"),
        (dict(spatial_dims=2, features=8.0), "features"),
        (dict(spatial_dims=2, blocks=0), "blocks"),
        (dict(spatial_dims=2, kernel_size=4), "kernel_size"),
        (dict(spatial_dims=2, norm="layer"), "norm"),
        (dict(spatial_dims=2, norm=False), "norm"),
        (dict(spatial_dims=2, skip="yes"), "skip"),
    ],
)
def test_bad_arguments(kwargs: dict, parameter: str) -> None:
    with pytest.raises(InputError) as info:
        SRResNet(**kwargs)
    assert parameter in str(info.value)


@pytest.mark.parametrize(
    ("cls", "kwargs", "parameter"),
    [
        (Discriminator, dict(spatial_dims=4), "spatial_dims"),
        (Discriminator, dict(spatial_dims=2, out_channels=0), "out_channels"),
        (Discriminator, dict(spatial_dims=2, features=0), "features"),
        (Discriminator, dict(spatial_dims=2, dense=0), "dense"),
        (Discriminator, dict(spatial_dims=2, norm="group"), "norm"),
        (Discriminator, dict(spatial_dims=2, negative_slope=1.5), "negative_slope"),
        (MRIFeatureNet, dict(spatial_dims=1), "spatial_dims"),
        (MRIFeatureNet, dict(spatial_dims=2, features=[]), "features"),
        (MRIFeatureNet, dict(spatial_dims=2, features=[4, 0]), "features"),
        (MRIFeatureNet, dict(spatial_dims=2, convs_per_block=0), "convs_per_block"),
    ],
)
def test_bad_arguments_of_the_other_networks(cls: type, kwargs: dict, parameter: str) -> None:
    with pytest.raises(InputError) as info:
        cls(**kwargs)
    assert parameter in str(info.value)


@pytest.mark.parametrize("cls", [SRResNet, Discriminator, MRIFeatureNet])
def test_input_that_does_not_match_the_network(cls: type) -> None:
    net = cls(2, features=2) if cls is not MRIFeatureNet else cls(2, features=[2])
    for shape in ((1, 1, 16, 16, 16), (1, 2, 16, 16)):
        with pytest.raises(InputError, match="input"):
            net(torch.zeros(shape))


@pytest.mark.parametrize(("spatial_dims", "shape"), [(2, (2, 1, 64, 16)), (2, (2, 1, 16, 64)), (2, (2, 1, 17, 23)),
                                                     (3, (2, 1, 16, 16, 16)), (3, (2, 1, 32, 16, 64))])
def test_discriminator_takes_any_patch(spatial_dims: int, shape: tuple) -> None:
    torch.manual_seed(5)
    d = Discriminator(spatial_dims, features=2, dense=8)
    assert tuple(d(torch.randn(shape)).shape) == (2, 1)
    assert count(d) == expected_discriminator(spatial_dims, features=2, dense=8)


def test_discriminator_paper_layer_table() -> None:
    # Ledig et al.'s discriminator on 96x96 RGB: convolutions 4,685,376 parameters with biases; here no bias
    # before BN (-1,856), BN +3,712. Its dense 1024 read 6x6x512 = 18,432 values (18,875,392 parameters);
    # global average pooling leaves 512 (525,312), so the total is 5,213,569 instead of the paper's 23.6M.
    d = Discriminator(2, in_channels=3)
    assert count(d) == expected_discriminator(2, 3) == 4_685_376 - 1_856 + 3_712 + 525_312 + 1_025 == 5_213_569
    convs = [m for m in d.body if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [c.stride for c in convs] == [(1, 1), (2, 2)] * 4
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.body) == 7 and not isinstance(d.body[1], nn.BatchNorm2d)
    assert all(m.negative_slope == 0.2 for m in d.modules() if isinstance(m, nn.LeakyReLU))
    assert [m.out_features for m in d.head if isinstance(m, nn.Linear)] == [1024, 1]


def test_feature_net_blocks() -> None:
    net = MRIFeatureNet(3, features=(4, 8, 16))
    feats = net.features(torch.randn(2, 1, 16, 8, 4))
    assert [tuple(f.shape) for f in feats] == [(2, 4, 16, 8, 4), (2, 8, 8, 4, 2), (2, 16, 4, 2, 1)]
    assert all(float(f.detach().min()) >= 0 for f in feats)  # after the ReLU, like VGG's phi_ij
    assert net(torch.randn(1, 1, 9, 7, 5)).shape == (1, 1, 9, 7, 5)  # odd sizes reconstruct to the input grid
    # VGG-like: two 3^d convs per block; decoder one conv per block up, plus the output conv
    k = 27
    enc = (1 * k * 4 + 4 + 4 * k * 4 + 4) + (4 * k * 8 + 8 + 8 * k * 8 + 8) + (8 * k * 16 + 16 + 16 * k * 16 + 16)
    dec = (16 * k * 8 + 8) + (8 * k * 4 + 4) + (4 * k * 1 + 1)
    assert count(net) == enc + dec
    assert net.feature_scale.tolist() == [1.0, 1.0, 1.0]


def test_gaussian_blur() -> None:
    x = torch.zeros(1, 1, 21, 21)
    x[0, 0, 10, 10] = 1
    y = gaussian_blur(x, [0.0, 2.0])
    assert torch.allclose(y.sum(), torch.tensor(1.0)) and torch.count_nonzero(y[0, 0, 9]) == 0  # one axis only
    profile = y[0, 0, 10]
    var = float((profile * (torch.arange(21.0) - 10) ** 2).sum())
    assert abs(var - 4.0) < 0.05
    assert torch.equal(gaussian_blur(x, [0.0, 0.0]), x)
    assert gaussian_blur(torch.randn(2, 3, 5, 6, 7), [1.0, 0.5, 2.0]).shape == (2, 3, 5, 6, 7)


def smooth_patches(n: int, seed: int, size: int = 16, spatial_dims: int = 2) -> torch.Tensor:
    """``(n, 1, size...)`` random smooth patches with edges: blurred noise plus a random half-space."""
    g = torch.Generator().manual_seed(seed)
    x = gaussian_blur(torch.randn((n, 1) + (size,) * spatial_dims, generator=g), [1.5] * spatial_dims)
    grid = torch.arange(size, dtype=torch.float32) - size / 2
    edge = (grid.reshape(1, 1, -1) * torch.randn(n, 1, 1, generator=g)).gt(0).float()
    shape = (n, 1, size) + (1,) * (spatial_dims - 1)
    return 3 * x + edge.reshape(shape) + 1


def test_train_feature_net_learns_to_denoise_and_freezes() -> None:
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    data = smooth_patches(32, seed=0)
    net = train_feature_net(data, steps=200, lr=1e-2, features=(4, 8), batch_size=8, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global random state is untouched
    assert isinstance(net, MRIFeatureNet) and not net.training
    assert not any(p.requires_grad for p in net.parameters())
    assert net.config["features"] == [4, 8] and net.spatial_dims == 2
    held = smooth_patches(8, seed=9)
    noisy = gaussian_blur(held, [1.0, 1.0]) + 0.1 * held.std() * torch.randn(held.shape,
                                                                             generator=torch.Generator().manual_seed(3))
    with torch.random.fork_rng():
        torch.manual_seed(1)  # the same initial weights as train_feature_net's
        untrained = MRIFeatureNet(2, features=(4, 8))
    with torch.no_grad():
        before = float((untrained(noisy) - held).square().mean())
        after = float((net(noisy) - held).square().mean())
    # the reconstruction of held-out corrupted patches explains most of their variance (a constant, none)
    assert after < 0.25 * float(held.var()) and after < 0.1 * before, (after, before, float(held.var()))
    # feature_scale: each block's mean squared activation on clean patches
    with torch.no_grad():
        feats = net.features(data)
    for scale, f in zip(net.feature_scale.tolist(), feats, strict=True):
        assert 0.7 < scale / float(f.square().mean()) < 1.4
    # the same seed gives the same network; an iterable and a callable of batches work too
    again = train_feature_net(data, steps=200, lr=1e-2, features=(4, 8), batch_size=8, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values(),
                                                 strict=True))
    batches = list(data.split(8))
    assert train_feature_net(batches, steps=3, features=(2,)).widths == [2]
    assert train_feature_net(lambda: data[:4], steps=2, features=(2, 2), generator=torch.Generator()).widths == [2, 2]
    further = train_feature_net(data, steps=2, net=net)
    assert further is net


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [(dict(steps=0), "steps"), (dict(lr=0.0), "lr"), (dict(noise=-1.0), "noise"), (dict(blur=None), "blur"),
     (dict(batch_size=0), "batch_size"), (dict(images=[torch.zeros(4, 4)]), "images"), (dict(images=[]), "images"),
     (dict(features=[0]), "features")],
)
def test_train_feature_net_bad_arguments(kwargs: dict, parameter: str) -> None:
    kwargs = {"images": torch.zeros(2, 1, 8, 8), "steps": 1, **kwargs}
    with pytest.raises(InputError) as info:
        train_feature_net(**kwargs)
    assert parameter in str(info.value)


def test_onnx_export_with_dynamic_spatial_axes(tmp_path) -> None:
    net = SRResNet(3, scale=[1, 2, 3], features=4, blocks=2).eval()
    x = torch.randn(2, 1, 3, 5, 6)
    y = onnx_output(net, tmp_path / "srresnet.onnx", (1, 1, 4, 4, 4), x)
    assert y.shape == (2, 1, 3, 10, 18)
    with torch.no_grad():
        torch.testing.assert_close(y, net(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_learns_a_phantom_better_than_linear_interpolation() -> None:
    """400 Adam steps of the pixel (MSE) loss on 32x32 phantoms whose last axis was box-averaged by 4
    (32x8 inputs); held-out MSE (eval mode, batch norm's running statistics) below upsample_linear's."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    r = 4

    def acquire(hr: torch.Tensor) -> torch.Tensor:
        return hr.reshape(*hr.shape[:-1], hr.shape[-1] // r, r).mean(-1)

    train, test = blob_phantoms(64, seed=0), blob_phantoms(16, seed=1)
    x_train, x_test = acquire(train), acquire(test)
    net = SRResNet(2, scale=r, features=8, blocks=2)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(400):
        idx = torch.randint(0, len(train), (16,))
        loss = (net(x_train[idx]) - train[idx]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        mse = float((net(x_test) - test).square().mean())
    baseline = float((upsample_linear(x_test, (1, r)) - test).square().mean())
    assert mse < 0.7 * baseline, (mse, baseline)
