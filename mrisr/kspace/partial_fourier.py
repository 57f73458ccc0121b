"""Partial Fourier: asymmetric k-space coverage along one axis, zero-filled or homodyne.

With ``fraction`` of the ``n`` lines along ``axis`` acquired (the centre and one side),
the reconstruction either zero-fills the missing side (magnitude: blurring and
ringing along the axis) or uses homodyne detection (Noll, Nishimura & Macovski,
IEEE TMI 1991): the symmetric low-frequency band gives a phase estimate, the
asymmetric data are weighted by a ramp ``w(k) + w(-k) = 2`` (0 on the missing side,
2 on the unpaired measured side), and the phase-corrected real part is kept.
"""

from __future__ import annotations

import math
from numbers import Real

import torch

from ..errors import InputError
from .crop import _check_image, _dims
from .fft import frequencies, to_image, to_kspace

__all__ = ["partial_fourier", "partial_fourier_mask"]

SIDES = ("high", "low")


def partial_fourier_mask(n: int, fraction: float, side: str = "high") -> torch.Tensor:
    """The acquired k-space lines of a partial Fourier acquisition, a bool tensor ``(n,)`` (CPU).

    ``keep = ceil(fraction * n)`` lines are acquired: indices ``[n - keep, n)`` for
    ``side="high"``, ``[0, keep)`` for ``side="low"``. ``keep`` is raised, when needed, so that
    the centre (DC, index ``n // 2``) is acquired: for an even ``n`` at ``fraction=0.5`` the low
    side keeps ``n // 2 + 1`` lines.

    Args:
        n: number of k-space lines along the axis (>= 1).
        fraction: acquired fraction in ``[0.5, 1]``.
        side: ``"high"`` or ``"low"``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n={n!r} is invalid; allowed: an int >= 1")
    _check_fraction(fraction, side)
    keep = min(n, max(math.ceil(float(fraction) * n - 1e-9), n // 2 + 1 if side == "low" else n - n // 2))
    mask = torch.zeros(n, dtype=torch.bool)
    if side == "high":
        mask[n - keep :] = True
    else:
        mask[:keep] = True
    return mask


def partial_fourier(
    image: torch.Tensor, axis: int, fraction: float, *, side: str = "high", homodyne: bool = False
) -> torch.Tensor:
    """Partial Fourier acquisition of ``image`` along ``axis`` and its reconstruction.

    Args:
        image: real magnitude image ``(*batch, *spatial)``, float32 or float64, CPU or CUDA.
        axis: the (phase-encode) dimension with asymmetric coverage (negative allowed).
        fraction: acquired fraction of the lines, in ``[0.5, 1]``; ``1.0`` returns the input unchanged.
        side: which side of k-space is acquired besides the centre: ``"high"`` (indices
            ``[n - keep, n)``) or ``"low"`` (``[0, keep)``); see :func:`partial_fourier_mask`.
        homodyne: ``False``: zero-filled magnitude reconstruction. ``True``: homodyne detection:
            phase from the symmetric band ``|k| <= K`` (the lines acquired on both sides), the
            acquired lines weighted by ``clip(1 + k'/(K + 1), 0, 2)`` (``k' = k`` for ``"high"``,
            ``-k`` for ``"low"``; an even ``n``'s unpaired line ``-n/2`` weighs 1), then the real part
            of the phase-corrected image, clipped at 0.

    Returns:
        The reconstructed magnitude image, same shape, dtype and device as ``image``.
    """
    _check_image(image)
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise InputError(f"axis={axis!r} is invalid; allowed: one int dimension")
    (dim,) = _dims(image, axis, "axis")
    n = int(image.shape[dim])
    mask = partial_fourier_mask(n, fraction, side)
    if bool(mask.all()):
        return image.clone()
    kspace = to_kspace(image, dim)
    shape = [1] * image.ndim
    shape[dim] = n
    if not homodyne:
        return to_image(kspace * mask.to(kspace.device).reshape(shape), dim).abs()

    k = frequencies(n, kspace.device, torch.float64)
    signed = k if side == "high" else -k
    half = int(mask.sum()) - n + n // 2 if side == "high" else int(mask.sum()) - 1 - n // 2  # K
    weights = torch.clamp(1.0 + signed / (half + 1), 0.0, 2.0)
    if n % 2 == 0 and bool(mask[0]):
        weights[0] = 1.0  # -n/2 is its own mirror: weight 1 keeps w(k) + w(-k) = 2
    low = to_image(kspace * (k.abs() <= half).reshape(shape), dim)
    phase = torch.where(low.abs() > 0, low / low.abs(), torch.ones_like(low))
    recon = to_image(kspace * weights.to(kspace.dtype).reshape(shape), dim)
    return (recon * phase.conj()).real.clamp_min(0.0)


def _check_fraction(fraction: float, side: str) -> None:
    if isinstance(fraction, bool) or not isinstance(fraction, Real) or not 0.5 <= float(fraction) <= 1.0:
        raise InputError(f"fraction={fraction!r} is invalid; allowed: a number in [0.5, 1]")
    if side not in SIDES:
        raise InputError(f"side={side!r} is unknown; allowed: 'high', 'low'")
