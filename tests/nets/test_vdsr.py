"""VDSR: shapes and parameter counts as a table, residual learning, He init, channels-last, bad arguments."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mrisr.errors import InputError
from mrisr.nets import NETWORKS, VDSR, build_network, network_from_block, network_name, unwrap
from mrisr.protocol import NetworkBlock


def expected_parameters(spatial_dims: int, in_channels: int, out_channels: int, features: int, depth: int) -> int:
    """Kim et al.'s layout: first in->f, depth-2 middle f->f, last f->out; 3^d kernels with biases."""
    k = 3**spatial_dims
    first = in_channels * k * features + features
    middle = (depth - 2) * (features * k * features + features)
    last = features * k * out_channels + out_channels
    return first + middle + last


# (kwargs, input shape, output shape)
TABLE = [
    (dict(spatial_dims=2, features=1, depth=2), (1, 1, 5, 7), (1, 1, 5, 7)),
    (dict(spatial_dims=2, features=8, depth=3), (2, 1, 9, 4), (2, 1, 9, 4)),
    (dict(spatial_dims=2, features=8, depth=5), (1, 1, 16, 16), (1, 1, 16, 16)),
    (dict(spatial_dims=2, features=64, depth=20), (1, 1, 12, 10), (1, 1, 12, 10)),
    (dict(spatial_dims=2, in_channels=3, out_channels=2, features=8, depth=3), (1, 3, 6, 6), (1, 2, 6, 6)),
    (dict(spatial_dims=3, features=1, depth=2), (1, 1, 4, 5, 6), (1, 1, 4, 5, 6)),
    (dict(spatial_dims=3, features=8, depth=3), (2, 1, 5, 5, 5), (2, 1, 5, 5, 5)),
    (dict(spatial_dims=3, features=8, depth=5), (1, 1, 6, 7, 3), (1, 1, 6, 7, 3)),
    (dict(spatial_dims=3, features=64, depth=20), (1, 1, 6, 6, 6), (1, 1, 6, 6, 6)),
    (dict(spatial_dims=3, in_channels=2, out_channels=1, features=8, depth=5), (1, 2, 4, 4, 4), (1, 1, 4, 4, 4)),
]


def _full(kwargs: dict) -> dict:
    return {"in_channels": 1, "out_channels": 1, "features": 64, "depth": 20, **kwargs}


@pytest.mark.parametrize(("kwargs", "in_shape", "out_shape"), TABLE, ids=lambda v: str(v))
def test_shapes_and_parameter_counts(kwargs: dict, in_shape: tuple, out_shape: tuple) -> None:
    torch.manual_seed(0)
    net = VDSR(**kwargs)
    with torch.no_grad():
        y = net(torch.randn(in_shape))
    assert tuple(y.shape) == out_shape
    assert sum(p.numel() for p in net.parameters()) == expected_parameters(**_full(kwargs))
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    assert len(convs) == _full(kwargs)["depth"]
    assert len(relus) == _full(kwargs)["depth"] - 1
    assert all(c.kernel_size == (3,) * kwargs["spatial_dims"] for c in convs)
    assert not isinstance(net.body[-1], nn.ReLU)  # no activation on the residual
    assert net.config == _full(kwargs)


def test_paper_parameter_count() -> None:
    # 2D, 64 features, 20 layers: the ~665k parameters of Kim et al.'s VDSR
    assert sum(p.numel() for p in VDSR(2).parameters()) == 665_921


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_zero_last_conv_is_identity(spatial_dims: int) -> None:
    torch.manual_seed(1)
    net = VDSR(spatial_dims, features=8, depth=4)
    with torch.no_grad():
        net.last_conv.weight.zero_()
        net.last_conv.bias.zero_()
        x = torch.randn((2, 1) + (7,) * spatial_dims)
        assert torch.equal(net(x), x)
        # and the output is input + residual
        net.last_conv.bias.fill_(0.5)
        torch.testing.assert_close(net(x), x + 0.5)


