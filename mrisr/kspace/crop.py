"""In-plane resolution loss: crop the centred k-space to the acquired matrix.

A scanner that acquires an ``m``-sample matrix over a field of view of length
``L`` (mm) measures the ``m`` central k-space coefficients, frequencies
``k = -(m // 2) .. m - m // 2 - 1`` cycles per field of view, optionally weighted by an
apodisation window, and reconstructs either on its own ``m``-sample grid (voxel
size ``L / m``) or zero-filled to a finer grid. :func:`kspace_crop` simulates both
from a high-resolution magnitude image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np
import torch

from ..errors import InputError
from ..volume import fov_affine, spacing
from .fft import frequencies, to_image, to_kspace

__all__ = ["kspace_crop", "crop_kspace", "acquired_grid_factor", "window_weights"]

WINDOWS = (None, "none", "hamming", "tukey")
OUTPUTS = ("acquired", "zerofilled")


def kspace_crop(
    image: torch.Tensor,
    axes: int | Sequence[int],
    *,
    matrix: int | Sequence[int] | None = None,
    spacing_mm: float | Sequence[float] | None = None,
    affine: np.ndarray | None = None,
    input_spacing_mm: float | Sequence[float] | None = None,
    window: str | None = None,
    tukey_alpha: float = 0.5,
    output: str = "acquired",
) -> tuple[torch.Tensor, np.ndarray | None]:
    """Resolution loss along ``axes`` by keeping the central k-space window of ``image``.

    Per axis of size ``n`` the kept window is the ``m`` centred indices
    ``[n // 2 - m // 2, n // 2 - m // 2 + m)`` (frequencies ``-(m // 2) .. m - m // 2 - 1``).

    Args:
        image: real magnitude image ``(*batch, *spatial)``, float32 or float64, CPU or CUDA.
        axes: the dimensions to crop (negative allowed; e.g. ``(-3, -2)`` for X, Y of ``(C, X, Y, Z)``).
        matrix: the acquired matrix ``m`` per axis (one int for all ``axes``, or one per axis), ``1 <= m <= n``.
        spacing_mm: instead of ``matrix``, the acquired spacing (mm) per axis; then
            ``m = round(n * s_in / s_acq)`` with the input spacing ``s_in`` taken from ``affine`` or
            ``input_spacing_mm``.
        affine: 4x4 voxel -> world (mm, RAS, voxel centres) of the LAST THREE dimensions
            (axis ``-3`` is column 0); ``axes`` must then be among them.
        input_spacing_mm: the input spacing (mm) per axis, when there is no ``affine``.
        window: apodisation over the kept window: ``None`` (or ``"none"``), ``"hamming"``
            (``0.54 + 0.46 cos(2 pi k / m)``) or ``"tukey"`` (flat for ``|k| <= (1 - alpha) m / 2``,
            cosine taper to 0 at ``|k| = m / 2``). Both are 1 at DC, so mean intensity is kept.
        tukey_alpha: the Tukey taper fraction, in ``[0, 1]`` (0: no taper, 1: Hann).
        output: ``"acquired"``: the image on the acquired ``m``-sample grid (voxel size ``n s_in / m`` mm,
            same field of view), sampling the band-limited image at the new voxel centres;
            ``"zerofilled"``: the window zero-filled back to ``n`` samples, on the input grid.

    Returns:
        ``(magnitude, new_affine)``: the magnitude image (same dtype and device; the cropped axes
        have size ``m`` for ``"acquired"``), and the field-of-view-preserving affine of the acquired
        grid (:func:`mrisr.volume.fov_affine`) or a copy of ``affine`` for ``"zerofilled"``; ``None``
        when ``affine`` is ``None``.

    Example:
        >>> lr, lr_affine = kspace_crop(volume_tensor, (-3, -2), spacing_mm=2.0, affine=affine)
    """
    _check_image(image)
    dims = _dims(image, axes, "axes")
    sizes = [int(image.shape[d]) for d in dims]
    affine_arr = _check_affine(affine, image, dims)
    if window not in WINDOWS:
        raise InputError(f"window={window!r} is unknown; allowed: None, 'hamming', 'tukey'")
    if not isinstance(tukey_alpha, Real) or not 0.0 <= float(tukey_alpha) <= 1.0:
        raise InputError(f"tukey_alpha={tukey_alpha!r} is invalid; allowed: a number in [0, 1]")
    if output not in OUTPUTS:
        raise InputError(f"output={output!r} is unknown; allowed: 'acquired', 'zerofilled'")
    window = None if window == "none" else window
    m = _matrix(matrix, spacing_mm, sizes, dims, image.ndim, affine_arr, input_spacing_mm)

    if m == sizes and window is None:
        out = image.clone()
    else:
        out = _crop_complex(image, dims, m, window, float(tukey_alpha), output).abs()
    if affine_arr is None:
        return out, None
    if output == "zerofilled" or m == sizes:
        return out, affine_arr
    s_new = spacing(affine_arr)
    for d, n, mm in zip(dims, sizes, m, strict=True):
        col = d - (image.ndim - 3)
        s_new[col] = n * s_new[col] / mm
    new_affine, _ = fov_affine(affine_arr, image.shape[-3:], s_new)
    return out, new_affine


def crop_kspace(kspace: torch.Tensor, axes: int | Sequence[int], matrix: int | Sequence[int]) -> torch.Tensor:
    """The central ``matrix`` window of a centred k-space (indices ``[n//2 - m//2, n//2 - m//2 + m)``).

    Args:
        kspace: any tensor, centred along ``axes`` (DC at ``n // 2``).
        axes: the dimensions to crop.
        matrix: ``m`` per axis (one int for all), ``1 <= m <= n``.

    Returns:
        A view of ``kspace`` with size ``m`` along each axis, still centred (DC at ``m // 2``).
    """
    dims = _dims(kspace, axes, "axes")
    m = _ints(matrix, [int(kspace.shape[d]) for d in dims], "matrix")
    for d, mm in zip(dims, m, strict=True):
        kspace = kspace.narrow(d, kspace.shape[d] // 2 - mm // 2, mm)
    return kspace


def acquired_grid_factor(n: int, m: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The complex factor (length ``m``, complex128) that turns the central ``m`` of ``n`` centred
    k-space samples into the k-space of the ``m``-sample field-of-view-preserving grid: the
    scale ``sqrt(m / n)`` (intensities kept under orthonormal FFTs) times the phase ramp
    ``exp(+2 pi i k d / L)``, ``d / L = (m//2 + 1/2) / m - (n//2 + 1/2) / n`` (see :func:`_crop_complex`)."""
    shift = (m // 2 + 0.5) / m - (n // 2 + 0.5) / n
    phase = 2.0 * math.pi * shift * frequencies(m, device, torch.float64)
    return torch.polar(torch.full_like(phase, math.sqrt(m / n)), phase)


def window_weights(
    m: int, window: str | None, alpha: float = 0.5, device: torch.device | str | None = None
) -> torch.Tensor:
    """The apodisation of ``m`` centred k-space samples (float64): see :func:`kspace_crop`'s ``window``."""
    return _apodisation(m, None if window == "none" else window, alpha, torch.device(device or "cpu"), torch.float64)


def _crop_complex(
    image: torch.Tensor, dims: tuple[int, ...], matrix: list[int], window: str | None, alpha: float, output: str
) -> torch.Tensor:
    """The complex reconstruction behind :func:`kspace_crop` (its magnitude is the output).

    For ``"acquired"`` each axis's kept coefficients are multiplied by ``sqrt(m / n)`` (so a
    constant keeps its value under the orthonormal FFTs) and by the phase ramp
    ``exp(+2 pi i k d / L)`` with ``d / L = (m//2 + 1/2) / m - (n//2 + 1/2) / n``: the centred
    inverse FFT puts output sample ``m // 2`` at the world position of input sample ``n // 2``,
    while the field-of-view-preserving grid has it ``d`` mm further along the axis; the ramp
    shifts the band-limited image by ``d`` so that the output samples it at the new voxel centres.
    """
    kspace = to_kspace(image, dims)
    real_dtype = torch.float64
    for d, m in zip(dims, matrix, strict=True):
        n = int(image.shape[d])
        weights = _apodisation(m, window, alpha, kspace.device, real_dtype).to(kspace.dtype)
        start = n // 2 - m // 2
        if output == "acquired":
            kspace = kspace.narrow(d, start, m)
            factor = weights * acquired_grid_factor(n, m, kspace.device).to(kspace.dtype)
        else:
            factor = torch.zeros(n, device=kspace.device, dtype=kspace.dtype)
            factor[start : start + m] = weights
        shape = [1] * kspace.ndim
        shape[d] = factor.numel()
        kspace = kspace * factor.reshape(shape)
    return to_image(kspace, dims)


def _apodisation(m: int, window: str | None, alpha: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The apodisation weight of each of the ``m`` kept coefficients (1 at DC, even in ``k``)."""
    k = frequencies(m, device, dtype)
    if window == "hamming":
        return 0.54 + 0.46 * torch.cos(2.0 * math.pi * k / m)
    if window == "tukey" and alpha > 0.0:
        r = k.abs() / (m / 2.0)
        taper = 0.5 * (1.0 + torch.cos(math.pi * (r - (1.0 - alpha)) / alpha))
        return torch.where(r <= 1.0 - alpha, torch.ones_like(r), taper)
    return torch.ones_like(k)


def _matrix(
    matrix: int | Sequence[int] | None,
    spacing_mm: float | Sequence[float] | None,
    sizes: list[int],
    dims: tuple[int, ...],
    ndim: int,
    affine: np.ndarray | None,
    input_spacing_mm: float | Sequence[float] | None,
) -> list[int]:
    """The acquired matrix per axis, from ``matrix`` or from ``spacing_mm`` and the input spacing."""
    if (matrix is None) == (spacing_mm is None):
        raise InputError(
            f"matrix={matrix!r} and spacing_mm={spacing_mm!r}: give exactly one of them (acquired matrix or mm)"
        )
    if matrix is not None:
        return _ints(matrix, sizes, "matrix")
    s_acq = _positive(spacing_mm, len(sizes), "spacing_mm")
    s_in = None if input_spacing_mm is None else _positive(input_spacing_mm, len(sizes), "input_spacing_mm")
    if affine is not None:
        from_affine = [float(spacing(affine)[d - (ndim - 3)]) for d in dims]
        if s_in is not None and not np.allclose(s_in, from_affine, rtol=1e-6, atol=0.0):
            raise InputError(
                f"input_spacing_mm={input_spacing_mm!r} disagrees with the affine's spacing {from_affine}; "
                "allowed: omit it or give the same values"
            )
        s_in = from_affine
    if s_in is None:
        raise InputError("spacing_mm needs the input spacing; allowed: pass affine= or input_spacing_mm=")
    m = [int(math.floor(n * a / b + 0.5 + 1e-9)) for n, a, b in zip(sizes, s_in, s_acq, strict=True)]
    if any(not 1 <= mm <= n for mm, n in zip(m, sizes, strict=True)):
        raise InputError(
            f"spacing_mm={spacing_mm!r} gives matrix {m} for input sizes {sizes} at spacing {s_in} mm; "
            "allowed: a spacing no finer than the input's and no coarser than the field of view"
        )
    return m


def _ints(value: int | Sequence[int], sizes: list[int], name: str) -> list[int]:
    """``value`` as one int per axis, each in ``1..n``."""
    items = [value] * len(sizes) if isinstance(value, Integral) else list(value) if _is_seq(value) else None
    if (
        items is None
        or len(items) != len(sizes)
        or any(isinstance(v, bool) or not isinstance(v, Integral) for v in items)
        or any(not 1 <= int(v) <= n for v, n in zip(items, sizes, strict=True))
    ):
        raise InputError(f"{name}={value!r} is invalid for axis sizes {sizes}; allowed: one int 1..n per axis")
    return [int(v) for v in items]


def _positive(value: float | Sequence[float], count: int, name: str) -> list[float]:
    """``value`` as one positive finite float per axis."""
    items = [value] * count if isinstance(value, Real) else list(value) if _is_seq(value) else None
    if (
        items is None
        or len(items) != count
        or any(isinstance(v, bool) or not isinstance(v, Real) for v in items)
        or any(not (math.isfinite(float(v)) and float(v) > 0.0) for v in items)
    ):
        raise InputError(f"{name}={value!r} is invalid; allowed: one positive number (mm) or one per axis ({count})")
    return [float(v) for v in items]


def _is_seq(value: object) -> bool:
    return isinstance(value, (Sequence, np.ndarray, torch.Tensor)) and not isinstance(value, str)


def _check_image(image: object) -> None:
    """Refuse anything but a real floating-point torch tensor."""
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        what = image.dtype if isinstance(image, torch.Tensor) else type(image).__name__
        raise InputError(f"image={what} is not allowed; allowed: a real float32/float64 torch tensor")


def _dims(image: torch.Tensor, axes: int | Sequence[int], name: str) -> tuple[int, ...]:
    """``axes`` as distinct non-negative dimension indices of ``image``, in the order given."""
    ndim = image.ndim
    items = [axes] if isinstance(axes, Integral) else list(axes) if _is_seq(axes) else None
    if (
        not items
        or any(isinstance(a, bool) or not isinstance(a, Integral) or not -ndim <= int(a) < ndim for a in items)
        or len({int(a) % ndim for a in items}) != len(items)
    ):
        raise InputError(
            f"{name}={axes!r} is invalid for a {ndim}-D image; allowed: distinct ints in [-{ndim}, {ndim})"
        )
    return tuple(int(a) % ndim for a in items)


def _check_affine(affine: np.ndarray | None, image: torch.Tensor, dims: tuple[int, ...]) -> np.ndarray | None:
    """A float64 copy of ``affine`` (None stays None); ``dims`` must be among the last three."""
    if affine is None:
        return None
    arr = np.array(affine, dtype=np.float64)
    if arr.shape != (4, 4) or image.ndim < 3:
        raise InputError(
            f"affine of shape {arr.shape} for a {image.ndim}-D image is invalid; "
            "allowed: a 4x4 matrix describing the last three dimensions"
        )
    if any(d < image.ndim - 3 for d in dims):
        raise InputError(
            f"axes={[d - image.ndim for d in dims]} are not all among the affine's last three dimensions; "
            "allowed: -3, -2, -1 with an affine"
        )
    return arr
