"""DICOM reader on real files: the scanner exports in ../shared/data/dicom and the MR files that
ship with pydicom, pydicom-data and nibabel.

Each file either loads with FOV corners equal (0.001 mm) to a reference computed straight from
its tags (or by nibabel's DICOM wrappers, which parse the Siemens CSA header independently), and
with dcm2niix where dcm2niix is exact (full-precision positions), or is refused with a one-line
InputError that says why. What is expected of each file, and why, is stated next to it.
"""

from __future__ import annotations

import gzip
import io
import re
import warnings
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
from conftest import info_json, needs_dcm2niix, needs_shared_data, refused
from dicom_factory import LPS_TO_RAS, corner_distance, dcm2niix_images, enhanced_tag_corners, tag_corners
from pydicom.data import get_testdata_file

from mrisr.errors import InputError
from mrisr.io import list_series, load
from mrisr.volume import Volume, canonical, world_corners

NIBABEL_DATA = Path(nibabel.__file__).parent / "nicom" / "tests" / "data"
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def read_dataset(path: Path) -> pydicom.Dataset:
    """pydicom's reading of a file, gunzipping a ``.gz`` first."""
    if str(path).endswith(".gz"):
        with gzip.open(path, "rb") as fh:
            return pydicom.dcmread(io.BytesIO(fh.read()))
    return pydicom.dcmread(path)


def rescaled(ds: pydicom.Dataset) -> np.ndarray:
    """pydicom's pixels of a single-frame file, rescaled, as (column, row): mrisr's (X, Y), float32."""
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    return (ds.pixel_array.T.astype(np.float64) * slope + intercept).astype(np.float32)


def assert_values(got: np.ndarray, want: np.ndarray) -> None:
    """Rescaled values equal up to float32 rounding: mrisr applies slope and intercept in float32,
    the reference in float64 (a few ulp apart); exact when there is no rescale."""
    want = np.asarray(want, dtype=np.float64)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-6, atol=1e-6 * np.abs(want).max())


