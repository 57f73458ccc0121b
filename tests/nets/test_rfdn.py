"""RFDN: shapes for one-axis, two-axis and odd factors, the published parameter count by the layer list, ESA on
tiny and thin inputs, linear skip, ICNR start, config rebuild, bf16 channels-last, gradients, bad arguments,
ONNX with dynamic axes, phantom fit."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import blob_phantoms, onnx_output
from torch import nn

from mrisr.errors import InputError
from mrisr.nets import NETWORKS, build_network, upsampling
from mrisr.nets.rfdn import RFDN
from mrisr.nets.shuffle import upsample_linear


def conv(c_in: int, c_out: int, k: int, d: int = 2) -> int:
    return c_in * c_out * k**d + c_out


def expected_parameters(in_ch: int = 3, out_ch: int = 3, nf: int = 50, blocks: int = 4, scale: tuple = (4, 4),
                        d: int = 2) -> int:
    """The authors' AIM 2020 layer list (block.py / RFDN.py): fea_conv 3x3; per RFDB c1_d, c2_d, c3_d 1x1 to
    nf/2, c1_r, c2_r, c3_r 3x3 nf->nf, c4 3x3 to nf/2, c5 1x1 2nf->nf, ESA (f = nf/4: conv1 1x1, conv_f 1x1,
    conv2, conv_max, conv3, conv3_ 3x3, conv4 1x1); c 1x1 blocks*nf->nf; LR_conv 3x3; upsampler 3x3 to
    out * r^2. All with biases."""
    dc, f = nf // 2, nf // 4
    esa = conv(nf, f, 1, d) + conv(f, f, 1, d) + 4 * conv(f, f, 3, d) + conv(f, nf, 1, d)
    rfdb = 3 * conv(nf, dc, 1, d) + 3 * conv(nf, nf, 3, d) + conv(nf, dc, 3, d) + conv(4 * dc, nf, 1, d) + esa
    return (conv(in_ch, nf, 3, d) + blocks * rfdb + conv(blocks * nf, nf, 1, d) + conv(nf, nf, 3, d)
            + conv(nf, out_ch * math.prod(scale), 3, d))


def test_published_configuration_parameter_count() -> None:
    # the AIM 2020 challenge report lists RFDN (NJU_MCG) at 0.433M parameters: 3-channel x4, nf 50, 4 blocks
    net = RFDN(2, in_channels=3, out_channels=3, scale=[4, 4], skip=False)
    assert sum(p.numel() for p in net.parameters()) == expected_parameters() == 433_448
    # one channel, x4 along the slice axis only (mrisr's thick-slice default): the upsampler has 4 maps
    ours = RFDN(2, scale=4)
    assert sum(p.numel() for p in ours.parameters()) == expected_parameters(1, 1, scale=(1, 4)) == 412_704
    assert sum(p.numel() for p in RFDN(3, scale=4).parameters()) == expected_parameters(1, 1, scale=(1, 1, 4), d=3)


# (kwargs, per-axis factors, input shape, output shape)
TABLE = [
    (dict(spatial_dims=2, features=8, blocks=1), (1, 4), (2, 1, 6, 5), (2, 1, 6, 20)),  # int: last axis only
    (dict(spatial_dims=2, scale=[2, 2], features=8, blocks=2), (2, 2), (1, 1, 5, 7), (1, 1, 10, 14)),
    (dict(spatial_dims=2, scale=[3, 1], features=8, blocks=1), (3, 1), (1, 1, 4, 4), (1, 1, 12, 4)),
    (dict(spatial_dims=2, in_channels=2, out_channels=2, scale=5, features=8, blocks=1), (1, 5), (1, 2, 3, 2),
     (1, 2, 3, 10)),
    (dict(spatial_dims=3, features=8, blocks=1), (1, 1, 4), (1, 1, 3, 4, 5), (1, 1, 3, 4, 20)),
    (dict(spatial_dims=3, scale=[2, 2, 1], features=8, blocks=1), (2, 2, 1), (2, 1, 3, 4, 5), (2, 1, 6, 8, 5)),
    (dict(spatial_dims=3, scale=[1, 3, 2], features=8, blocks=2, distilled=3, esa_channels=2), (1, 3, 2),
     (1, 1, 2, 3, 4), (1, 1, 2, 9, 8)),
]


@pytest.mark.parametrize(("kwargs", "factors", "in_shape", "out_shape"), TABLE, ids=lambda v: str(v))
def test_shapes(kwargs: dict, factors: tuple, in_shape: tuple, out_shape: tuple) -> None:
    torch.manual_seed(0)
    net = RFDN(**kwargs)
    assert net.scale == factors and net.config["scale"] == list(factors)
    with torch.no_grad():
        y = net(torch.randn(in_shape))
    assert tuple(y.shape) == out_shape and torch.isfinite(y).all()
    assert upsampling(net) == "post" and NETWORKS["rfdn"] is RFDN


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 1, 3, 50), (1, 1, 5, 5), (2, 1, 64, 16), (1, 1, 1, 200),
                                   (1, 1, 4, 4, 2), (1, 1, 1, 1, 1), (1, 1, 32, 32, 8)])
def test_attention_works_on_tiny_and_thin_inputs(shape: tuple) -> None:
    """ESA's stride-2 convolution and 7/3 pooling need 15 voxels per axis: the replicate padding gives them
    to every axis of every size, and the gate keeps the input's size."""
    torch.manual_seed(1)
    dims = len(shape) - 2
    net = RFDN(dims, scale=2, features=8, blocks=1)
    esa = net.body[0].esa
    x = torch.randn(shape[0], 8, *shape[2:])
    with torch.no_grad():
        gated = esa(x)
        y = net(torch.randn(shape))
    assert gated.shape == x.shape and torch.isfinite(gated).all()
    assert (gated.abs() <= x.abs() + 1e-6).all()  # a sigmoid gate only attenuates
    assert y.shape == (*shape[:-1], 2 * shape[-1])


