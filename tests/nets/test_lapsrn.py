"""LapSRN: level shapes, the paper's parameter count, the linear image branch, level-by-level forward,
config rebuild, bf16/channels-last, gradients, bad arguments, and a short training on phantoms."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import onnx_output

from mrisr.errors import InputError
from mrisr.nets.lapsrn import LapSRN
from mrisr.nets.shuffle import upsample_linear
from mrisr.train.losses import multilevel_loss


def expected_parameters(spatial_dims: int, in_channels: int, out_channels: int, grown: int, levels: int,
                        features: int, depth: int, up_kernel: int, biases: bool = True) -> int:
    """Lai et al.'s layer table: an input conv in->f; per level ``depth`` convs f->f, one transposed
    conv f->f (``up_kernel`` along the ``grown`` axes, 3 along the others), a residual conv f->out
    (all with biases), and a bias-free grouped image transposed conv (4 along grown axes, 1 elsewhere)."""
    k = 3**spatial_dims
    kt = up_kernel**grown * 3 ** (spatial_dims - grown)
    b = 1 if biases else 0
    head = in_channels * k * features + b * features
    level = (depth * (features * k * features + b * features) + features * kt * features + b * features
             + features * k * out_channels + b * out_channels + out_channels * 4**grown)
    return head + levels * level


def test_paper_parameter_count() -> None:
    # The paper reports 812K parameters for LapSRN (x4: two levels, d = 10, 64 features, 2D). The
    # authors' MatConvNet code (init_LapSRN_model.m) uses 3x3 feature-branch transposed convs; its
    # weights, without biases, number 812,768: that matches 812K. With the biases: 814,242.
    net = LapSRN(2, scale=[4, 4])
    assert (net.levels, net.level_scales) == (2, [(2, 2), (4, 4)])
    weights = sum(p.numel() for name, p in net.named_parameters() if name.endswith("weight"))
    assert weights == expected_parameters(2, 1, 1, 2, 2, 64, 10, 3, biases=False) == 812_768
    assert sum(p.numel() for p in net.parameters()) == expected_parameters(2, 1, 1, 2, 2, 64, 10, 3) == 814_242
    # 4x4 feature transposed convs (common PyTorch ports) give 870,112 weights instead: not the paper's
    net4 = LapSRN(2, scale=[4, 4], up_kernel=4)
    assert sum(p.numel() for n, p in net4.named_parameters() if n.endswith("weight")) == 870_112
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 6, 5)).shape == (1, 1, 24, 20)


# (kwargs, input shape, level output shapes coarse to fine)
TABLE = [
    (dict(spatial_dims=2, scale=2), (2, 1, 5, 6), [(2, 1, 5, 12)]),
    (dict(spatial_dims=2, scale=4), (1, 1, 5, 6), [(1, 1, 5, 12), (1, 1, 5, 24)]),
    (dict(spatial_dims=2, scale=[2, 2], up_kernel=4), (1, 1, 5, 6), [(1, 1, 10, 12)]),
    (dict(spatial_dims=2, scale=[4, 1]), (1, 1, 5, 6), [(1, 1, 10, 6), (1, 1, 20, 6)]),
    (dict(spatial_dims=2, in_channels=3, out_channels=2, scale=4), (1, 3, 4, 3), [(1, 2, 4, 6), (1, 2, 4, 12)]),
    (dict(spatial_dims=3, scale=8), (1, 1, 3, 4, 2), [(1, 1, 3, 4, 4), (1, 1, 3, 4, 8), (1, 1, 3, 4, 16)]),
    (dict(spatial_dims=3, scale=[2, 2, 1]), (1, 1, 3, 4, 5), [(1, 1, 6, 8, 5)]),
    (dict(spatial_dims=3, scale=[1, 4, 4], up_kernel=4), (2, 1, 3, 2, 3), [(2, 1, 3, 4, 6), (2, 1, 3, 8, 12)]),
]


@pytest.mark.parametrize(("kwargs", "in_shape", "shapes"), TABLE, ids=lambda v: str(v))
def test_shapes_levels_and_parameter_counts(kwargs: dict, in_shape: tuple, shapes: list) -> None:
    torch.manual_seed(0)
    full = {"in_channels": 1, "out_channels": 1, "features": 4, "depth": 2, "up_kernel": 3, **kwargs}
    net = LapSRN(**full)
    x = torch.randn(in_shape)
    with torch.no_grad():
        outs = net.forward_levels(x)
        assert [tuple(y.shape) for y in outs] == shapes
        assert tuple(net(x).shape) == shapes[-1]
        for level in range(1, net.levels + 1):
            torch.testing.assert_close(net(x, levels=level), outs[level - 1])
    assert net.levels == len(shapes)
    scale = tuple(net.scale)
    assert [tuple(s) for s in net.level_scales] == [
        tuple(2**lv if f > 1 else 1 for f in scale) for lv in range(1, net.levels + 1)]
    assert net.level_scales[-1] == scale and math.prod(scale) == math.prod(net.level_scales[-1])
    grown = sum(f > 1 for f in scale)
    assert sum(p.numel() for p in net.parameters()) == expected_parameters(
        full["spatial_dims"], full["in_channels"], full["out_channels"], grown, net.levels, full["features"],
        full["depth"], full["up_kernel"])
    assert net.config == {**full, "scale": list(scale)}
    assert LapSRN.upsampling == "post"


def test_levels_option_runs_only_the_stages_needed() -> None:
    net = LapSRN(2, scale=8, features=4, depth=1)
    calls: list[int] = []
    for i, branch in enumerate(net.features):
        branch.register_forward_hook(lambda *_, i=i: calls.append(i))
    with torch.no_grad():
        assert net(torch.randn(1, 1, 4, 4), levels=1).shape == (1, 1, 4, 8)
    assert calls == [0]


@pytest.mark.parametrize(("spatial_dims", "scale"), [(2, 4), (2, [2, 2]), (3, [4, 1, 4])])
def test_image_branch_starts_as_linear_interpolation(spatial_dims: int, scale: object) -> None:
    """With the residuals zeroed, level 1 is upsample_linear (edges included) and every level the
    x2 linear interpolation of the level before."""
    torch.manual_seed(1)
    net = LapSRN(spatial_dims, scale=scale, features=4, depth=1)
    with torch.no_grad():
        for conv in net.residuals:
            conv.weight.zero_()
            conv.bias.zero_()
        x = torch.randn((2, 1) + (5, 6, 4)[:spatial_dims])
        outs = net.forward_levels(x)
        previous = x
        for out in outs:
            step = tuple(2 if f > 1 else 1 for f in net.scale)
            torch.testing.assert_close(out, upsample_linear(previous, step), rtol=1e-5, atol=1e-5)
            previous = out
        torch.testing.assert_close(outs[0], upsample_linear(x, net.level_scales[0]), rtol=1e-5, atol=1e-5)


def test_guidance_channels_do_not_enter_the_image_branch() -> None:
    torch.manual_seed(2)
    net = LapSRN(2, in_channels=2, out_channels=1, scale=2, features=4, depth=1)
    with torch.no_grad():
        net.residuals[0].weight.zero_()
        net.residuals[0].bias.zero_()
        x = torch.randn(1, 2, 4, 5)
        torch.testing.assert_close(net(x), upsample_linear(x[:, :1], (1, 2)))


def test_config_rebuilds_the_network() -> None:
    torch.manual_seed(3)
    net = LapSRN(3, in_channels=2, out_channels=1, scale=[1, 2, 2], features=4, depth=2, up_kernel=4)
    config = json.loads(json.dumps(net.config))
    clone = type(net)(**config)
    clone.load_state_dict(net.state_dict())
    assert clone.config == net.config and clone.scale == net.scale and clone.level_scales == net.level_scales
    x = torch.randn(1, 2, 3, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), net(x))


@pytest.mark.parametrize(("spatial_dims", "fmt", "scale"),
                         [(2, torch.channels_last, 4), (3, torch.channels_last_3d, [2, 1, 2])])
def test_bf16_channels_last_is_close_to_float32(spatial_dims: int, fmt: torch.memory_format, scale: object) -> None:
    torch.manual_seed(4)
    net = LapSRN(spatial_dims, scale=scale, features=8, depth=2)
    x = torch.randn((2, 1) + (6, 5, 4)[:spatial_dims])
    with torch.no_grad():
        expected = net.forward_levels(x)
        net_cl = net.to(memory_format=fmt)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = net_cl.forward_levels(x.to(memory_format=fmt))
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        span = float(e.max() - e.min())
        assert float((g.float() - e).abs().max()) <= 2e-2 * span


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(5)
    net = LapSRN(2, in_channels=2, scale=4, features=4, depth=2)
    x = torch.randn(2, 2, 4, 4)
    target = torch.randn(2, 1, 4, 16)
    multilevel_loss(net.forward_levels(x), target, net.level_scales).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        (dict(spatial_dims=1), "spatial_dims"),
        (dict(spatial_dims=True), "spatial_dims"),
        (dict(spatial_dims=2, scale=3), "scale"),
        (dict(spatial_dims=2, scale=6), "scale"),
        (dict(spatial_dims=2, scale=1), "scale"),
        (dict(spatial_dims=2, scale=[2, 4]), "scale"),
        (dict(spatial_dims=3, scale=[2, 2]), "scale"),
        (dict(spatial_dims=2, scale=4.0), "scale"),
        (dict(spatial_dims=2, features=0), "features"),
        (dict(spatial_dims=2, depth=0), "depth"),
        (dict(spatial_dims=2, depth=2.0), "depth"),
        (dict(spatial_dims=2, up_kernel=5), "up_kernel"),
        (dict(spatial_dims=3, in_channels=0), "in_channels"),
        (dict(spatial_dims=2, in_channels=1, out_channels=2), "out_channels"),
    ],
)
def test_bad_arguments(kwargs: dict, parameter: str) -> None:
    with pytest.raises(InputError) as info:
        LapSRN(**kwargs)
    assert parameter in str(info.value)


def test_bad_levels_and_inputs() -> None:
    net = LapSRN(2, scale=4, features=2, depth=1)
    for bad in (0, 3, True, 1.0):
        with pytest.raises(InputError, match="levels"):
            net(torch.zeros(1, 1, 4, 4), levels=bad)
    for shape in ((1, 1, 4, 4, 4), (1, 2, 4, 4)):
        with pytest.raises(InputError, match="input"):
            net(torch.zeros(shape))


def test_onnx_export_with_dynamic_spatial_axes(tmp_path) -> None:
    torch.manual_seed(6)
    net = LapSRN(2, scale=4, features=4, depth=1).eval()
    x = torch.randn(2, 1, 7, 9)
    y = onnx_output(net, tmp_path / "lapsrn.onnx", (1, 1, 6, 5), x, out_axes={0: "n", 2: "h", 3: "w4"})
    with torch.no_grad():
        torch.testing.assert_close(y, net(x), rtol=1e-4, atol=1e-4)


def _phantoms(n: int, seed: int, size: int = 32, blobs: int = 6) -> torch.Tensor:
    """``(n, 1, size, size)`` sums of Gaussian blobs of random centre, width and height."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    out = torch.zeros(n, 1, size, size)
    for i in range(n):
        for _ in range(blobs):
            cy, cx = (torch.rand(2, generator=g) * size).tolist()
            sigma = 1.5 + 3 * float(torch.rand((), generator=g))
            amplitude = 0.5 + float(torch.rand((), generator=g))
            out[i, 0] += amplitude * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return out


@pytest.mark.slow
def test_training_on_phantoms_beats_linear_interpolation() -> None:
    """150 Adam steps of multilevel Charbonnier on box-profile thick slices (x4 along the last axis):
    the finest level's held-out MSE beats linear interpolation's."""
    r = 4
    torch.manual_seed(0)

    def box(hr: torch.Tensor) -> torch.Tensor:
        return hr.reshape(*hr.shape[:-1], hr.shape[-1] // r, r).mean(-1)

    train_hr, test_hr = _phantoms(64, seed=1), _phantoms(16, seed=2)
    train_lr, test_lr = box(train_hr), box(test_hr)
    net = LapSRN(2, scale=r, features=8, depth=2)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is fastest, and on a shared machine far faster
    try:
        for _ in range(150):
            idx = torch.randint(0, len(train_hr), (8,), generator=g)
            loss = multilevel_loss(net.forward_levels(train_lr[idx]), train_hr[idx], net.level_scales)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        mse = float(torch.mean((net(test_lr) - test_hr) ** 2))
        linear = float(torch.mean((upsample_linear(test_lr, net.scale) - test_hr) ** 2))
    assert mse < 0.5 * linear, (mse, linear)
