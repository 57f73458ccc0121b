"""upscale() with post-upsampling networks: the acquired grid in, exact target geometry out, one
resampling step for non-integer factors, the same result as an independent reference pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import AXIS_ORDERS, block_average, phantom, planes_pass

from mrisr.errors import InputError
from mrisr.infer import upscale
from mrisr.infer.grid import target_grid
from mrisr.nets.espcn import ESPCN
from mrisr.preprocess import clip_like_magnitude, normalize, resample_to_shape
from mrisr.volume import Volume


def _espcn(dims: int, scale: object = 4, seed: int = 0) -> ESPCN:
    torch.manual_seed(seed)  # test-only: reproducible tiny untrained networks
    return ESPCN(dims, scale=scale, features=[4, 4]).eval()


def _clip(values: torch.Tensor, source: Volume) -> torch.Tensor:
    """``upscale``'s magnitude rule: clipped at 0 when the input has no negative value."""
    return clip_like_magnitude(values, torch.as_tensor(np.asarray(source.array)))[0]


@pytest.mark.parametrize("order", range(len(AXIS_ORDERS)))
def test_geometry_all_axis_orders_2d(order: int) -> None:
    axis = order % 3
    hr = phantom(order, seed=order, shape=(8, 8, 8), spacing=(1.0, 1.0, 1.0))
    lr = block_average(hr, axis)
    out = upscale(lr, _espcn(2), spacing=1.0, device="cpu")
    assert out.shape == hr.shape
    assert np.abs(out.affine - hr.affine).max() < 1e-4
    record = out.meta["upscale"]
    assert record["upsampling"] == "post" and record["coarse_axis"] == axis
    assert record["network_factors"] == [4 if a == axis else 1 for a in range(3)]
    assert record["resampled_axes"] == [] and record["fused_orthogonal"]
    assert out.array.dtype == np.float32 and np.all(np.isfinite(out.array))


@pytest.mark.parametrize("order", range(len(AXIS_ORDERS)))
def test_geometry_all_axis_orders_3d(order: int) -> None:
    axis = (order + 1) % 3
    shape = [6, 7, 5]
    shape[axis] = 8
    hr = phantom(order, seed=order, shape=tuple(shape), spacing=(1.0, 1.0, 1.0))
    lr = block_average(hr, axis)
    out = upscale(lr, _espcn(3), spacing=(1.0, 1.0, 1.0), device="cpu", roi_size=4)
    assert out.shape == hr.shape
    assert np.abs(out.affine - hr.affine).max() < 1e-4
    assert out.meta["upscale"]["network_factors"] == [4 if a == axis else 1 for a in range(3)]


def test_2d_result_is_the_fused_plane_passes_on_the_acquired_grid() -> None:
    lr = phantom(4, seed=3, shape=(12, 10, 5), spacing=(1.0, 1.0, 4.0), dtype="float32")
    net = _espcn(2, seed=1)
    out = upscale(lr, net, spacing=1.0, device="cpu", precision="float32")
    assert out.shape == (12, 10, 20)
    x, s = normalize(torch.as_tensor(np.asarray(lr.array))[0])
    ref = (planes_pass(net, x, 2, 0) + planes_pass(net, x, 2, 1)) / 2 * s
    np.testing.assert_allclose(out.array[0], _clip(ref, lr).numpy(), rtol=0, atol=1e-5 * float(ref.abs().max()))


def test_non_integer_factor_lands_exactly_on_the_target_grid_by_one_resampling_step() -> None:
    # 5 slices of 3.8 mm cover 19 mm: the 1 mm target grid has 19 slices, the x4 network gives 20
    hr_like = phantom(7, seed=5, shape=(9, 8, 5), spacing=(1.0, 1.0, 3.8), dtype="float32")
    net = _espcn(2, seed=2)
    out = upscale(hr_like, net, spacing=1.0, device="cpu", precision="float32")
    affine, shape = target_grid(hr_like.affine, hr_like.shape, spacing=1.0)
    assert out.shape == shape == (9, 8, 19)
    assert np.abs(out.affine - affine).max() < 1e-9
    record = out.meta["upscale"]
    assert record["network_grid"] == [9, 8, 20] and record["resampled_axes"] == [2]
    assert "one cubic resampling step" in record["ran"]
    x, s = normalize(torch.as_tensor(np.asarray(hr_like.array))[0])
    grid = (planes_pass(net, x, 2, 0) + planes_pass(net, x, 2, 1)) / 2
    ref = resample_to_shape(grid, (9, 8, 19)) * s
    np.testing.assert_allclose(out.array[0], _clip(ref, hr_like).numpy(), rtol=0, atol=1e-5 * float(ref.abs().max()))


def test_in_plane_network_grows_both_in_plane_axes_in_one_plane_family() -> None:
    lr = phantom(2, seed=1, shape=(6, 5, 4), spacing=(2.0, 2.0, 1.0), dtype="float32")
    net = _espcn(2, scale=[2, 2], seed=3)
    out = upscale(lr, net, spacing=1.0, device="cpu", precision="float32")
    assert out.shape == (12, 10, 4)
    record = out.meta["upscale"]
    assert record["network_factors"] == [2, 2, 1] and not record["fused_orthogonal"]
    x, s = normalize(torch.as_tensor(np.asarray(lr.array))[0])
    ref = planes_pass(net, x, 1, 0) * s
    np.testing.assert_allclose(out.array[0], _clip(ref, lr).numpy(), rtol=0, atol=1e-5 * float(ref.abs().max()))
    thick = phantom(2, seed=1, shape=(6, 5, 4), spacing=(1.0, 1.0, 4.0), dtype="float32")
    with pytest.raises(InputError, match="upsamples 2 axes"):
        upscale(thick, net, spacing=1.0, device="cpu")


def test_3d_windows_with_a_halo_equal_one_full_pass() -> None:
    """ESPCN's receptive radius is 2 + 1 + 1 = 4 acquired voxels: with halo 4 the zoomed windows are exact."""
    lr = phantom(4, seed=2, shape=(20, 18, 6), spacing=(1.0, 1.0, 4.0), dtype="float32")
    net = _espcn(3, seed=4)
    out = upscale(lr, net, spacing=1.0, device="cpu", precision="float32", roi_size=(8, 8, 4), halo=4, overlap=0.25)
    assert out.shape == (20, 18, 24)
    x, s = normalize(torch.as_tensor(np.asarray(lr.array))[0])
    with torch.no_grad():
        ref = net(x[None, None])[0, 0] * s
    np.testing.assert_allclose(out.array[0], _clip(ref, lr).numpy(), rtol=0, atol=1e-4 * float(ref.abs().max()))