def wrapper_corners(ds: pydicom.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """nibabel's (independent) reading of one file: RAS affine and FOV corners.

    nibabel's wrapper affine is in DICOM LPS and indexes (row, column, slice).
    """
    from nibabel.nicom import dicomwrappers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapper = dicomwrappers.wrapper_from_data(ds)
        affine = LPS_TO_RAS @ np.asarray(wrapper.affine, dtype=np.float64)
        shape = tuple(wrapper.image_shape) + (1,) * (3 - len(wrapper.image_shape))
    return affine, world_corners(affine, shape)


def assert_same_voxels(volume: Volume, channel: int, array: np.ndarray, affine: np.ndarray,
                       atol_mm: float = 1e-3, rtol: float = 0.0) -> None:
    """Same grid and voxels after reorienting both to the closest canonical order."""
    a = canonical(Volume(np.asarray(volume.array[channel : channel + 1], np.float32), volume.affine))
    b = canonical(Volume(np.asarray(array, np.float32)[None], affine))
    np.testing.assert_allclose(a.affine, b.affine, atol=atol_mm)
    np.testing.assert_allclose(a.array, b.array, rtol=rtol, atol=0)


def _tiff_preamble(path: str | Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) in (b"II*\x00", b"MM\x00*")


def test_dicom_with_tiff_preamble_is_dicom() -> None:
    """A DICOM preamble may legally hold a TIFF header (MR_small.dcm's does): still DICOM, not a picture."""
    path = get_testdata_file("MR_small.dcm")
    assert _tiff_preamble(path)
    assert load(path).shape == (64, 64, 1)


# --- ../shared/data/dicom: real scanner exports --------------------------------------


def test_siemens_dwi_mosaic(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """3 Siemens mosaic files (b0 and DWI) -> 150 x 152 x 81 x 3 volumes, 1.5 mm.

    Tag reference: nibabel's MosaicWrapper (CSA header: slice normal, mosaic count, position of
    the first tile corrected from the mosaic corner). dcm2niix is exact on mosaics (one file per
    volume, positions from the CSA header, spacing from SpacingBetweenSlices): corners and values.
    """
    folder = needs_shared_data("dicom/siemens_dwi_mosaic")
    info = info_json(capsys, folder)
    assert info["shape"] == [150, 152, 81] and info["n_volumes"] == 3
    assert np.allclose(info["spacing"], 1.5, atol=1e-6)
    volume = load(folder)

    files = sorted(folder.glob("*.dcm"))
    assert len(files) == 3
    unmatched = set(range(3))
    for f in files:
        ds = pydicom.dcmread(f)
        affine, corners = wrapper_corners(ds)
        assert corner_distance(info["corners"], corners) < 1e-3, f.name
        from nibabel.nicom import dicomwrappers

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = dicomwrappers.wrapper_from_data(ds).get_data()
        # Each file is one volume (channel) of mrisr's reading.
        hits = [c for c in unmatched if np.array_equal(volume.array[c].transpose(1, 0, 2), data)]
        assert len(hits) == 1, f.name
        unmatched -= set(hits)

    [nii] = dcm2niix_images(needs_dcm2niix(), folder, tmp_path / "dcm2niix")
    assert nii.shape == (150, 152, 81, 3)
    assert corner_distance(info["corners"], world_corners(nii.affine, nii.shape[:3])) < 1e-3
    reference = np.asarray(nii.dataobj, dtype=np.float64)
    for c in range(3):
        assert_same_voxels(volume, c, reference[..., c], nii.affine)


def test_philips_enhanced_gzip(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A gzip-compressed Philips enhanced MR file: 176 frames of 256 x 256, one stack.

    Tag reference: the per-frame PlanePositionSequence positions (span along the normal / 175),
    shared-or-per-frame PlaneOrientationSequence and PixelMeasuresSequence, computed here.
    dcm2niix (after gunzip) reads the same frames with full-precision positions: exact.
    Values: RescaleSlope/Intercept of the PixelValueTransformationSequence (display values,
    dcm2niix's default too).
    """
    path = needs_shared_data("dicom/enhanced_geometry/philips_mprage.dcm.gz")
    info = info_json(capsys, path)
    assert info["shape"] == [256, 256, 176] and info["n_volumes"] == 1
    ds = read_dataset(path)
    assert int(ds.NumberOfFrames) == 176
    assert corner_distance(info["corners"], enhanced_tag_corners(ds)) < 1e-3

    plain = tmp_path / "plain" / "mprage.dcm"
    plain.parent.mkdir()
    plain.write_bytes(gzip.decompress(path.read_bytes()))
    [nii] = dcm2niix_images(needs_dcm2niix(), plain.parent, tmp_path / "dcm2niix")
    assert corner_distance(info["corners"], world_corners(nii.affine, nii.shape[:3])) < 1e-3
    volume = load(path)
    assert_same_voxels(volume, 0, np.asarray(nii.dataobj, dtype=np.float64), nii.affine, rtol=1e-5)
    # The .dcm.gz and its gunzipped copy are the same scan.
    np.testing.assert_allclose(load(plain).affine, volume.affine, atol=1e-9)


def test_enhanced_three_orientations(capsys: pytest.CaptureFixture) -> None:
    """A Siemens enhanced MR file of 3 frames (an MPR scout), each in its own orientation:
    3 candidates, each a single slice whose through-plane size is the PixelMeasuresSequence
    SliceThickness (1.6 mm): the tag reference uses the same rule, frame by frame."""
    folder = needs_shared_data("dicom/enhanced_geometry")
    [path] = folder.glob("MRI_102TD*.dcm")
    series = list_series(path)
    assert len(series) == 3 and all(s.n_slices == 1 for s in series)
    with refused(InputError, "holds 3 series"):
        load(path)

    ds = pydicom.dcmread(path)
    references = [enhanced_tag_corners(ds, [f]) for f in range(3)]
    matched = []
    for s in series:
        info = info_json(capsys, path, "--series", s.id)
        assert info["series_id"] == s.id and info["shape"] == [162, 162, 1]
        assert info["spacing"] == pytest.approx([1.6, 1.6, 1.6], abs=1e-6)
        distances = [corner_distance(info["corners"], ref) for ref in references]
        assert min(distances) < 1e-3, distances
        matched.append(int(np.argmin(distances)))
    assert sorted(matched) == [0, 1, 2]


# --- pydicom's test files ------------------------------------------------------------

MR_SMALL_VARIANTS = [
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm",
    "MR_small_expb.dcm",
    "MR_small_padded.dcm",
]


@pytest.mark.filterwarnings("ignore:The pixel data is .* excess padding")  # pydicom, on the reference read
@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in MR_SMALL_VARIANTS])
def test_mr_small_variants(name: str, capsys: pytest.CaptureFixture) -> None:
    """MR_small.dcm (64 x 64, one slice, 0.8 mm thick) in several transfer syntaxes: all lossless,
    so the same geometry (tags of MR_small.dcm, SliceThickness as through-plane size) and the
    same values as pydicom decodes from MR_small.dcm. A syntax the installed plugins cannot
    decode must give an InputError naming the transfer syntax instead."""
    path = Path(get_testdata_file(name))
    reference = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    try:
        np.asarray(pydicom.dcmread(path).pixel_array)
    except Exception:  # no decoder installed for this syntax: mrisr must say which one
        with refused(InputError, "transfer syntax"):
            load(path)
        return
    volume = load(path)
    info = info_json(capsys, path)
    assert info["shape"] == [64, 64, 1]
    assert corner_distance(info["corners"], tag_corners([get_testdata_file("MR_small.dcm")])) < 1e-3
    assert_values(volume.array[0, :, :, 0], rescaled(reference))


def test_mr_small_truncated_refused() -> None:
    """MR_truncated.dcm: MR_small with its pixel data cut short: a clear one-line InputError."""
    with pytest.raises(InputError) as err:
        load(get_testdata_file("MR_truncated.dcm"))
    assert re.search("truncated|broken pixel data", err.value.problem), str(err.value)  # not the file name
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name, lossless", [("MR2_J2KR.dcm", True), ("MR2_J2KI.dcm", False)])
def test_mr2_jpeg2000_against_uncompressed(name: str, lossless: bool, capsys: pytest.CaptureFixture) -> None:
    """pydicom-data's MR2 (1024 x 1024, one 6 mm slice) in JPEG 2000: lossless equals MR2_UNCR's
    values as pydicom decodes them; lossy is within 1% of the range (measured max error 32 of 595)."""
    path = Path(get_testdata_file(name))
    uncompressed = pydicom.dcmread(get_testdata_file("MR2_UNCR.dcm"))
    info = info_json(capsys, path)
    assert info["shape"] == [1024, 1024, 1]
    assert corner_distance(info["corners"], tag_corners([get_testdata_file("MR2_UNCR.dcm")])) < 1e-3
    got = load(path).array[0, :, :, 0].astype(np.float64)
    want = rescaled(uncompressed)
    if lossless:
        assert_values(got, want)
    else:
        assert np.abs(got - want).max() <= 0.1 * np.ptp(want)
        assert np.abs(got - want).mean() <= 0.01 * np.ptp(want)


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, id=n) for n in ("MR2_UNCR.dcm",
                                                                        "MR-SIEMENS-DICOM-WithOverlays.dcm")],
)
def test_single_slice_mr(name: str, capsys: pytest.CaptureFixture) -> None:
    """Single-slice MR files: corners from the tags (SliceThickness through-plane), values as
    pydicom decodes them (overlays are not pixel data)."""
    path = Path(get_testdata_file(name))
    volume = load(path)
    info = info_json(capsys, path)
    ds = pydicom.dcmread(path)
    assert info["shape"] == [int(ds.Columns), int(ds.Rows), 1]
    assert corner_distance(info["corners"], tag_corners([path])) < 1e-3
    assert_values(volume.array[0, :, :, 0], rescaled(ds))


def test_enhanced_without_geometry_refused() -> None:
    """emri_small.dcm: a 10-frame enhanced MR without plane position/orientation: no 3D grid."""
    with refused(InputError, "geometry") as err:
        load(get_testdata_file("emri_small.dcm"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("entry", ["DICOMDIR", "."])
def test_dicomdir_tree(entry: str) -> None:
    """pydicom's dicomdirtests: a DICOMDIR over CR images (no geometry), CT and MR series.
    Both the DICOMDIR file and the folder list several series; one is picked by id."""
    root = PYDICOM_FILES / "dicomdirtests"
    path = root / entry if entry != "." else root
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        series = list_series(path)
    said = [str(w.message) for w in caught]
    assert any("skipped 3 image(s) mrisr cannot place in 3D" in m for m in said), said  # the CR images
    assert (entry == ".") == any("not DICOM, e.g. README.txt" in m for m in said), said  # the folder's README
    assert len(series) >= 5
    by_uid = {s.id: s for s in series}
    ct = "1.3.6.1.4.1.5962.1.1.0.0.0.1194734704.16302.0.6"  # 'SmartScore - Gated 0.5 sec', 5 slices
    assert by_uid[ct].n_slices == 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the same two warnings as above
        volume = load(path, series=ct)
    assert volume.shape == (16, 16, 5)
    files = sorted((root / "98892001" / "CT5N").iterdir())
    assert corner_distance(volume.corners, tag_corners(files)) < 1e-3


def test_dicomdir_mr_subfolder() -> None:
    """The MR part of the tree alone (no CR images): a 7-image 'ANGIO projected' series whose
    images each lie in their own orientation -> 7 single-slice candidates, each loadable."""
    folder = PYDICOM_FILES / "dicomdirtests" / "98892003" / "MR700"
    series = list_series(folder)
    assert len(series) == 7 and all(s.n_slices == 1 for s in series)
    for s in series[:2]:
        volume = load(folder, series=s.id)
        assert volume.shape == (16, 16, 1)
        [source] = volume.meta["source_paths"]
        assert corner_distance(volume.corners, tag_corners([Path(source)])) < 1e-3


# --- nibabel's test DICOMs -------------------------------------------------------------


def _nibabel_files() -> list:
    params = []
    for path in [Path(nibabel.__file__).parent / "tests" / "data" / "0.dcm", *sorted(NIBABEL_DATA.glob("*.dcm*"))]:
        label = f"{path.parent.parent.name}/{path.name}"
        params.append(pytest.param(path, id=label))
    return params


#: What each of nibabel's test DICOMs is, and so what mrisr must do with it.
NIBABEL_EXPECTED = {
    # Siemens DWI mosaics whose header says 48 tiles (a 7 x 7 grid) but whose pixel data was cut
    # to 256 x 256 for the test suite: 256 is no multiple of 7 (nibabel cannot read them either).
    "0.dcm": ("refused", "mosaic"),
    "1.dcm": ("refused", "mosaic"),
    # Mosaic header without pixel data (nibabel keeps it for its CSA slice-normal test).
    "csa_slice_norm.dcm": ("refused", "without pixel data"),
    # Complete Siemens DWI mosaics (gzip): 128 x 128 x 48, reference nibabel's MosaicWrapper.
    "siemens_dwi_0.dcm.gz": ("loads", None),
    "siemens_dwi_1000.dcm.gz": ("loads", None),
    # Philips enhanced MR (gzip), 176 frames: reference the per-frame tags.
    "philips_mprage.dcm.gz": ("loads", None),
    # Single slice with decimal RescaleSlope/Intercept: reference the tags, values rescaled.
    "decimal_rescale.dcm": ("loads", None),
    # A derived MIP with SliceThickness '' : loads with a warning that 1 mm through-plane is assumed.
    "slicethickness_empty_string.dcm": ("loads", "1 mm"),
}


@pytest.mark.parametrize("path", _nibabel_files())
def test_nibabel_dicoms(path: Path, capsys: pytest.CaptureFixture) -> None:
    outcome, detail = NIBABEL_EXPECTED[path.name]
    if outcome == "refused":
        with refused(InputError, detail) as err:
            load(path)
        assert "\n" not in str(err.value) and "Fix:" in str(err.value)
        return
    if detail:
        with pytest.warns(UserWarning, match=detail):
            volume = load(path)
    else:
        volume = load(path)
    info = info_json(capsys, path)
    assert info["shape"] == list(volume.shape)
    ds = read_dataset(path)
    if "PerFrameFunctionalGroupsSequence" in ds:
        reference = enhanced_tag_corners(ds)
    else:
        affine, reference = wrapper_corners(ds)
        if volume.shape[2] == 1:
            # nibabel's single-slice affine has a unit (or SliceThickness) z column; build the
            # through-plane size the way mrisr documents it: SliceThickness, else 1 mm.
            thickness = float(ds.get("SliceThickness") or 1.0)
            sets = np.array([float(v) for v in ds.ImagePositionPatient])
            from dicom_factory import plane_corners

            reference = plane_corners(ds.ImageOrientationPatient, sets, ds.PixelSpacing,
                                      int(ds.Rows), int(ds.Columns), thickness)
        else:
            from nibabel.nicom import dicomwrappers

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data = dicomwrappers.wrapper_from_data(ds).get_data()
            assert_same_voxels(volume, 0, data, affine, rtol=1e-6)
    assert corner_distance(info["corners"], reference) < 1e-3
    if volume.shape[2] == 1:
        assert_values(volume.array[0, :, :, 0], rescaled(ds))
