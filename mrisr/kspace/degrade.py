"""``degrade``: one simulated clinical acquisition of a high-resolution volume.

The steps follow the scanner: the slice profile selects thick slices; in-plane rigid
motion between k-space segments moves the object within them (it commutes with the
profile, so it is applied after it, on fewer voxels); then each slice's k-space is cropped to the acquired matrix
(with the scanner's window), covered partially (partial Fourier) or undersampled along
the phase-encode axis, and receives complex noise; the magnitude is the image.
Anatomical directions of the protocol map to the voxel axes closest to them, so any
orientation, oblique included, works.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..protocol import AcquisitionParams
from ..volume import Volume, axcodes, spacing
from .crop import kspace_crop
from .masks import undersample
from .motion import motion, random_motion_parameters
from .noise import rician_noise
from .partial_fourier import partial_fourier
from .slice_profile import slice_profile

__all__ = ["degrade", "AcquisitionAxes", "acquisition_axes"]

#: Axis letters of each anatomical direction (either sense).
_LETTERS = {"SI": "SI", "AP": "AP", "LR": "LR"}
#: The slice normal of each orientation.
_NORMAL = {"axial": "SI", "coronal": "AP", "sagittal": "LR"}


@dataclass(frozen=True)
class AcquisitionAxes:
    """Voxel axes (0, 1, 2 = X, Y, Z) of an acquisition on a given grid."""

    slice: int
    phase: int
    read: int


def acquisition_axes(affine: np.ndarray, orientation: str, phase_encode: str) -> AcquisitionAxes:
    """Which voxel axes are the slice normal, phase encode and readout, from the axis codes.

    Raises:
        InputError: two protocol directions fall on the same voxel axis (cannot happen for
            a valid affine and protocol, but says so clearly if it does).
    """
    codes = axcodes(affine)

    def axis_of(direction: str) -> int:
        letters = _LETTERS[direction]
        return next(i for i, c in enumerate(codes) if c in letters)

    slice_axis = axis_of(_NORMAL[orientation])
    phase_axis = axis_of(phase_encode)
    read = ({0, 1, 2} - {slice_axis, phase_axis})
    if slice_axis == phase_axis or len(read) != 1:
        raise InputError(
            f"phase_encode={phase_encode} falls on the slice axis of a {orientation} acquisition for axes {codes}",
            "acquisition",
            "choose an in-plane phase-encode direction",
        )
    return AcquisitionAxes(slice_axis, phase_axis, read.pop())


def degrade(
    volume: Volume,
    params: AcquisitionParams,
    generator: torch.Generator,
    device: torch.device | str | None = None,
) -> Volume:
    """Simulate the low-resolution acquisition ``params`` of ``volume``.

    Args:
        volume: the high-resolution magnitude image, ``(C, X, Y, Z)``; channels are
            degraded alike (one acquisition).
        params: concrete parameters (``Acquisition.nominal()`` or ``.sample(generator)``).
        generator: CPU ``torch.Generator`` for noise, motion and undersampling draws.
        device: where to compute (default: the array's device, CPU for numpy).

    Returns:
        The low-resolution ``Volume`` on its own field-of-view-preserving grid, with
        ``meta["degradation"]`` holding ``params`` and the effective spacings. Numpy in,
        numpy out; torch in, torch out.
    """
    was_numpy = isinstance(volume.array, np.ndarray)
    image = torch.as_tensor(np.asarray(volume.array) if was_numpy else volume.array)
    if device is not None:
        image = image.to(device)
    affine = np.asarray(volume.affine, dtype=np.float64)
    axes = acquisition_axes(affine, params.orientation, params.phase_encode)
    dim = {a: a - 3 for a in range(3)}  # voxel axis -> tensor dimension of (C, X, Y, Z)
    in_plane = sorted((axes.phase, axes.read))

    thickness, slice_spacing = params.thickness_mm, params.slice_spacing_mm
    if params.slice_scale is not None:
        thickness = slice_spacing = params.slice_scale * float(spacing(affine)[axes.slice])
    assert thickness is not None and slice_spacing is not None
    image, affine = slice_profile(
        image, dim[axes.slice], thickness_mm=thickness, slice_spacing_mm=slice_spacing,
        profile=params.profile, affine=affine,
    )

    # In-plane rigid motion (rotation about the slice normal, in-plane translation) commutes
    # with the through-plane slice profile, so it runs on the thick slices: 6x fewer voxels.
    if params.motion_translation_mm > 0 or params.motion_rotation_deg > 0:
        translations, rotations = random_motion_parameters(
            params.motion_segments, params.motion_translation_mm, params.motion_rotation_deg, generator, 3
        )
        translations[:, axes.slice] = 0.0  # in-plane motion of a 2D multi-slice acquisition
        image = motion(
            image,
            pe_axis=dim[axes.phase],
            plane_axes=(dim[in_plane[0]], dim[in_plane[1]]),
            translations_mm=translations,
            rotations_deg=rotations,
            spacing_mm=tuple(float(s) for s in spacing(affine)),
        )

    acquired = params.in_plane_spacing_mm
    if acquired is not None and any(acquired > spacing(affine)[a] * (1 + 1e-9) for a in in_plane):
        targets = [max(acquired, float(spacing(affine)[a])) for a in in_plane]
        image, new_affine = kspace_crop(
            image, [dim[a] for a in in_plane], spacing_mm=targets, affine=affine,
            window=None if params.window == "none" else params.window, output=params.reconstruction,
        )
        affine = new_affine if new_affine is not None else affine

    if params.partial_fourier < 1.0:
        image = partial_fourier(image, dim[axes.phase], params.partial_fourier)
    if params.acceleration > 1.0:
        image, _ = undersample(image, dim[axes.phase], params.acceleration, params.center_fraction,
                               kind=params.undersampling_kind, generator=generator)
    if not math.isinf(params.snr):
        image = rician_noise(image, snr=params.snr, generator=generator, spatial_dims=3)

    out = image.to(torch.float32)
    array = out.cpu().numpy() if was_numpy else out
    meta = {
        **volume.meta,
        "dtype": "float32",
        "range": [float(out.min()), float(out.max())],
        "degradation": {
            **params.as_dict(),
            "effective_spacing_mm": [float(s) for s in spacing(affine)],
            "slice_axis": axes.slice,
            "phase_axis": axes.phase,
        },
    }
    return Volume(array, affine, meta)
