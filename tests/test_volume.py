"""Invariant tests for Volume and the pure geometry functions."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import AXIS_ORDERS, phantom, phantom_affine

from mrisr.errors import GeometryError, InputError
from mrisr.volume import (
    Volume,
    axcodes,
    canonical,
    crop,
    crop_affine,
    fov_affine,
    spacing,
    world_corners,
)


def test_volume_validates_shape_and_affine() -> None:
    with pytest.raises(InputError, match="4D"):
        Volume(np.zeros((4, 4, 4), np.float32), np.eye(4))
    with pytest.raises(GeometryError, match="4x4"):
        Volume(np.zeros((1, 4, 4, 4), np.float32), np.eye(3))
    with pytest.raises(GeometryError, match="singular"):
        Volume(np.zeros((1, 4, 4, 4), np.float32), np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(GeometryError, match="NaN"):
        Volume(np.zeros((1, 4, 4, 4), np.float32), np.full((4, 4), np.nan))


def test_volume_is_frozen_and_affine_read_only() -> None:
    vol = phantom(0)
    with pytest.raises(AttributeError):
        vol.affine = np.eye(4)  # type: ignore[misc]
    with pytest.raises(ValueError):
        vol.affine[0, 0] = 5.0
    assert vol.shape == (24, 20, 12) and vol.n_channels == 1


def test_spacing_and_axcodes_of_a_known_affine() -> None:
    affine = np.array([[0, 0, -3.0, 10], [2.0, 0, 0, -5], [0, -0.5, 0, 7], [0, 0, 0, 1]])
    np.testing.assert_allclose(spacing(affine), [2.0, 0.5, 3.0])
    assert axcodes(affine) == ("A", "I", "L")


def test_world_corners_are_outer_faces() -> None:
    corners = world_corners(np.diag([2.0, 3.0, 4.0, 1.0]), (10, 20, 5))
    np.testing.assert_allclose(corners.min(0), [-1.0, -1.5, -2.0])
    np.testing.assert_allclose(corners.max(0), [19.0, 58.5, 18.0])
    assert corners.shape == (8, 3)


@pytest.mark.parametrize("order", range(len(AXIS_ORDERS)))
@pytest.mark.parametrize(
    ("shape", "new_spacing"),
    [((24, 20, 12), (0.9, 1.2, 1.0)), ((24, 20, 12), 0.6), ((7, 9, 4), (1.8, 0.4, 0.75))],
)
def test_fov_affine_keeps_the_field_of_view(order: int, shape: tuple, new_spacing) -> None:
    affine = phantom_affine(order, seed=order)
    new_affine, new_shape = fov_affine(affine, shape, new_spacing)
    np.testing.assert_allclose(world_corners(new_affine, new_shape), world_corners(affine, shape), atol=1e-9)
    # directions unchanged
    unit = affine[:3, :3] / spacing(affine)
    np.testing.assert_allclose(new_affine[:3, :3] / spacing(new_affine), unit, atol=1e-12)


def test_fov_affine_exact_when_spacing_divides_the_extent() -> None:
    """5 mm slices -> 1 mm: 5x the slices, exactly 1 mm, origin moved by -2 mm along the axis."""
    affine = np.diag([1.0, 1.0, 5.0, 1.0])
    new_affine, new_shape = fov_affine(affine, (10, 10, 8), (1.0, 1.0, 1.0))
    assert new_shape == (10, 10, 40)
    np.testing.assert_allclose(spacing(new_affine), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(new_affine[:3, 3], [0.0, 0.0, -2.0])


def test_fov_affine_round_trip_restores_the_grid() -> None:
    affine = phantom_affine(13, seed=2)
    down, down_shape = fov_affine(affine, (24, 20, 12), (1.8, 2.4, 6.0))
    back, back_shape = fov_affine(down, down_shape, spacing(affine))
    assert back_shape == (24, 20, 12)
    np.testing.assert_allclose(back, affine, atol=1e-9)


def test_fov_affine_rejects_bad_spacing() -> None:
    with pytest.raises(InputError, match="positive"):
        fov_affine(np.eye(4), (4, 4, 4), (1.0, 0.0, 1.0))


@pytest.mark.parametrize("order", range(len(AXIS_ORDERS)))
def test_canonical_matches_nibabel(order: int) -> None:
    vol = phantom(order, seed=order, shape=(6, 5, 4))
    ours = canonical(vol)
    img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(vol.array[0]), vol.affine))
    np.testing.assert_allclose(ours.affine, img.affine, atol=1e-9)
    np.testing.assert_array_equal(ours.array[0], np.asarray(img.dataobj))
    assert ours.axcodes == ("R", "A", "S")
    np.testing.assert_allclose(np.sort(ours.corners, 0), np.sort(vol.corners, 0), atol=1e-9)


def test_canonical_works_on_torch_arrays() -> None:
    vol = phantom(37, shape=(6, 5, 4))
    tvol = vol.replace(array=torch.from_numpy(np.ascontiguousarray(vol.array)))
    np.testing.assert_array_equal(canonical(tvol).array.numpy(), canonical(vol).array)


def test_crop_keeps_world_positions() -> None:
    vol = phantom(21, shape=(10, 8, 6))
    sub = crop(vol, (2, 1, 3), (7, 8, 5))
    assert sub.shape == (5, 7, 2)
    # voxel (0, 0, 0) of the crop is voxel (2, 1, 3) of the original, at the same world point
    np.testing.assert_allclose(sub.affine @ [0, 0, 0, 1], vol.affine @ [2, 1, 3, 1])
    np.testing.assert_array_equal(sub.array, vol.array[:, 2:7, 1:8, 3:5])
    np.testing.assert_allclose(crop_affine(vol.affine, (0, 0, 0)), vol.affine)
    with pytest.raises(InputError, match="crop box"):
        crop(vol, (0, 0, 0), (11, 8, 6))


def test_volume_array_is_float32() -> None:
    vol = Volume(np.arange(8, dtype=np.int16).reshape(1, 2, 2, 2), np.eye(4))
    assert vol.array.dtype == np.float32
    tvol = Volume(torch.zeros((1, 2, 2, 2), dtype=torch.float64), np.eye(4))
    assert tvol.array.dtype == torch.float32
    same = np.zeros((1, 2, 2, 2), np.float32)
    assert Volume(same, np.eye(4)).array is same  # no copy when already float32
