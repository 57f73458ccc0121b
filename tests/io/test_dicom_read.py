"""DICOM reader on generated series: the FOV corners of ``mrisr info --json`` agree with the
geometry computed straight from the tags, with SimpleITK and with dcm2niix; rounded positions
are accepted with a warning; missing, duplicated, unevenly spaced and tilted slices are refused;
several series are listed and picked; archives are read safely.

Real scanner files and the MR files shipped in pydicom, pydicom-data and nibabel: test_dicom_real.py.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import AXIS_ORDERS, info_json, needs_dcm2niix, phantom_affine, refused
from dicom_factory import (
    LPS_TO_RAS,
    corner_distance,
    dcm2niix_images,
    seeded_data,
    sitk_series,
    tag_corners,
    write_series,
)
from pydicom.uid import generate_uid

from mrisr.errors import GeometryError, InputError
from mrisr.io import list_series, load
from mrisr.volume import Volume, canonical, world_corners

#: Small matrix (columns, rows, slices) for the 48 orientations: the whole file runs in seconds.
SHAPE = (16, 12, 8)


pytestmark = pytest.mark.usefixtures("quiet_itk")


def assert_same_voxels(a_array: np.ndarray, a_affine: np.ndarray, b_array: np.ndarray, b_affine: np.ndarray,
                       atol_mm: float = 1e-3) -> None:
    """Same grid and voxels after reorienting both to the closest canonical order (no interpolation)."""
    a = canonical(Volume(np.asarray(a_array, np.float32)[None], a_affine))
    b = canonical(Volume(np.asarray(b_array, np.float32)[None], b_affine))
    np.testing.assert_allclose(a.affine, b.affine, atol=atol_mm)
    np.testing.assert_array_equal(a.array, b.array)


def reversed_z(affine: np.ndarray, n_z: int) -> np.ndarray:
    """The affine of the same grid with its slice index reversed (k -> n - 1 - k)."""
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1.0, n_z - 1
    return affine @ flip


# --- 1. every orientation ---------------------------------------------------------


@pytest.mark.parametrize("order", range(len(AXIS_ORDERS)), ids=lambda o: f"order{o}")
def test_generated_series_every_orientation(order: int, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Oblique (up to 20 deg), anisotropic (0.9 x 1.2 x 3 mm) series in all 48 signed axis orders."""
    affine = phantom_affine(order, seed=order)
    data = seeded_data(SHAPE, order)
    folder = tmp_path / "series"
    files = write_series(folder, data, affine)

    info = info_json(capsys, folder)
    corners = np.array(info["corners"])
    assert info["format"] == "dicom" and info["n_volumes"] == 1
    assert sorted(info["shape"]) == sorted(SHAPE)
    # Positions and cosines are stored with 10 significant digits: agreement is ~1e-6 mm.
    assert corner_distance(corners, tag_corners(files)) < 1e-5
    assert corner_distance(corners, world_corners(affine, SHAPE)) < 1e-3

    # Voxels: array[0] is (column, row, slice) as written; the slice axis runs along the normal
    # row x col, so it is reversed exactly when the written slice step points against it.
    volume = load(folder)
    against_normal = np.linalg.det((LPS_TO_RAS @ affine)[:3, :3]) < 0
    assert (volume.affine[:3, 2] @ affine[:3, 2] < 0) == against_normal
    expected_affine = reversed_z(affine, SHAPE[2]) if against_normal else affine
    np.testing.assert_allclose(volume.affine, expected_affine, atol=1e-5)
    np.testing.assert_array_equal(volume.array[0], data[:, :, ::-1] if against_normal else data)
    np.testing.assert_allclose(info["affine"], volume.affine, atol=1e-9)

    # SimpleITK (GDCM sorting, spacing from the span): exact on full-precision positions.
    itk_array, itk_affine = sitk_series(folder)
    assert corner_distance(corners, world_corners(itk_affine, itk_array.shape)) < 1e-3
    assert_same_voxels(volume.array[0], volume.affine, itk_array, itk_affine)

    # dcm2niix (float32 affine) on every 6th order: one per permutation/flip family.
    if order % 6 == 0:
        images = dcm2niix_images(needs_dcm2niix(), folder, tmp_path / "dcm2niix")
        assert len(images) == 1
        nii = images[0]
        assert corner_distance(corners, world_corners(nii.affine, nii.shape)) < 1e-3
        assert_same_voxels(volume.array[0], volume.affine, np.asarray(nii.dataobj), nii.affine)


