"""Axis shuffle: torch's/MONAI's isotropic shuffles as special cases, one-axis growth, inverse, ICNR."""

from __future__ import annotations

import pytest
import torch
from monai.networks.utils import pixelshuffle

from mrisr.errors import InputError
from mrisr.nets.shuffle import AxisSubpixel, as_factors, axis_shuffle, axis_unshuffle


def test_equal_factors_match_torch_and_monai() -> None:
    x = torch.randn(2, 12, 5, 7)
    assert torch.equal(axis_shuffle(x, (2, 2)), torch.nn.functional.pixel_shuffle(x[:, :12], 2))
    y = torch.randn(1, 16, 3, 4, 5)
    assert torch.equal(axis_shuffle(y, (2, 2, 2)), pixelshuffle(y, spatial_dims=3, scale_factor=2))


def test_one_axis_growth_interleaves_channels_along_that_axis() -> None:
    # channel k of a 4-channel map becomes sub-position k along the last axis
    x = torch.arange(4.0).reshape(1, 4, 1, 1).expand(1, 4, 2, 3).contiguous()
    y = axis_shuffle(x, (1, 4))
    assert y.shape == (1, 1, 2, 12)
    assert y[0, 0, 0].tolist() == [0, 1, 2, 3] * 3
    z = axis_shuffle(torch.randn(2, 6, 3, 4, 5), (1, 1, 3))
    assert z.shape == (2, 2, 3, 4, 15)


@pytest.mark.parametrize("factors", [(1, 4), (2, 2), (3, 1), (1, 1, 4), (2, 2, 1), (1, 3, 2)])
def test_unshuffle_inverts_shuffle(factors: tuple[int, ...]) -> None:
    d = len(factors)
    block = int(torch.tensor(factors).prod())
    x = torch.randn(2, 3 * block, *([4] * d))
    assert torch.equal(axis_unshuffle(axis_shuffle(x, factors), factors), x)


def test_subpixel_starts_as_nearest_neighbour_upsampling() -> None:
    torch.manual_seed(0)
    layer = AxisSubpixel(2, 8, 1, (1, 4))
    with torch.no_grad():
        y = layer(torch.randn(1, 8, 6, 5))
    assert y.shape == (1, 1, 6, 20)
    blocks = y.reshape(1, 1, 6, 5, 4)
    assert torch.allclose(blocks, blocks[..., :1].expand_as(blocks))  # ICNR: no checkerboard at init


def test_as_factors_rules() -> None:
    assert as_factors(4, 2) == (1, 4)
    assert as_factors(4, 3) == (1, 1, 4)
    assert as_factors([2, 2], 2) == (2, 2)
    for bad in (1, 0, True, [1, 1], [2, 2, 2], [2.0, 1], "4"):
        with pytest.raises(InputError):
            as_factors(bad, 2)
    with pytest.raises(InputError):
        axis_shuffle(torch.randn(1, 3, 4, 4), (1, 2))


def test_upsample_linear_keeps_unit_axes_and_linear_ramps() -> None:
    from mrisr.nets.shuffle import upsample_linear

    x = torch.randn(1, 1, 5, 6)
    y = upsample_linear(x, (1, 4))
    assert y.shape == (1, 1, 5, 24)
    ramp = torch.arange(6.0).reshape(1, 1, 1, 6).expand(1, 1, 3, 6)
    up = upsample_linear(ramp, (1, 2))[0, 0, 0]
    # FOV-preserving positions (j + 0.5) / 2 - 0.5, clamped at the edges
    expected = ((torch.arange(12.0) + 0.5) / 2 - 0.5).clamp(0, 5)
    assert torch.allclose(up, expected)
    assert torch.equal(upsample_linear(x, (1, 1)), x)
