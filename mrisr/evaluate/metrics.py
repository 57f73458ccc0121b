"""Image-quality metrics of a prediction against a reference on the same grid.

PSNR (dB), SSIM (MONAI, 3D Gaussian window) and NRMSE inside a foreground mask, plus
PSNR per slice along one voxel axis. Training validation and model shipping score with the same
:func:`masked_psnr` and :func:`bbox_ssim`, so the numbers agree with the training logs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from monai.metrics import SSIMMetric

from ..errors import InputError
from ..preprocess import foreground_mask
from ..volume import Volume, world_corners

__all__ = ["evaluate", "check_same_grid", "resolve_mask", "volume_name", "masked_psnr", "bbox_ssim", "GRID_ATOL_MM"]

#: Two grids are the same when their field-of-view corners are within this (mm).
GRID_ATOL_MM = 1e-3


def masked_psnr(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """PSNR (dB) over ``mask``, the data range being the target's range inside the mask."""
    t, p = target[mask].to(torch.float64), prediction[mask].to(torch.float64)
    mse = float(((p - t) ** 2).mean())
    data_range = float(t.max() - t.min()) if t.numel() else 0.0
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(max(data_range, 1e-12) ** 2 / mse)


def bbox_ssim(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """SSIM (MONAI, 3D Gaussian window) over the bounding box of ``mask``, per channel, averaged.

    ``prediction``, ``target``: ``(C, X, Y, Z)``; the box is padded to the window size when needed.
    """
    nz = torch.nonzero(mask.any(0) if mask.ndim == 4 else mask)
    if nz.numel() == 0:
        return float("nan")
    lo = nz.min(0).values
    hi = nz.max(0).values + 1
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    p = prediction[(slice(None), *box)].to(torch.float32)
    t = target[(slice(None), *box)].to(torch.float32)
    pad = [max(0, 11 - s) for s in t.shape[1:]]
    if any(pad):
        spec = [x for d in reversed(pad) for x in (0, d)]
        p, t = torch.nn.functional.pad(p, spec, mode="replicate"), torch.nn.functional.pad(t, spec, mode="replicate")
    data_range = float(t.max() - t.min()) or 1.0
    metric = SSIMMetric(spatial_dims=3, data_range=data_range, kernel_type="gaussian", win_size=11, kernel_sigma=1.5)
    return float(metric(p[:, None], t[:, None]).mean())


def volume_name(volume: Volume, default: str) -> str:
    """The file a volume was read from (its first source path), else ``default``."""
    sources = volume.meta.get("source_paths") or []
    return str(sources[0]) if sources else default


def check_same_grid(a: Volume, b: Volume, name_a: str, name_b: str, *, channels: bool = True) -> None:
    """Raise a one-line :class:`InputError` unless ``a`` and ``b`` share shape and affine (1e-3 mm)
    and, with ``channels``, their number of channels."""
    if tuple(a.shape) != tuple(b.shape):
        raise InputError(
            f"{name_b} ({' x '.join(map(str, b.shape))}) and {name_a} ({' x '.join(map(str, a.shape))}) "
            "are on different grids",
            fix=f"resample {name_b} onto the grid of {name_a} (e.g. mrisr upscale --spacing)",
        )
    gap = float(np.abs(world_corners(a.affine, a.shape) - world_corners(b.affine, b.shape)).max())
    if gap > GRID_ATOL_MM:
        raise InputError(
            f"{name_b} and {name_a} are on different grids (field-of-view corners up to {gap:.4g} mm apart)",
            fix=f"resample {name_b} onto the grid of {name_a} (e.g. mrisr upscale --spacing)",
        )
    if channels and a.n_channels != b.n_channels:
        raise InputError(
            f"{name_b} has {b.n_channels} volumes and {name_a} {a.n_channels}",
            fix="compare volumes with the same number of channels",
        )


def resolve_mask(reference: Volume, mask: Any = "auto", name: str = "mask") -> np.ndarray:
    """The foreground mask as a bool ``(X, Y, Z)`` array.

    ``"auto"``: voxels where any channel of the reference exceeds 10 % of its 99th percentile
    (:func:`~mrisr.train.validation.foreground_mask`). A :class:`Volume` (on the reference's
    grid) or an array ``(X, Y, Z)`` / ``(1, X, Y, Z)``: its non-zero voxels.
    """
    if isinstance(mask, str):
        if mask != "auto":
            raise InputError(f"mask must be 'auto', a Volume or an array, got {mask!r}", name,
                             "pass 'auto' or a mask volume")
        ref = torch.as_tensor(np.asarray(reference.array))
        out = foreground_mask(ref).any(0).numpy()
    else:
        if isinstance(mask, Volume):
            check_same_grid(reference, mask, volume_name(reference, "reference"), name, channels=False)
            array = np.asarray(mask.array)[0]
        else:
            array = np.asarray(mask)
            if array.ndim == 4 and array.shape[0] == 1:
                array = array[0]
        if tuple(array.shape) != tuple(reference.shape):
            raise InputError(f"mask shape {tuple(array.shape)} differs from the reference's {tuple(reference.shape)}",
                             name, "give a mask on the reference's grid")
        out = array != 0
    if not out.any():
        raise InputError("the foreground mask is empty", name, "give a mask with foreground voxels")
    return out


def _slice_psnr(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray, axis: int,
                data_range: float) -> list[float | None]:
    """PSNR of each slice along voxel ``axis`` (the volume's data range; ``None`` without foreground)."""
    out: list[float | None] = []
    err = (pred.astype(np.float64) - ref.astype(np.float64)) ** 2  # (C, X, Y, Z)
    for i in range(mask.shape[axis]):
        m = np.take(mask, i, axis=axis)
        if not m.any():
            out.append(None)
            continue
        mse = float(np.take(err, i, axis=axis + 1)[:, m].mean())
        out.append(math.inf if mse == 0.0 else 10.0 * math.log10(max(data_range, 1e-12) ** 2 / mse))
    return out


def evaluate(reference: Volume, prediction: Volume, mask: Any = "auto", *, axis: int = 2,
             names: tuple[str, str] | None = None) -> dict[str, Any]:
    """PSNR, SSIM and NRMSE of ``prediction`` against ``reference`` inside a foreground mask.

    Args:
        reference: the high-resolution ground truth.
        prediction: the image to judge, on the reference's grid (shape and affine within 1e-3 mm).
        mask: ``"auto"`` (reference above 10 % of its 99th percentile), a mask :class:`Volume` on
            the same grid, or a bool/0-1 array ``(X, Y, Z)``.
        axis: the voxel axis (0, 1, 2) of the per-slice curve: the coarse (slice) axis of the
            low-resolution acquisition; default the last.
        names: how errors name the two inputs (default: their source files).

    Returns:
        ``psnr_db`` (data range: the reference's range inside the mask), ``ssim`` (MONAI, 11-voxel
        Gaussian window, sigma 1.5, over the mask's bounding box), ``nrmse`` (RMSE / that range),
        ``mse``, ``data_range``, ``mask_voxels``, ``mask_fraction``, ``axis`` and ``slice_psnr_db``
        (one value per slice along ``axis``, ``None`` where the slice has no foreground).
        PSNR is ``inf`` for identical images.

    Raises:
        InputError: the grids differ (naming both inputs and how to resample), the mask is empty
            or on another grid, or ``axis`` is not 0, 1 or 2.
    """
    ref_name, pred_name = names or (volume_name(reference, "reference"), volume_name(prediction, "prediction"))
    check_same_grid(reference, prediction, ref_name, pred_name)
    if axis not in (0, 1, 2):
        raise InputError(f"axis must be 0, 1 or 2, got {axis!r}", "axis", "name a voxel axis")
    mask3 = resolve_mask(reference, mask)
    ref = np.asarray(reference.array, dtype=np.float32)
    pred = np.asarray(prediction.array, dtype=np.float32)
    t_ref, t_pred = torch.from_numpy(ref), torch.from_numpy(pred)
    mask4 = torch.from_numpy(np.broadcast_to(mask3, ref.shape).copy())
    values = ref[:, mask3].astype(np.float64)
    data_range = float(values.max() - values.min())
    mse = float(((pred[:, mask3].astype(np.float64) - values) ** 2).mean())
    return {
        "psnr_db": masked_psnr(t_pred, t_ref, mask4),
        "ssim": bbox_ssim(t_pred, t_ref, mask4),
        "nrmse": math.sqrt(mse) / max(data_range, 1e-12),
        "mse": mse,
        "data_range": data_range,
        "mask_voxels": int(mask3.sum()),
        "mask_fraction": float(mask3.mean()),
        "axis": int(axis),
        "slice_psnr_db": _slice_psnr(pred, ref, mask3, axis, data_range),
    }
