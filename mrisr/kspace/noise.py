"""Rician noise: complex Gaussian noise added to a magnitude image, at a given sigma or SNR.

A magnitude MR image is ``|S + n|`` where ``S`` is the (real, here) signal and ``n`` complex
Gaussian noise with independent real and imaginary parts of standard deviation ``sigma``.
Where ``S = 0`` the result is Rayleigh distributed (mean ``sigma * sqrt(pi / 2)``, variance
``(2 - pi / 2) * sigma**2``); where ``S >> sigma`` it is close to Gaussian with mean ``S`` and
standard deviation ``sigma``.

**SNR** is defined as ``SNR = signal_level / sigma`` with :func:`signal_level` the mean of the
foreground voxels of the noise-free image. At the SNRs of clinical images (>= 10), the mean
over the standard deviation measured in a flat region of the noisy image equals this SNR to
within 0.5 % (the Rician bias of the mean is ``sigma / (2 * SNR)``).

**Per item.** The leading ``image.ndim - spatial_dims`` dimensions are batch dimensions: every
index over them (every channel of a ``(C, X, Y, Z)`` volume, every ``(b, c)`` of a
``(B, C, X, Y)`` batch) is one image with its own signal level, hence its own sigma for a
requested SNR.
"""

from __future__ import annotations

import math

import torch

from ..errors import InputError

__all__ = ["signal_level", "rician_noise", "FOREGROUND_PERCENTILE", "FOREGROUND_FRACTION"]

#: The foreground is every voxel above ``FOREGROUND_FRACTION`` times the
#: ``FOREGROUND_PERCENTILE``-th percentile of its image.
FOREGROUND_PERCENTILE = 99.0
FOREGROUND_FRACTION = 0.1


def _check_image(image: torch.Tensor, spatial_dims: int) -> None:
    if not isinstance(image, torch.Tensor):
        raise InputError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if image.dtype not in (torch.float32, torch.float64):
        raise InputError(f"image dtype {image.dtype} is not supported", fix="pass a float32 or float64 tensor")
    if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
        raise InputError(f"spatial_dims {spatial_dims!r} is not allowed; it must be 2 or 3")
    if image.ndim < spatial_dims:
        raise InputError(
            f"image has {image.ndim} dimensions (shape {tuple(image.shape)}), fewer than spatial_dims={spatial_dims}"
        )
    if image.shape[image.ndim - spatial_dims :].numel() == 0:
        raise InputError(f"image has an empty spatial shape {tuple(image.shape)}")


def _quantile_rows(rows: torch.Tensor, q: float) -> torch.Tensor:
    """Linear-interpolation quantile of each row of ``rows`` ``(N, V)`` -> ``(N,)``.

    ``torch.kthvalue`` rather than ``torch.quantile``, which refuses inputs over 2**24 values.
    """
    n = rows.shape[1]
    pos = q * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    low = rows.kthvalue(lo + 1, dim=1).values
    if hi == lo or pos == lo:
        return low
    high = rows.kthvalue(hi + 1, dim=1).values
    return low + (pos - lo) * (high - low)


def signal_level(image: torch.Tensor, *, spatial_dims: int, foreground: torch.Tensor | None = None) -> torch.Tensor:
    """The reference signal of each image: the mean of its foreground voxels.

    ``SNR = signal_level / sigma`` (see the module docstring).

    Args:
        image: real magnitude image ``(*batch, *spatial)``, float32/float64, any device.
        spatial_dims: number of trailing spatial dimensions (2 or 3); the others are batch dims.
        foreground: optional boolean mask broadcastable to ``image.shape`` (for example of the
            spatial shape alone). Without it the foreground of each image is every voxel above
            ``FOREGROUND_FRACTION`` (10 %) of the image's ``FOREGROUND_PERCENTILE`` (99th)
            percentile (linear interpolation).

    Returns:
        Tensor of shape ``image.shape[:-spatial_dims]`` (``()`` for a single image), in the
        image's units, dtype and device.

    Raises:
        InputError: bad image, ``spatial_dims`` or mask, or an image with no foreground voxel
            (an all-zero image has no signal level).
    """
    _check_image(image, spatial_dims)
    batch = image.shape[: image.ndim - spatial_dims]
    if foreground is None:
        rows = image.reshape(batch.numel(), -1)
        threshold = FOREGROUND_FRACTION * _quantile_rows(rows, FOREGROUND_PERCENTILE / 100.0)
        mask = rows > threshold[:, None]
    else:
        if not isinstance(foreground, torch.Tensor) or foreground.dtype != torch.bool:
            kind = foreground.dtype if isinstance(foreground, torch.Tensor) else type(foreground).__name__
            raise InputError(f"foreground must be a boolean torch.Tensor, got {kind}")
        try:
            torch.broadcast_shapes(foreground.shape, image.shape)
            mask_full = foreground.to(image.device).expand(image.shape)
        except RuntimeError:
            raise InputError(
                f"foreground shape {tuple(foreground.shape)} does not broadcast to the image shape {tuple(image.shape)}"
            ) from None
        rows = image.reshape(batch.numel(), -1)
        mask = mask_full.reshape(batch.numel(), -1)
    counts = mask.sum(dim=1)
    if bool((counts == 0).any()):
        empty = [i for i, c in enumerate(counts.tolist()) if c == 0]
        raise InputError(
            f"image has no foreground voxel in batch item(s) {empty[:8]} (flattened over the batch dims), "
            "so its signal level is undefined",
            fix="give sigma instead of snr, or an explicit foreground mask",
        )
    level = torch.where(mask, rows, torch.zeros((), dtype=rows.dtype, device=rows.device)).sum(dim=1) / counts
    return level.reshape(batch)


