"""Through-plane slice profile: exact weights, measured FWHM, slice positions, geometry, errors."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import torch
from conftest import AXIS_ORDERS, phantom, refused

from mrisr.errors import InputError
from mrisr.kspace.slice_profile import profile_weights, slice_profile
from mrisr.volume import spacing, world_corners


def fwhm(positions: np.ndarray, response: np.ndarray) -> float:
    """Full width at half maximum of a single-peaked response, half-maximum crossings interpolated."""
    order = np.argsort(positions)
    x, y = positions[order], response[order]
    peak = int(np.argmax(y))
    half = y[peak] / 2.0
    left = np.nonzero(y[:peak] < half)[0][-1]  # last sample under half maximum before the peak
    right = np.nonzero(y[peak:] < half)[0][0] + peak  # first one after it
    x_left = x[left] + (half - y[left]) * (x[left + 1] - x[left]) / (y[left + 1] - y[left])
    x_right = x[right - 1] + (half - y[right - 1]) * (x[right] - x[right - 1]) / (y[right] - y[right - 1])
    return float(x_right - x_left)


def plate_response(n_in: int, s_in: float, thickness: float, s_out: float, profile: str) -> tuple:
    """Move a one-voxel thin plate through every input position and record every output slice.

    The images form a batch: plate ``b`` sits in input voxel ``b`` (an identity matrix), so
    ``out[b, k]`` is slice ``k``'s response to the plate at voxel ``b``. Returns the plate's
    offsets from each interior slice's centre and the responses, pooled over those slices:
    with a non-integer ratio of spacings the offsets fall at many sub-voxel positions.
    """
    plates = torch.eye(n_in, dtype=torch.float64)
    out, _ = slice_profile(
        plates, -1, thickness_mm=thickness, slice_spacing_mm=s_out, profile=profile, input_spacing_mm=s_in
    )
    _, centres, _ = profile_weights(n_in, s_in, thickness, s_out, profile)
    plate_centres = -n_in * s_in / 2.0 + (np.arange(n_in) + 0.5) * s_in
    interior = [k for k in range(len(centres)) if abs(centres[k]) < n_in * s_in / 2.0 - 3.0 * thickness]
    assert interior, "the field of view is too small for an interior slice"
    offsets = np.concatenate([plate_centres - centres[k] for k in interior])
    responses = np.concatenate([out[:, k].numpy() for k in interior])
    return offsets, responses


def test_identity_returns_input_unchanged() -> None:
    image = torch.rand(2, 9, 8, 7, generator=torch.Generator().manual_seed(0))
    for axis, s in [(-1, 1.5), (-2, 0.7), (1, 2.0), (0, 1.0)]:
        out, affine = slice_profile(
            image, axis, thickness_mm=s, slice_spacing_mm=s, profile="rect", input_spacing_mm=s
        )
        assert affine is None
        torch.testing.assert_close(out, image, rtol=0, atol=1e-6)
    vol = phantom(3)
    image = torch.as_tensor(vol.array)
    for axis in (-3, -2, -1):
        s = float(vol.spacing[axis + 3])
        out, affine = slice_profile(
            image, axis, thickness_mm=s, slice_spacing_mm=s, profile="rect", affine=vol.affine
        )
        torch.testing.assert_close(out, image, rtol=0, atol=1e-6)
        np.testing.assert_allclose(affine, vol.affine, atol=1e-9)


def test_rect_weights_are_exact_overlaps_with_gaps_overlaps_and_non_integer_ratios() -> None:
    s_in, n_in = 0.37, 97
    for thickness, s_out in [(2.7, 3.3), (3.3, 2.7), (1.0, 5.0), (0.2, 1.1)]:
        weights, centres, effective = profile_weights(n_in, s_in, thickness, s_out, "rect")
        faces = -n_in * s_in / 2.0 + np.arange(n_in + 1) * s_in
        lo = np.maximum(faces[None, :-1], centres[:, None] - thickness / 2.0)
        hi = np.minimum(faces[None, 1:], centres[:, None] + thickness / 2.0)
        overlap = np.clip(hi - lo, 0.0, None)
        np.testing.assert_allclose(weights, overlap / overlap.sum(1, keepdims=True), rtol=0, atol=1e-12)
        interior = np.abs(centres) < n_in * s_in / 2.0 - thickness / 2.0
        np.testing.assert_allclose(weights[interior], overlap[interior] / thickness, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("s_in", "thickness", "s_out"),
    [(0.1, 5.0, 5.0), (0.1, 3.3, 4.0), (0.1, 2.7, 2.0), (0.37, 5.0, 5.0), (0.37, 3.3, 6.1), (0.37, 2.7, 2.9)],
)
@pytest.mark.parametrize("profile", ["rect", "gaussian", "sinc"])
def test_measured_fwhm_equals_thickness(s_in: float, thickness: float, s_out: float, profile: str) -> None:
    n_in = int(round(60.0 / s_in))
    offsets, responses = plate_response(n_in, s_in, thickness, s_out, profile)
    measured = fwhm(offsets, responses)
    assert measured == pytest.approx(thickness, rel=0.05), (profile, s_in, thickness, measured)


def test_sinc_profile_edges_sharpen_with_time_bandwidth_product() -> None:
    """A larger tbw gives a squarer profile: less weight beyond one thickness from the centre."""
    tails = []
    for tbw in (2.0, 4.0, 8.0):
        weights, centres, _ = profile_weights(400, 0.05, 4.0, 20.0, "sinc", tbw)
        z = -10.0 + (np.arange(400) + 0.5) * 0.05 - centres[0]
        tails.append(np.abs(weights[0][np.abs(z) > 3.0]).sum())
    assert tails[0] > tails[1] > tails[2]


@pytest.mark.parametrize(
    ("thickness", "s_out"), [(2.0, 5.0), (5.0, 3.0), (2.7, 3.7), (4.4, 4.4)]
)  # gap, overlap, non-integer gap, contiguous
def test_gaps_and_overlaps_land_slices_at_requested_positions(thickness: float, s_out: float) -> None:
    s_in, n_in = 0.3, 200  # 60 mm
    extent = n_in * s_in
    n_out = int(np.floor(extent / s_out + 0.5))
    expected = -extent / 2.0 + (np.arange(n_out) + 0.5) * extent / n_out
    plate_centres = -extent / 2.0 + (np.arange(n_in) + 0.5) * s_in
    for profile in ("rect", "gaussian", "sinc"):
        weights, centres, effective = profile_weights(n_in, s_in, thickness, s_out, profile)
        assert weights.shape == (n_out, n_in)
        assert effective == pytest.approx(extent / n_out, abs=1e-12)
        np.testing.assert_allclose(centres, expected, rtol=0, atol=1e-4)
        if extent / s_out == n_out:
            assert effective == pytest.approx(s_out, abs=1e-12)
        # Centroid of each weight row: exact for smooth profiles (sums of a smooth function
        # over a fine grid), and for rect when the thickness is a whole number of input voxels.
        if profile != "rect" or abs(thickness / s_in - round(thickness / s_in)) < 1e-9:
            interior = np.abs(centres) < extent / 2.0 - 3.1 * thickness  # sinc's support: +-3.02 thickness
            assert interior.any()
            centroids = weights @ plate_centres
            np.testing.assert_allclose(centroids[interior], centres[interior], rtol=0, atol=1e-4)

    # The same slice positions in world mm through the returned affine.
    vol = phantom(5, shape=(8, 6, n_in), spacing=(1.1, 0.8, s_in))
    out, affine = slice_profile(
        torch.as_tensor(vol.array), -1, thickness_mm=thickness, slice_spacing_mm=s_out, affine=vol.affine
    )
    assert out.shape == (1, 8, 6, n_out)
    direction = vol.affine[:3, 2] / s_in
    lr_index = np.stack([np.full(n_out, 3.0), np.zeros(n_out), np.arange(n_out), np.ones(n_out)])
    hr_axis_centre = vol.affine @ np.array([3.0, 0.0, (n_in - 1) / 2.0, 1.0])  # the FOV's centre along the axis
    expected_world = hr_axis_centre[:3] + np.outer(expected, direction)
    np.testing.assert_allclose((affine @ lr_index)[:3].T, expected_world, rtol=0, atol=1e-4)


@pytest.mark.parametrize("order", range(len(AXIS_ORDERS)))
def test_lr_field_of_view_corners_equal_hr_for_all_axis_orders(order: int) -> None:
    vol = phantom(order)  # shape (24, 20, 12), spacing (0.9, 1.2, 3.0)
    image = torch.as_tensor(vol.array)
    dividing = {-3: 2.7, -2: 4.8, -1: 6.0}  # extents 21.6, 24 and 36 mm
    for axis, s_out in itertools.chain(dividing.items(), [(-3, 5.0), (-2, 5.0), (-1, 5.0)]):
        out, affine = slice_profile(image, axis, thickness_mm=4.0, slice_spacing_mm=s_out, affine=vol.affine)
        column = axis + 3
        extent = vol.shape[column] * vol.spacing[column]
        n_out = max(1, int(np.floor(extent / s_out + 0.5)))
        assert out.shape[axis] == n_out
        assert [n for d, n in enumerate(out.shape) if d != column + 1] == [
            n for d, n in enumerate(image.shape) if d != column + 1
        ]
        np.testing.assert_allclose(world_corners(affine, out.shape[1:]), vol.corners, rtol=0, atol=1e-4)
        new_spacing = spacing(affine)
        assert new_spacing[column] == pytest.approx(extent / n_out, abs=1e-9)
        if axis in dividing and s_out == dividing[axis]:
            assert new_spacing[column] == pytest.approx(s_out, abs=1e-9)
        others = [c for c in range(3) if c != column]
        np.testing.assert_allclose(new_spacing[others], vol.spacing[others], atol=1e-9)
        # Slice centres in world mm: the HR field of view's centre plus profile_weights' offsets.
        _, centres, _ = profile_weights(vol.shape[column], vol.spacing[column], 4.0, s_out, "gaussian")
        index = np.zeros((4, n_out))
        index[3] = 1.0
        index[column] = np.arange(n_out)
        hr_index = np.zeros(4)
        hr_index[3] = 1.0
        hr_index[column] = (vol.shape[column] - 1) / 2.0
        direction = vol.affine[:3, column] / vol.spacing[column]
        expected = (vol.affine @ hr_index)[:3] + np.outer(centres, direction)
        np.testing.assert_allclose((affine @ index)[:3].T, expected, rtol=0, atol=1e-4)


def test_batched_2d_and_3d_and_dtypes_agree() -> None:
    gen = torch.Generator().manual_seed(7)
    planes = torch.rand(3, 2, 33, 40, generator=gen, dtype=torch.float64)
    kwargs = dict(thickness_mm=3.3, slice_spacing_mm=2.9, input_spacing_mm=0.7)
    for profile in ("rect", "gaussian", "sinc", np.array([0.0, 1.0, 2.0, 1.0, 0.0])):
        for axis in (-1, -2):
            ref64, _ = slice_profile(planes, axis, profile=profile, **kwargs)
            ref32, _ = slice_profile(planes.float(), axis, profile=profile, **kwargs)
            assert ref32.dtype == torch.float32 and ref64.dtype == torch.float64
            torch.testing.assert_close(ref32.double(), ref64, rtol=0, atol=1e-5)
            for b in range(3):  # each plane of the batch alone, as a (C, X, Y) or (X, Y) image
                alone, _ = slice_profile(planes[b], axis, profile=profile, **kwargs)
                torch.testing.assert_close(alone, ref64[b], rtol=0, atol=1e-12)
                single, _ = slice_profile(planes[b, 0], axis, profile=profile, **kwargs)
                torch.testing.assert_close(single, ref64[b, 0], rtol=0, atol=1e-12)
    volume = torch.rand(2, 10, 12, 30, generator=gen)
    for axis in (-3, -2, -1, 1, 2, 3):
        out, _ = slice_profile(volume, axis, **kwargs)
        weights, _, _ = profile_weights(volume.shape[axis], 0.7, 3.3, 2.9)
        expected = np.moveaxis(np.tensordot(weights, volume.double().numpy(), axes=([1], [axis])), 0, axis)
        np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-5)
        assert out.is_contiguous()


def test_mass_is_conserved() -> None:
    x = torch.linspace(-1, 1, 120, dtype=torch.float64)
    smooth = 100.0 + 20.0 * torch.cos(2.0 * x)[:, None] * torch.sin(1.5 * x)[None, :]
    for profile in ("rect", "gaussian", "sinc"):
        for thickness, s_out in [(3.0, 3.0), (2.0, 5.0), (5.0, 2.5), (2.7, 3.9)]:
            weights, _, _ = profile_weights(120, 0.5, thickness, s_out, profile)
            np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-12)
            out, _ = slice_profile(
                smooth, 0, thickness_mm=thickness, slice_spacing_mm=s_out, profile=profile, input_spacing_mm=0.5
            )
            assert out.mean().item() == pytest.approx(smooth.mean().item(), rel=5e-3)
            constant, _ = slice_profile(
                torch.full((120, 4), 7.0), 0, thickness_mm=thickness, slice_spacing_mm=s_out, profile=profile,
                input_spacing_mm=0.5,
            )
            torch.testing.assert_close(constant, torch.full_like(constant, 7.0), rtol=0, atol=1e-5)
    # Contiguous rect slices (thickness = spacing) conserve the mean of any image exactly.
    noise = torch.rand(120, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out, _ = slice_profile(noise, 0, thickness_mm=60 / 17, slice_spacing_mm=3.5, profile="rect", input_spacing_mm=0.5)
    torch.testing.assert_close(out.mean(0), noise.mean(0), rtol=0, atol=1e-12)


def test_custom_profile_matches_named_equivalent() -> None:
    """A sampled triangle over [-T, T] has FWHM T; a flat array over [-T, T] is a rect of width 2 T."""
    flat, _, _ = profile_weights(150, 0.2, 2.0, 4.0, np.ones(11))
    rect, _, _ = profile_weights(150, 0.2, 4.0, 4.0, "rect")
    np.testing.assert_allclose(flat, rect, atol=1e-12)
    tri = torch.tensor([0.0, 1.0, 0.0])
    offsets, responses = plate_response(600, 0.1, 3.0, 5.0, tri)  # type: ignore[arg-type]
    assert fwhm(offsets, responses) == pytest.approx(3.0, rel=0.05)


def test_performance_256_cubed_gaussian() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        image = torch.rand(256, 256, 256, generator=torch.Generator().manual_seed(0))
        best = float("inf")
        for axis in (0, 2):
            for _ in range(2):
                start = time.perf_counter()
                out, _ = slice_profile(image, axis, thickness_mm=5.0, slice_spacing_mm=5.0, input_spacing_mm=1.0)
                best = min(best, time.perf_counter() - start)
            assert out.shape[axis] == 51
    finally:
        torch.set_num_threads(threads)
    assert best < 1.0


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (dict(thickness_mm=0.0), r"thickness_mm .* positive.* got 0\.0"),
        (dict(thickness_mm=-2.0), r"thickness_mm .* got -2\.0"),
        (dict(thickness_mm=float("nan")), r"thickness_mm .* got nan"),
        (dict(slice_spacing_mm=0), r"slice_spacing_mm .* positive.* got 0"),
        (dict(slice_spacing_mm="5"), r"slice_spacing_mm .* got '5'"),
        (dict(thickness_mm=True), r"thickness_mm .* got True"),
        (dict(input_spacing_mm=-1.0), r"input_spacing_mm .* got -1\.0"),
        (dict(input_spacing_mm=None), r"input_spacing_mm is required without an affine, got None"),
        (dict(profile="lorentz"), r"profile must be one of 'rect', 'gaussian', 'sinc'.* got 'lorentz'"),
        (dict(profile=np.ones((2, 3))), r"profile as an array must be 1D .* shape \(2, 3\)"),
        (dict(profile=np.array([1.0])), r"at least 2 .* shape \(1,\)"),
        (dict(profile=np.array([0.0, -1.0, 0.0])), r"positive integral"),
        (dict(profile=3), r"profile must be one of .* got int"),
        (dict(profile="sinc", tbw=0.0), r"tbw .* positive.* got 0\.0"),
        (dict(axis=3), r"axis must be an integer in \[-3, 2\] .* got 3"),
        (dict(axis=-4), r"axis must be an integer in \[-3, 2\] .* got -4"),
        (dict(axis=1.0), r"axis must be an integer .* got 1\.0"),
        (dict(image=np.zeros((4, 5, 6))), r"image must be a real float32/float64 torch tensor, got ndarray"),
        (dict(image=torch.zeros(4, 5, 6, dtype=torch.int16)), r"image must be .* got a tensor of dtype torch\.int16"),
    ],
)
def test_bad_parameters_raise_input_error_naming_them(kwargs: dict, pattern: str) -> None:
    args = dict(image=torch.zeros(4, 5, 6), axis=-1, thickness_mm=2.0, slice_spacing_mm=3.0, input_spacing_mm=1.0)
    args.update(kwargs)
    image, axis = args.pop("image"), args.pop("axis")
    with refused(InputError, pattern):
        slice_profile(image, axis, **args)


def test_affine_errors() -> None:
    vol = phantom(0)
    image = torch.as_tensor(vol.array)
    with refused(InputError, r"input_spacing_mm 2\.0 disagrees with the affine's spacing 3\.0"):
        slice_profile(image, -1, thickness_mm=5, slice_spacing_mm=5, affine=vol.affine, input_spacing_mm=2.0)
    with refused(InputError, r"axis must be one of the last three dimensions .* got axis -4"):
        slice_profile(image, 0, thickness_mm=5, slice_spacing_mm=5, affine=vol.affine)
    with refused(InputError, r"affine must be a 4x4 matrix, got shape \(3, 3\)"):
        slice_profile(image, -1, thickness_mm=5, slice_spacing_mm=5, affine=np.eye(3))
    # A matching explicit spacing is accepted.
    slice_profile(image, -1, thickness_mm=5, slice_spacing_mm=5, affine=vol.affine, input_spacing_mm=3.0)
    with refused(InputError, r"n_in must be a positive integer .* got 0"):
        profile_weights(0, 1.0, 2.0, 2.0)


@pytest.mark.gpu
def test_cuda_matches_cpu_and_keeps_device() -> None:
    image = torch.rand(2, 40, 30, 50, generator=torch.Generator().manual_seed(3))
    for profile in ("rect", "gaussian", "sinc"):
        cpu, _ = slice_profile(image, -1, thickness_mm=3.3, slice_spacing_mm=4.1, profile=profile, input_spacing_mm=0.7)
        gpu, _ = slice_profile(
            image.cuda(), -1, thickness_mm=3.3, slice_spacing_mm=4.1, profile=profile, input_spacing_mm=0.7
        )
        assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-5)
