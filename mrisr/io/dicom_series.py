"""Slice records -> series candidates -> volumes -> one exact RAS affine.

Rules (DESIGN.md, "DICOM in"):
- group by SeriesInstanceUID, then orientation and matrix (pixel spacing included);
- split a candidate into volumes (echo, time, diffusion...) when slices repeat a position;
- sort by the projection of ImagePositionPatient on the slice normal;
- spacing from positions, never from SliceThickness: span / (n - 1), or a least-squares
  grid where positions were rounded to 0.1 mm steps before being written with more decimals;
- refuse missing or duplicated slices, non-uniform gaps and gantry tilt; accept the
  jitter of rounded positions (with one warning naming the largest residual).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GeometryError, InputError, SeveralSeriesError
from ..volume import axcodes, slice_plane
from .dicom_slices import VOLUME_KEYS, SliceRecord
from .lps import flip_lps_ras

__all__ = ["SeriesCandidate", "SeriesInfo", "SliceGrid", "fit_slice_grid", "group_candidates", "stack_volumes"]

#: Direction cosines closer than this (per component) are the same orientation.
ORIENTATION_ATOL = 1e-3
#: Floating-point noise (mm) in positions written at full precision.
POSITION_NOISE_MM = 1e-3
#: The largest position error (mm) put down to rounding of the stored strings (0.1 mm steps
#: give 0.17 mm; whole-millimetre rounding would exceed it and is not accepted as exact).
MAX_ROUNDING_MM = 0.25
#: ... and never more than this fraction of the slice spacing (thin slices with coarsely
#: rounded positions cannot be told from a missing slice, so they are refused).
MAX_ROUNDING_OF_SPACING = 0.25
#: The rounding step (mm) some scanners apply before writing more decimals: GE writes
#: '-78.3063', '-79.3063', '-80.2063' (0.1 mm steps around a constant offset).
COARSE_STEP_MM = 0.1
#: A least-squares line through positions each off by at most E is off by at most this times
#: E at any slice (the largest row sum of |hat matrix|, 5/3 at the ends of a long stack).
LSQ_PLACE_FACTOR = 5.0 / 3.0
#: ``SliceGrid.fit`` values: the line through the end slices, or the least-squares line.
FIT_END_SLICES = "end slices"
FIT_LEAST_SQUARES = "least squares"


@dataclass
class SeriesCandidate:
    """The images of one series that share orientation and matrix.

    ``id`` is the SeriesInstanceUID, with ``#k`` appended when one UID holds
    several stacks (a three-plane localizer, for example).
    """

    id: str
    records: list[SliceRecord]

    @property
    def first(self) -> SliceRecord:
        return self.records[0]


@dataclass(frozen=True)
class SeriesInfo:
    """A line of ``list_series``: what a user needs to pick a series."""

    id: str
    series_uid: str
    number: int | None
    description: str
    n_images: int
    n_volumes: int | None
    n_slices: int | None
    matrix: tuple[int, int]
    n_files: int
    image_type: str = ""
    #: The anatomical plane of the slices (``axial``, ``coronal``, ``sagittal``) and its tilt (degrees).
    orientation: str = ""
    tilt_deg: float | None = None
    #: RAS axis codes of the voxel axes (columns, rows, slices), e.g. ``"LPS"``; spacing (mm) along them.
    axcodes: str = ""
    spacing: tuple[float, float, float] | None = None
    #: Why the series would not load (a missing slice, tilt...), else empty.
    problem: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def plane(self) -> str:
        """The orientation in words: ``axial``, or ``coronal (12.0 deg oblique)``."""
        if not self.orientation:
            return "?"
        tilt = self.tilt_deg or 0.0
        return self.orientation if tilt < 0.5 else f"{self.orientation} ({tilt:.1f} deg oblique)"

    def summary(self) -> str:
        """One line: id, number, description, slice count."""
        count = self.n_slices or self.n_images
        slices = f"{count} {'slice' if self.n_slices else 'image'}{'s' if count != 1 else ''}"
        if self.n_volumes and self.n_volumes > 1:
            slices += f" x {self.n_volumes} volumes"
        number = "?" if self.number is None else self.number
        kind = f", {self.image_type}" if self.image_type else ""
        return f"{self.id} (#{number} '{self.description}', {slices}{kind})"


def group_candidates(records: Sequence[SliceRecord]) -> list[SeriesCandidate]:
    """Group records by SeriesInstanceUID, then orientation, matrix, pixel spacing and image
    type (magnitude and phase, or two reconstructions, are different images, not volumes).

    Candidates are ordered by series number, then UID, then the order of first appearance.
    """
    by_uid: dict[str, list[SliceRecord]] = {}
    for rec in records:
        by_uid.setdefault(rec.series_uid, []).append(rec)
    candidates: list[SeriesCandidate] = []
    for uid, recs in by_uid.items():
        groups: list[list[SliceRecord]] = []
        for rec in recs:
            for group in groups:
                ref = group[0]
                if (
                    (rec.rows, rec.cols) == (ref.rows, ref.cols)
                    and rec.keys.get("image_type") == ref.keys.get("image_type")
                    and np.allclose(rec.pixel_spacing, ref.pixel_spacing, rtol=1e-4, atol=1e-5)
                    and np.allclose(rec.row_cosine, ref.row_cosine, atol=ORIENTATION_ATOL)
                    and np.allclose(rec.col_cosine, ref.col_cosine, atol=ORIENTATION_ATOL)
                ):
                    group.append(rec)
                    break
            else:
                groups.append([rec])
        for k, group in enumerate(groups):
            cid = uid if len(groups) == 1 else f"{uid}#{k + 1}"
            candidates.append(SeriesCandidate(cid, group))
    candidates.sort(key=lambda c: (c.first.series_number is None, c.first.series_number or 0, c.id))
    return candidates


def describe(candidate: SeriesCandidate) -> SeriesInfo:
    """The :class:`SeriesInfo` of a candidate (volume split attempted, never raises)."""
    first = candidate.first
    problem = ""
    try:
        volumes, _ = split_volumes(candidate.records, Path("."))
        n_volumes, n_slices = len(volumes), len(volumes[0])
    except GeometryError as exc:
        n_volumes = n_slices = None
        volumes, problem = [[first]], exc.problem
    with warnings.catch_warnings():  # describing is not loading: load() gives the warnings
        warnings.simplefilter("ignore")
        try:
            _, affine = stack_geometry(volumes[0], Path("."), warn=False)
            voxel: tuple[float, float, float] | None = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
        except GeometryError as exc:
            _, affine = stack_geometry([first], Path("."), warn=False)  # one slice: the orientation still holds
            voxel, problem = None, problem or exc.problem
    plane, tilt = slice_plane(affine, 2)
    return SeriesInfo(
        id=candidate.id,
        series_uid=first.series_uid,
        number=first.series_number,
        description=first.series_description,
        n_images=len(candidate.records),
        n_volumes=n_volumes,
        n_slices=n_slices,
        matrix=(first.rows, first.cols),
        n_files=len({r.path for r in candidate.records}),
        image_type="\\".join(str(v) for v in first.keys.get("image_type") or ()),
        orientation=plane,
        tilt_deg=round(tilt, 3),
        axcodes="".join(axcodes(affine)),
        spacing=voxel,
        problem=problem,
    )


def _projection(records: Sequence[SliceRecord], normal: np.ndarray) -> np.ndarray:
    return np.array([float(r.position @ normal) for r in records])


def _rounding_steps(records: Sequence[SliceRecord], normal: np.ndarray) -> tuple[np.ndarray, bool]:
    """Per slice and coordinate, the rounding step (mm) of its stored position, shape (n, 3).

    The step of the stored decimals (``position_quanta``), raised to :data:`COARSE_STEP_MM`
    for a coordinate whose every value lies a whole number of 0.1 mm steps (within
    :data:`POSITION_NOISE_MM`) from the first slice's: rounded to 0.1 mm around a constant
    offset, then written with more decimals (GE). The coarse step is assumed only while its
    rounding (half a step per coordinate, projected on ``normal``) stays within
    :data:`MAX_ROUNDING_OF_SPACING` of the smallest gap between distinct positions. Coordinates
    constant along the stack are 0: they cancel out of every check.

    Returns:
        ``(steps, coarse)``: the steps, and whether any was raised to the coarse step.
    """
    positions = np.array([r.position for r in records])
    stored = np.array([r.position_quanta for r in records], dtype=np.float64)
    if len(records) < 2:
        return stored, False
    varying = np.ptp(positions, axis=0) > 0
    in_steps = (positions - positions[0]) / COARSE_STEP_MM
    on_grid = varying & np.all(np.abs(in_steps - np.round(in_steps)) * COARSE_STEP_MM <= POSITION_NOISE_MM, axis=0)
    coarse = np.where(on_grid, COARSE_STEP_MM, 0.0)
    gaps = np.diff(np.sort(positions @ normal))
    distinct = gaps[gaps > POSITION_NOISE_MM]
    if not distinct.size or 0.5 * float(coarse @ np.abs(normal)) > MAX_ROUNDING_OF_SPACING * float(distinct.min()):
        coarse[:] = 0.0
    steps = np.maximum(stored, coarse) * varying
    return steps, bool(np.any(steps > stored * varying))


def _rounding_errors(steps: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Per slice, the largest error (mm) of its position projected on ``normal`` that rounding
    to ``steps`` (n, 3) can make: half a step per coordinate, weighted by the normal; each
    capped at ``MAX_ROUNDING_MM / 2``: coarser is not rounding any more."""
    return np.minimum(0.5 * steps @ np.abs(normal), MAX_ROUNDING_MM / 2)


