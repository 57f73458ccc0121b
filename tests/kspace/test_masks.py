"""cartesian_mask and undersample: sampled fraction, full centre, seeding, identity, errors."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import phantom, refused

from mrisr.errors import InputError
from mrisr.kspace.fft import to_image, to_kspace
from mrisr.kspace.masks import cartesian_mask, undersample


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _centre(n: int, center_fraction: float) -> slice:
    c = math.floor(n * center_fraction + 0.5)
    return slice(n // 2 - c // 2, n // 2 - c // 2 + c)


@pytest.mark.parametrize("n", [31, 64, 97, 128, 255, 320])
@pytest.mark.parametrize(("acceleration", "center_fraction"), [(2, 0.16), (4, 0.08), (6.5, 0.05), (8, 0.04)])
def test_equispaced_samples_exactly_n_over_acceleration(n: int, acceleration: float, center_fraction: float) -> None:
    for generator in (None, _gen(n)):
        mask = cartesian_mask(n, acceleration, center_fraction, "equispaced", generator)
        assert mask.dtype == torch.bool and mask.shape == (n,) and mask.device.type == "cpu"
        assert int(mask.sum()) == math.floor(n / acceleration + 0.5)
        assert mask[_centre(n, center_fraction)].all()
        assert mask[n // 2]
        outer = torch.nonzero(mask[: _centre(n, center_fraction).start]).flatten()
        if outer.numel() > 1:  # evenly spread: gaps differ by at most one line
            gaps = outer.diff()
            assert int(gaps.max() - gaps.min()) <= 1


@pytest.mark.parametrize(("acceleration", "center_fraction"), [(2, 0.16), (4, 0.08), (8, 0.04), (3.3, 0.1)])
def test_random_samples_about_n_over_acceleration(acceleration: float, center_fraction: float) -> None:
    gen = _gen(7)
    fractions = []
    for n in range(96, 416, 4):
        mask = cartesian_mask(n, acceleration, center_fraction, "random", gen)
        assert mask[_centre(n, center_fraction)].all()
        fractions.append(float(mask.float().mean()))
    mean = sum(fractions) / len(fractions)
    assert abs(mean - 1 / acceleration) < 0.01


@pytest.mark.parametrize("kind", ["random", "equispaced"])
def test_same_seed_same_mask_different_seed_different_mask(kind: str) -> None:
    a = cartesian_mask(256, 4, 0.08, kind, _gen(1))
    b = cartesian_mask(256, 4, 0.08, kind, _gen(1))
    assert torch.equal(a, b)
    others = [cartesian_mask(256, 4, 0.08, kind, _gen(seed)) for seed in (2, 3, 4)]
    assert any(not torch.equal(a, other) for other in others)


def test_acceleration_one_samples_everything_and_changes_nothing() -> None:
    assert cartesian_mask(37, 1, 0.08).all()
    assert cartesian_mask(37, 1.0, 0.5, "equispaced").all()
    image = torch.as_tensor(phantom().array).double()
    out, mask = undersample(image, -2, 1, 0.08)
    torch.testing.assert_close(out, image, rtol=0, atol=1e-6)
    assert mask.all() and mask.shape == (image.shape[-2],)


@pytest.mark.parametrize("kind", ["random", "equispaced"])
def test_undersample_zero_fills_the_unsampled_lines(kind: str) -> None:
    image = torch.as_tensor(phantom(channels=2).array).double()  # (2, 24, 20, 12)
    out, mask = undersample(image, -3, 3, 0.1, kind, _gen(5))
    assert torch.equal(mask, cartesian_mask(24, 3, 0.1, kind, _gen(5)))
    reference = to_image(to_kspace(image, -3) * mask[:, None, None], -3).abs()
    torch.testing.assert_close(out, reference)
    assert out.shape == image.shape and out.dtype == image.dtype
    out32, mask32 = undersample(image.float(), 1, 3, 0.1, kind, _gen(5))
    assert out32.dtype == torch.float32 and torch.equal(mask32, mask)
    torch.testing.assert_close(out32.double(), out, rtol=1e-5, atol=1e-3)
    # batched 2D: (B, C, X, Y) along Y
    planes = image.permute(3, 0, 1, 2)  # (12, 2, 24, 20)
    out2d, mask2d = undersample(planes, -1, 2, 0.2, kind, _gen(6))
    torch.testing.assert_close(out2d[4, 1], undersample(planes[4, 1], 1, 2, 0.2, kind, _gen(6))[0])
    assert mask2d.shape == (20,)


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    image = torch.as_tensor(phantom().array)
    cpu, mask_cpu = undersample(image, -2, 4, 0.1, "random", _gen(9))
    gpu, mask_gpu = undersample(image.cuda(), -2, 4, 0.1, "random", _gen(9))
    assert gpu.device.type == "cuda" and mask_gpu.device.type == "cuda"
    assert torch.equal(mask_gpu.cpu(), mask_cpu)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize(
    ("args", "kwargs", "pattern"),
    [
        ((64, 0.5, 0.08), {}, "acceleration=0.5"),
        ((64, math.inf, 0.08), {}, "acceleration=inf"),
        ((64, 4, 1.5), {}, "center_fraction=1.5"),
        ((64, 4, -0.1), {}, "center_fraction=-0.1"),
        ((64, 4, 0.5), {"kind": "equispaced"}, "center_fraction=0.5 samples 32 central lines"),
        ((64, 4, 0.08), {"kind": "poisson"}, "kind='poisson'"),
        ((64, 4, 0.08), {"kind": "random"}, "generator=None"),
        ((64, 4, 0.08), {"kind": "random", "generator": 3}, "generator=3"),
        ((0, 4, 0.08), {"kind": "equispaced"}, "n=0"),
        ((64.0, 4, 0.08), {"kind": "equispaced"}, "n=64.0"),
    ],
)
def test_bad_parameters_are_refused(args: tuple, kwargs: dict, pattern: str) -> None:
    with refused(InputError, pattern):
        cartesian_mask(*args, **kwargs)


def test_undersample_refuses_bad_axes_and_images() -> None:
    image = torch.as_tensor(phantom().array)
    with refused(InputError, "axis=4"):
        undersample(image, 4, 2, 0.1, "equispaced")
    with refused(InputError, "axis=\\[1\\]"):
        undersample(image, [1], 2, 0.1, "equispaced")  # type: ignore[arg-type]
    with refused(InputError, "image=torch.int32"):
        undersample(image.int(), 1, 2, 0.1, "equispaced")
    with refused(InputError, "generator=None"):
        undersample(image, 1, 2, 0.1)
