"""The target grid of an upscaling: field of view kept, default isotropic at the finest spacing."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import phantom_affine, refused

from mrisr.errors import InputError
from mrisr.infer.grid import coarse_axis, target_grid, upsampled_axes
from mrisr.volume import spacing, world_corners

SHAPE = (24, 20, 12)  # phantom spacing (0.9, 1.2, 3.0)


@pytest.mark.parametrize("order", [0, 7, 19, 33, 47])
def test_default_is_isotropic_at_the_finest_spacing_and_keeps_the_field_of_view(order):
    affine = phantom_affine(order)
    new_affine, new_shape = target_grid(affine, SHAPE)
    assert new_shape == (24, 27, 40)  # 24*0.9/0.9, 20*1.2/0.9 = 26.7, 12*3/0.9 = 40
    np.testing.assert_allclose(world_corners(new_affine, new_shape), world_corners(affine, SHAPE), atol=1e-9)
    s = spacing(new_affine)
    np.testing.assert_allclose(s[[0, 2]], 0.9, atol=1e-12)
    assert abs(s[1] - 24.0 / 27) < 1e-12  # adjusted so that the field of view is exact
    dirs_old = affine[:3, :3] / spacing(affine)
    np.testing.assert_allclose(new_affine[:3, :3] / s, dirs_old, atol=1e-12)


def test_spacing_one_value_or_three():
    affine = phantom_affine(3)
    _, shape = target_grid(affine, SHAPE, spacing=0.6)
    assert shape == (36, 40, 60)
    new_affine, shape = target_grid(affine, SHAPE, spacing=(0.9, 1.2, 1.0))
    assert shape == (24, 20, 36)
    np.testing.assert_allclose(spacing(new_affine), [0.9, 1.2, 1.0], atol=1e-12)


def test_scale_divides_the_spacing_per_axis():
    affine = phantom_affine(5)
    new_affine, shape = target_grid(affine, SHAPE, scale=(1, 1, 3))
    assert shape == (24, 20, 36)
    np.testing.assert_allclose(spacing(new_affine), [0.9, 1.2, 1.0], atol=1e-12)
    _, shape = target_grid(affine, SHAPE, scale=2)
    assert shape == (48, 40, 24)


def test_identity_grid():
    affine = phantom_affine(1, spacing=(1.0, 1.0, 1.0))
    new_affine, shape = target_grid(affine, SHAPE)
    assert shape == SHAPE
    np.testing.assert_allclose(new_affine, affine, atol=1e-12)


def test_a_single_image_keeps_its_single_voxel_by_default():
    affine = phantom_affine(0, spacing=(0.5, 1.0, 5.0))
    _, shape = target_grid(affine, (20, 10, 1))
    assert shape == (20, 20, 1)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"spacing": 1.0, "scale": 2}, "not both"),
        ({"spacing": 0.0}, "spacing must be positive"),
        ({"spacing": (1.0, -1.0, 1.0)}, "spacing must be positive"),
        ({"spacing": float("nan")}, "spacing must be positive"),
        ({"scale": -2}, "scale must be positive"),
        ({"scale": (1, 2)}, "scale must be one number or three"),
        ({"spacing": "fine"}, "spacing must be one number or three"),
        ({"spacing": 5.0}, "coarser than the input"),
    ],
)
def test_bad_arguments_are_refused_naming_the_parameter(kwargs, pattern):
    with refused(InputError, pattern) as err:
        target_grid(phantom_affine(0), SHAPE, **kwargs)
    assert err.value.path is not None and err.value.path.split("/")[0] in ("spacing", "scale")


def test_growing_a_single_voxel_axis_is_refused():
    with refused(InputError, "single voxel"):
        target_grid(phantom_affine(0, spacing=(1.0, 1.0, 5.0)), (20, 10, 1), spacing=1.0)


def test_upsampled_and_coarse_axes():
    affine = phantom_affine(2)
    hr_affine, hr_shape = target_grid(affine, SHAPE)
    assert upsampled_axes(affine, SHAPE, hr_affine, hr_shape) == [1, 2]
    assert coarse_axis(affine, SHAPE, hr_affine, hr_shape) == 2
    # the identity grid: the coarsest input spacing
    assert coarse_axis(affine, SHAPE, affine, SHAPE) == 2
    assert upsampled_axes(affine, SHAPE, affine, SHAPE) == []
    iso = phantom_affine(2, spacing=(1.0, 1.0, 1.0))
    assert coarse_axis(iso, (8, 8, 1), iso, (8, 8, 1)) == 0  # never the single-voxel axis