def _position_tolerance(records: Sequence[SliceRecord], normal: np.ndarray) -> float:
    """How far (mm) two stored positions of one place may differ by rounding alone."""
    steps, _ = _rounding_steps(records, normal)
    return POSITION_NOISE_MM + 2.0 * float(np.max(_rounding_errors(steps, normal)))


def _valid_split(
    groups: list[list[SliceRecord]], normal: np.ndarray, tol: float
) -> bool:
    """Each group has distinct positions, and all groups the same set of positions."""
    ref = None
    for group in groups:
        d = np.sort(_projection(group, normal))
        if len(d) > 1 and np.min(np.diff(d)) <= tol:
            return False
        if ref is None:
            ref = d
        elif len(d) != len(ref) or np.max(np.abs(d - ref)) > tol:
            return False
    return True


def _distinct(group: Sequence[SliceRecord], normal: np.ndarray, tol: float) -> bool:
    d = np.sort(_projection(group, normal))
    return len(d) < 2 or bool(np.min(np.diff(d)) > tol)


def split_volumes(
    records: Sequence[SliceRecord], where: Path
) -> tuple[list[list[SliceRecord]], list[dict[str, Any]]]:
    """Split a candidate into volumes of one slice per position each.

    Slices that repeat a position belong to different volumes; the tags that tell
    them apart are found by trying the smallest set of :data:`VOLUME_KEYS` that
    gives volumes with identical slice positions.

    Returns:
        ``(volumes, keys)``: records per volume (unsorted), and each volume's keys.

    Raises:
        GeometryError: duplicated slices, or volumes with different slice positions.
    """
    normal = records[0].normal
    tol = _position_tolerance(records, normal)
    d = _projection(records, normal)
    order = np.argsort(d, kind="stable")
    close = np.diff(d[order]) <= tol
    if not np.any(close):
        return [list(records)], [_shared_keys(records)]
    varying = [
        k for k in VOLUME_KEYS if len({repr(r.keys.get(k)) for r in records}) > 1
    ]
    uneven: tuple[tuple[str, ...], list[list[SliceRecord]]] | None = None
    for size in range(1, len(varying) + 1):
        for subset in itertools.combinations(varying, size):
            buckets: dict[tuple[str, ...], list[SliceRecord]] = {}
            for rec in records:
                buckets.setdefault(tuple(repr(rec.keys.get(k)) for k in subset), []).append(rec)
            groups = list(buckets.values())
            if _valid_split(groups, normal, tol):
                split = [{k: g[0].keys.get(k) for k in subset} for g in groups]
                ranked = sorted(range(len(groups)), key=lambda i: _sort_key(split[i]))
                return [groups[i] for i in ranked], [_shared_keys(groups[i]) for i in ranked]
            if uneven is None and all(_distinct(g, normal, tol) for g in groups):
                uneven = (subset, groups)
    if uneven is not None:  # the tags split the volumes, but one lacks slices the others have
        subset, groups = uneven
        full = max(groups, key=len)
        short = min(groups, key=len)
        missing = [p for p in _projection(full, normal) if np.min(np.abs(_projection(short, normal) - p)) > tol]
        keys = ", ".join(f"{k}={short[0].keys.get(k)!r}" for k in subset)
        raise GeometryError(
            f"missing slice: the volume with {keys} has {len(short)} slices, another {len(full)}"
            f" (missing at {', '.join(f'{m:.2f}' for m in missing[:3])} mm along the normal)",
            where,
            "export the complete series; every volume needs every slice",
        )
    i = int(np.argmax(close))
    a, b = records[order[i]], records[order[i + 1]]
    same = a.sop_instance_uid == b.sop_instance_uid and a.frame == b.frame and a.tile == b.tile
    problem = (
        f"duplicated slice: {a.label} and {b.label} are the same image (SOPInstanceUID {a.sop_instance_uid})"
        if same
        else f"duplicated slice: {a.label} and {b.label} lie at the same position"
        f" ({d[order[i]]:.3f} mm along the normal) and no echo, time or diffusion tag tells them apart"
    )
    raise GeometryError(problem, where, "remove the duplicate file(s) from the input")


