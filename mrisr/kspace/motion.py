"""Rigid motion during a segmented acquisition: k-space lines from differently posed objects.

The phase-encode (PE) lines along ``pe_axis`` are acquired in ``S`` segments (shots). During
segment ``i`` the object sits at pose ``T_i`` (an in-plane rotation, then a translation); the
lines of segment ``i`` are taken from the k-space of ``T_i(image)``. The mixture is transformed
back and its magnitude returned. The data are inconsistent only along the PE axis, so the
ghosts and blurring this produces are displaced along the PE axis only (each ghost is a copy of
the moved object convolved along PE with the inverse transform of its segment's line mask).

Conventions:

- Spatial axes are the last ``D = len(spacing_mm)`` dimensions (2 or 3); the others are batch
  dimensions and all move together. ``pe_axis`` and ``plane_axes`` index the tensor and may
  be negative, and must be spatial.
- A translation ``t`` (mm, one value per spatial axis) moves the object towards increasing
  index: ``out(x) = in(x - t)``. It is applied exactly as the k-space phase ramp
  ``exp(-2 pi i f t / FOV)`` per axis (``f`` from :func:`.fft.frequencies`,
  ``FOV = n * spacing``), periodic over the field of view: an integer-voxel translation is
  ``torch.roll``.
- A rotation by ``theta`` degrees turns the object in the plane ``plane_axes = (a, b)`` from
  axis ``a`` towards axis ``b`` (a point on ``+a`` moves to ``+b`` at 90 degrees, as
  ``torch.rot90(x, 1, dims=(a, b))``), about the centre of the field of view (index
  ``(n - 1) / 2``, the geometric centre of the voxel grid), in physical millimetres (the
  spacing is taken into account). It resamples in image space with bilinear
  ``grid_sample`` (zeros outside the field of view).
- The reference pose is the identity; :func:`random_motion_parameters` puts the segment that
  holds the k-space centre there, so the image stays in place and ghosts surround it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..errors import InputError
from .fft import frequencies, to_image, to_kspace

__all__ = ["motion", "motion_kspace", "random_motion_parameters", "contiguous_segments"]


def contiguous_segments(n_pe: int, n_segments: int) -> torch.Tensor:
    """The default ordering: line ``j`` of ``n_pe`` belongs to segment ``floor(j * S / n_pe)``.

    Returns a ``(n_pe,)`` int64 CPU tensor of segment indices: contiguous blocks in index
    (acquisition) order, whose sizes differ by at most one. The k-space centre line is
    ``n_pe // 2``, so the reference segment for this ordering is
    ``int(contiguous_segments(n_pe, S)[n_pe // 2])`` (``S // 2`` when ``n_pe`` is even).
    """
    if isinstance(n_pe, bool) or not isinstance(n_pe, int) or n_pe < 1:
        raise InputError(f"n_pe {n_pe!r} is not allowed; it must be an integer >= 1")
    if isinstance(n_segments, bool) or not isinstance(n_segments, int) or n_segments < 1:
        raise InputError(f"n_segments {n_segments!r} is not allowed; it must be an integer >= 1")
    return torch.arange(n_pe, dtype=torch.int64) * n_segments // n_pe


def _as_cpu64(value: object, name: str) -> torch.Tensor:
    try:
        tensor = torch.as_tensor(value).detach().to("cpu", torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"{name} must be numbers (a sequence or a tensor), got {value!r}") from None
    if not bool(torch.isfinite(tensor).all()):
        raise InputError(f"{name} holds NaN or infinite values: {tensor.tolist()}")
    return tensor


def _spatial_axis(axis: object, name: str, ndim: int, dims: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, int) or not -ndim <= axis < ndim:
        raise InputError(f"{name} {axis!r} is not an axis of the {ndim}-D image")
    norm = axis % ndim
    if norm < ndim - dims:
        raise InputError(
            f"{name} {axis!r} is not a spatial axis; the spatial axes are the last {dims} "
            f"({list(range(-dims, 0))} or {list(range(ndim - dims, ndim))})"
        )
    return norm


def _rotate(image: torch.Tensor, plane: tuple[int, int], degrees: float, half_fov: tuple[float, float]) -> torch.Tensor:
    """Rotate ``image`` by ``degrees`` from axis ``plane[0]`` towards ``plane[1]`` about the FOV centre.

    ``half_fov`` is half the field of view (mm) along the two axes, which makes the rotation
    physical on anisotropic grids: grid_sample's normalised coordinates are mm / half FOV.
    """
    a, b = plane
    moved = torch.movedim(image, (a, b), (-2, -1))
    shape = moved.shape
    flat = moved.reshape(1, -1, shape[-2], shape[-1])
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    ha, hb = half_fov
    # Output normalised coords (x: axis b, y: axis a) -> input coords, the inverse rotation.
    theta = torch.tensor([[c, -s * ha / hb, 0.0], [s * hb / ha, c, 0.0]], dtype=image.dtype, device=image.device)
    grid = F.affine_grid(theta[None], list(flat.shape), align_corners=False)
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return torch.movedim(out.reshape(shape), (-2, -1), (a, b))


def motion(
    image: torch.Tensor,
    *,
    pe_axis: int,
    plane_axes: Sequence[int],
    translations_mm: Sequence[Sequence[float]] | torch.Tensor,
    rotations_deg: Sequence[float] | torch.Tensor,
    spacing_mm: Sequence[float],
    segment_of_line: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rigid motion between k-space segments: the magnitude of :func:`motion_kspace`'s k-space.

    All-zero motion returns ``image`` itself. See :func:`motion_kspace` for the arguments.
    """
    spatial = tuple(range(image.ndim - len(spacing_mm), image.ndim)) if isinstance(image, torch.Tensor) else ()
    kspace = motion_kspace(
        image, pe_axis=pe_axis, plane_axes=plane_axes, translations_mm=translations_mm,
        rotations_deg=rotations_deg, spacing_mm=spacing_mm, segment_of_line=segment_of_line,
    )
    if kspace is None:
        return image
    return to_image(kspace, spatial).abs()


def motion_kspace(
    image: torch.Tensor,
    *,
    pe_axis: int,
    plane_axes: Sequence[int],
    translations_mm: Sequence[Sequence[float]] | torch.Tensor,
    rotations_deg: Sequence[float] | torch.Tensor,
    spacing_mm: Sequence[float],
    segment_of_line: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Simulate rigid motion between the segments of a phase-encoded acquisition.

    Args:
        image: real magnitude image ``(*batch, *spatial)``, float32/float64, any device; the
            spatial dims are the last ``len(spacing_mm)``.
        pe_axis: the phase-encode axis (a spatial axis of ``image``, may be negative); its
            ``n_pe`` lines are split into segments.
        plane_axes: two distinct spatial axes ``(a, b)``: the rotation plane, positive from
            ``a`` towards ``b``.
        translations_mm: ``(S, D)`` translation of the object in each segment, in mm, one
            value per spatial axis (in axis order).
        rotations_deg: ``(S,)`` in-plane rotation of the object in each segment, in degrees.
        spacing_mm: ``(D,)`` voxel spacing of the spatial axes in mm (D = 2 or 3).
        segment_of_line: optional ``(n_pe,)`` integer tensor, the segment (``0 .. S-1``) of
            each PE line in index order (interleaved or centric orderings); default
            :func:`contiguous_segments`.

    Returns:
        The centred k-space ``sum_i mask_i * FFT(T_i(image))`` over the spatial axes (complex,
        same shape, on the image's device), or ``None`` for all-zero motion. No randomness.

    Raises:
        InputError: naming the parameter, for a bad image, axes, spacing, parameter shapes
            (``S`` must agree), or ``segment_of_line``.
    """
    if not isinstance(image, torch.Tensor) or image.dtype not in (torch.float32, torch.float64):
        got = image.dtype if isinstance(image, torch.Tensor) else type(image).__name__
        raise InputError(f"image must be a float32 or float64 torch.Tensor, got {got}")
    spacing = _as_cpu64(spacing_mm, "spacing_mm")
    if spacing.ndim != 1 or spacing.numel() not in (2, 3) or bool((spacing <= 0).any()):
        raise InputError(f"spacing_mm {spacing.tolist()} is not allowed; give 2 or 3 positive values (mm)")
    dims = spacing.numel()
    ndim = image.ndim
    if ndim < dims:
        raise InputError(f"image has {ndim} dimensions (shape {tuple(image.shape)}), fewer than len(spacing_mm)={dims}")
    spatial = tuple(range(ndim - dims, ndim))
    if image.shape[ndim - dims :].numel() == 0:
        raise InputError(f"image has an empty spatial shape {tuple(image.shape)}")
    pe = _spatial_axis(pe_axis, "pe_axis", ndim, dims)
    if isinstance(plane_axes, (str, bytes)) or not isinstance(plane_axes, Sequence) or len(plane_axes) != 2:
        raise InputError(f"plane_axes {plane_axes!r} is not allowed; give two distinct spatial axes")
    plane = (
        _spatial_axis(plane_axes[0], "plane_axes[0]", ndim, dims),
        _spatial_axis(plane_axes[1], "plane_axes[1]", ndim, dims),
    )
    if plane[0] == plane[1]:
        raise InputError(f"plane_axes {tuple(plane_axes)!r} name the same axis twice; give two distinct spatial axes")
    trans = _as_cpu64(translations_mm, "translations_mm")
    rots = _as_cpu64(rotations_deg, "rotations_deg")
    if trans.ndim != 2 or trans.shape[1] != dims or trans.shape[0] < 1:
        raise InputError(
            f"translations_mm has shape {tuple(trans.shape)}; it must be (S, {dims}): one mm vector per segment"
        )
    n_seg = trans.shape[0]
    if rots.shape != (n_seg,):
        raise InputError(
            f"rotations_deg has shape {tuple(rots.shape)} but translations_mm has {n_seg} segments; "
            f"it must be ({n_seg},)"
        )
    n_pe = image.shape[pe]
    if segment_of_line is None:
        segments = contiguous_segments(n_pe, n_seg)
    else:
        if (
            not isinstance(segment_of_line, torch.Tensor)
            or segment_of_line.dtype.is_floating_point
            or (segment_of_line.dtype.is_complex or segment_of_line.dtype == torch.bool)
        ):
            got = segment_of_line.dtype if isinstance(segment_of_line, torch.Tensor) else type(segment_of_line).__name__
            raise InputError(f"segment_of_line must be an integer torch.Tensor, got {got}")
        if segment_of_line.shape != (n_pe,):
            raise InputError(
                f"segment_of_line has shape {tuple(segment_of_line.shape)}; it must be ({n_pe},), one per PE line"
            )
        segments = segment_of_line.detach().to("cpu", torch.int64)
        if int(segments.min()) < 0 or int(segments.max()) >= n_seg:
            raise InputError(
                f"segment_of_line holds values in [{int(segments.min())}, {int(segments.max())}]; "
                f"they must be in [0, {n_seg - 1}] (S = {n_seg} segments)"
            )
    if not bool(trans.any()) and not bool(rots.any()):
        return None

    device = image.device
    shape = {ax: image.shape[ax] for ax in spatial}
    sp = {ax: float(spacing[i]) for i, ax in enumerate(spatial)}
    complex_dtype = torch.complex64 if image.dtype == torch.float32 else torch.complex128
    out = torch.empty(image.shape, dtype=complex_dtype, device=device)
    lines_of = [torch.nonzero(segments == i).flatten().to(device) for i in range(n_seg)]
    # One rotation and one FFT per distinct angle (all pure translations share one), and only
    # one k-space held at a time besides the result, however many segments there are.
    for angle in sorted({float(rots[i]) for i in range(n_seg) if lines_of[i].numel()}):
        posed = image
        if angle != 0.0:
            half = (shape[plane[0]] * sp[plane[0]] / 2, shape[plane[1]] * sp[plane[1]] / 2)
            posed = _rotate(image, plane, angle, half)
        kspace = to_kspace(posed, spatial)
        for i in range(n_seg):
            lines = lines_of[i]
            if lines.numel() == 0 or float(rots[i]) != angle:
                continue
            part = kspace.index_select(pe, lines)
            for j, ax in enumerate(spatial):
                t = float(trans[i, j])
                if t == 0.0:
                    continue
                freq = frequencies(shape[ax], device=device)
                if ax == pe:
                    freq = freq[lines]
                phase = -2 * math.pi * t / (shape[ax] * sp[ax]) * freq
                view = [1] * ndim
                view[ax] = freq.numel()
                part = part * torch.polar(torch.ones_like(phase), phase).to(complex_dtype).reshape(view)
            out.index_copy_(pe, lines, part)
        del kspace
    return out


def random_motion_parameters(
    n_segments: int,
    max_translation_mm: float,
    max_rotation_deg: float,
    generator: torch.Generator,
    spatial_dims: int,
    *,
    reference_segment: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform random poses for :func:`motion`, with the reference segment at the identity.

    Each translation component is uniform in ``[-max_translation_mm, max_translation_mm]``
    and each rotation uniform in ``[-max_rotation_deg, max_rotation_deg]``, drawn on the CPU
    with ``torch.rand(..., generator=generator, dtype=float64)`` (translations ``(S, D)``
    first, then rotations ``(S,)``; the reference segment's draws are made then zeroed, so the
    stream does not depend on it).

    Args:
        n_segments: ``S >= 1``.
        max_translation_mm: ``>= 0`` (mm).
        max_rotation_deg: ``>= 0`` (degrees).
        generator: CPU ``torch.Generator``.
        spatial_dims: ``D``, 2 or 3.
        reference_segment: the segment left at zero motion. Default ``S // 2``, the segment
            holding the k-space centre line ``n_pe // 2`` under the default contiguous ordering
            when ``n_pe`` is even. For other orderings pass
            ``int(segment_of_line[n_pe // 2])``.

    Returns:
        ``(translations_mm, rotations_deg)``: float64 CPU tensors ``(S, D)`` and ``(S,)``.

    Raises:
        InputError: naming the parameter that is out of range.
    """
    if isinstance(n_segments, bool) or not isinstance(n_segments, int) or n_segments < 1:
        raise InputError(f"n_segments {n_segments!r} is not allowed; it must be an integer >= 1")
    for name, value in (("max_translation_mm", max_translation_mm), ("max_rotation_deg", max_rotation_deg)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise InputError(f"{name} {value!r} is not allowed; it must be a finite number >= 0")
    if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
        raise InputError(f"spatial_dims {spatial_dims!r} is not allowed; it must be 2 or 3")
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        got = generator.device if isinstance(generator, torch.Generator) else type(generator).__name__
        raise InputError(f"generator must be a CPU torch.Generator, got {got}")
    ref = n_segments // 2 if reference_segment is None else reference_segment
    if isinstance(ref, bool) or not isinstance(ref, int) or not 0 <= ref < n_segments:
        raise InputError(f"reference_segment {reference_segment!r} is not allowed; it must be in [0, {n_segments - 1}]")
    trans = (2 * torch.rand((n_segments, spatial_dims), generator=generator, dtype=torch.float64) - 1) * float(
        max_translation_mm
    )
    rots = (2 * torch.rand((n_segments,), generator=generator, dtype=torch.float64) - 1) * float(max_rotation_deg)
    trans[ref] = 0.0
    rots[ref] = 0.0
    return trans, rots
