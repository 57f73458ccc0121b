"""``degrade``: one simulated clinical acquisition of a high-resolution volume.

The steps follow the scanner. The slice profile selects thick slices. Then each slice is
acquired in k-space ONCE: the central window of the acquired in-plane matrix; rigid
motion between k-space segments of the acquired phase-encode lines (it moves the object
within the slices, so it commutes with the profile); complex Gaussian noise on the
acquired samples only; the lines that partial Fourier or undersampling skip are zeroed;
the scanner's window (apodisation) weights what is left. The magnitude of the inverse
transform is the image, on the acquired grid or zero-filled back to the input grid.
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
from ..volume import Volume, axcodes, fov_affine, spacing
from .crop import acquired_grid_factor, window_weights
from .fft import to_image, to_kspace
from .masks import cartesian_mask
from .motion import motion_kspace, random_motion_parameters
from .noise import signal_level
from .partial_fourier import partial_fourier_mask
from .slice_profile import slice_profile

__all__ = ["degrade", "AcquisitionAxes", "acquisition_axes", "segment_layout"]

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
    """Which voxel axes are the slice normal, phase encode and readout, from the axis codes."""
    codes = axcodes(affine)

    def axis_of(direction: str) -> int:
        letters = _LETTERS[direction]
        return next(i for i, c in enumerate(codes) if c in letters)

    slice_axis = axis_of(_NORMAL[orientation])
    phase_axis = axis_of(phase_encode)
    read = {0, 1, 2} - {slice_axis, phase_axis}
    if slice_axis == phase_axis or len(read) != 1:
        raise InputError(
            f"phase_encode={phase_encode} falls on the slice axis of a {orientation} acquisition for axes {codes}",
            "acquisition",
            "choose an in-plane phase-encode direction",
        )
    return AcquisitionAxes(slice_axis, phase_axis, read.pop())


def segment_layout(n: int, start: int, m: int, segments: int) -> torch.Tensor:
    """The motion segment of each of ``n`` centred k-space lines, ``(n,)`` int64.

    The ``m`` acquired lines ``[start, start + m)`` are split into ``segments`` shots: shot 0,
    the reference (no motion), is the band of about ``m / segments`` lines centred on DC
    (index ``n // 2``), so the image keeps its position; the other acquired lines, in index
    order, form shots ``1 .. segments - 1`` of equal size. Lines outside the window are
    not acquired (put in shot 0).
    """
    layout = torch.zeros(n, dtype=torch.int64)
    if segments <= 1:
        return layout
    half = m / (2.0 * segments)
    lines = torch.arange(start, start + m)
    outer = lines[(lines - n // 2).abs() >= half]
    if outer.numel():
        layout[outer] = 1 + torch.arange(outer.numel()) * (segments - 1) // outer.numel()
    return layout


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
    source = torch.as_tensor(np.asarray(volume.array) if was_numpy else volume.array)
    image = source.to(device) if device is not None else source
    affine = np.asarray(volume.affine, dtype=np.float64)
    axes = acquisition_axes(affine, params.orientation, params.phase_encode)
    dim = {a: a - 3 for a in range(3)}  # voxel axis -> tensor dimension of (C, X, Y, Z)

    thickness, slice_spacing = params.thickness_mm, params.slice_spacing_mm
    input_spacing = float(spacing(affine)[axes.slice])
    if params.slice_scale is not None:
        thickness = slice_spacing = params.slice_scale * input_spacing
    assert thickness is not None and slice_spacing is not None
    if slice_spacing < input_spacing * (1 - 1e-6):
        raise InputError(
            f"slice spacing {slice_spacing:g} mm is finer than the input's {input_spacing:g} mm along the slice axis",
            "acquisition",
            "simulate from a finer input, or use a protocol with thicker slices",
        )
    image, affine = slice_profile(
        image, dim[axes.slice], thickness_mm=thickness, slice_spacing_mm=slice_spacing,
        profile=params.profile, affine=affine,
    )

    image, affine, record = _acquire_in_plane(image, affine, axes, params, generator)
    out = image.to(torch.float32)
    if out.data_ptr() == source.data_ptr():  # identity settings: never hand back the input's storage
        out = out.clone()
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
            **record,
        },
    }
    return Volume(array, affine, meta)


def _acquire_in_plane(
    image: torch.Tensor, affine: np.ndarray, axes: AcquisitionAxes, params: AcquisitionParams,
    generator: torch.Generator,
) -> tuple[torch.Tensor, np.ndarray, dict]:
    """One k-space acquisition of every slice: window, motion, noise, skipped lines, apodisation.

    ``image`` is ``(C, X, Y, Z)`` on the thick-slice grid. Returns the magnitude image (on the
    acquired grid or zero-filled to the input grid), its affine, and what was drawn.
    """
    dim = {a: a - 3 for a in range(3)}
    spatial = (-3, -2, -1)
    in_plane = sorted((axes.phase, axes.read))
    sizes = {a: int(image.shape[dim[a]]) for a in in_plane}
    steps = spacing(affine)
    acquired = params.in_plane_spacing_mm
    # acquired matrix: round(n * s / s_acq) as fov_affine rounds; never more than the input has
    matrix = {
        a: sizes[a] if acquired is None else max(1, min(sizes[a], math.floor(sizes[a] * steps[a] / acquired + 0.5)))
        for a in in_plane
    }
    starts = {a: sizes[a] // 2 - matrix[a] // 2 for a in in_plane}
    n_pe, m_pe, start_pe = sizes[axes.phase], matrix[axes.phase], starts[axes.phase]
    record: dict = {"acquired_matrix": [matrix[a] for a in in_plane], "in_plane_axes": in_plane}
    reference = image[:1]  # SNR and sigma refer to the first channel (the b0 of a diffusion series)

    moving = params.motion_translation_mm > 0 or params.motion_rotation_deg > 0
    untouched = (
        not moving and all(matrix[a] == sizes[a] for a in in_plane) and params.window in ("none", None)
        and params.partial_fourier >= 1.0 and params.acceleration <= 1.0 and math.isinf(params.snr)
    )
    if untouched:  # nothing happens in-plane: no FFT round trip (identity settings stay exact)
        record["acquired_lines"] = n_pe
        return image, affine, record

    kspace = None
    if moving:
        translations, rotations = random_motion_parameters(
            params.motion_segments, params.motion_translation_mm, params.motion_rotation_deg, generator, 3,
            reference_segment=0,
        )
        translations[:, axes.slice] = 0.0  # in-plane motion of a 2D multi-slice acquisition
        kspace = motion_kspace(
            image, pe_axis=dim[axes.phase], plane_axes=(dim[in_plane[0]], dim[in_plane[1]]),
            translations_mm=translations, rotations_deg=rotations, spacing_mm=tuple(float(x) for x in steps),
            segment_of_line=segment_layout(n_pe, start_pe, m_pe, params.motion_segments),
        )
        record["motion_translations_mm"] = translations.tolist()
        record["motion_rotations_deg"] = rotations.tolist()
    if kspace is None:
        kspace = to_kspace(image, spatial)

    lines = torch.zeros(n_pe, dtype=torch.bool)
    acquired_lines = partial_fourier_mask(m_pe, params.partial_fourier)
    if params.acceleration > 1.0:
        acquired_lines &= cartesian_mask(m_pe, params.acceleration, params.center_fraction,
                                         kind=params.undersampling_kind, generator=generator)
    lines[start_pe : start_pe + m_pe] = acquired_lines
    record["acquired_lines"] = int(lines.sum())

    if not math.isinf(params.snr):
        # sigma in k-space such that the image on the acquired grid has SNR params.snr
        scale = math.sqrt(math.prod(matrix[a] / sizes[a] for a in in_plane))
        sigma = float(signal_level(reference, spatial_dims=3).reshape(-1)[0]) / params.snr / scale
        real_dtype = torch.float32 if kspace.dtype == torch.complex64 else torch.float64
        noise = torch.randn((2, *kspace.shape), generator=generator, dtype=real_dtype).to(kspace.device)
        kspace = kspace + sigma * torch.complex(noise[0], noise[1])
        record["noise_sigma_kspace"] = sigma

    for a in in_plane:
        n, m, start = sizes[a], matrix[a], starts[a]
        factor = torch.zeros(n, dtype=torch.complex128)
        factor[start : start + m] = window_weights(m, params.window).to(torch.complex128)
        if a == axes.phase:
            factor = factor * lines
        shape = [1] * kspace.ndim
        shape[dim[a]] = n
        kspace = kspace * factor.to(kspace.device, kspace.dtype).reshape(shape)

    if params.reconstruction == "acquired" and any(matrix[a] < sizes[a] for a in in_plane):
        for a in in_plane:
            n, m = sizes[a], matrix[a]
            kspace = kspace.narrow(dim[a], starts[a], m)
            shape = [1] * kspace.ndim
            shape[dim[a]] = m
            kspace = kspace * acquired_grid_factor(n, m).to(kspace.device, kspace.dtype).reshape(shape)
        new_steps = steps.copy()
        for a in in_plane:
            new_steps[a] = sizes[a] * steps[a] / matrix[a]
        affine, _ = fov_affine(affine, image.shape[-3:], new_steps)
    return to_image(kspace, spatial).abs().to(image.dtype), affine, record