def _shared_keys(records: Sequence[SliceRecord]) -> dict[str, Any]:
    """The volume keys (echo, b-value, gradient...) that every slice of a volume shares."""
    first = records[0].keys
    return {k: v for k, v in first.items() if all(r.keys.get(k) == v for r in records)}


def _sort_key(keys: dict[str, Any]) -> tuple:
    """Order volumes by their keys: numbers numerically, missing values first (a b0 without
    a gradient before the diffusion directions), anything else by its text."""

    def one(value: Any) -> tuple:
        if value is None:
            return (0, ())
        if isinstance(value, (int, float)):
            return (1, (float(value),))
        if isinstance(value, tuple) and all(isinstance(v, (int, float)) for v in value):
            return (1, tuple(float(v) for v in value))
        return (2, (repr(value),))

    return tuple(one(v) for v in keys.values())


@dataclass(frozen=True)
class SliceGrid:
    """The uniform grid ``origin + k * step * normal`` (LPS, mm) fitted to a sorted stack.

    Attributes:
        origin: (3,) LPS mm, the grid place of slice 0 (first along the normal).
        step: slice spacing (mm) along the normal.
        residuals: (n,) mm, each slice's position projected on the normal minus its place.
        errors: (n,) mm, the largest projected error rounding of each stored position explains.
        steps: (n, 3) mm, the rounding step of each position's coordinates (see ``_rounding_steps``).
        fit: :data:`FIT_END_SLICES` (span / (n - 1) from the first slice's position: positions
            exact to their stored decimals, as SimpleITK reads them) or :data:`FIT_LEAST_SQUARES`
            (positions rounded more coarsely than their decimals: the least-squares line through
            all positions, ``p_k = origin + k * step * normal``, averages their rounding out).
    """

    origin: np.ndarray
    step: float
    residuals: np.ndarray
    errors: np.ndarray
    steps: np.ndarray
    fit: str

    def meta(self) -> dict[str, Any]:
        """``meta["slice_grid"]``: ``spacing_mm`` (the fitted slice spacing), ``max_residual_mm``
        (the largest distance of a slice from its place on that grid, along the normal),
        ``n_slices`` and ``fit`` ("least squares" or "end slices")."""
        return {
            "spacing_mm": float(self.step),
            "max_residual_mm": float(np.max(np.abs(self.residuals))),
            "n_slices": int(len(self.residuals)),
            "fit": self.fit,
        }


