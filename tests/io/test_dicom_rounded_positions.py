"""Slice positions rounded to 0.1 mm steps around a constant offset, then written with 4 decimals
(GE Signa: y = '-78.3063', '-79.3063', '-80.2063'): mrisr fits a least-squares grid, loads the
series within 0.1 mm of the unrounded truth with one warning naming the largest residual, and
still refuses missing, duplicated and unevenly spaced slices and real tilt (issue 12).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import phantom_affine, refused
from dicom_factory import LPS_TO_RAS, corner_distance, seeded_data, sitk_series, tag_projections, write_series

from mrisr.errors import GeometryError
from mrisr.io import load
from mrisr.volume import world_corners

#: In-plane matrix (columns, rows): small, the whole file runs in seconds.
MATRIX = (8, 8)
#: The scanner's rounding step (mm) before it writes 4 decimals.
STEP_MM = 0.1


pytestmark = pytest.mark.usefixtures("quiet_itk")


def round_around(positions: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """(n, 3) LPS positions rounded to 0.1 mm steps around ``offset`` (3,) mm, as GE does."""
    return offset + STEP_MM * np.round((positions - offset) / STEP_MM)


def true_positions(affine: np.ndarray, n: int) -> np.ndarray:
    """(n, 3) unrounded LPS positions of the slices of a RAS affine."""
    lps = LPS_TO_RAS @ affine
    return lps[:3, 3] + np.arange(n)[:, None] * lps[:3, 2]


def write_rounded(folder: Path, affine: np.ndarray, n: int, seed: int) -> list[Path]:
    """A series of ``n`` slices whose positions are rounded to 0.1 mm around a random constant
    offset (seeded), written "%.4f"; the written files in slice order."""
    offset = np.random.default_rng(seed + 1000).uniform(0.0, STEP_MM, 3)
    stored = round_around(true_positions(affine, n), offset)
    return write_series(folder, seeded_data((*MATRIX, n), seed), affine, positions=stored, position_decimals=4)


def lsq_residual(files: list[Path]) -> tuple[float, float]:
    """(slope, largest |residual|) of the least-squares line through the stored positions
    projected on the slice normal (row x col of the stored ImageOrientationPatient), computed
    here straight from the tags."""
    d = tag_projections(files)
    k = np.arange(len(d))
    slope, intercept = np.polyfit(k, d, 1)
    return float(slope), float(np.max(np.abs(d - (intercept + slope * k))))


def load_recording(folder: Path) -> tuple:
    """``load(folder)`` and the UserWarnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume = load(folder)
    return volume, [w for w in caught if issubclass(w.category, UserWarning)]


# Signed axis orders of tests/conftest.AXIS_ORDERS (voxel axis 2 runs along world perm[2]):
# 0-7 and 16-23 axial, 8-15 and 32-39 coronal, 24-31 and 40-47 sagittal.
CASES = [
    # (axis order, oblique degrees, slice spacing mm, slices, seed)
    (0, 0.0, 7.0, 20, 1),
    (5, 12.0, 1.0, 16, 2),
    (18, 30.0, 3.0, 12, 3),
    (9, 8.0, 5.0, 20, 4),
    (14, 35.0, 2.0, 14, 5),
    (33, 20.0, 6.5, 10, 6),
    (26, 15.0, 1.5, 18, 7),
    (29, 40.0, 4.0, 12, 8),
    (44, 25.0, 7.0, 20, 9),
    (47, 45.0, 1.2, 16, 10),
    (3, 45.0, 2.7, 15, 11),
    (38, 10.0, 3.3, 13, 12),
]


@pytest.mark.parametrize(("order", "oblique", "spacing", "n", "seed"), CASES,
                         ids=[f"order{c[0]}-{c[1]:g}deg-{c[2]:g}mm" for c in CASES])
