"""Through-plane slice profile of a 2D multi-slice acquisition, applied exactly.

A 2D sequence excites slices of finite thickness: each acquired slice ``k`` is the
integral of the object along the slice axis weighted by the slice sensitivity
profile ``p(z - z_k)``, and slices are acquired every ``slice_spacing_mm`` (gaps when
the spacing exceeds the thickness, overlaps when it is smaller).

The high-resolution image is a stack of voxels of constant intensity: input voxel
``j`` occupies ``[a_j, b_j]`` (its faces, mm), so its weight in output slice ``k`` is
exactly ``P(b_j - z_k) - P(a_j - z_k)`` with ``P`` the profile's cumulative integral.
``P`` is analytic for ``rect`` (overlap length / thickness) and ``gaussian`` (erf)
and, for ``sinc`` and sampled custom profiles, the exact integral of the piecewise
linear profile through the samples. Nothing is rounded to whole input voxels:
gaps, overlaps and non-integer ratios to the input spacing are exact. Each row of
the ``(n_out, n_in)`` weight matrix is normalised to sum to 1, so that slices whose
profile leaves the field of view are normalised by the part inside it.

Output grid (field-of-view preserving, as :func:`mrisr.volume.fov_affine`): with
``extent = n_in * input_spacing``, ``n_out = max(1, round(extent / slice_spacing_mm))``
and the effective spacing is ``extent / n_out``; it equals ``slice_spacing_mm`` when
that divides the extent and is otherwise the nearest spacing that does. Slice
centres, relative to the field of view's centre, are
``z_k = -extent / 2 + (k + 0.5) * effective_spacing``; the outer faces of the
low-resolution grid are those of the high-resolution one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from scipy.special import ndtr

from ..errors import InputError
from ..volume import fov_affine, spacing

__all__ = ["slice_profile", "profile_weights", "PROFILES"]

#: Named profiles; a 1D array of samples over ``u in [-1, 1]`` is also accepted.
PROFILES = ("rect", "gaussian", "sinc")

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
# Numerical sinc profile: pulse samples over its normalised duration, and the
# frequency grid (in cycles per pulse duration) on which its transform is taken.
_SINC_PULSE_SAMPLES = 1024
_SINC_FREQ_SAMPLES = 8193
_SINC_FREQ_MARGIN = 10.0


def slice_profile(
    image: torch.Tensor,
    axis: int,
    *,
    thickness_mm: float,
    slice_spacing_mm: float,
    profile: str | np.ndarray | torch.Tensor = "gaussian",
    input_spacing_mm: float | None = None,
    affine: np.ndarray | None = None,
    tbw: float = 4.0,
) -> tuple[torch.Tensor, np.ndarray | None]:
    """Simulate 2D multi-slice acquisition along ``axis``: slice profile, then slice sampling.

    Args:
        image: real float32/float64 tensor ``(*batch, *spatial)`` on any device.
        axis: the slice (through-plane) dimension of ``image``, may be negative. With
            ``affine`` it must be one of the last three dimensions.
        thickness_mm: slice thickness: the width of ``rect``, the FWHM of ``gaussian``
            and ``sinc``, the half-width of the support of a custom profile.
        slice_spacing_mm: requested distance between slice centres (adjusted to divide
            the field of view, see the module docstring).
        profile: ``"rect"``, ``"gaussian"``, ``"sinc"`` (the small-tip-angle profile of
            a Hann-windowed sinc RF pulse of time-bandwidth product ``tbw``, scaled so
            that its FWHM is ``thickness_mm``), or a 1D array of uniformly spaced
            samples of a custom profile over ``u in [-1, 1]``, i.e.
            ``z in [-thickness_mm, +thickness_mm]`` (linear between samples, 0 outside).
        input_spacing_mm: input voxel spacing along ``axis``; required without
            ``affine``, and must agree with it when both are given.
        affine: 4x4 voxel -> world (RAS mm) of the last three dimensions (``-3`` is
            column 0, ``-2`` column 1, ``-1`` column 2), or ``None``.
        tbw: time-bandwidth product of the ``sinc`` pulse (ignored by other profiles).

    Returns:
        ``(lr_image, new_affine)``: ``lr_image`` has ``n_out`` entries along ``axis``,
        the device and dtype of ``image``; ``new_affine`` is the field-of-view
        preserving affine of the new grid, or ``None`` when ``affine`` is ``None``.
        Identity parameters (``rect``, thickness = spacing = input spacing) return
        ``image`` itself.

    Example:
        >>> hr = torch.rand(1, 64, 64, 60)  # 1 mm voxels
        >>> lr, _ = slice_profile(hr, -1, thickness_mm=4.0, slice_spacing_mm=5.0, input_spacing_mm=1.0)
        >>> tuple(lr.shape)  # 5 mm slices, 1 mm gaps
        (1, 64, 64, 12)
    """
    if not isinstance(image, torch.Tensor) or not (image.is_floating_point() and not image.is_complex()):
        got = f"a tensor of dtype {image.dtype}" if isinstance(image, torch.Tensor) else type(image).__name__
        raise InputError(f"image must be a real float32/float64 torch tensor, got {got}")
    ndim = image.ndim
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -ndim <= int(axis) < ndim:
        raise InputError(
            f"axis must be an integer in [{-ndim}, {ndim - 1}] for an image of shape {tuple(image.shape)}, "
            f"got {axis!r}"
        )
    axis = int(axis) % ndim
    n_in = int(image.shape[axis])
    new_affine: np.ndarray | None = None
    if affine is not None:
        column = axis - ndim + 3  # -3 -> 0, -2 -> 1, -1 -> 2
        if ndim < 3 or column < 0:
            raise InputError(
                f"axis must be one of the last three dimensions when an affine is given "
                f"(the affine describes them), got axis {axis - ndim} of an image of shape {tuple(image.shape)}"
            )
        affine = np.asarray(affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise InputError(f"affine must be a 4x4 matrix, got shape {affine.shape}")
        from_affine = float(spacing(affine)[column])
        if input_spacing_mm is not None:
            given = _positive("input_spacing_mm", input_spacing_mm)
            if not math.isclose(given, from_affine, rel_tol=1e-6, abs_tol=1e-9):
                raise InputError(
                    f"input_spacing_mm {given} disagrees with the affine's spacing {from_affine} mm along axis "
                    f"{axis - ndim}; give one of them, or equal values"
                )
        input_spacing_mm = from_affine
    elif input_spacing_mm is None:
        raise InputError(
            "input_spacing_mm is required without an affine, got None; give the input voxel spacing (mm) "
            "along the slice axis, or the affine"
        )
    weights, _, effective = profile_weights(n_in, input_spacing_mm, thickness_mm, slice_spacing_mm, profile, tbw)
    if affine is not None:
        spacings = spacing(affine)
        spacings[column] = float(slice_spacing_mm)
        new_affine, new_shape = fov_affine(affine, image.shape[-3:], spacings)
        assert new_shape[column] == weights.shape[0], (new_shape, weights.shape)
    if weights.shape == (n_in, n_in) and np.abs(weights - np.eye(n_in)).max() < 1e-12:
        return image, new_affine
    w = torch.as_tensor(weights, dtype=image.dtype, device=image.device)
    out = torch.matmul(image.movedim(axis, -1), w.T).movedim(-1, axis).contiguous()
    return out, new_affine


def profile_weights(
    n_in: int,
    input_spacing_mm: float,
    thickness_mm: float,
    slice_spacing_mm: float,
    profile: str | np.ndarray | torch.Tensor = "gaussian",
    tbw: float = 4.0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """The exact weights of each input slice in each output slice, and where the slices are.

    Args: as :func:`slice_profile` (``n_in``: number of input slices along the axis).

    Returns:
        ``(weights, centres_mm, effective_spacing_mm)``: ``weights`` float64
        ``(n_out, n_in)`` with rows summing to 1; ``centres_mm`` float64 ``(n_out,)``,
        the slice centres relative to the field of view's centre along the axis
        (input voxel ``j`` spans ``[-extent/2 + j*s, -extent/2 + (j+1)*s]``);
        ``effective_spacing_mm`` the spacing of the output grid.
    """
    if isinstance(n_in, bool) or not isinstance(n_in, (int, np.integer)) or n_in < 1:
        raise InputError(f"n_in must be a positive integer number of slices, got {n_in!r}")
    s_in = _positive("input_spacing_mm", input_spacing_mm)
    thickness = _positive("thickness_mm", thickness_mm)
    s_req = _positive("slice_spacing_mm", slice_spacing_mm)
    cdf = _profile_cdf(profile, thickness, tbw)
    n_in = int(n_in)
    extent = n_in * s_in
    # The same rounding as mrisr.volume.fov_affine, so the two grids always agree.
    n_out = max(1, int(math.floor(extent / s_req + 0.5 + 1e-9)))
    effective = extent / n_out
    centres = -extent / 2.0 + (np.arange(n_out) + 0.5) * effective
    faces = -extent / 2.0 + np.arange(n_in + 1) * s_in
    weights = np.diff(cdf(faces[None, :] - centres[:, None]), axis=1)
    totals = weights.sum(axis=1, keepdims=True)
    if np.any(~np.isfinite(totals)) or np.any(totals <= 1e-12 * max(float(np.abs(weights).max()), 1e-300)):
        raise InputError(
            f"profile {_describe(profile)} of thickness_mm {thickness} has no weight inside the "
            f"{extent:g} mm field of view for some slices; use a profile with positive weight near its centre"
        )
    return weights / totals, centres, float(effective)


def _positive(name: str, value: Any) -> float:
    is_number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    number = float(value) if is_number else float("nan")
    if not math.isfinite(number) or number <= 0:
        raise InputError(f"{name} must be a positive, finite length in mm, got {value!r}")
    return number


def _describe(profile: Any) -> str:
    if isinstance(profile, str):
        return repr(profile)
    return f"(custom, {int(np.size(profile))} samples)"


def _profile_cdf(profile: Any, thickness: float, tbw: float) -> Callable[[np.ndarray], np.ndarray]:
    """The cumulative integral ``P(z)`` (mm) of the profile, unnormalised only for custom ones."""
    if isinstance(profile, str):
        if profile == "rect":
            return lambda z: np.clip(z / thickness + 0.5, 0.0, 1.0)
        if profile == "gaussian":
            sigma = thickness / _FWHM_PER_SIGMA
            return lambda z: ndtr(z / sigma)
        if profile == "sinc":
            tbw = _positive("tbw", tbw)
            freqs, values, fwhm = _sinc_profile(tbw)
            return _piecewise_linear_cdf(freqs * (thickness / fwhm), values)
        raise InputError(
            f"profile must be one of {', '.join(map(repr, PROFILES))} or a 1D array of samples, got {profile!r}"
        )
    if isinstance(profile, torch.Tensor):
        profile = profile.detach().cpu().numpy()
    if not isinstance(profile, np.ndarray):
        raise InputError(
            f"profile must be one of {', '.join(map(repr, PROFILES))} or a 1D array of samples, "
            f"got {type(profile).__name__}"
        )
    samples = profile.astype(np.float64) if profile.dtype.kind in "biuf" else None
    if samples is None or samples.ndim != 1 or samples.size < 2 or not np.all(np.isfinite(samples)):
        raise InputError(
            f"profile as an array must be 1D with at least 2 finite real samples, got dtype {profile.dtype} "
            f"and shape {profile.shape}"
        )
    z = np.linspace(-thickness, thickness, samples.size)
    if np.sum((samples[1:] + samples[:-1]) * np.diff(z)) <= 0:
        raise InputError(f"profile as an array must have a positive integral, got samples summing to {samples.sum()}")
    return _piecewise_linear_cdf(z, samples)


def _piecewise_linear_cdf(z: np.ndarray, p: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Exact cumulative integral of the piecewise linear function through ``(z, p)``, 0 outside."""
    h = np.diff(z)
    slope = np.diff(p) / h
    cumulative = np.concatenate([[0.0], np.cumsum(h * (p[1:] + p[:-1]) / 2.0)])

    def cdf(x: np.ndarray) -> np.ndarray:
        i = np.clip(np.searchsorted(z, x, side="right") - 1, 0, z.size - 2)
        d = np.clip(x - z[i], 0.0, h[i])
        return cumulative[i] + p[i] * d + slope[i] * d * d / 2.0

    return cdf