def fit_slice_grid(ordered: Sequence[SliceRecord]) -> SliceGrid:
    """The uniform grid of a stack sorted along its normal (at least 2 slices); no checks.

    Positions whose rounding the stored decimals explain (exact stacks on a 0.1 mm grid among
    them): span / (n - 1) and the first slice's position. Positions rounded to 0.1 mm around an
    offset that the decimals do not explain (more decimals written than kept):
    the least-squares fit of all positions, ``d_k = a + k * step`` along the normal and the mean
    in-plane position, which averages every slice's rounding out instead of keeping the end
    slices' (up to 0.09 mm each).
    """
    normal = ordered[0].normal
    positions = np.array([r.position for r in ordered])
    d = positions @ normal
    n = len(d)
    k = np.arange(n, dtype=np.float64)
    steps, coarse = _rounding_steps(ordered, normal)
    if coarse:  # on a 0.1 mm grid; but an exact stack (3.0 mm steps written as 12.3000) is too: keep it exact
        exact = np.array([r.position_quanta for r in ordered], dtype=np.float64) * (np.ptp(positions, axis=0) > 0)
        exact_errors = _rounding_errors(exact, normal)
        line = d - (d[0] + k * (d[-1] - d[0]) / (n - 1))
        if np.all(np.abs(line) <= exact_errors + max(exact_errors[0], exact_errors[-1]) + POSITION_NOISE_MM):
            steps, coarse = exact, False
    errors = _rounding_errors(steps, normal)
    if coarse:
        kc = k - k.mean()
        step = float(kc @ (d - d.mean()) / (kc @ kc))
        origin = positions.mean(axis=0) - k.mean() * step * normal
        fit = FIT_LEAST_SQUARES
    else:
        step = float((d[-1] - d[0]) / (n - 1))
        origin = positions[0].copy()
        fit = FIT_END_SLICES
    residuals = d - (float(origin @ normal) + k * step)
    return SliceGrid(origin, step, residuals, errors, steps, fit)