def test_rounded_oblique_series_load_within_0_1_mm(order: int, oblique: float, spacing: float, n: int,
                                                   seed: int, tmp_path: Path) -> None:
    """Axial, coronal, sagittal and oblique series at 1-7 mm: the corners lie within 0.1 mm of the
    unrounded truth; SimpleITK (first slice's rounded position, span / (n - 1)) within 0.15 mm of
    mrisr's (each is within about 0.1 mm of the truth, from opposite sides at worst)."""
    affine = phantom_affine(order, seed=seed, spacing=(0.9, 1.1, spacing), oblique_deg=oblique)
    folder = tmp_path / "s"
    files = write_rounded(folder, affine, n, seed)

    volume, caught = load_recording(folder)
    truth = world_corners(affine, (*MATRIX, n))
    assert volume.shape == (*MATRIX, n)
    assert corner_distance(volume.corners, truth) < 0.1
    assert len(caught) <= 1, [str(w.message) for w in caught]

    slope, worst = lsq_residual(files)
    grid = volume.meta["slice_grid"]
    assert grid["n_slices"] == n
    # rounding that left the stack exact (an axial stack whose z steps are whole 0.1 mm) keeps the exact fit
    assert grid["fit"] == ("least squares" if worst > 1e-6 else "end slices")
    assert grid["spacing_mm"] == pytest.approx(abs(slope), abs=1e-9)
    assert grid["spacing_mm"] == pytest.approx(spacing, abs=0.02)
    assert grid["max_residual_mm"] == pytest.approx(worst, abs=1e-9)
    assert volume.spacing[2] == pytest.approx(grid["spacing_mm"], abs=1e-9)

    itk_array, itk_affine = sitk_series(folder)
    assert itk_array.shape == volume.shape
    assert corner_distance(volume.corners, world_corners(itk_affine, itk_array.shape)) < 0.15


@pytest.mark.parametrize("order", range(48), ids=lambda o: f"order{o}")
def test_rounded_series_every_axis_order(order: int, tmp_path: Path) -> None:
    """All 48 signed axis orders, each with a seeded draw of obliquity (0-45 deg), slice spacing
    (1-7 mm), slice count and offset: within 0.1 mm of the truth, and of SimpleITK's 0.15 mm."""
    rng = np.random.default_rng(100 + order)
    spacing, oblique, n = float(rng.uniform(1.0, 7.0)), float(rng.uniform(0.0, 45.0)), int(rng.integers(6, 21))
    affine = phantom_affine(order, seed=100 + order, spacing=(0.9, 1.1, spacing), oblique_deg=oblique)
    folder = tmp_path / "s"
    write_rounded(folder, affine, n, 100 + order)
    volume, caught = load_recording(folder)
    assert len(caught) <= 1
    assert corner_distance(volume.corners, world_corners(affine, (*MATRIX, n))) < 0.1
    assert volume.meta["slice_grid"]["spacing_mm"] == pytest.approx(spacing, abs=0.02)
    itk_array, itk_affine = sitk_series(folder)
    assert corner_distance(volume.corners, world_corners(itk_affine, itk_array.shape)) < 0.15


def ge_signa_affine() -> np.ndarray:
    """The RAS affine of the GE Signa 1.5 T oblique axial series of issue 12: 8 deg about L-R,
    0.9375 mm pixels, 7 mm slice spacing; y steps -0.973 mm per slice (LPS)."""
    sin = 0.139
    cos = float(np.sqrt(1 - sin**2))
    lps = np.eye(4)
    lps[:3, 0] = [0.9375, 0.0, 0.0]  # along a row: L
    lps[:3, 1] = [0.0, 0.9375 * cos, 0.9375 * sin]  # down a column: P, a little S
    lps[:3, 2] = [0.0, -7.0 * sin, 7.0 * cos]  # row x col, 7 mm
    lps[:3, 3] = [-117.84, -78.29, -35.21]
    return LPS_TO_RAS @ lps


GE_OFFSET = np.array([0.0437, 0.0937, 0.0412])


def write_ge_like(folder: Path, slices: list[int] | None = None, positions: np.ndarray | None = None) -> list[Path]:
    """The GE-like series: 20 slices, 7 mm apart, 5 mm thick, positions rounded to 0.1 mm around
    ``GE_OFFSET`` and written with 4 decimals."""
    affine = ge_signa_affine()
    stored = round_around(true_positions(affine, 20) if positions is None else positions, GE_OFFSET)
    return write_series(folder, seeded_data((*MATRIX, 20), 20), affine, positions=stored, position_decimals=4,
                        slice_indices=slices, extra={"SliceThickness": "5", "SpacingBetweenSlices": "7"})


