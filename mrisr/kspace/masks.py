"""Cartesian undersampling masks (after fastMRI's) and their zero-filled reconstruction.

A mask holds ``c = round(n * center_fraction)`` fully sampled central lines, indices
``[n // 2 - c // 2, n // 2 - c // 2 + c)`` (the same centring as :func:`.crop.crop_kspace`),
and outer lines so that about ``n / acceleration`` lines are sampled in all:

- ``"random"``: each outer line with probability ``(n / acceleration - c) / (n - c)``
  (expected total ``n / acceleration``), drawn from an explicit CPU ``torch.Generator``;
- ``"equispaced"``: exactly ``round(n / acceleration) - c`` outer lines, evenly spread
  over the outer indices (spacing ``(n - c) / (round(n / acceleration) - c)`` lines)
  from an integer offset drawn from the generator (0 without one).
"""

from __future__ import annotations

import math
from numbers import Real

import torch

from ..errors import InputError
from .crop import _check_image, _dims
from .fft import to_image, to_kspace

__all__ = ["cartesian_mask", "undersample"]

KINDS = ("random", "equispaced")


def cartesian_mask(
    n: int,
    acceleration: float,
    center_fraction: float,
    kind: str = "random",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A 1D Cartesian sampling mask, a bool tensor ``(n,)`` on the CPU.

    Args:
        n: number of k-space lines (>= 1).
        acceleration: ``>= 1``; about ``n / acceleration`` lines are sampled; 1 samples all.
        center_fraction: fraction of lines fully sampled at the centre, in ``[0, 1]``, at most
            ``1 / acceleration`` (rounded: ``round(n * center_fraction) <= n / acceleration``).
        kind: ``"random"`` (needs ``generator``) or ``"equispaced"`` (offset from ``generator``, or 0).
        generator: a CPU ``torch.Generator``, the only source of randomness.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n={n!r} is invalid; allowed: an int >= 1")
    if isinstance(acceleration, bool) or not isinstance(acceleration, Real) or not 1.0 <= acceleration < math.inf:
        raise InputError(f"acceleration={acceleration!r} is invalid; allowed: a finite number >= 1")
    if isinstance(center_fraction, bool) or not isinstance(center_fraction, Real) or not 0 <= center_fraction <= 1:
        raise InputError(f"center_fraction={center_fraction!r} is invalid; allowed: a number in [0, 1]")
    if kind not in KINDS:
        raise InputError(f"kind={kind!r} is unknown; allowed: 'random', 'equispaced'")
    if generator is not None and (not isinstance(generator, torch.Generator) or generator.device.type != "cpu"):
        raise InputError(f"generator={generator!r} is invalid; allowed: a CPU torch.Generator or None")
    if kind == "random" and generator is None and acceleration > 1:
        raise InputError("generator=None is not allowed for kind='random'; allowed: a CPU torch.Generator")
    if acceleration == 1:
        return torch.ones(n, dtype=torch.bool)

    c = int(math.floor(n * float(center_fraction) + 0.5))
    target = n / float(acceleration)
    if c > target:
        raise InputError(
            f"center_fraction={center_fraction!r} samples {c} central lines, more than n / acceleration = "
            f"{target:.3g}; allowed: center_fraction <= 1 / acceleration"
        )
    mask = torch.zeros(n, dtype=torch.bool)
    start = n // 2 - c // 2
    mask[start : start + c] = True
    outer = torch.nonzero(~mask).flatten()
    if kind == "random":
        prob = (target - c) / (n - c) if n > c else 0.0
        mask[outer] = torch.rand(outer.numel(), generator=generator, dtype=torch.float64) < prob
        return mask
    count = int(math.floor(target + 0.5)) - c
    if count > 0:
        step = outer.numel() / count
        offset = 0
        if generator is not None:
            offset = int(torch.randint(0, max(1, int(step)), (1,), generator=generator))
        picks = torch.floor(offset + step * torch.arange(count, dtype=torch.float64)).long()
        mask[outer[picks]] = True
    return mask


def undersample(
    image: torch.Tensor,
    axis: int,
    acceleration: float,
    center_fraction: float,
    kind: str = "random",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cartesian undersampling of ``image`` along ``axis`` with a zero-filled reconstruction.

    Args:
        image: real magnitude image ``(*batch, *spatial)``, float32 or float64, CPU or CUDA.
        axis: the (phase-encode) dimension undersampled (negative allowed).
        acceleration, center_fraction, kind, generator: as in :func:`cartesian_mask`, with
            ``n = image.shape[axis]``.

    Returns:
        ``(magnitude, mask)``: the zero-filled magnitude reconstruction (same shape, dtype and
        device; the input unchanged at ``acceleration=1``) and the bool mask ``(n,)`` on the
        image's device.
    """
    _check_image(image)
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise InputError(f"axis={axis!r} is invalid; allowed: one int dimension")
    (dim,) = _dims(image, axis, "axis")
    mask = cartesian_mask(int(image.shape[dim]), acceleration, center_fraction, kind, generator).to(image.device)
    if bool(mask.all()):
        return image.clone(), mask
    shape = [1] * image.ndim
    shape[dim] = mask.numel()
    return to_image(to_kspace(image, dim) * mask.reshape(shape), dim).abs(), mask
