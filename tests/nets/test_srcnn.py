"""SRCNN: shapes and parameter counts from the paper's layer table, residual option, He init,
config rebuild, bf16 channels-last, gradients, bad arguments, and a step-bounded phantom fit."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import blob_phantoms, onnx_output
from torch import nn

from mrisr.errors import InputError
from mrisr.nets.shuffle import upsample_linear
from mrisr.nets.srcnn import SRCNN


def expected_parameters(spatial_dims: int, in_channels: int = 1, out_channels: int = 1,
                        kernel_sizes: tuple = (9, 1, 5), features: tuple = (64, 32), residual: bool = False) -> int:
    """Dong et al.'s table: layer i has c_i * f_i^d * n_i weights and n_i biases (n_last = out_channels)."""
    channels = [in_channels, *features, out_channels]
    return sum(channels[i] * k**spatial_dims * channels[i + 1] + channels[i + 1] for i, k in enumerate(kernel_sizes))


# (kwargs, input shape); pre-upsampling: the output has the input's size, out_channels channels
TABLE = [
    (dict(spatial_dims=2), (1, 1, 12, 10)),
    (dict(spatial_dims=2, kernel_sizes=[3, 1, 3], features=[4, 2]), (2, 1, 9, 4)),
    (dict(spatial_dims=2, kernel_sizes=[5, 3, 1, 3], features=[6, 4, 2]), (1, 1, 8, 16)),
    (dict(spatial_dims=2, in_channels=3, out_channels=2, kernel_sizes=[3, 1, 3], features=[4, 2], residual=True),
     (1, 3, 6, 6)),
    (dict(spatial_dims=3), (1, 1, 6, 6, 6)),
    (dict(spatial_dims=3, kernel_sizes=[3, 1, 3], features=[4, 2]), (2, 1, 5, 4, 7)),
    (dict(spatial_dims=3, in_channels=1, out_channels=2, kernel_sizes=[3, 1, 3], features=[4, 2]), (1, 1, 4, 4, 8)),
]


@pytest.mark.parametrize(("kwargs", "in_shape"), TABLE, ids=lambda v: str(v))
def test_shapes_and_parameter_counts(kwargs: dict, in_shape: tuple) -> None:
    torch.manual_seed(0)
    net = SRCNN(**kwargs)
    with torch.no_grad():
        y = net(torch.randn(in_shape))
    assert tuple(y.shape) == (in_shape[0], net.out_channels, *in_shape[2:])
    assert sum(p.numel() for p in net.parameters()) == expected_parameters(**kwargs)
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    assert [c.kernel_size for c in convs] == [(k,) * net.spatial_dims for k in net.config["kernel_sizes"]]
    assert sum(isinstance(m, nn.ReLU) for m in net.modules()) == len(convs) - 1
    assert isinstance(net.body[-1], (nn.Conv2d, nn.Conv3d))  # no activation after the reconstruction
    assert SRCNN.upsampling == "pre"