def stack_geometry(
    slices: Sequence[SliceRecord], where: Path, warn: bool = True
) -> tuple[list[SliceRecord], np.ndarray]:
    """Sort one volume's slices along the normal and compute its RAS affine.

    The affine's columns are ``row_cosine * column spacing``, ``col_cosine * row
    spacing`` and ``normal * slice spacing`` (LPS), its origin the place of the first
    slice along the normal; then LPS -> RAS. Slice spacing and origin come from
    :func:`fit_slice_grid` (span / (n - 1), or the least-squares grid of coarsely rounded
    positions). ``warn``: warn about jittering positions (False for the second and later
    volumes of a series: they share the first one's grid).

    Raises:
        GeometryError: missing slices, non-uniform spacing or gantry tilt.
    """
    first = slices[0]
    normal = first.normal
    d = _projection(slices, normal)
    order = np.argsort(d, kind="stable")
    ordered = [slices[i] for i in order]
    d = d[order]
    n = len(ordered)
    origin = ordered[0].position
    if n == 1:
        step = first.slice_thickness or first.spacing_between_slices
        if not step or step <= 0:
            warnings.warn(
                f"{where}: single slice without SliceThickness; assuming 1 mm through-plane",
                stacklevel=3,
            )
            step = 1.0
    else:
        grid = fit_slice_grid(ordered)
        _check_tilt(ordered, normal, grid.steps, where)  # first: a refused stack gives no jitter warning
        _check_spacing(ordered, d, grid, where, warn)
        step, origin = grid.step, grid.origin
    row_spacing, col_spacing = first.pixel_spacing
    lps = np.eye(4)
    lps[:3, 0] = first.row_cosine * col_spacing
    lps[:3, 1] = first.col_cosine * row_spacing
    lps[:3, 2] = normal * step
    lps[:3, 3] = origin
    return ordered, flip_lps_ras(lps)


