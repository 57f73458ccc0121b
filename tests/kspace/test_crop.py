"""kspace_crop: identity, exact central window, exact geometry of the acquired grid, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import AXIS_ORDERS, phantom, phantom_affine, refused

from mrisr.errors import InputError
from mrisr.kspace.crop import _crop_complex, crop_kspace, kspace_crop
from mrisr.kspace.fft import to_kspace
from mrisr.volume import GEOMETRY_ATOL_MM, spacing, world_corners


def _phantom_tensor(dtype: torch.dtype = torch.float64, **kwargs) -> torch.Tensor:
    return torch.as_tensor(phantom(**kwargs).array).to(dtype)


def _window_mask(shape: tuple[int, ...], dims: tuple[int, ...], matrix: tuple[int, ...]) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    index = [slice(None)] * len(shape)
    for d, m in zip(dims, matrix, strict=True):
        index[d] = slice(shape[d] // 2 - m // 2, shape[d] // 2 - m // 2 + m)
    mask[tuple(index)] = True
    return mask


def _band_limited(x_mm: np.ndarray, length_mm: float, axis: int) -> np.ndarray:
    """A positive sum of cosines periodic over the field of view, frequencies 1 and 2 cycles/FOV."""
    terms = [(1, 0.9, 0.3 + axis, 0.4 * axis), (2, 0.5, 1.1, -1.0 + axis)]
    return sum(a * np.cos(2 * np.pi * k * (x_mm - x0) / length_mm + phi) for k, a, x0, phi in terms)


def _axis_coordinate(affine: np.ndarray, lr_affine: np.ndarray, col: int, count: int) -> np.ndarray:
    """Position (mm) along voxel axis ``col`` of the ``count`` LR voxel centres, from the FOV start."""
    unit = affine[:3, col] / spacing(affine)[col]
    fov_start = affine[:3, 3] - 0.5 * affine[:3, col]
    centres = lr_affine[:3, 3][:, None] + lr_affine[:3, col][:, None] * np.arange(count)
    return unit @ (centres - fov_start[:, None])


def test_identity_returns_the_input() -> None:
    image = _phantom_tensor()
    affine = phantom_affine()
    out, new_affine = kspace_crop(image, (-3, -2, -1), matrix=image.shape[-3:], affine=affine)
    torch.testing.assert_close(out, image, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(new_affine, affine)
    out, new_affine = kspace_crop(image, -2, matrix=image.shape[-2], output="zerofilled")
    torch.testing.assert_close(out, image, rtol=0, atol=1e-6)
    assert new_affine is None


@pytest.mark.parametrize("matrix", [(12, 10), (13, 9), (24, 1)])
def test_zerofilled_spectrum_is_exactly_the_central_window(matrix: tuple[int, int]) -> None:
    image = _phantom_tensor()  # (1, 24, 20, 12)
    dims = (1, 2)
    recon = _crop_complex(image, dims, list(matrix), None, 0.5, "zerofilled")
    spectrum, original = to_kspace(recon, dims), to_kspace(image, dims)
    inside = _window_mask(tuple(image.shape), dims, matrix)
    scale = original.abs().max()
    assert spectrum[~inside].abs().max() <= 1e-6 * scale
    torch.testing.assert_close(spectrum[inside], original[inside], rtol=0, atol=1e-5 * float(scale))
    np.testing.assert_array_equal(crop_kspace(original, dims, matrix).shape, (1, *matrix, 12))
    torch.testing.assert_close(crop_kspace(original, dims, matrix).flatten(), original[inside])


def test_public_zerofilled_output_keeps_the_window_of_a_positive_image() -> None:
    """A positive image whose kept band is real and positive: the magnitude is exact."""
    x = torch.arange(32, dtype=torch.float64)
    low = 2.0 + torch.cos(2 * torch.pi * 3 * x / 32)
    image = (low + 0.4 * torch.cos(2 * torch.pi * 11 * x / 32))[:, None] * (3.0 + torch.cos(2 * torch.pi * x[:16] / 16))
    out, _ = kspace_crop(image, 0, matrix=16, output="zerofilled")
    spectrum, original = to_kspace(out, 0), to_kspace(image, 0)
    inside = _window_mask(tuple(image.shape), (0,), (16,))
    assert spectrum[~inside].abs().max() <= 1e-6 * original.abs().max()
    torch.testing.assert_close(spectrum[inside], original[inside], rtol=0, atol=1e-5)


def test_constant_keeps_its_value() -> None:
    image = torch.full((2, 17, 16, 5), 7.5, dtype=torch.float64)
    for window in (None, "hamming", "tukey"):
        for output in ("acquired", "zerofilled"):
            out, _ = kspace_crop(image, (-3, -2), matrix=(8, 9), window=window, output=output)
            torch.testing.assert_close(out, torch.full_like(out, 7.5))


@pytest.mark.parametrize(
    ("shape", "matrix"),
    [((16, 15, 12), (9, 8, 6)), ((15, 16, 13), (7, 10, 13)), ((14, 13, 11), (8, 7, 5)), ((16, 16, 16), (8, 8, 9))],
)
@pytest.mark.parametrize("order", [0, 13, 30, 47])
def test_acquired_grid_samples_the_band_limited_image_at_its_voxel_centres(
    shape: tuple[int, int, int], matrix: tuple[int, int, int], order: int
) -> None:
    """Every even/odd combination of n and m: the phase ramp puts each LR sample where the affine says."""
    affine = phantom_affine(order)
    s = spacing(affine)
    lengths = np.array(shape) * s
    hr = [_band_limited((np.arange(n) + 0.5) * s[a], lengths[a], a) for a, n in enumerate(shape)]
    image = torch.as_tensor(5.0 + hr[0][:, None, None] + hr[1][None, :, None] + hr[2][None, None, :])
    out, lr_affine = kspace_crop(image[None], (-3, -2, -1), matrix=matrix, affine=affine)
    assert out.shape == (1, *matrix)
    lr = [_band_limited(_axis_coordinate(affine, lr_affine, a, m), lengths[a], a) for a, m in enumerate(matrix)]
    expected = 5.0 + lr[0][:, None, None] + lr[1][None, :, None] + lr[2][None, None, :]
    np.testing.assert_allclose(out[0].numpy(), expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("order", range(len(AXIS_ORDERS)))
def test_acquired_affine_keeps_the_field_of_view(order: int) -> None:
    affine = phantom_affine(order)
    image = torch.rand(1, 24, 20, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(order))
    out, lr_affine = kspace_crop(image, (-3, -2, -1), matrix=(13, 10, 7), affine=affine)
    np.testing.assert_allclose(
        world_corners(lr_affine, out.shape), world_corners(affine, image.shape), rtol=0, atol=GEOMETRY_ATOL_MM
    )
    np.testing.assert_allclose(spacing(lr_affine), spacing(affine) * np.array([24 / 13, 2, 12 / 7]), rtol=1e-12)


def test_matrix_and_spacing_give_the_same_result() -> None:
    image = _phantom_tensor()  # (1, 24, 20, 12), spacing (0.9, 1.2, 3.0)
    affine = phantom_affine()
    by_matrix = kspace_crop(image, (-3, -2), matrix=(12, 8), affine=affine, window="hamming")
    by_spacing = kspace_crop(image, (-3, -2), spacing_mm=(1.8, 3.0), affine=affine, window="hamming")
    by_input = kspace_crop(image, (-3, -2), spacing_mm=(1.8, 3.0), input_spacing_mm=(0.9, 1.2), window="hamming")
    torch.testing.assert_close(by_matrix[0], by_spacing[0], rtol=0, atol=0)
    torch.testing.assert_close(by_matrix[0], by_input[0], rtol=0, atol=0)
    np.testing.assert_array_equal(by_matrix[1], by_spacing[1])
    assert by_input[1] is None
    # axis order as given: matrix pairs with axes (-2, -3)
    swapped = kspace_crop(image, (-2, -3), matrix=(8, 12), affine=affine, window="hamming")
    torch.testing.assert_close(swapped[0], by_matrix[0], rtol=1e-12, atol=1e-12)


def test_batched_2d_and_3d_match_one_by_one() -> None:
    gen = torch.Generator().manual_seed(0)
    planes = torch.rand(3, 2, 20, 18, dtype=torch.float64, generator=gen)
    out, _ = kspace_crop(planes, (-2, -1), matrix=(10, 9), window="tukey", tukey_alpha=0.3)
    assert out.shape == (3, 2, 10, 9)
    torch.testing.assert_close(out[2, 1], kspace_crop(planes[2, 1], (0, 1), matrix=(10, 9), window="tukey",
                                                      tukey_alpha=0.3)[0])
    volume = torch.rand(2, 12, 10, 8, dtype=torch.float64, generator=gen)
    out, affine = kspace_crop(volume, (-3, -2, -1), matrix=5, affine=phantom_affine(), output="zerofilled")
    assert out.shape == volume.shape
    np.testing.assert_array_equal(affine, phantom_affine())
    torch.testing.assert_close(out[1], kspace_crop(volume[1], (0, 1, 2), matrix=5, output="zerofilled")[0])


@pytest.mark.parametrize("window", [None, "hamming", "tukey"])
@pytest.mark.parametrize("output", ["acquired", "zerofilled"])
def test_float32_matches_float64(window: str | None, output: str) -> None:
    image = _phantom_tensor()
    out64, _ = kspace_crop(image, (-3, -2), matrix=(11, 8), window=window, output=output)
    out32, _ = kspace_crop(image.float(), (-3, -2), matrix=(11, 8), window=window, output=output)
    assert out32.dtype == torch.float32 and out64.dtype == torch.float64
    torch.testing.assert_close(out32.double(), out64, rtol=1e-5, atol=1e-5 * float(out64.abs().max()))


def test_apodisation_lowers_the_edge_of_the_spectrum() -> None:
    image = _phantom_tensor()
    plain, _ = kspace_crop(image, -3, matrix=12, output="zerofilled")
    ham, _ = kspace_crop(image, -3, matrix=12, window="hamming", output="zerofilled")
    flat, _ = kspace_crop(image, -3, matrix=12, window="tukey", tukey_alpha=0.0, output="zerofilled")
    torch.testing.assert_close(flat, plain)
    assert (ham - image).abs().mean() > (plain - image).abs().mean()  # smoother: further from the input


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    image = _phantom_tensor(torch.float32)
    cpu, _ = kspace_crop(image, (-3, -2), matrix=(11, 8), window="hamming")
    gpu, _ = kspace_crop(image.cuda(), (-3, -2), matrix=(11, 8), window="hamming")
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"matrix": 25}, "matrix=25"),
        ({"matrix": 0}, "matrix=0"),
        ({"matrix": (4, 4)}, "matrix=\\(4, 4\\)"),
        ({"matrix": 4.0}, "matrix=4.0"),
        ({"matrix": 4, "spacing_mm": 2.0}, "give exactly one"),
        ({}, "give exactly one"),
        ({"spacing_mm": 2.0}, "spacing_mm needs the input spacing"),
        ({"spacing_mm": 0.1, "input_spacing_mm": 0.9}, "spacing_mm=0.1"),
        ({"spacing_mm": -1.0, "input_spacing_mm": 0.9}, "spacing_mm=-1.0"),
        ({"matrix": 4, "window": "hann"}, "window='hann'"),
        ({"matrix": 4, "window": "tukey", "tukey_alpha": 1.5}, "tukey_alpha=1.5"),
        ({"matrix": 4, "output": "grid"}, "output='grid'"),
        ({"matrix": 4, "affine": np.eye(3)}, "affine of shape"),
        ({"spacing_mm": 2.0, "affine": phantom_affine(), "input_spacing_mm": 5.0}, "input_spacing_mm=5.0"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict, pattern: str) -> None:
    image = _phantom_tensor()
    with refused(InputError, pattern):
        kspace_crop(image, -3, **kwargs)


def test_bad_axes_and_images_are_refused() -> None:
    image = _phantom_tensor()
    with refused(InputError, "axes=5"):
        kspace_crop(image, 5, matrix=4)
    with refused(InputError, "axes=\\(1, -3\\)"):
        kspace_crop(image, (1, -3), matrix=4)
    with refused(InputError, "not all among the affine's last three"):
        kspace_crop(image[None], 1, matrix=1, affine=phantom_affine())
    with refused(InputError, "image=torch.int64"):
        kspace_crop(image.long(), -3, matrix=4)
