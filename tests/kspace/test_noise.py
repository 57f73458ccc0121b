"""Rician noise: the Rayleigh background, the SNR it was asked for, identity, determinism, errors."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import refused

from mrisr.errors import InputError
from mrisr.kspace.noise import rician_noise, signal_level


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_background_is_rayleigh(dtype: torch.dtype) -> None:
    """10^6 zero voxels: mean sigma*sqrt(pi/2), variance (2 - pi/2)*sigma^2, within 3 %."""
    sigma = 7.5
    out = rician_noise(torch.zeros(1, 1000, 1000, dtype=dtype), sigma=sigma, generator=gen(1), spatial_dims=2)
    assert out.dtype == dtype and out.shape == (1, 1000, 1000)
    assert float(out.min()) >= 0
    mean, var = float(out.double().mean()), float(out.double().var())
    assert mean == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=0.03)
    assert var == pytest.approx((2 - math.pi / 2) * sigma**2, rel=0.03)


@pytest.mark.parametrize("snr", [20.0, 50.0])
def test_snr_measured_in_a_flat_region(snr: float) -> None:
    """A bright flat box in an empty FOV: the box interior's mean / std is the requested SNR (5 %).

    Direct mean / std is the right estimator here: at SNR >= 20 the Rician bias of the mean is
    under 0.2 % (mean ~ A * (1 + 1 / (2 SNR^2))) and the std is sigma to 0.1 %.
    """
    image = torch.zeros(1, 200, 200, 20)
    image[:, 40:160, 40:160, 2:18] = 500.0
    assert float(signal_level(image, spatial_dims=3)) == pytest.approx(500.0)
    out = rician_noise(image, snr=snr, generator=gen(2), spatial_dims=3)
    region = out[:, 45:155, 45:155, 3:17].double()
    measured = float(region.mean() / region.std())
    assert measured == pytest.approx(snr, rel=0.05)
    background = out[:, :30, :30, :].double()  # Rayleigh with sigma = 500 / snr
    assert float(background.mean()) == pytest.approx(500.0 / snr * math.sqrt(math.pi / 2), rel=0.03)


def test_sigma_is_per_batch_item() -> None:
    """(B, C, X, Y): each (b, c) image has its own signal level, so the same SNR everywhere."""
    levels = torch.tensor([[100.0, 300.0], [1000.0, 40.0]])
    image = torch.zeros(2, 2, 128, 128)
    image[..., 16:112, 16:112] = 1.0
    image = image * levels[..., None, None]
    assert torch.allclose(signal_level(image, spatial_dims=2), levels)
    out = rician_noise(image, snr=25.0, generator=gen(3), spatial_dims=2)
    region = out[..., 20:108, 20:108].double()
    measured = region.mean(dim=(-2, -1)) / region.std(dim=(-2, -1))
    assert torch.allclose(measured, torch.full((2, 2), 25.0, dtype=torch.float64), rtol=0.05)
    # A per-item SNR tensor.
    snrs = torch.tensor([[10.0, 20.0], [40.0, math.inf]])
    out = rician_noise(image, snr=snrs, generator=gen(3), spatial_dims=2)
    std = out[..., 20:108, 20:108].double().std(dim=(-2, -1))
    assert torch.allclose(std[snrs.isfinite()], (levels / snrs)[snrs.isfinite()].double(), rtol=0.05)
    assert torch.equal(out[1, 1], image[1, 1])  # snr inf: that item untouched


def test_signal_level_definition() -> None:
    """Mean of the voxels above 10 % of the 99th percentile; an explicit mask replaces that."""
    image = torch.zeros(1, 100, 100)
    image[0, :50, :] = 200.0  # half the image bright
    image[0, 50:60, :] = 10.0  # 5 % of 200: background by the rule
    image[0, 60:70, :] = 30.0  # 15 % of 200: foreground by the rule
    expected = (200.0 * 50 + 30.0 * 10) / 60
    assert float(signal_level(image, spatial_dims=2)) == pytest.approx(expected, rel=1e-6)
    mask = torch.zeros(100, 100, dtype=torch.bool)
    mask[50:60] = True
    assert float(signal_level(image, spatial_dims=2, foreground=mask)) == pytest.approx(10.0)
    assert signal_level(torch.ones(3, 4, 5, 6, 7), spatial_dims=3).shape == (3, 4)
    with refused(InputError, "no foreground"):
        signal_level(torch.zeros(2, 8, 8), spatial_dims=2)
    with refused(InputError, "boolean"):
        signal_level(image, spatial_dims=2, foreground=mask.float())
    with refused(InputError, "broadcast"):
        signal_level(image, spatial_dims=2, foreground=mask[:10])


def test_identity() -> None:
    image = torch.rand(2, 16, 16, 8)
    assert rician_noise(image, sigma=0.0, generator=gen(), spatial_dims=3) is image
    assert rician_noise(image, snr=math.inf, generator=gen(), spatial_dims=3) is image
    assert rician_noise(image, snr=torch.full((2,), math.inf), generator=gen(), spatial_dims=3) is image


@pytest.mark.parametrize("shape, spatial_dims", [((2, 12, 10, 8), 3), ((3, 2, 16, 12), 2)])
def test_determinism_and_shapes(shape: tuple[int, ...], spatial_dims: int) -> None:
    """(C, X, Y, Z) and (B, C, X, Y); same seed bit-identical, different seed different."""
    image = torch.rand(shape, generator=gen(9)) * 100
    a = rician_noise(image, snr=10.0, generator=gen(5), spatial_dims=spatial_dims)
    b = rician_noise(image, snr=10.0, generator=gen(5), spatial_dims=spatial_dims)
    c = rician_noise(image, snr=10.0, generator=gen(6), spatial_dims=spatial_dims)
    assert a.shape == image.shape and a.dtype == image.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # The draw is randn((2, *shape)) on the CPU: real parts, then imaginary parts.
    sigma = signal_level(image, spatial_dims=spatial_dims) / 10.0
    noise = torch.randn((2, *shape), generator=gen(5))
    sigma = sigma.reshape(*sigma.shape, *([1] * spatial_dims))
    assert torch.allclose(a, torch.hypot(image + sigma * noise[0], sigma * noise[1]))


def test_errors_name_the_parameter() -> None:
    image = torch.rand(1, 8, 8)
    with refused(InputError, "exactly one of sigma and snr"):
        rician_noise(image, sigma=1.0, snr=10.0, generator=gen(), spatial_dims=2)
    with refused(InputError, "exactly one of sigma and snr"):
        rician_noise(image, generator=gen(), spatial_dims=2)
    with refused(InputError, "snr -1.0 is not allowed.*> 0"):
        rician_noise(image, snr=-1.0, generator=gen(), spatial_dims=2)
    with refused(InputError, "snr 0.0 is not allowed"):
        rician_noise(image, snr=0.0, generator=gen(), spatial_dims=2)
    with refused(InputError, "sigma -0.5 is not allowed.*>= 0"):
        rician_noise(image, sigma=-0.5, generator=gen(), spatial_dims=2)
    with refused(InputError, "sigma has shape \\(3,\\)"):
        rician_noise(image, sigma=torch.ones(3), generator=gen(), spatial_dims=2)
    with refused(InputError, "spatial_dims 4 is not allowed"):
        rician_noise(image, sigma=1.0, generator=gen(), spatial_dims=4)
    with refused(InputError, "generator must be a CPU torch.Generator"):
        rician_noise(image, sigma=1.0, generator=None, spatial_dims=2)  # type: ignore[arg-type]
    with refused(InputError, "dtype torch.int64"):
        rician_noise(torch.ones(1, 8, 8, dtype=torch.int64), sigma=1.0, generator=gen(), spatial_dims=2)
    with refused(InputError, "no foreground"):
        rician_noise(torch.zeros(1, 8, 8), snr=10.0, generator=gen(), spatial_dims=2)


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    image = torch.rand(2, 32, 32, 8, generator=gen(4)) * 100
    cpu = rician_noise(image, snr=15.0, generator=gen(7), spatial_dims=3)
    cuda = rician_noise(image.cuda(), snr=15.0, generator=gen(7), spatial_dims=3)
    assert cuda.device.type == "cuda"
    assert torch.allclose(cuda.cpu(), cpu, rtol=1e-5, atol=1e-4)