def _check_spacing(
    ordered: Sequence[SliceRecord], d: np.ndarray, grid: SliceGrid, where: Path, warn: bool = True
) -> None:
    """Every slice at its place on the fitted grid, and every gap equal to its step, within
    what rounding of the stored positions explains.

    ``d`` (n,) are the sorted projections on the normal (mm); ``grid.errors`` bound each one's
    rounding, E_k. A slice's residual is bounded by E_k plus the error of the fitted line at
    its place: the larger end error for the line through the end slices, 5/3 of the largest
    error for the least-squares line. A gap is bounded by its two slices' errors plus the
    step's own (2 * ends / (n - 1), resp. 3n / (n^2 - 1) times the largest error). Places
    catch small errors that add up along the stack; gaps catch a single jump spread over the
    line. Both bounds are capped at ``MAX_ROUNDING_MM`` and at a quarter of the spacing.
    Accepted jitter gives one warning (when ``warn``) naming the largest residual.
    """
    n = len(d)
    step, errors = grid.step, grid.errors
    if grid.fit == FIT_LEAST_SQUARES:
        line = LSQ_PLACE_FACTOR * float(errors.max())
        step_error = 3.0 * n / (n * n - 1) * float(errors.max())
    else:
        line = float(max(errors[0], errors[-1]))
        step_error = 2.0 * line / (n - 1)
    cap = min(MAX_ROUNDING_MM, MAX_ROUNDING_OF_SPACING * step)
    place_tol = np.minimum(errors + line, cap) + POSITION_NOISE_MM
    gap_tol = np.minimum(errors[:-1] + errors[1:] + step_error, cap) + POSITION_NOISE_MM
    residual = grid.residuals
    gaps = np.diff(d)
    worst = float(np.max(np.abs(residual)))
    if np.all(np.abs(residual) <= place_tol) and np.all(np.abs(gaps - step) <= gap_tol):
        if not warn or worst <= POSITION_NOISE_MM:
            return
        if grid.fit == FIT_LEAST_SQUARES:
            warnings.warn(
                f"{where}: slice positions jitter by up to {worst:.3f} mm ({100 * worst / step:.1f}% of the"
                f" spacing) off a uniform grid, as with positions rounded to {COARSE_STEP_MM:g} mm steps"
                f" (coarser than their stored decimals); using the least-squares grid, spacing {step:.4f} mm",
                stacklevel=4,
            )
        else:
            warnings.warn(
                f"{where}: slice positions jitter by up to {worst:.3f} mm ({100 * worst / step:.1f}% of the"
                f" spacing), as with positions rounded to the stored decimals; using span / (n - 1) = {step:.4f} mm",
                stacklevel=4,
            )
        return
    typical = float(np.median(gaps))
    ratio = gaps / typical
    bad = int(np.argmax(np.abs(gaps - typical)))
    a, b = ordered[bad].label, ordered[bad + 1].label
    if round(ratio[bad]) >= 2 and abs(ratio[bad] - round(ratio[bad])) * typical <= max(gap_tol[bad], 0.05 * typical):
        missing = int(round(ratio[bad])) - 1
        raise GeometryError(
            f"missing slice: {missing} slice(s) missing between {a} and {b}"
            f" (gap {gaps[bad]:.3f} mm, usual spacing {typical:.3f} mm)",
            where,
            "export the complete series; every slice must be present",
        )
    raise GeometryError(
        f"non-uniform slice spacing: gaps from {gaps.min():.3f} to {gaps.max():.3f} mm, a slice up to"
        f" {worst:.3f} mm off a uniform grid (largest gap change between {a} and {b})",
        where,
        "resample the series to uniform spacing first (e.g. with dcm2niix or 3D Slicer)",
    )