@lru_cache(maxsize=16)
def _sinc_profile(tbw: float) -> tuple[np.ndarray, np.ndarray, float]:
    """The slice profile of a Hann-windowed sinc pulse: ``(frequencies, profile, fwhm)``.

    The pulse over its normalised duration ``tau in [-1/2, 1/2]`` is
    ``sinc(tbw * tau) * (1 + cos(2 pi tau)) / 2`` (``tbw`` zero crossings in all);
    in the small-tip-angle approximation the slice profile is its Fourier transform,
    real and even, taken here by midpoint quadrature on a fine frequency grid
    (cycles per pulse duration). Frequency maps linearly to position through the
    slice-select gradient, so scaling the grid by ``thickness / fwhm`` gives mm.
    The profile keeps its (small, signed) side lobes.
    """
    tau = (np.arange(_SINC_PULSE_SAMPLES) + 0.5) / _SINC_PULSE_SAMPLES - 0.5
    pulse = np.sinc(tbw * tau) * 0.5 * (1.0 + np.cos(2.0 * np.pi * tau)) / _SINC_PULSE_SAMPLES
    half = tbw / 2.0 + _SINC_FREQ_MARGIN
    freqs = np.linspace(-half, half, _SINC_FREQ_SAMPLES)
    values = np.cos(2.0 * np.pi * np.outer(freqs, tau)) @ pulse
    values /= values.max()
    centre = _SINC_FREQ_SAMPLES // 2
    below = np.nonzero(values[centre:] < 0.5)[0][0] + centre  # first sample under half maximum
    f0, f1, v0, v1 = freqs[below - 1], freqs[below], values[below - 1], values[below]
    fwhm = 2.0 * (f0 + (0.5 - v0) * (f1 - f0) / (v1 - v0))
    return freqs, values, float(fwhm)
