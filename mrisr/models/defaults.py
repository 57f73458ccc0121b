"""Which shipped model ``mrisr upscale`` uses when none is given: a rule on the voxel spacing (mm).

Only the spacing decides (the orientation does not: the coarse axis may be any voxel axis, and
an oblique affine is measured along its own columns). Axes with one voxel are left out.
Sorting the spacings of a 3D volume as ``fine <= mid <= coarse``:

- :data:`THICK_SLICE` (``vdsr2d-thick``, the 2D model trained on 1 mm in-plane data with 2-6 mm
  slices) when the loss is **through-plane only**: one axis clearly coarser than the others,
  ``coarse / mid >= THROUGH_PLANE_RATIO`` (1.5), the other two (nearly) equal,
  ``mid / fine <= IN_PLANE_RATIO`` (1.25), and fine in-plane, ``mid <= IN_PLANE_MAX_MM``
  (1.4 mm, the geometric middle of the 1 mm in-plane the 2D model saw and the 2 mm of the 3D
  model's in-plane k-space loss). E.g. 1x1x4, 0.9x0.9x5, 0.45x0.45x3 mm.
- :data:`ANISOTROPIC` (``vdsr3d``, the 3D model for in-plane k-space loss up to x2 and 1-4 mm
  slices) otherwise: in-plane coarse too (2x2x4, 1.5x1.5x6 mm), mildly anisotropic
  (1x1x1.4 mm), isotropic (1.5 mm), or with unequal in-plane spacings (0.5x0.8x4 mm).
- A volume with fewer than three axes of more than one voxel (a single image or a single
  row) gets ``vdsr2d-thick``: a 3D network cannot run on it.

A header cannot tell a k-space-truncated image zero-filled back to a fine display grid from a
sharp one: such scans look like through-plane loss here; pass ``--model vdsr3d`` for them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from ..volume import Volume
from . import registry

if TYPE_CHECKING:  # torch stays unimported: `mrisr models` and the batch planner only read files
    from torch import nn

    #: What names a model: a network, a checkpoint path or a shipped model's name.
    ModelSpec = nn.Module | str | os.PathLike[str]

__all__ = [
    "THICK_SLICE",
    "ANISOTROPIC",
    "THROUGH_PLANE_RATIO",
    "IN_PLANE_RATIO",
    "IN_PLANE_MAX_MM",
    "default_model_name",
    "resolve_model",
]

#: The default for through-plane loss (thick slices over a fine, square in-plane grid).
THICK_SLICE = "vdsr2d-thick"
#: The default for everything else (in-plane loss too, mild anisotropy, isotropic).
ANISOTROPIC = "vdsr3d"
#: ``coarse / mid`` spacing at least this: one axis is clearly coarser (through-plane loss).
THROUGH_PLANE_RATIO = 1.5
#: ``mid / fine`` spacing at most this: the two finer axes are (nearly) equal, an in-plane grid.
IN_PLANE_RATIO = 1.25
#: In-plane (``mid``) spacing in mm at most this: a fine in-plane grid, the loss is through-plane only.
IN_PLANE_MAX_MM = 1.4

def default_model_name(spacing_mm: np.ndarray | list[float] | tuple[float, ...],
                       shape: tuple[int, ...] | list[int]) -> str:
    """The shipped default's name for voxel spacings (mm, per voxel axis) and a spatial shape (X, Y, Z).

    The rule is in the module docstring (spacings rounded to 1e-6 mm, the bounds inclusive);
    whether that model ships is not checked here.
    """
    s = np.round(np.asarray(spacing_mm, dtype=np.float64).reshape(-1)[-3:], 6)  # 1.4000000001 is 1.4
    several = [float(s[a]) for a in range(3) if int(shape[-3:][a]) > 1]
    if len(several) < 3:
        return THICK_SLICE
    fine, mid, coarse = sorted(several)
    through_plane = (coarse >= THROUGH_PLANE_RATIO * mid and mid <= IN_PLANE_RATIO * fine
                     and mid <= IN_PLANE_MAX_MM)
    return THICK_SLICE if through_plane else ANISOTROPIC


def resolve_model(model: ModelSpec | None, volume: Volume) -> ModelSpec:
    """``model`` unchanged when given, else the name of the shipped default for ``volume``'s spacing.

    Args:
        model: a network, a checkpoint path or a model name; ``None`` asks for the default.
        volume: the input scan (only its affine's spacing, mm, and its shape are read).

    Raises:
        InputError: the default the rule picks (see the module docstring) is not shipped.
    """
    if model is not None:
        return model
    name = default_model_name(volume.spacing, volume.shape)
    shipped_now = registry.shipped_models()
    if name not in shipped_now:
        shipped = ", ".join(shipped_now) or "none"
        spacing = "x".join(f"{v:.3g}" for v in volume.spacing)
        raise InputError(f"the default model for {spacing} mm voxels, {name!r}, is not shipped (shipped: {shipped})",
                         "--model", "give --model NAME or the path of a checkpoint (mrisr models lists the shipped)")
    return name
