"""Intensity normalisation and pre-upsampling: the inputs every model sees."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import AXIS_ORDERS, phantom

from mrisr.errors import GeometryError
from mrisr.kspace import degrade
from mrisr.preprocess import cubic_resize_axis, denormalize, intensity_scale, normalize, pre_upsample
from mrisr.protocol import load_protocol
from mrisr.volume import fov_affine


def test_normalize_round_trip_and_scale_of_a_flat_object() -> None:
    x = torch.zeros(1, 20, 20, 20)
    x[:, 5:15, 5:15, 5:15] = 400.0
    assert intensity_scale(x) == pytest.approx(400.0)
    y, s = normalize(x)
    assert float(y.max()) == pytest.approx(1.0)
    torch.testing.assert_close(denormalize(y, s), x)
    assert intensity_scale(torch.zeros(3, 4)) == 1.0


def test_cubic_resize_reproduces_constants_and_quadratics() -> None:
    n, size = 12, 48
    x = torch.arange(n, dtype=torch.float64)
    quad = (0.3 * x**2 - 2 * x + 5)[None]
    out = cubic_resize_axis(quad, 1, size)
    pos = (torch.arange(size, dtype=torch.float64) + 0.5) * n / size - 0.5
    expected = 0.3 * pos**2 - 2 * pos + 5
    inner = (pos > 1) & (pos < n - 2)  # away from the replicated edges
    torch.testing.assert_close(out[0, inner], expected[inner], atol=1e-9, rtol=0)
    const = torch.full((2, n, 3), 7.0)
    torch.testing.assert_close(cubic_resize_axis(const, 1, 5), torch.full((2, 5, 3), 7.0))
    assert cubic_resize_axis(const, 1, n) is const


@pytest.mark.parametrize("order", range(0, len(AXIS_ORDERS), 7))
def test_pre_upsample_back_onto_the_hr_grid(order: int) -> None:
    """thick-slice-x4 then pre_upsample: exactly the HR shape; a smooth image comes back close."""
    hr = phantom(order, seed=order, shape=(24, 20, 32), spacing=(1.0, 1.0, 1.0), dtype="float32")
    i, j, k = np.meshgrid(*[np.arange(n) for n in hr.shape], indexing="ij")
    smooth = 100 + 30 * np.cos(2 * np.pi * i / 24) * np.cos(2 * np.pi * j / 20) * np.cos(2 * np.pi * k / 32)
    hr = hr.replace(array=smooth[None].astype(np.float32))
    lr = degrade(hr, load_protocol("thick-slice-x4").acquisition.nominal(), torch.Generator().manual_seed(0))
    up = pre_upsample(torch.from_numpy(lr.array), lr.affine, hr.affine, hr.shape)
    assert tuple(up.shape[1:]) == hr.shape
    err = np.abs(up.numpy() - hr.array).mean() / np.abs(hr.array).mean()
    assert err < 0.01


def test_pre_upsample_refuses_grids_that_do_not_share_the_fov() -> None:
    hr = phantom(0, shape=(8, 8, 8))
    affine, shape = fov_affine(hr.affine, hr.shape, (1.0, 1.0, 2.0))
    shifted = affine.copy()
    shifted[:3, 3] += 0.5
    with pytest.raises(GeometryError, match="differ"):
        pre_upsample(torch.zeros(1, *shape), shifted, hr.affine, hr.shape)


def test_the_cubic_baseline_is_pre_upsample_with_magnitude_kept() -> None:
    """One baseline for the demo, evaluate, the report and the benchmarks: pre_upsample onto the
    reference grid, clipped at 0 only for a magnitude (non-negative) input."""
    from mrisr.preprocess import cubic_baseline
    from mrisr.volume import Volume, fov_affine

    hr_affine = np.diag([1.0, 1.0, 1.0, 1.0])
    reference = Volume(np.zeros((1, 8, 8, 16), np.float32), hr_affine, {"dtype": "int16"})
    lr_affine, lr_shape = fov_affine(hr_affine, (8, 8, 16), [1.0, 1.0, 4.0])
    box = np.zeros((1, *lr_shape), np.float32)
    box[:, 2:6, 2:6, 1:3] = 1000.0
    raw = pre_upsample(torch.as_tensor(box), lr_affine, hr_affine, (8, 8, 16)).numpy()
    assert raw.min() < -1.0  # Keys' kernel overshoots at the box's faces
    magnitude = cubic_baseline(Volume(box, lr_affine, {}), reference)
    assert magnitude.shape == (8, 8, 16) and np.allclose(magnitude.affine, hr_affine)
    np.testing.assert_allclose(magnitude.array, np.maximum(raw, 0.0), atol=1e-4)
    assert magnitude.meta["range"][0] == 0.0 and magnitude.meta["dtype"] == "float32"
    signed = cubic_baseline(Volume(box - 10.0, lr_affine, {}), reference, meta={})
    np.testing.assert_allclose(signed.array, raw - 10.0, atol=1e-3)  # a signed image keeps its overshoot