def test_ge_signa_oblique_axial_loads_with_one_warning(tmp_path: Path) -> None:
    """Issue 12: refused before ('gaps from 6.958 to 7.071 mm'); now loaded within 0.1 mm of the
    unrounded truth, 7 mm spacing (never the 5 mm SliceThickness), one warning naming the
    largest residual from the least-squares grid."""
    files = write_ge_like(tmp_path / "ge")
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert [str(ds.ImagePositionPatient[1]) for ds in headers[:3]] == ["-78.3063", "-79.3063", "-80.2063"]
    stored = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in headers])
    gaps = np.diff(stored @ (LPS_TO_RAS @ ge_signa_affine())[:3, 2] / 7.0)
    assert np.ptp(gaps) > 0.05, "the rounding must make the gaps jitter beyond the stored decimals"

    volume, caught = load_recording(tmp_path / "ge")
    _, worst = lsq_residual(files)
    assert len(caught) == 1, [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert f"up to {worst:.3f} mm" in message and "least-squares" in message
    assert corner_distance(volume.corners, world_corners(ge_signa_affine(), (*MATRIX, 20))) < 0.1
    assert volume.spacing[2] == pytest.approx(7.0, abs=0.01)
    grid = volume.meta["slice_grid"]
    assert grid == {"spacing_mm": pytest.approx(7.0, abs=0.01), "max_residual_mm": pytest.approx(worst, abs=1e-9),
                    "n_slices": 20, "fit": "least squares"}
    assert 0.0 < grid["max_residual_mm"] < 0.1


def test_ge_like_missing_slice_refused(tmp_path: Path) -> None:
    write_ge_like(tmp_path / "s", slices=[k for k in range(20) if k != 9])
    with refused(GeometryError, "missing slice: 1 slice"):
        load(tmp_path / "s")


def test_ge_like_duplicated_slice_refused(tmp_path: Path) -> None:
    files = write_ge_like(tmp_path / "s")
    shutil.copy(files[6], tmp_path / "s" / "copy_of_slice_7.dcm")
    with refused(GeometryError, "duplicated slice"):
        load(tmp_path / "s")


@pytest.mark.parametrize(("where", "change"), [(5, 0.5), (1, 0.5), (8, -0.5), (10, 0.5)],
                         ids=["middle", "second-gap", "short-gap", "last-gap"])
def test_uneven_gap_at_3_mm_refused_despite_coarse_rounding(tmp_path: Path, where: int, change: float) -> None:
    """3 mm slices rounded around an offset, one gap 0.5 mm longer or shorter: rounding explains
    at most about 0.2 mm of a gap, so the series is refused as non-uniform."""
    affine = phantom_affine(21, seed=30, spacing=(0.9, 0.9, 3.0), oblique_deg=25.0)
    lps = LPS_TO_RAS @ affine
    n = 12
    offsets = np.concatenate([[0.0], np.cumsum([3.0 + (change if k == where else 0.0) for k in range(n - 1)])])
    positions = lps[:3, 3] + offsets[:, None] * lps[:3, 2] / 3.0
    stored = round_around(positions, np.array([0.031, 0.067, 0.012]))
    write_series(tmp_path / "s", seeded_data((*MATRIX, n), 31), affine, positions=stored, position_decimals=4)
    with refused(GeometryError, "non-uniform"):
        load(tmp_path / "s")


def test_small_real_tilt_refused_despite_coarse_rounding(tmp_path: Path) -> None:
    """Half a degree of tilt over 20 slices of 5 mm (0.8 mm of drift) is no rounding."""
    affine = phantom_affine(2, seed=40, spacing=(0.9, 0.9, 5.0), oblique_deg=15.0)
    lps = LPS_TO_RAS @ affine
    in_plane = lps[:3, 0] / np.linalg.norm(lps[:3, 0])
    n = 20
    positions = true_positions(affine, n) + np.arange(n)[:, None] * 5.0 * np.tan(np.radians(0.5)) * in_plane
    stored = round_around(positions, np.array([0.05, 0.02, 0.08]))
    write_series(tmp_path / "s", seeded_data((*MATRIX, n), 41), affine, positions=stored, position_decimals=4)
    with refused(GeometryError, "tilt"):
        load(tmp_path / "s")


def test_ge_like_two_echoes_load_as_channels(tmp_path: Path) -> None:
    """A 4D series on the rounded grid splits into its echoes, each with the same fitted grid."""
    affine = ge_signa_affine()
    stored = round_around(true_positions(affine, 20), GE_OFFSET)
    uids = {"series_uid": pydicom.uid.generate_uid(), "study_uid": pydicom.uid.generate_uid(),
            "frame_uid": pydicom.uid.generate_uid()}
    for echo in (1, 2):
        write_series(tmp_path / "s", seeded_data((*MATRIX, 20), 50 + echo), affine, positions=stored,
                     position_decimals=4, extra={"EchoNumbers": echo, "EchoTime": f"{10 * echo}"},
                     name_prefix=f"E{echo}", first_instance=1 + 20 * (echo - 1), **uids)
    volume, caught = load_recording(tmp_path / "s")
    assert volume.n_channels == 2 and volume.shape == (*MATRIX, 20)
    assert len(caught) == 1
    assert corner_distance(volume.corners, world_corners(affine, (*MATRIX, 20))) < 0.1


def test_exact_four_decimal_positions_keep_the_tight_check(tmp_path: Path) -> None:
    """Positions exact to their 4 decimals (not on a 0.1 mm grid) get no 0.1 mm allowance: one
    slice 0.1 mm off its place among 3 mm oblique slices is refused."""
    affine = phantom_affine(9, seed=60, spacing=(0.9, 0.9, 3.0), oblique_deg=20.0)
    lps = LPS_TO_RAS @ affine
    n = 12
    positions = true_positions(affine, n) + np.where(np.arange(n) == 6, 0.1, 0.0)[:, None] * lps[:3, 2] / 3.0
    write_series(tmp_path / "s", seeded_data((*MATRIX, n), 61), affine, positions=positions, position_decimals=4)
    with refused(GeometryError, "non-uniform"):
        load(tmp_path / "s")


def test_exact_series_grid_from_the_end_slices(tmp_path: Path) -> None:
    """Full-precision positions: span / (n - 1) from the first slice, no warning, residual ~0;
    a single slice has no slice grid."""
    affine = phantom_affine(7, seed=70, spacing=(0.9, 0.9, 2.5))
    write_series(tmp_path / "s", seeded_data((*MATRIX, 9), 71), affine)
    volume, caught = load_recording(tmp_path / "s")
    assert not caught
    grid = volume.meta["slice_grid"]
    assert grid["fit"] == "end slices" and grid["n_slices"] == 9
    assert grid["spacing_mm"] == pytest.approx(2.5, abs=1e-6)
    assert grid["max_residual_mm"] < 1e-5
    write_series(tmp_path / "one", seeded_data((*MATRIX, 1), 72), affine)
    assert "slice_grid" not in load(tmp_path / "one").meta


def test_thin_exact_slices_on_a_0_1_mm_grid_are_not_taken_for_rounding(tmp_path: Path) -> None:
    """0.1 mm axial slices written '12.3000', '12.4000'...: on a 0.1 mm grid, but 0.1 mm rounding
    would swallow the spacing, so the stored decimals rule: they load as distinct slices."""
    n = 30
    positions = np.array([[-10.0, 20.0, 12.3 + 0.1 * k] for k in range(n)])
    write_series(tmp_path / "s", seeded_data((4, 4, n), 80), np.diag([0.1, 0.1, 0.1, 1.0]), positions=positions,
                 position_decimals=4)
    volume, caught = load_recording(tmp_path / "s")
    assert not caught
    assert volume.shape == (4, 4, n)
    assert volume.meta["slice_grid"]["spacing_mm"] == pytest.approx(0.1, abs=1e-6)


def test_an_exact_stack_on_a_0_1_mm_grid_is_not_called_rounded(tmp_path: Path) -> None:
    """3.0 mm axial slices written exactly with 4 decimals lie on a 0.1 mm grid too: they keep the
    exact end-slice grid and its tight check, and the record does not claim a rounding fit."""
    affine = np.diag([0.9, 0.9, 3.0, 1.0])
    affine[:3, 3] = [-40.0, -30.0, -35.2]
    write_series(tmp_path / "exact", seeded_data((8, 8, 10), 3), affine, position_decimals=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        volume = load(tmp_path / "exact")
    assert volume.meta["slice_grid"]["fit"] == "end slices"
    assert volume.meta["slice_grid"]["max_residual_mm"] < 1e-6
