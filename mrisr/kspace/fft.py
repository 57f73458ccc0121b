"""Centred, orthonormal FFTs between image space and k-space (DC at index ``n // 2``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["to_kspace", "to_image", "frequencies", "normalise_axes"]


def normalise_axes(ndim: int, axes: int | Sequence[int]) -> tuple[int, ...]:
    """``axes`` as sorted non-negative dimension indices of a tensor with ``ndim`` dims."""
    items = [axes] if isinstance(axes, int) else list(axes)
    out = sorted({a % ndim for a in items})
    if any(not -ndim <= a < ndim for a in items):
        raise ValueError(f"axes {items} out of range for a {ndim}-D tensor")
    return tuple(out)


def to_kspace(image: torch.Tensor, axes: int | Sequence[int]) -> torch.Tensor:
    """Centred orthonormal FFT of ``image`` over ``axes`` (complex result, same shape)."""
    dims = normalise_axes(image.ndim, axes)
    shifted = torch.fft.ifftshift(image, dim=dims)
    return torch.fft.fftshift(torch.fft.fftn(shifted, dim=dims, norm="ortho"), dim=dims)


def to_image(kspace: torch.Tensor, axes: int | Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`to_kspace` (complex result; take ``.abs()`` for a magnitude image)."""
    dims = normalise_axes(kspace.ndim, axes)
    shifted = torch.fft.ifftshift(kspace, dim=dims)
    return torch.fft.fftshift(torch.fft.ifftn(shifted, dim=dims, norm="ortho"), dim=dims)


def frequencies(n: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Centred frequency of each k-space index, in cycles per field of view: ``k - n // 2``."""
    return torch.arange(n, device=device, dtype=dtype) - (n // 2)