def test_attention_depends_on_context_beyond_a_voxel() -> None:
    """The gate is spatial: a change at one end of a long axis moves the gate at the other end (the pooled
    branch spans it), which a per-voxel 1x1 branch alone could not."""
    torch.manual_seed(2)
    esa = RFDN(2, scale=2, features=8, blocks=1).body[0].esa
    x = torch.randn(1, 8, 40, 40)
    bumped = x.clone()
    bumped[..., :4, :4] += 3.0
    with torch.no_grad():
        a, b = esa(x), esa(bumped)
    assert float((a[..., 20:, 20:] - b[..., 20:, 20:]).abs().max()) > 1e-4


@pytest.mark.parametrize(("spatial_dims", "scale"), [(2, 4), (2, [2, 2]), (3, [1, 1, 4]), (3, [2, 2, 1])])
def test_skip_is_linear_interpolation(spatial_dims: int, scale: object) -> None:
    torch.manual_seed(3)
    x = torch.randn((2, 1) + (4,) * spatial_dims)
    for skip in (True, False):
        net = RFDN(spatial_dims, scale=scale, features=8, blocks=1, skip=skip)
        with torch.no_grad():
            net.upsample.conv.weight.zero_()
            y = net(x)
        expected = upsample_linear(x, net.scale) if skip else torch.zeros_like(y)
        torch.testing.assert_close(y, expected)


