"""The target grid of an upscaling, and which axes it upsamples. Pure functions on ``(affine, shape)``.

The target grid always covers the input's field of view exactly (outer voxel faces kept,
:func:`mrisr.volume.fov_affine`), with the input's axis directions and voxel order, so that
:func:`mrisr.preprocess.pre_upsample` maps one onto the other as training did.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from ..volume import fov_affine
from ..volume import spacing as voxel_spacing

__all__ = ["target_grid", "upsampled_axes", "coarse_axis"]


def _three(name: str, value: float | Sequence[float]) -> np.ndarray:
    """One positive finite value or three, as three floats; InputError naming ``name`` otherwise."""
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be one number or three, got {value!r}", name,
                         f"give {name}=1.0 or {name}=(1.0, 1.0, 1.0)") from None
    if arr.size not in (1, 3):
        raise InputError(f"{name} must be one number or three (one per voxel axis), got {arr.size}: {arr.tolist()}",
                         name, f"give {name}=1.0 or {name}=(1.0, 1.0, 1.0)")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise InputError(f"{name} must be positive, got {arr.tolist()}", name, f"give positive {name} values")
    return np.broadcast_to(arr, (3,)).copy()


def target_grid(
    affine: np.ndarray,
    shape: Sequence[int],
    *,
    spacing: float | Sequence[float] | None = None,
    scale: float | Sequence[float] | None = None,
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The grid to upscale onto: ``(affine, shape)`` covering the same field of view.

    Args:
        affine: 4x4 voxel -> world (mm) of the input.
        shape: spatial shape ``(X, Y, Z)`` of the input.
        spacing: target spacing in mm, one value or one per voxel axis.
        scale: upsampling factor per voxel axis (one value or three); the new spacing is
            ``old / scale``.

    With neither, the target is isotropic at the finest input spacing; an axis with one voxel
    (a single image) keeps its one voxel. Per axis the size is ``round(extent / spacing)``
    and the spacing is then adjusted so the field of view is kept exactly.

    Raises:
        InputError: both ``spacing`` and ``scale``; a value that is not positive, or not one
            or three numbers (naming the parameter); a target coarser than the input (fewer
            voxels along an axis: a super-resolution model does not downsample); more than one
            voxel along an axis that has one (nothing to interpolate through).
    """
    shape3 = tuple(int(n) for n in shape[-3:])
    s_old = voxel_spacing(affine)
    if spacing is not None and scale is not None:
        raise InputError("give spacing or scale, not both", "spacing/scale", "drop one of them")
    if spacing is not None:
        s_new = _three("spacing", spacing)
        given = "spacing"
    elif scale is not None:
        s_new = s_old / _three("scale", scale)
        given = "scale"
    else:
        several = [a for a in range(3) if shape3[a] > 1] or [0, 1, 2]
        finest = float(min(s_old[a] for a in several))
        s_new = np.array([finest if shape3[a] > 1 else s_old[a] for a in range(3)])
        given = "spacing"
    new_affine, new_shape = fov_affine(affine, shape3, s_new)
    for a in range(3):
        if new_shape[a] < shape3[a]:
            raise InputError(
                f"target {given} gives {new_shape[a]} voxels along axis {'XYZ'[a]} where the input has {shape3[a]} "
                f"(input spacing {s_old[a]:.4g} mm, target {s_new[a]:.4g} mm): coarser than the input",
                given, f"give a spacing of at most {s_old[a]:.4g} mm along {'XYZ'[a]} (upscaling only)")
        if shape3[a] == 1 and new_shape[a] > 1:
            raise InputError(
                f"target {given} asks for {new_shape[a]} voxels along axis {'XYZ'[a]}, which has a single voxel",
                given, f"keep axis {'XYZ'[a]} at its spacing ({s_old[a]:.4g} mm) for a single image")
    return new_affine, new_shape


def _growth(lr_shape: Sequence[int], hr_shape: Sequence[int]) -> np.ndarray:
    lr = np.array([int(n) for n in lr_shape[-3:]], dtype=np.float64)
    hr = np.array([int(n) for n in hr_shape[-3:]], dtype=np.float64)
    return hr / lr


def upsampled_axes(lr_affine: np.ndarray, lr_shape: Sequence[int], hr_affine: np.ndarray,
                   hr_shape: Sequence[int]) -> list[int]:
    """The voxel axes (0, 1, 2) along which the high-resolution grid has more voxels."""
    return [a for a, g in enumerate(_growth(lr_shape, hr_shape)) if g > 1]


def coarse_axis(lr_affine: np.ndarray, lr_shape: Sequence[int], hr_affine: np.ndarray,
                hr_shape: Sequence[int]) -> int:
    """The degraded (slice) axis: the voxel axis whose size grows most.

    Ties (the identity grid included) go to an axis with more than one voxel, then to the
    axis with the coarsest input spacing, then to the lowest index.
    """
    growth = _growth(lr_shape, hr_shape)
    s = voxel_spacing(lr_affine)
    lr = [int(n) for n in lr_shape[-3:]]
    return int(max(range(3), key=lambda a: (round(growth[a], 9), lr[a] > 1, round(s[a], 9), -a)))