# --- 4D series: time points and echoes ------------------------------------------------


@pytest.mark.parametrize(
    "extras",
    [
        ({"TemporalPositionIdentifier": 1}, {"TemporalPositionIdentifier": 2}),
        ({"EchoNumbers": 1, "EchoTime": "10"}, {"EchoNumbers": 2, "EchoTime": "25"}),
    ],
    ids=["time", "echo"],
)
def test_generated_4d_series(extras: tuple[dict, dict], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The same slice positions written twice in one series -> two volumes, in tag order."""
    affine = phantom_affine(5, seed=11)
    data = seeded_data(SHAPE, 11)
    uids = {"series_uid": generate_uid(), "study_uid": generate_uid(), "frame_uid": generate_uid()}
    # Second volume first on disk, so that order comes from the tags, not from file names.
    second = write_series(tmp_path / "s", data + 1000, affine, extra=extras[1], name_prefix="A",
                          first_instance=SHAPE[2] + 1, **uids)
    first = write_series(tmp_path / "s", data, affine, extra=extras[0], name_prefix="B", **uids)

    info = info_json(capsys, tmp_path / "s")
    assert info["n_volumes"] == 2
    assert corner_distance(info["corners"], tag_corners(first)) < 1e-5
    assert corner_distance(info["corners"], tag_corners(second)) < 1e-5
    [series] = info["series"]
    assert (series["n_slices"], series["n_volumes"], series["n_images"]) == (SHAPE[2], 2, 2 * SHAPE[2])

    volume = load(tmp_path / "s")
    against_normal = volume.affine[:3, 2] @ affine[:3, 2] < 0
    expected = data[:, :, ::-1] if against_normal else data
    np.testing.assert_array_equal(volume.array[0], expected)
    np.testing.assert_array_equal(volume.array[1], expected + 1000)


# --- 2. positions rounded to 0.1 mm -------------------------------------------------


@pytest.mark.parametrize("slice_mm", [1.0, 5.0])
def test_rounded_positions_jitter(slice_mm: float, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Positions stored as '12.3' (as scanners do) on an oblique series: the gaps along the normal
    jitter by up to ~0.17 mm (10% of 1 mm slices, 2-3% of 5 mm); accepted with a warning, and
    the spacing is span / (n - 1)."""
    n = 20
    affine = phantom_affine(3, seed=0, spacing=(0.9, 0.9, slice_mm))
    data = seeded_data((16, 16, n), 3)
    files = write_series(tmp_path / "s", data, affine, position_decimals=1)

    with pytest.warns(UserWarning, match="jitter"):
        volume = load(tmp_path / "s")
    info = info_json(capsys, tmp_path / "s")

    # The reference straight from the rounded tags.
    sets = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    iop = np.array([float(v) for v in sets[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    normal /= np.linalg.norm(normal)
    ipp = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in sets])
    d = np.sort(ipp @ normal)
    span_step = (d[-1] - d[0]) / (n - 1)
    gaps = np.diff(d)
    assert np.ptp(gaps) > 0.01, "the rounding must make the gaps jitter, else this test tests nothing"
    assert volume.spacing[2] == pytest.approx(span_step, abs=1e-9)
    assert info["spacing"][2] == pytest.approx(span_step, abs=1e-9)
    assert corner_distance(info["corners"], tag_corners(files)) < 1e-6
    # The true grid is recovered to within the rounding of the stored positions.
    assert corner_distance(info["corners"], world_corners(affine, data.shape)) < 0.1

    # SimpleITK is the reference here: ImageSeriesReader also takes the spacing from the span
    # (|last - first| / (n - 1), it only warns on non-uniform gaps), so it agrees to within the
    # in-plane part of the rounding (|in-plane error|^2 / span, ~1e-4 mm).
    itk_array, itk_affine = sitk_series(tmp_path / "s")
    assert corner_distance(info["corners"], world_corners(itk_affine, itk_array.shape)) < 1e-3
    assert_same_voxels(volume.array[0], volume.affine, itk_array, itk_affine)

    # dcm2niix is NOT the reference on rounded data: it takes the slice spacing from the first
    # two slices, |IPP_2 - IPP_1|, which carries the full rounding error of one gap (up to
    # ~0.17 mm here); over n slices the far face of its FOV moves by (n - 0.5) times that error:
    # 1.6 mm for this series with 5 mm slices, 0.07 mm with 1 mm slices. Check it does exactly that.
    images = dcm2niix_images(needs_dcm2niix(), tmp_path / "s", tmp_path / "dcm2niix")
    assert len(images) == 1
    nii = images[0]
    ipp_sorted = ipp[np.argsort(ipp @ normal)]
    first_two = float(np.linalg.norm(ipp_sorted[1] - ipp_sorted[0]))
    dcm2niix_step = float(np.linalg.norm(nii.affine[:3, 2]))
    assert dcm2niix_step == pytest.approx(first_two, abs=1e-3)
    expected_offset = (n - 0.5) * abs(first_two - span_step)
    offset = corner_distance(info["corners"], world_corners(nii.affine, nii.shape))
    assert offset == pytest.approx(expected_offset, abs=2e-3)


# --- 3. refusals ------------------------------------------------------------------


def _oblique(tmp_path: Path, **kwargs) -> tuple[Path, list[Path], np.ndarray]:
    affine = phantom_affine(9, seed=4)
    files = write_series(tmp_path / "s", seeded_data(SHAPE, 4), affine, **kwargs)
    return tmp_path / "s", files, affine


def test_missing_slice_refused(tmp_path: Path) -> None:
    folder, _, _ = _oblique(tmp_path, slice_indices=[0, 1, 2, 4, 5, 6, 7])
    with refused(GeometryError, "missing slice"):
        load(folder)


def test_missing_end_slice_is_just_a_shorter_series(tmp_path: Path) -> None:
    """Nothing in the tags says an end slice is missing: 7 slices load, with the right corners."""
    folder, files, _ = _oblique(tmp_path, slice_indices=range(7))
    volume = load(folder)
    assert volume.shape[2] == 7
    assert corner_distance(volume.corners, tag_corners(files)) < 1e-5


def test_duplicated_slice_refused(tmp_path: Path) -> None:
    folder, files, _ = _oblique(tmp_path)
    shutil.copy(files[3], folder / "copy_of_slice_4.dcm")
    with refused(GeometryError, "duplicated slice"):
        load(folder)


def test_duplicated_position_without_volume_tags_refused(tmp_path: Path) -> None:
    """Two different images (new SOPInstanceUID) at one position, nothing to tell volumes apart."""
    folder, files, affine = _oblique(tmp_path)
    ds = pydicom.dcmread(files[3])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(folder / "other_at_slice_4.dcm")
    with refused(GeometryError, "duplicated slice"):
        load(folder)


def test_non_uniform_spacing_refused(tmp_path: Path) -> None:
    affine = phantom_affine(9, seed=4)
    lps = LPS_TO_RAS @ affine
    unit = lps[:3, 2] / np.linalg.norm(lps[:3, 2])
    offsets = np.concatenate([[0.0], np.cumsum([1, 1, 1, 2.5, 1, 1, 1])]) * 3.0
    positions = lps[:3, 3] + offsets[:, None] * unit
    write_series(tmp_path / "s", seeded_data(SHAPE, 4), affine, positions=positions)
    with refused(GeometryError, "non-uniform"):
        load(tmp_path / "s")


def test_gantry_tilt_refused(tmp_path: Path) -> None:
    affine = phantom_affine(9, seed=4)
    lps = LPS_TO_RAS @ affine
    in_plane = lps[:3, 0] / np.linalg.norm(lps[:3, 0])
    positions = np.array([lps[:3, 3] + k * lps[:3, 2] + 0.5 * k * in_plane for k in range(SHAPE[2])])
    write_series(tmp_path / "s", seeded_data(SHAPE, 4), affine, positions=positions)
    with refused(GeometryError, "tilt"):
        load(tmp_path / "s")


def test_two_series_listed_refused_and_picked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "two"
    uid_a, uid_b = generate_uid(), generate_uid()
    affine_a, affine_b = phantom_affine(0, seed=1), phantom_affine(17, seed=2)
    data_a, data_b = seeded_data(SHAPE, 1), seeded_data((10, 14, 5), 2)
    files_a = write_series(folder, data_a, affine_a, series_uid=uid_a, series_number=3,
                           description="T1 axial", name_prefix="A")
    files_b = write_series(folder, data_b, affine_b, series_uid=uid_b, series_number=7,
                           description="T2 coronal", name_prefix="B")

    with refused(InputError, "holds 2 series") as err:
        load(folder)
    message = str(err.value)
    assert uid_a in message and uid_b in message
    assert f"{SHAPE[2]} slices" in message and "5 slices" in message
    assert "series" in message.lower() and "\n" not in message

    listed = list_series(folder)
    assert [(s.id, s.description, s.n_slices, s.number) for s in listed] == [
        (uid_a, "T1 axial", SHAPE[2], 3),
        (uid_b, "T2 coronal", 5, 7),
    ]
    for uid, files, shape in ((uid_a, files_a, SHAPE), (uid_b, files_b, (10, 14, 5))):
        volume = load(folder, series=uid)
        assert volume.shape == shape and volume.meta["series_uid"] == uid
        assert corner_distance(volume.corners, tag_corners(files)) < 1e-5
        info = info_json(capsys, folder, "--series", uid)
        assert info["series_id"] == uid
        assert corner_distance(info["corners"], tag_corners(files)) < 1e-5
    with refused(InputError, "no series"):
        load(folder, series="1.2.3.4")


# --- 6. archives and lists of files ---------------------------------------------------


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_archives_and_file_lists(tmp_path: Path) -> None:
    folder, files, _ = _oblique(tmp_path)
    reference = load(folder)

    zipped = tmp_path / "series.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for f in files:
            zf.write(f, f"export/series/{f.name}")
    tarred = tmp_path / "series.tar.gz"
    with tarfile.open(tarred, "w:gz") as tf:
        tf.add(folder, arcname="series")
    shuffled = [files[i] for i in np.random.default_rng(0).permutation(len(files))]

    for source in (zipped, tarred, shuffled, [str(f) for f in files]):
        volume = load(source)
        np.testing.assert_allclose(volume.affine, reference.affine, atol=1e-9)
        np.testing.assert_array_equal(volume.array, reference.array)
        assert corner_distance(volume.corners, tag_corners(files)) < 1e-5
        if isinstance(source, Path):  # the archive, not a temporary folder, is the source
            assert volume.meta["source_paths"] == [str(source)]
    assert {s.n_slices for s in list_series(zipped)} == {SHAPE[2]}


@pytest.mark.parametrize("kind", ["zip-dotdot", "zip-absolute", "tar-dotdot", "tar-absolute"])
def test_unsafe_archive_refused(kind: str, tmp_path: Path) -> None:
    _, files, _ = _oblique(tmp_path)
    parent = tmp_path.parent
    evil_abs = parent / "evil_absolute.dcm"
    name = "../evil.dcm" if kind.endswith("dotdot") else str(evil_abs)
    archive = tmp_path / ("bad.zip" if kind.startswith("zip") else "bad.tar")
    if kind.startswith("zip"):
        with zipfile.ZipFile(archive, "w") as zf:
            zf.write(files[0], files[0].name)
            zf.writestr(zipfile.ZipInfo(name), files[1].read_bytes())
        with zipfile.ZipFile(archive) as zf:
            assert name in zf.namelist()
    else:
        payload = files[1].read_bytes()
        entry = tarfile.TarInfo(name)  # TarInfo keeps a leading '/' that tarfile.add would strip
        entry.size = len(payload)
        with tarfile.open(archive, "w") as tf:
            tf.add(files[0], files[0].name)
            tf.addfile(entry, io.BytesIO(payload))
        with tarfile.open(archive) as tf:
            assert name in tf.getnames()
    before = _tree(parent)

    with refused(InputError, "unsafe archive entry"):
        load(archive)
    with refused(InputError, "unsafe archive entry"):
        list_series(archive)

    assert _tree(parent) == before
    # no escaped entry anywhere under the session folder (other tests' files may be named evil* too)
    assert not [p for p in parent.rglob("*") if p.name in ("evil.dcm", evil_abs.name)]
    assert not evil_abs.exists()


def test_undecodable_transfer_syntax_is_named(tmp_path: Path) -> None:
    """A compressed syntax no installed plugin decodes (MPEG2 here, relabelled from a JPEG 2000
    file) gives one InputError naming the syntax and a way out, not a pydicom traceback."""
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("MR_small_jp2klossless.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video: no plugin decodes it
    path = tmp_path / "mpeg2.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(InputError, match="transfer syntax MPEG2") as err:
        load(path)
    assert "mpeg2.dcm" in str(err.value) and "Fix:" in str(err.value)


# --- review findings: places not gaps, exact whole-number positions, broken tags ------------


def _axial(n: int, step: float) -> np.ndarray:
    return np.diag([0.9, 0.9, step, 1.0])


def test_drift_that_adds_up_is_refused(tmp_path: Path) -> None:
    """Gaps of 5.1 mm then 4.9 mm each pass a per-gap 2% test, but put slices up to 2 mm off a
    uniform grid: the check is on each slice's place, so the series is refused."""
    n = 40
    gaps = [5.1] * 20 + [4.9] * (n - 21)
    z = np.concatenate([[0.0], np.cumsum(gaps)])
    positions = np.array([[0.0, 0.0, zk] for zk in z])
    write_series(tmp_path / "s", seeded_data((6, 5, n), 1), _axial(n, 5.0), positions=positions)
    with refused(GeometryError, "non-uniform"):
        load(tmp_path / "s")


def test_whole_number_positions_are_exact(tmp_path: Path) -> None:
    """'-4\\-4\\-5' has no decimals: exact, not 'rounded to 1 mm'. 1 mm axial slices load without
    jitter warnings, and a slice 1 mm off its place among 3 mm slices is refused."""
    n = 6
    positions = np.array([[-4.0, -4.0, -5.0 + k] for k in range(n)])
    write_series(tmp_path / "ok", seeded_data((6, 5, n), 2), _axial(n, 1.0), positions=positions,
                 position_decimals=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vol = load(tmp_path / "ok")
    np.testing.assert_allclose(vol.spacing, [0.9, 0.9, 1.0])
    off = np.array([[0.0, 0.0, 3.0 * k + (1.0 if k == 3 else 0.0)] for k in range(n)])
    write_series(tmp_path / "off", seeded_data((6, 5, n), 3), _axial(n, 3.0), positions=off, position_decimals=0)
    with refused(GeometryError, "non-uniform"):
        load(tmp_path / "off")


@pytest.mark.parametrize(
    ("tags", "pattern"),
    [
        ({"ImageOrientationPatient": ["1", "0", "0", "1", "0", "0"]}, "perpendicular|unit"),
        ({"ImageOrientationPatient": ["1", "0", "0", "0.3", "0.953939", "0"]}, "perpendicular"),
        ({"PixelSpacing": ["-1", "1"]}, "positive"),
        ({"PixelSpacing": ["0", "0"]}, "positive"),
    ],
    ids=["parallel", "oblique-pair", "negative-spacing", "zero-spacing"],
)
def test_broken_geometry_tags_are_refused(tmp_path: Path, tags: dict, pattern: str) -> None:
    files = write_series(tmp_path / "s", seeded_data((6, 5, 4), 4), _axial(4, 2.0))
    for f in files:
        ds = pydicom.dcmread(f)
        for key, value in tags.items():
            setattr(ds, key, value)
        ds.save_as(f)
    with refused(InputError, pattern) as err:
        load(tmp_path / "s")
    assert "IM_0001.dcm" in str(err.value)


def test_unsigned_bits_above_bits_stored_are_masked(tmp_path: Path) -> None:
    """12-bit unsigned data with junk in the top 4 bits: the values pydicom gives (masked)."""
    files = write_series(tmp_path / "s", seeded_data((6, 5, 3), 5), _axial(3, 2.0))
    rng = np.random.default_rng(0)
    for f in files:
        ds = pydicom.dcmread(f)
        values = rng.integers(0, 4096, (5, 6)).astype("<u2") | np.uint16(0xF000)
        ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 0, 12, 11
        ds.PixelData = values.tobytes()
        ds.save_as(f)
    vol = load(tmp_path / "s")
    expected = np.stack([pydicom.dcmread(f).pixel_array.T for f in files], axis=-1)
    assert expected.max() < 4096
    np.testing.assert_array_equal(vol.array[0], expected)


def test_volumes_ordered_numerically_with_their_keys(tmp_path: Path) -> None:
    """12 time points: ordered 1, 2, ..., 12 (not '1', '10', '11', '12', '2'), and each channel
    keeps every key its slices share (here the b-value) for writers to put back."""
    affine = _axial(3, 2.0)
    for t in range(1, 13):
        write_series(tmp_path / "s", np.full((6, 5, 3), t, np.int16), affine, series_uid="1.2.3.4",
                     extra={"TemporalPositionIdentifier": t, "DiffusionBValue": 100.0 * t}, name_prefix=f"T{t}")
    vol = load(tmp_path / "s")
    assert vol.n_channels == 12
    np.testing.assert_array_equal(vol.array[:, 0, 0, 0], np.arange(1, 13))
    assert [c["temporal_position"] for c in vol.meta["channels"]] == list(range(1, 13))
    assert [c["b_value"] for c in vol.meta["channels"]] == [100.0 * t for t in range(1, 13)]


def test_folder_with_gz_dicom_junk_and_a_broken_slice(tmp_path: Path) -> None:
    """In a folder: a .dcm.gz is read, a README is skipped with a warning, and a DICOM file cut
    short is an error naming it, never a silently thinner volume."""
    import gzip

    files = write_series(tmp_path / "s", seeded_data((6, 5, 4), 6), _axial(4, 2.0))
    last = files[-1]
    with gzip.open(last.with_name(last.name + ".gz"), "wb") as fh:
        fh.write(last.read_bytes())
    last.unlink()
    (tmp_path / "s" / "README.txt").write_text("exported by PACS")
    with pytest.warns(UserWarning, match="not DICOM, e.g. README.txt"):
        vol = load(tmp_path / "s")
    assert vol.shape == (6, 5, 4)
    first = files[0].read_bytes()
    files[0].write_bytes(first[:140])  # preamble and a few bytes of header
    with refused(InputError, "not a readable DICOM file|truncated") as err:
        load(tmp_path / "s")
    assert files[0].name in str(err.value)


# --- second review: rounding per slice and per varying coordinate, 4D gaps, image types -------


def test_thin_slices_with_a_missing_slice_and_coarse_positions(tmp_path: Path) -> None:
    """0.3 mm slices with positions rounded to 0.1 mm: rounding cannot explain a missing slice
    (the allowance is capped at a quarter of the spacing), nor one 1.3 mm gap among 1 mm gaps."""
    n = 60
    z = [0.3 * k for k in range(n) if k != 30]
    positions = np.array([[0.0, 0.0, zk] for zk in z])
    write_series(tmp_path / "thin", seeded_data((4, 4, n - 1), 7), _axial(n - 1, 0.3), positions=positions,
                 position_decimals=1)
    with refused(GeometryError, "missing slice|non-uniform"):
        load(tmp_path / "thin")
    z = np.concatenate([[0.0], np.cumsum([1.0] * 10 + [1.3] + [1.0] * 10)])
    positions = np.array([[0.0, 0.0, zk] for zk in z])
    write_series(tmp_path / "jump", seeded_data((4, 4, len(z)), 8), _axial(len(z), 1.0), positions=positions,
                 position_decimals=1)
    with refused(GeometryError, "non-uniform"):
        load(tmp_path / "jump")


def test_a_constant_coordinate_does_not_loosen_the_check(tmp_path: Path) -> None:
    """x written as '-118.5' on every slice, z with 6 decimals: a slice 0.15 mm off is refused."""
    n = 40
    positions = np.array([[-118.5, 3.0, float(k) + (0.15 if k == 20 else 0.0)] for k in range(n)])
    files = write_series(tmp_path / "s", seeded_data((4, 4, n), 9), _axial(n, 1.0), positions=positions)
    for f in files:
        ds = pydicom.dcmread(f)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = ["-118.5", "3", f"{z:.6f}"]
        ds.save_as(f)
    with refused(GeometryError, "non-uniform"):
        load(tmp_path / "s")


@pytest.mark.parametrize("fmt", ["%.5g", "%.4g", "%.2f", "%g"])
def test_significant_digit_positions_are_accepted(tmp_path: Path, fmt: str) -> None:
    """Positions written with a number of significant digits (the step varies with magnitude)
    load: each slice's allowance comes from its own strings."""
    affine = phantom_affine(5, seed=11, spacing=(0.9, 0.9, 1.1))
    files = write_series(tmp_path / "s", seeded_data((6, 5, 40), 10), affine)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.ImagePositionPatient = [fmt % float(v) for v in ds.ImagePositionPatient]
        ds.save_as(f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jitter warnings are expected
        vol = load(tmp_path / "s")
    assert vol.shape[2] == 40


def test_four_decimal_orientation_is_no_gantry_tilt(tmp_path: Path) -> None:
    """ImageOrientationPatient rounded to 4 decimals tilts the computed normal slightly: over a
    250 mm stack that is not a gantry tilt."""
    affine = phantom_affine(9, seed=12, spacing=(0.9, 0.9, 2.5))
    files = write_series(tmp_path / "s", seeded_data((6, 5, 100), 13), affine)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.ImageOrientationPatient = [f"{float(v):.4f}" for v in ds.ImageOrientationPatient]
        ds.save_as(f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert load(tmp_path / "s").shape[2] == 100


def test_a_volume_of_a_4d_series_missing_a_slice(tmp_path: Path) -> None:
    affine = _axial(6, 2.0)
    write_series(tmp_path / "s", seeded_data((4, 4, 6), 14), affine, series_uid="1.2.3.9",
                 extra={"AcquisitionNumber": 1}, name_prefix="A")
    write_series(tmp_path / "s", seeded_data((4, 4, 6), 15), affine, series_uid="1.2.3.9",
                 extra={"AcquisitionNumber": 2}, name_prefix="B", slice_indices=[0, 1, 2, 4, 5])
    with refused(GeometryError, "missing slice: the volume with acquisition_number=2 has 5 slices, another 6"):
        load(tmp_path / "s")


def test_magnitude_and_phase_are_two_series(tmp_path: Path) -> None:
    affine = _axial(4, 2.0)
    for part in ("M", "P"):
        write_series(tmp_path / "s", seeded_data((4, 4, 4), 16), affine, series_uid="1.2.3.10",
                     extra={"ImageType": ["ORIGINAL", "PRIMARY", part, "ND"]}, name_prefix=part)
    series = list_series(tmp_path / "s")
    assert len(series) == 2 and {s.image_type for s in series} == {"ORIGINAL\\PRIMARY\\M\\ND",
                                                                    "ORIGINAL\\PRIMARY\\P\\ND"}
    with refused(InputError, "holds 2 series"):
        load(tmp_path / "s")
    assert load(tmp_path / "s", series=series[1].id).n_channels == 1


def test_broken_files_named_like_dicom_are_errors(tmp_path: Path) -> None:
    """An empty IM_0004.dcm at the end of a folder is an error, not 'not DICOM, skipped'; a
    malformed value (Rows '1A') is one line naming the file, not an internal error."""
    files = write_series(tmp_path / "s", seeded_data((4, 4, 4), 17), _axial(4, 2.0))
    files[-1].write_bytes(b"")
    with refused(InputError, "not a readable DICOM file|empty") as err:
        load(tmp_path / "s")
    assert "IM_0004.dcm" in str(err.value)
    from pydicom.data import get_testdata_file

    bad = get_testdata_file("badVR.dcm")  # pydicom's file with Rows stored as '1A'
    with pytest.warns(UserWarning):  # pydicom's own complaint about the value
        with refused(InputError, "malformed DICOM value") as err:
            load(bad)
    assert "badVR.dcm" in str(err.value)


def test_header_only_file_named_in_a_list_is_an_error(tmp_path: Path) -> None:
    files = write_series(tmp_path / "s", seeded_data((4, 4, 3), 19), _axial(3, 2.0))
    ds = pydicom.dcmread(files[0])
    del ds.PixelData
    ds.save_as(files[0])
    with refused(InputError, "truncated"):
        load(files)