def test_paper_parameter_count() -> None:
    # Dong et al. (TPAMI 2016, the filter-size study): 9-1-5, 9-3-5 and 9-5-5 with n1=64, n2=32 on
    # the Y channel have 8,032, 24,416 and 57,184 parameters, weights only (biases left out); these
    # match 9*9*64 + 64*f2^2*32 + 32*5*5. With the 64 + 32 + 1 biases, 9-1-5 has 8,129.
    for f2, paper in ((1, 8_032), (3, 24_416), (5, 57_184)):
        net = SRCNN(2, kernel_sizes=(9, f2, 5))
        weights = sum(p.numel() for name, p in net.named_parameters() if name.endswith("weight"))
        assert weights == 9 * 9 * 64 + 64 * f2 * f2 * 32 + 32 * 5 * 5 == paper
    assert sum(p.numel() for p in SRCNN(2).parameters()) == expected_parameters(2) == 8_129
    # 3D SRCNN with cubes (Pham et al. 2017): 9^3*64 + 64*32 + 32*5^3 weights + 97 biases
    assert sum(p.numel() for p in SRCNN(3).parameters()) == 46_656 + 2_048 + 4_000 + 97


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_residual_option(spatial_dims: int) -> None:
    torch.manual_seed(1)
    x = torch.randn((2, 1) + (7,) * spatial_dims)
    for residual in (False, True):
        net = SRCNN(spatial_dims, kernel_sizes=[3, 1, 3], features=[4, 2], residual=residual)
        with torch.no_grad():
            net.body[-1].weight.zero_()
            net.body[-1].bias.fill_(0.25)
            torch.testing.assert_close(net(x), (x if residual else torch.zeros_like(x)) + 0.25)
    net = SRCNN(2, in_channels=3, out_channels=2, kernel_sizes=[3, 1, 3], features=[4, 2], residual=True)
    with torch.no_grad():
        net.body[-1].weight.zero_()
        x = torch.randn(1, 3, 5, 5)
        assert torch.equal(net(x), x[:, :2])


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_he_initialisation(spatial_dims: int) -> None:
    torch.manual_seed(3)
    net = SRCNN(spatial_dims, kernel_sizes=[3, 3, 3], features=[64, 64])
    middle = net.body[2]
    target = math.sqrt(2.0 / (64 * 3**spatial_dims))
    assert abs(float(middle.weight.detach().std()) - target) < 0.1 * target
    assert all(torch.count_nonzero(m.bias) == 0 for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_config_rebuilds_the_network(spatial_dims: int) -> None:
    net = SRCNN(spatial_dims, in_channels=2, out_channels=1, kernel_sizes=(3, 1, 3), features=(4, 2), residual=True)
    config = json.loads(json.dumps(net.config))
    assert config == net.config == {"spatial_dims": spatial_dims, "in_channels": 2, "out_channels": 1,
                                    "kernel_sizes": [3, 1, 3], "features": [4, 2], "residual": True}
    twin = type(net)(**config)
    twin.load_state_dict(net.state_dict())
    x = torch.randn((1, 2) + (5,) * spatial_dims)
    with torch.no_grad():
        assert torch.equal(twin(x), net(x))
    assert (net.spatial_dims, net.in_channels, net.out_channels) == (spatial_dims, 2, 1)


@pytest.mark.parametrize(("spatial_dims", "fmt"), [(2, torch.channels_last), (3, torch.channels_last_3d)])
def test_bf16_channels_last_close_to_float32(spatial_dims: int, fmt: torch.memory_format) -> None:
    torch.manual_seed(4)
    net = SRCNN(spatial_dims, kernel_sizes=[5, 1, 3], features=[8, 4], residual=True)
    x = torch.randn((2, 1) + (8,) * spatial_dims)
    with torch.no_grad():
        expected = net(x)
        net = net.to(memory_format=fmt)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = net(x.to(memory_format=fmt))
    assert got.shape == expected.shape
    span = float(expected.max() - expected.min())
    assert float((got.float() - expected).abs().max()) < 2e-2 * span


def test_gradients_reach_every_parameter() -> None:
    net = SRCNN(3, kernel_sizes=[3, 1, 3], features=[4, 2])
    net(torch.randn(1, 1, 5, 5, 5)).square().mean().backward()
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in net.parameters())


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        (dict(spatial_dims=1), "spatial_dims"),
        (dict(spatial_dims=True), "spatial_dims"),
        (dict(spatial_dims=2, in_channels=0), "in_channels"),
        (dict(spatial_dims=2, out_channels=1.0), "out_channels"),
        (dict(spatial_dims=2, kernel_sizes=[9, 2, 5]), "kernel_sizes"),
        (dict(spatial_dims=2, kernel_sizes=[9, 0, 5]), "kernel_sizes"),
        (dict(spatial_dims=2, kernel_sizes=9), "kernel_sizes"),
        (dict(spatial_dims=2, kernel_sizes=[9, 5]), "kernel_sizes"),
        (dict(spatial_dims=2, features=[64, 0]), "features"),
        (dict(spatial_dims=2, features="64"), "features"),
        (dict(spatial_dims=2, residual=1), "residual"),
        (dict(spatial_dims=2, out_channels=2, residual=True), "out_channels"),
    ],
)
def test_bad_arguments(kwargs: dict, parameter: str) -> None:
    with pytest.raises(InputError) as info:
        SRCNN(**kwargs)
    assert parameter in str(info.value)


@pytest.mark.parametrize(("spatial_dims", "shape"), [(2, (1, 1, 8, 8, 8)), (3, (1, 1, 8, 8)), (2, (1, 2, 8, 8))])
def test_input_that_does_not_match_the_network(spatial_dims: int, shape: tuple) -> None:
    net = SRCNN(spatial_dims, kernel_sizes=[3, 1, 3], features=[2, 2])
    with pytest.raises(InputError, match="input"):
        net(torch.zeros(shape))


def test_onnx_export_with_dynamic_spatial_axes(tmp_path) -> None:
    net = SRCNN(3, kernel_sizes=[3, 1, 3], features=[4, 2], residual=True).eval()
    x = torch.randn(2, 1, 5, 7, 9)
    y = onnx_output(net, tmp_path / "srcnn.onnx", (1, 1, 6, 6, 6), x)
    with torch.no_grad():
        torch.testing.assert_close(y, net(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_paper_layout_learns_a_phantom_better_than_its_input() -> None:
    """The paper's form (no residual), small: 600 Adam steps on 32x32 phantoms whose last axis was
    box-averaged by 4 and linearly re-interpolated; held-out MSE below the input's."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    r = 4

    def pre_upsampled(hr: torch.Tensor) -> torch.Tensor:
        lr = hr.reshape(*hr.shape[:-1], hr.shape[-1] // r, r).mean(-1)
        return upsample_linear(lr, (1, r))

    train, test = blob_phantoms(64, seed=0), blob_phantoms(16, seed=1)
    x_train, x_test = pre_upsampled(train), pre_upsampled(test)
    net = SRCNN(2, kernel_sizes=[5, 1, 3], features=[16, 8])
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(600):
        idx = torch.randint(0, len(train), (16,))
        loss = (net(x_train[idx]) - train[idx]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        mse = float((net(x_test) - test).square().mean())
    baseline = float((x_test - test).square().mean())
    assert mse < 0.8 * baseline, (mse, baseline)
