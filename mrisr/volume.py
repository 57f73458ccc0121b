"""``Volume``, the one core type, and pure geometry functions on ``(affine, shape)``.

Conventions (see DESIGN.md):
- ``array`` is channel-first ``(C, X, Y, Z)``; 2D data is ``(C, X, Y, 1)``.
- ``affine`` is a 4x4 float64 matrix mapping a voxel index ``(i, j, k, 1)`` to
  world millimetres in **RAS** (x: left->Right, y: posterior->Anterior,
  z: inferior->Superior). An index names the *centre* of a voxel, as in
  nibabel, so the field of view spans indices ``-0.5 .. n - 0.5``.
- Spacing is in mm, one value per voxel axis (the norm of each affine column).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import nibabel as nib
import numpy as np
from nibabel import orientations

from .errors import GeometryError, InputError

__all__ = [
    "Volume",
    "spacing",
    "axcodes",
    "slice_plane",
    "world_corners",
    "fov_affine",
    "crop_affine",
    "canonical",
    "crop",
]

#: Tolerance (mm) below which two geometries are the same.
GEOMETRY_ATOL_MM = 1e-4


def _as_affine(affine: Any) -> np.ndarray:
    a = np.array(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise GeometryError(f"affine must be 4x4, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise GeometryError("affine holds NaN or infinite values")
    if not np.allclose(a[3], [0.0, 0.0, 0.0, 1.0]):
        raise GeometryError(f"affine's last row must be [0, 0, 0, 1], got {a[3].tolist()}")
    if abs(np.linalg.det(a[:3, :3])) < 1e-12:
        raise GeometryError("affine is singular (zero spacing or parallel axes)")
    return a


@dataclass(frozen=True)
class Volume:
    """An image with exact geometry.

    Attributes:
        array: float32 array ``(C, X, Y, Z)``, numpy or torch (other dtypes are cast).
        affine: 4x4 float64, voxel index -> world mm, RAS, voxel centres.
        meta: what writers need to go back where the data came from
            (``source_format``, ``dtype``, ``range``, DICOM template and UIDs...).
            Treated as read-only: derive new volumes with :meth:`replace`.
    """

    array: Any
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if getattr(self.array, "ndim", None) != 4:
            raise InputError(
                f"Volume.array must be 4D (C, X, Y, Z), got shape {tuple(getattr(self.array, 'shape', ()))}",
                fix="add a channel axis in front (array[None]) and a singleton Z for 2D data",
            )
        affine = _as_affine(self.affine)
        affine.flags.writeable = False
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "array", _as_float32(self.array))
        object.__setattr__(self, "meta", dict(self.meta))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(X, Y, Z)`` in voxels."""
        return tuple(int(n) for n in self.array.shape[1:])  # type: ignore[return-value]

    @property
    def n_channels(self) -> int:
        """Number of channels (volumes of a 4D series, e.g. diffusion directions)."""
        return int(self.array.shape[0])

    @property
    def spacing(self) -> np.ndarray:
        """Voxel spacing in mm, per voxel axis ``(X, Y, Z)``."""
        return spacing(self.affine)

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """Anatomical direction of increasing index per axis, e.g. ``('R', 'A', 'S')``."""
        return axcodes(self.affine)

    @property
    def corners(self) -> np.ndarray:
        """The 8 world corners (mm, RAS) of the field of view, ``(8, 3)``."""
        return world_corners(self.affine, self.shape)

    def replace(self, **changes: Any) -> Volume:
        """A copy with some fields changed (``array``, ``affine``, ``meta``)."""
        return replace(self, **changes)


def _as_float32(array: Any) -> Any:
    """``array`` as float32 (numpy or torch, unchanged when it already is)."""
    if isinstance(array, np.ndarray):
        return array if array.dtype == np.float32 else array.astype(np.float32)
    dtype = getattr(array, "dtype", None)
    if dtype is not None and str(dtype) != "torch.float32" and hasattr(array, "float"):
        return array.float()
    return array


def spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel spacing (mm) per voxel axis: the norms of the affine's first three columns."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def axcodes(affine: np.ndarray) -> tuple[str, str, str]:
    """Closest RAS axis code per voxel axis, e.g. ``('L', 'I', 'A')`` (nibabel's rule)."""
    return tuple(nib.aff2axcodes(np.asarray(affine, dtype=np.float64)))  # type: ignore[return-value]


#: The anatomical plane perpendicular to each RAS direction code.
PLANE_NAMES = {"R": "sagittal", "L": "sagittal", "A": "coronal", "P": "coronal", "S": "axial", "I": "axial"}
#: The RAS world axis (0: x, 1: y, 2: z) of each direction code.
WORLD_AXIS = {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}


def slice_plane(affine: np.ndarray, axis: int) -> tuple[str, float]:
    """The anatomical plane that the planes perpendicular to voxel ``axis`` are closest to.

    The name comes from the RAS direction closest to ``axis`` (nibabel's axis codes, one world
    axis per voxel axis, so oblique volumes work): S/I axial, A/P coronal, R/L sagittal.

    Args:
        affine: ``(4, 4)`` voxel -> RAS (mm).
        axis: the voxel axis (0, 1 or 2) the planes are perpendicular to (2 for a DICOM stack).

    Returns:
        ``(name, tilt_deg)``: ``"axial"``, ``"coronal"`` or ``"sagittal"``, and the angle (degrees)
        between the planes' normal and that anatomical plane's normal (0 when aligned).
    """
    affine = np.asarray(affine, dtype=np.float64)
    code = axcodes(affine)[axis]
    rest = [a for a in range(3) if a != axis]
    columns = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    normal = np.cross(columns[:, rest[0]], columns[:, rest[1]])
    cosine = abs(float(normal[WORLD_AXIS[code]])) / max(float(np.linalg.norm(normal)), 1e-12)
    return PLANE_NAMES[code], float(np.degrees(np.arccos(min(cosine, 1.0))))


