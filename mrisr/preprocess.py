"""What training and inference must do identically: intensity normalisation and pre-upsampling.

VDSR learns the residual over an interpolated input, so the low-resolution image is first
put on the high-resolution grid (``pre_upsample``) and scaled (``normalize``); a model
only ever sees inputs made by these two functions, in training and in inference.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import GeometryError, InputError
from .volume import Volume, spacing, world_corners

__all__ = [
    "percentile_99",
    "foreground_mask",
    "intensity_scale",
    "normalize",
    "denormalize",
    "pre_upsample",
    "cubic_baseline",
    "clip_like_magnitude",
    "cubic_resize_axis",
    "resample_to_shape",
]

#: Voxels above this fraction of the 99th percentile are foreground (:func:`foreground_mask`).
FOREGROUND_FRACTION = 0.1


def _flat_numpy(image: torch.Tensor) -> np.ndarray:
    """``image``'s values as a flat float32/float64 numpy view (a copy only for other dtypes or devices)."""
    values = image.detach().reshape(-1).cpu()
    if values.dtype not in (torch.float32, torch.float64):
        values = values.to(torch.float32)
    return values.numpy()


def percentile_99(image: torch.Tensor) -> float:
    """The 99th percentile of all values of a non-empty ``image``: its ``k``-th smallest value, ``k =
    round(0.99 n)`` (an element of it, as ``torch.kthvalue`` gives). Found with ``numpy.partition`` on
    one copy in the image's own precision: ``torch.quantile`` refuses more than 2**24 values and
    ``kthvalue`` also allocates int64 indices (1 GiB for a 512x512x500 grid)."""
    values = _flat_numpy(image)
    k = max(1, int(round(0.99 * values.size)))
    return float(np.partition(values, k - 1)[k - 1])


def foreground_mask(image: torch.Tensor, fraction: float = FOREGROUND_FRACTION, *,
                    p99: float | None = None) -> torch.Tensor:
    """Voxels above ``fraction`` of the image's 99th percentile (bool, same shape): the foreground
    that normalisation, patch sampling, validation and evaluation all use. ``p99``: the percentile
    when the caller has it already."""
    return image > fraction * (percentile_99(image) if p99 is None else p99)


def intensity_scale(image: torch.Tensor) -> float:
    """The scale that normalisation divides by: the mean of the foreground of ``image``
    (voxels above 10% of its 99th percentile), 1.0 for an empty image. Any shape. Summed in
    float64 in place (``numpy.sum(where=)``): no float64 copy and no index list of the image."""
    values = _flat_numpy(image)
    p99 = percentile_99(image) if values.size else 0.0
    if p99 <= 0:
        return 1.0
    mask = values > FOREGROUND_FRACTION * p99
    count = int(np.count_nonzero(mask))
    return float(np.sum(values, where=mask, dtype=np.float64) / count) if count else 1.0


def normalize(image: torch.Tensor, scale: float | None = None) -> tuple[torch.Tensor, float]:
    """``image / scale`` and the scale (computed by :func:`intensity_scale` unless given)."""
    s = intensity_scale(image) if scale is None else float(scale)
    if not s > 0:
        raise InputError(f"intensity scale must be positive, got {s}", "scale", "give a positive scale")
    return image / s, s


def denormalize(image: torch.Tensor, scale: float) -> torch.Tensor:
    """The inverse of :func:`normalize`."""
    return image * scale


