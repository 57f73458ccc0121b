"""partial_fourier: identity, lines lost only along the declared axis, homodyne, errors."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import phantom, refused

from mrisr.errors import InputError
from mrisr.kspace.fft import to_image, to_kspace
from mrisr.kspace.partial_fourier import partial_fourier, partial_fourier_mask


def _phantom_tensor(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.as_tensor(phantom().array).to(dtype)  # (1, 24, 20, 12)


def _smooth_object(n: int = 64, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A real, positive, phase-free 2D object: a Gaussian blob and a box on a background."""
    x = torch.linspace(-1, 1, n, dtype=dtype)
    blob = torch.exp(-((x[:, None] - 0.1) ** 2 + (x[None, :] + 0.2) ** 2 / 0.5) / 0.08)
    box = (x[:, None].abs() < 0.5) & (x[None, :].abs() < 0.4)
    return 0.2 + blob + 0.5 * box


def test_full_fraction_returns_the_input() -> None:
    image = _phantom_tensor()
    for homodyne in (False, True):
        torch.testing.assert_close(partial_fourier(image, -2, 1.0, homodyne=homodyne), image, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("n", "fraction", "side", "expected"),
    [
        (8, 0.5, "high", range(4, 8)),
        (8, 0.5, "low", range(0, 5)),  # raised to n//2 + 1 so that DC (index 4) is acquired
        (8, 0.625, "low", range(0, 5)),
        (7, 0.5, "high", range(3, 7)),
        (7, 0.5, "low", range(0, 4)),
        (10, 0.7, "high", range(3, 10)),
        (10, 0.75, "high", range(2, 10)),
    ],
)
def test_mask_keeps_ceil_fraction_lines_with_the_centre(n: int, fraction: float, side: str, expected: range) -> None:
    mask = partial_fourier_mask(n, fraction, side)
    assert mask.dtype == torch.bool and mask.shape == (n,)
    assert torch.nonzero(mask).flatten().tolist() == list(expected)
    assert mask[n // 2]


@pytest.mark.parametrize("side", ["high", "low"])
def test_kspace_lines_zeroed_are_exactly_the_missing_ones(side: str) -> None:
    """On the complex path: the reconstruction's k-space equals the input's on acquired lines, 0 elsewhere."""
    image = _phantom_tensor()
    mask = partial_fourier_mask(image.shape[-2], 0.6, side)
    kspace = to_kspace(image, -2)
    recon = to_image(kspace * mask[:, None], -2)
    out = partial_fourier(image, -2, 0.6, side=side)
    torch.testing.assert_close(out, recon.abs())
    spectrum = to_kspace(recon, -2)
    assert spectrum[:, :, ~mask].abs().max() <= 1e-12 * kspace.abs().max()
    torch.testing.assert_close(spectrum[:, :, mask], kspace[:, :, mask])


@pytest.mark.parametrize("homodyne", [False, True])
def test_loss_is_only_along_the_declared_axis(homodyne: bool) -> None:
    """A separable positive image f(x) g(y) h(z): the output/input ratio depends only on the declared axis."""
    gen = torch.Generator().manual_seed(3)
    f, g, h = (1.0 + torch.rand(n, dtype=torch.float64, generator=gen) for n in (24, 20, 12))
    image = (f[:, None, None] * g[None, :, None] * h[None, None, :])[None]
    out = partial_fourier(image, -2, 0.6, homodyne=homodyne)
    ratio = out / image
    torch.testing.assert_close(ratio, ratio[:, :1, :, :1].expand_as(ratio))
    if not homodyne:
        assert (ratio - 1).abs().max() > 1e-3  # something was lost


def test_homodyne_recovers_a_phase_free_object_better_than_zero_filling() -> None:
    image = _smooth_object()
    for side in ("high", "low"):
        zero_filled = partial_fourier(image, 0, 0.55, side=side)
        homodyne = partial_fourier(image, 0, 0.55, side=side, homodyne=True)
        rmse_zf = float((zero_filled - image).pow(2).mean().sqrt())
        rmse_hd = float((homodyne - image).pow(2).mean().sqrt())
        assert rmse_hd < 0.1 * rmse_zf
        assert rmse_zf > 1e-2  # zero filling does lose something
        assert (homodyne >= 0).all()


@pytest.mark.parametrize("n", [31, 32])
@pytest.mark.parametrize("side", ["high", "low"])
def test_homodyne_is_exact_for_a_positive_real_object(n: int, side: str) -> None:
    """Real and positive: the low-band phase is 0 and w(k) + w(-k) = 2 (even n's line -n/2 included)."""
    alternating = 0.1 * (-1.0) ** torch.arange(n, dtype=torch.float64)  # the Nyquist line for an even n
    image = (_smooth_object(n) + alternating)[None].expand(3, n, n).clone()
    out = partial_fourier(image, -1, 0.6, side=side, homodyne=True)
    assert out.shape == image.shape
    torch.testing.assert_close(out[2], partial_fourier(image[2], -1, 0.6, side=side, homodyne=True))
    # the high side misses line -n/2 (its own mirror, so lost): the alternating part goes with it
    expected = image - alternating if (side == "high" and n % 2 == 0) else image
    assert float((out - expected).abs().max()) < 1e-6


def test_float32_matches_float64() -> None:
    image = _phantom_tensor()
    for homodyne in (False, True):
        out64 = partial_fourier(image, -3, 0.625, homodyne=homodyne)
        out32 = partial_fourier(image.float(), -3, 0.625, homodyne=homodyne)
        assert out32.dtype == torch.float32
        torch.testing.assert_close(out32.double(), out64, rtol=1e-5, atol=1e-5 * float(image.abs().max()))


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    image = _phantom_tensor(torch.float32)
    for homodyne in (False, True):
        cpu = partial_fourier(image, -2, 0.6, homodyne=homodyne)
        gpu = partial_fourier(image.cuda(), -2, 0.6, homodyne=homodyne)
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("fraction", [0.49, 1.01, -1.0, math.nan, "0.6", True])
def test_fraction_outside_half_to_one_is_refused(fraction: object) -> None:
    with refused(InputError, "fraction="):
        partial_fourier(_phantom_tensor(), -2, fraction)  # type: ignore[arg-type]


def test_other_bad_parameters_are_refused() -> None:
    image = _phantom_tensor()
    with refused(InputError, "side='middle'"):
        partial_fourier(image, -2, 0.6, side="middle")
    with refused(InputError, "axis=\\(1, 2\\)"):
        partial_fourier(image, (1, 2), 0.6)  # type: ignore[arg-type]
    with refused(InputError, "axis=4"):
        partial_fourier(image, 4, 0.6)
    with refused(InputError, "n=0"):
        partial_fourier_mask(0, 0.6)