def world_corners(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The 8 corners of the field of view in world mm (RAS), shape ``(8, 3)``.

    The field of view is bounded by the outer voxel *faces*, index ``-0.5`` and
    ``n - 0.5`` per axis. Corner ``c`` has index ``(lo|hi, lo|hi, lo|hi)`` in
    ``itertools.product`` order, i-axis slowest.
    """
    shape = [int(n) for n in shape[-3:]]
    index = np.array(
        [[i, j, k, 1.0] for i, j, k in itertools.product(*[(-0.5, n - 0.5) for n in shape])]
    )
    return (index @ np.asarray(affine, dtype=np.float64).T)[:, :3]


def fov_affine(
    affine: np.ndarray, shape: Sequence[int], new_spacing: float | Sequence[float]
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The grid with (about) ``new_spacing`` that covers exactly the same field of view.

    Per axis the new size is ``round(n * s_old / s_new)`` (at least 1) and the
    spacing is then set to ``n * s_old / n_new``, so that the outer voxel faces stay
    where they were to floating-point precision. When ``s_new`` divides the extent
    (the usual case: 5 mm -> 1 mm over 40 slices) the spacing is exactly ``s_new``.
    The origin moves by ``R @ (s_eff - s_old) / 2`` (R: unit direction columns).

    Args:
        affine: 4x4 voxel -> world (mm).
        shape: spatial shape ``(X, Y, Z)``.
        new_spacing: one value (mm) for all axes, or one per voxel axis.

    Returns:
        ``(new_affine, new_shape)``.
    """
    affine = _as_affine(affine)
    shape_arr = np.array([int(n) for n in shape[-3:]], dtype=np.int64)
    s_old = spacing(affine)
    s_req = np.broadcast_to(np.asarray(new_spacing, dtype=np.float64), (3,)).copy()
    if np.any(~np.isfinite(s_req)) or np.any(s_req <= 0):
        raise InputError(f"new spacing must be positive mm, got {s_req.tolist()}")
    extent = shape_arr * s_old
    new_shape = np.maximum(1, np.floor(extent / s_req + 0.5 + 1e-9)).astype(np.int64)
    s_new = extent / new_shape
    directions = affine[:3, :3] / s_old
    out = np.eye(4)
    out[:3, :3] = directions * s_new
    out[:3, 3] = affine[:3, 3] + directions @ ((s_new - s_old) / 2.0)
    return out, tuple(int(n) for n in new_shape)  # type: ignore[return-value]


def crop_affine(affine: np.ndarray, start: Sequence[int]) -> np.ndarray:
    """The affine of a crop whose first voxel is index ``start`` of the original grid."""
    affine = _as_affine(affine)
    out = affine.copy()
    out[:3, 3] = affine[:3, :3] @ np.asarray(start, dtype=np.float64) + affine[:3, 3]
    return out


def crop(volume: Volume, start: Sequence[int], stop: Sequence[int]) -> Volume:
    """The box ``[start, stop)`` (voxel indices per spatial axis) of ``volume``, geometry kept."""
    shape = volume.shape
    lo = [int(s) for s in start]
    hi = [int(s) for s in stop]
    if len(lo) != 3 or len(hi) != 3 or any(
        not (0 <= a < b <= n) for a, b, n in zip(lo, hi, shape, strict=False)
    ):
        raise InputError(
            f"crop box {lo}..{hi} is empty or outside the volume of shape {list(shape)}",
            fix="give 0 <= start < stop <= shape per axis",
        )
    array = volume.array[:, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    return volume.replace(array=array, affine=crop_affine(volume.affine, lo))


def canonical(volume: Volume) -> Volume:
    """``volume`` reoriented to the closest canonical (RAS+) voxel order.

    Only axis permutations and flips: no interpolation, the voxels and the world
    geometry are unchanged (``nibabel.as_closest_canonical``'s rule).
    """
    ornt = orientations.io_orientation(volume.affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return volume
    shape = volume.shape
    perm = [int(ax) for ax in ornt[:, 0]]
    # io_orientation gives, per input axis, the output axis and flip; invert to index.
    order = np.argsort(perm)
    array = volume.array
    for in_axis, (_, flip) in enumerate(ornt):
        if flip < 0:
            array = _flip(array, in_axis + 1)
    array = _permute(array, [0] + [int(a) + 1 for a in order])
    new_affine = volume.affine @ orientations.inv_ornt_aff(ornt, shape)
    return volume.replace(array=array, affine=new_affine)


def _flip(array: Any, axis: int) -> Any:
    if isinstance(array, np.ndarray):
        return np.flip(array, axis)
    return array.flip(axis)


def _permute(array: Any, axes: list[int]) -> Any:
    if isinstance(array, np.ndarray):
        return np.ascontiguousarray(np.transpose(array, axes))
    return array.permute(*axes).contiguous()