def _check_tilt(ordered: Sequence[SliceRecord], normal: np.ndarray, steps: np.ndarray, where: Path) -> None:
    """The line through the slice positions runs along the normal (no gantry tilt).

    Allowed drift off the normal: rounding of the two end positions to ``steps`` (n, 3; half
    a step per coordinate each: up to 0.17 mm for 0.1 mm steps on all three) plus the
    direction error of a rounded ImageOrientationPatient (about two steps per unit length)
    over the span, and at least 0.01 mm.
    """
    first, last = ordered[0], ordered[-1]
    span = last.position - first.position
    off_axis = float(np.linalg.norm(span - (span @ normal) * normal))
    rounding = 0.5 * float(np.linalg.norm(steps[0]) + np.linalg.norm(steps[-1]))
    orientation = 2.0 * max(first.orientation_quantum, last.orientation_quantum) * float(np.linalg.norm(span))
    if off_axis > max(0.01, rounding + orientation + POSITION_NOISE_MM):
        angle = np.degrees(np.arctan2(off_axis, abs(span @ normal)))
        raise GeometryError(
            f"gantry tilt or sheared stack: slice positions drift {off_axis:.3f} mm"
            f" ({angle:.2f} deg) off the slice normal",
            where,
            "correct the tilt first (dcm2niix does so by default), then load its NIfTI",
        )


def stack_volumes(
    records: Sequence[SliceRecord], where: Path
) -> tuple[list[list[SliceRecord]], list[dict[str, Any]], np.ndarray]:
    """Volumes of one candidate, each sorted along the normal, and their common RAS affine."""
    volumes, keys = split_volumes(records, where)
    sizes = {len(v) for v in volumes}
    if len(sizes) > 1:
        raise GeometryError(
            f"volumes hold different slice counts {sorted(sizes)}: a slice is missing",
            where,
            "export the complete series",
        )
    ordered, affine = [], None
    for volume in volumes:
        sorted_slices, vol_affine = stack_geometry(volume, where, warn=affine is None)
        if affine is None:
            affine = vol_affine
        elif not np.allclose(vol_affine, affine, atol=_position_tolerance(volume, volume[0].normal)):
            raise GeometryError(
                "volumes of the series do not share one geometry", where, "load each volume alone"
            )
        ordered.append(sorted_slices)
    assert affine is not None
    return ordered, keys, affine


def pick(candidates: Sequence[SeriesCandidate], series: str | None, where: Path) -> SeriesCandidate:
    """The candidate named by ``series`` (an id or a SeriesInstanceUID), or the only one."""
    if not candidates:
        raise InputError("holds no DICOM image series", where, "point mrisr at a folder of DICOM images")
    if series is None:
        if len(candidates) == 1:
            return candidates[0]
        found = [describe(c) for c in candidates]
        raise SeveralSeriesError(
            f"holds {len(candidates)} series: {'; '.join(info.summary() for info in found)}",
            where,
            "pick one with --series UID (series=UID in Python)",
            series=found,
        )
    matches = [c for c in candidates if series in (c.id, c.first.series_uid)]
    if len(matches) == 1:
        return matches[0]
    listing = ", ".join(c.id for c in candidates)
    if not matches:
        raise InputError(f"no series {series!r}; it holds {listing}", where, "pick one of those ids")
    raise InputError(
        f"series {series!r} holds {len(matches)} stacks: {', '.join(c.id for c in matches)}",
        where,
        "pick one of those ids",
    )