def test_residual_is_added_to_the_first_channels() -> None:
    torch.manual_seed(2)
    net = VDSR(2, in_channels=3, out_channels=2, features=4, depth=3)
    with torch.no_grad():
        net.last_conv.weight.zero_()
        net.last_conv.bias.zero_()
        x = torch.randn(1, 3, 5, 5)
        assert torch.equal(net(x), x[:, :2])


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_he_initialisation(spatial_dims: int) -> None:
    torch.manual_seed(3)
    net = VDSR(spatial_dims, features=64, depth=3)
    middle = net.body[2]
    fan_in = 64 * 3**spatial_dims
    std = float(middle.weight.detach().std())
    assert abs(std - math.sqrt(2.0 / fan_in)) < 0.1 * math.sqrt(2.0 / fan_in)
    assert abs(float(middle.weight.detach().mean())) < 0.1 * std
    for conv in (m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))):
        assert torch.count_nonzero(conv.bias) == 0


@pytest.mark.parametrize(("spatial_dims", "fmt"), [(2, torch.channels_last), (3, torch.channels_last_3d)])
def test_channels_last_matches_contiguous(spatial_dims: int, fmt: torch.memory_format) -> None:
    torch.manual_seed(4)
    net = VDSR(spatial_dims, features=8, depth=5)
    x = torch.randn((2, 1) + (9,) * spatial_dims)
    with torch.no_grad():
        expected = net(x)
        net_cl = net.to(memory_format=fmt)
        got = net_cl(x.to(memory_format=fmt))
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_backward_runs() -> None:
    net = VDSR(3, features=4, depth=3)
    x = torch.randn(1, 1, 5, 5, 5)
    net(x).square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        (dict(spatial_dims=1), "spatial_dims"),
        (dict(spatial_dims=4), "spatial_dims"),
        (dict(spatial_dims=True), "spatial_dims"),
        (dict(spatial_dims=2, depth=1), "depth"),
        (dict(spatial_dims=2, depth=2.0), "depth"),
        (dict(spatial_dims=3, features=0), "features"),
        (dict(spatial_dims=3, in_channels=0), "in_channels"),
        (dict(spatial_dims=2, out_channels=0), "out_channels"),
        (dict(spatial_dims=2, in_channels=1, out_channels=2), "out_channels"),
    ],
)
def test_bad_arguments(kwargs: dict, parameter: str) -> None:
    with pytest.raises(InputError) as info:
        VDSR(**kwargs)
    assert parameter in str(info.value)


@pytest.mark.parametrize(
    ("spatial_dims", "shape"), [(2, (1, 1, 8, 8, 8)), (3, (1, 1, 8, 8)), (2, (1, 2, 8, 8)), (3, (1, 3, 4, 4, 4))]
)
def test_input_that_does_not_match_the_network(spatial_dims: int, shape: tuple) -> None:
    net = VDSR(spatial_dims, features=2, depth=2)
    with pytest.raises(InputError, match="input"):
        net(torch.zeros(shape))


def test_registry_and_build_network() -> None:
    assert NETWORKS["vdsr"] is VDSR
    net = build_network("vdsr", spatial_dims=3, features=4, depth=3)
    assert isinstance(net, VDSR) and net.config["spatial_dims"] == 3
    assert network_name(net) == "vdsr"
    assert build_network("vdsr", **net.config).config == net.config


def test_build_network_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(InputError, match="'unet'.*vdsr"):
        build_network("unet", spatial_dims=2)


def test_build_network_unknown_argument() -> None:
    with pytest.raises(InputError, match="width"):
        build_network("vdsr", spatial_dims=2, width=3)


def test_network_from_block() -> None:
    net = network_from_block(NetworkBlock(name="vdsr", spatial_dims=3, features=4, depth=3))
    assert isinstance(net, VDSR)
    assert net.config == {"spatial_dims": 3, "in_channels": 1, "out_channels": 1, "features": 4, "depth": 3}
    with pytest.raises(InputError, match="known networks"):
        network_from_block(NetworkBlock(name="edsr"))
    with pytest.raises(InputError, match="width"):  # options are the network's own arguments
        network_from_block(NetworkBlock(name="vdsr", options={"width": 3}))
    post = network_from_block(NetworkBlock(name="espcn", spatial_dims=2, scale=(2, 2), features=(4, 4)))
    assert post.config["scale"] == [2, 2] and post.config["features"] == [4, 4]


def test_network_name_of_wrapped_and_unregistered_models() -> None:
    net = VDSR(2, features=2, depth=2)
    assert unwrap(nn.DataParallel(net)) is net
    with pytest.raises(InputError, match="not a registered network"):
        network_name(nn.Conv2d(1, 1, 3))