def _per_item(value: float | torch.Tensor, name: str, batch: torch.Size) -> torch.Tensor:
    """``value`` as a float64 CPU tensor of shape ``batch`` (a scalar is used for every item)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
        raise InputError(f"{name} must be a number or a torch.Tensor, got {type(value).__name__}")
    tensor = torch.as_tensor(value).detach().to("cpu", torch.float64)
    try:
        if torch.broadcast_shapes(tensor.shape, batch) != batch:
            raise RuntimeError
    except RuntimeError:
        raise InputError(
            f"{name} has shape {tuple(tensor.shape)}, which does not broadcast to the batch shape {tuple(batch)}",
            fix="give one value, or one per batch item",
        ) from None
    return tensor.expand(batch)


def rician_noise(
    image: torch.Tensor,
    *,
    sigma: float | torch.Tensor | None = None,
    snr: float | torch.Tensor | None = None,
    generator: torch.Generator,
    spatial_dims: int,
) -> torch.Tensor:
    """``|image + n_re + i n_im|``: the magnitude of the image plus complex Gaussian noise.

    ``n_re`` and ``n_im`` are independent, each of standard deviation ``sigma``; the image is
    taken as the real channel. Background voxels become Rayleigh, signal voxels Rician.

    Args:
        image: real magnitude image ``(*batch, *spatial)``, float32/float64, any device.
        sigma: standard deviation of each noise component, in image units, ``>= 0``: a number
            or a tensor broadcastable to the batch shape ``image.shape[:-spatial_dims]``.
        snr: signal-to-noise ratio ``> 0`` (``inf`` allowed): ``sigma = signal_level / snr`` per
            batch item (:func:`signal_level`). A number or a tensor broadcastable to the batch
            shape. Give exactly one of ``sigma`` and ``snr``.
        generator: CPU ``torch.Generator``; the noise is drawn on the CPU with ``torch.randn``
            in the image's dtype (real parts first, then imaginary parts, shape
            ``(2, *image.shape)``) and moved to the image's device, so a seed gives the same
            noise on CPU and CUDA.
        spatial_dims: number of trailing spatial dimensions (2 or 3).

    Returns:
        The noisy magnitude image, same shape, dtype and device. ``sigma == 0`` (or
        ``snr == inf``) for every item returns ``image`` itself and draws nothing.

    Raises:
        InputError: both or neither of ``sigma``/``snr``, negative or non-finite ``sigma``,
            ``snr <= 0`` or NaN, a non-CPU generator, or a bad image.
    """
    _check_image(image, spatial_dims)
    if (sigma is None) == (snr is None):
        raise InputError(
            f"give exactly one of sigma and snr, got sigma={sigma!r} and snr={snr!r}",
            fix="pass sigma (noise std, image units) or snr (signal level / sigma)",
        )
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        got = generator.device if isinstance(generator, torch.Generator) else type(generator).__name__
        raise InputError(f"generator must be a CPU torch.Generator, got {got}")
    batch = image.shape[: image.ndim - spatial_dims]
    if sigma is not None:
        sig = _per_item(sigma, "sigma", batch)
        if not bool(torch.isfinite(sig).all()) or bool((sig < 0).any()):
            raise InputError(f"sigma {sigma!r} is not allowed; it must be finite and >= 0")
        if bool((sig == 0).all()):
            return image
        sig = sig.to(image.device, image.dtype)
    else:
        ratio = _per_item(snr, "snr", batch)
        if bool(torch.isnan(ratio).any()) or bool((ratio <= 0).any()):
            raise InputError(f"snr {snr!r} is not allowed; it must be > 0 (inf for no noise)")
        if bool(torch.isinf(ratio).all()):
            return image
        sig = signal_level(image, spatial_dims=spatial_dims) / ratio.to(image.device, image.dtype)
    noise = torch.randn((2, *image.shape), generator=generator, dtype=image.dtype).to(image.device)
    sig = sig.reshape(*batch, *([1] * spatial_dims))
    return torch.hypot(image + sig * noise[0], sig * noise[1])