def clip_like_magnitude(values: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``values`` clipped at 0 when ``source`` has no negative value (a magnitude image), and how many
    voxels were clipped; otherwise ``values`` unchanged and 0.

    Cubic interpolation (Keys' kernel) and a network's residual overshoot below zero at the
    tissue-to-air edge; a negative magnitude is never real. Phase and difference images (with
    negative values) are left as they are.
    """
    if source.numel() == 0 or float(source.min()) < 0.0:
        return values, 0
    below = int((values < 0).sum())
    return (values.clamp_min(0.0) if below else values), below


def _keys_weights(t: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution weights (a = -0.5) of the 4 taps at offsets -1, 0, 1, 2 from floor."""
    a = -0.5
    d = torch.stack([1 + t, t, 1 - t, 2 - t])
    d = d.abs()
    near = (a + 2) * d**3 - (a + 3) * d**2 + 1
    far = a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
    return torch.where(d <= 1, near, torch.where(d < 2, far, torch.zeros_like(d)))


def cubic_resize_axis(image: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """Resample ``image`` along ``dim`` to ``size`` samples covering the same extent.

    Sample ``j`` of the output sits at input index ``(j + 0.5) * n / size - 0.5`` (voxel
    centres of two grids with the same field of view); values come from Keys' cubic
    convolution (a = -0.5, interpolating, exact for quadratics) with replicated edges.
    Hand-written: torch has no tricubic mode and MONAI's Resize uses it.
    """
    n = image.shape[dim]
    if n == size:
        return image
    pos = (torch.arange(size, dtype=torch.float64, device=image.device) + 0.5) * (n / size) - 0.5
    base = torch.floor(pos)
    weights = _keys_weights(pos - base).to(image.dtype)  # (4, size)
    shape = [1] * image.ndim
    shape[dim] = size
    out = None
    for tap in range(4):  # accumulated in place: peak memory is the input plus two outputs
        idx = (base.long() + tap - 1).clamp(0, n - 1)
        term = image.index_select(dim, idx).mul_(weights[tap].reshape(shape))
        out = term if out is None else out.add_(term)
        del term
    assert out is not None
    return out


def pre_upsample(image: torch.Tensor, lr_affine: np.ndarray, hr_affine: np.ndarray,
                 hr_shape: tuple[int, int, int]) -> torch.Tensor:
    """Put a low-resolution ``(C, X, Y, Z)`` image on the high-resolution grid.

    The two grids must cover the same field of view with the same axis directions (as
    :func:`~mrisr.volume.fov_affine` and the simulators make them); each axis whose size
    differs is resampled with :func:`cubic_resize_axis`.

    Raises:
        GeometryError: the grids do not share their field of view or directions (1e-3 mm).
    """
    lr_shape = tuple(int(n) for n in image.shape[-3:])
    gap = float(np.abs(world_corners(lr_affine, lr_shape) - world_corners(hr_affine, hr_shape)).max())
    lr_dirs = np.asarray(lr_affine)[:3, :3] / spacing(lr_affine)
    hr_dirs = np.asarray(hr_affine)[:3, :3] / spacing(hr_affine)
    if gap > 1e-3 or not np.allclose(lr_dirs, hr_dirs, atol=1e-6):
        raise GeometryError(
            f"low- and high-resolution grids differ (field-of-view corners up to {gap:.4f} mm apart, or axes)",
            "pre_upsample",
            "resample onto a grid with the same field of view and axes (mrisr.volume.fov_affine)",
        )
    return resample_to_shape(image, hr_shape)


def resample_to_shape(image: torch.Tensor, shape: tuple[int, int, int] | list[int]) -> torch.Tensor:
    """``(..., X, Y, Z)`` put on the grid of ``shape`` that covers the same field of view (voxel
    centres as in :func:`cubic_resize_axis`), one axis at a time; axes of equal size untouched
    (no copy when none differs). The grid arithmetic of :func:`pre_upsample`, without its affine
    check: for callers whose two grids share the field of view by construction."""
    out = image
    for axis, size in enumerate(shape):
        out = cubic_resize_axis(out, out.ndim - 3 + axis, int(size))
    return out


def cubic_baseline(low: Volume, reference: Volume, meta: dict | None = None) -> Volume:
    """The tricubic baseline every comparison uses: ``low`` put on ``reference``'s grid by
    :func:`pre_upsample` (the interpolation a model's input starts from), clipped at 0 when ``low``
    has no negative value (:func:`clip_like_magnitude`, as ``upscale`` clips its result).

    Args:
        low: the low-resolution scan, on a grid with ``reference``'s field of view and axes.
        reference: the volume whose grid (affine, shape) the baseline is put on.
        meta: the baseline's ``meta`` (default: ``reference``'s); ``dtype`` and ``range`` are set.

    Raises:
        GeometryError: the grids do not share their field of view or directions.
    """
    source = torch.as_tensor(np.asarray(low.array), dtype=torch.float32)
    up, _ = clip_like_magnitude(pre_upsample(source, low.affine, reference.affine, reference.shape), source)
    array = up.numpy().astype(np.float32)
    value_range = [float(array.min()), float(array.max())] if array.size else None
    base = dict(reference.meta if meta is None else meta)
    return reference.replace(array=array, meta={**base, "dtype": "float32", "range": value_range})