def test_icnr_start_and_initialisation() -> None:
    torch.manual_seed(4)
    net = RFDN(2, scale=[1, 4], features=16, blocks=1, skip=False)
    with torch.no_grad():
        y = net(torch.randn(1, 1, 6, 5))
    blocks = y.reshape(1, 1, 6, 5, 4)
    assert torch.allclose(blocks, blocks[..., :1].expand_as(blocks))  # ICNR: no checkerboard at the start
    scaled = RFDN(2, scale=[1, 4], features=16, blocks=1)
    ratio = float(scaled.upsample.conv.weight.detach().std() / net.upsample.conv.weight.detach().std())
    assert 0.08 < ratio < 0.12
    assert all(torch.count_nonzero(m.bias) == 0 for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_config_rebuilds_the_network(spatial_dims: int) -> None:
    scale = [2, 1] if spatial_dims == 2 else [1, 2, 3]
    net = RFDN(spatial_dims, in_channels=2, scale=tuple(scale), features=8, blocks=2, negative_slope=0.1)
    config = json.loads(json.dumps(net.config))
    assert config == net.config == {"spatial_dims": spatial_dims, "in_channels": 2, "out_channels": 1,
                                    "scale": scale, "features": 8, "blocks": 2, "distilled": 4, "esa_channels": 2,
                                    "negative_slope": 0.1, "skip": True}
    twin = build_network("rfdn", **config)
    twin.load_state_dict(net.state_dict())
    x = torch.randn((1, 2) + (5,) * spatial_dims)
    with torch.no_grad():
        assert torch.equal(twin(x), net(x))


@pytest.mark.parametrize(("spatial_dims", "scale", "fmt"),
                         [(2, [1, 4], torch.channels_last), (2, [2, 2], torch.channels_last),
                          (3, [1, 1, 4], torch.channels_last_3d)])
def test_bf16_channels_last_close_to_float32(spatial_dims: int, scale: list, fmt: torch.memory_format) -> None:
    torch.manual_seed(5)
    net = RFDN(spatial_dims, scale=scale, features=8, blocks=2)
    x = torch.randn((2, 1) + (6,) * spatial_dims)
    with torch.no_grad():
        expected = net(x)
        net = net.to(memory_format=fmt)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = net(x.to(memory_format=fmt))
    assert got.shape == expected.shape
    span = float(expected.max() - expected.min())
    assert float((got.float() - expected).abs().max()) < 2e-2 * span


@pytest.mark.parametrize("skip", [True, False])
def test_gradients_reach_every_parameter(skip: bool) -> None:
    # ESA's ReLU path can start dead when its width and pooled map are tiny (2 channels of 1 voxel: the
    # published 12 channels on a training patch's 11 x 3 pooled map make it improbable), so 4 channels here
    torch.manual_seed(0)
    net = RFDN(3, scale=[1, 1, 2], features=16, blocks=2, skip=skip)
    net(torch.randn(1, 1, 8, 8, 6)).square().mean().backward()
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in net.parameters())


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        (dict(spatial_dims=1), "spatial_dims"),
        (dict(spatial_dims=True), "spatial_dims"),
        (dict(spatial_dims=2, in_channels=0), "in_channels"),
        (dict(spatial_dims=2, out_channels=2), "out_channels"),  # skip needs out <= in
        (dict(spatial_dims=2, scale=1), "scale"),
        (dict(spatial_dims=3, scale=[2, 2]), "scale"),
        (dict(spatial_dims=2, features=3), "features"),
        (dict(spatial_dims=2, features=8.0), "features"),
        (dict(spatial_dims=2, blocks=0), "blocks"),
        (dict(spatial_dims=2, distilled=0), "distilled"),
        (dict(spatial_dims=2, esa_channels=-1), "esa_channels"),
        (dict(spatial_dims=2, negative_slope=1.5), "negative_slope"),
        (dict(spatial_dims=2, skip="yes"), "skip"),
    ],
)
def test_bad_arguments(kwargs: dict, parameter: str) -> None:
    with pytest.raises(InputError) as info:
        RFDN(**kwargs)
    assert parameter in str(info.value)


@pytest.mark.parametrize(("spatial_dims", "shape"), [(2, (1, 1, 8, 8, 8)), (3, (1, 1, 8, 8)), (2, (1, 2, 8, 8))])
def test_input_that_does_not_match_the_network(spatial_dims: int, shape: tuple) -> None:
    with pytest.raises(InputError, match="input"):
        RFDN(spatial_dims, features=8, blocks=1)(torch.zeros(shape))


def test_onnx_export_with_dynamic_spatial_axes(tmp_path) -> None:
    """One graph for every size: exported at 4^3, run at a thin 2 x 5 x 20 and at a 1-voxel axis."""
    torch.manual_seed(7)
    net = RFDN(3, scale=[1, 2, 3], features=8, blocks=1).eval()
    for i, x in enumerate((torch.randn(2, 1, 2, 5, 20), torch.randn(1, 1, 1, 6, 3))):
        y = onnx_output(net, tmp_path / f"rfdn{i}.onnx", (1, 1, 4, 4, 4), x)
        assert y.shape == (x.shape[0], 1, x.shape[2], 2 * x.shape[3], 3 * x.shape[4])
        with torch.no_grad():
            torch.testing.assert_close(y, net(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_learns_a_phantom_better_than_linear_interpolation() -> None:
    """400 Adam steps on 32x32 phantoms whose last axis was box-averaged by 4 (32x8 inputs); held-out MSE
    against HR below that of upsample_linear."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    r = 4

    def acquire(hr: torch.Tensor) -> torch.Tensor:
        return hr.reshape(*hr.shape[:-1], hr.shape[-1] // r, r).mean(-1)

    train, test = blob_phantoms(64, seed=0), blob_phantoms(16, seed=1)
    x_train, x_test = acquire(train), acquire(test)
    net = RFDN(2, scale=r, features=16, blocks=2)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(400):
        idx = torch.randint(0, len(train), (16,))
        loss = (net(x_train[idx]) - train[idx]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        mse = float((net(x_test) - test).square().mean())
    baseline = float((upsample_linear(x_test, (1, r)) - test).square().mean())
    assert mse < 0.5 * baseline, (mse, baseline)
