"""Derived DICOM series writer: geometry and values agree with SimpleITK and dcm2niix."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import AXIS_ORDERS, needs_dcm2niix, phantom
from dicom_factory import dcm2niix_images
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from mrisr.errors import GeometryError, InputError, OutputError
from mrisr.io.dicom_write import (
    dicom_geometry,
    intensity_mapping,
    to_stored,
    write_dicom_series,
)
from mrisr.volume import Volume, canonical, world_corners

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


# --- helpers -----------------------------------------------------------------------


def read_sitk(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK's reading of a series: array ``(X, Y, Z)`` float64 and RAS affine."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    lps = np.eye(4)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    lps[:3, :3] = direction * np.array(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (z, y, x) -> (x, y, z)
    return array.astype(np.float64), LPS @ lps


def read_dcm2niix(folder: Path, work: Path) -> tuple[np.ndarray, np.ndarray]:
    """dcm2niix's reading of a series: array ``(X, Y, Z[, T])`` float64 and RAS affine."""
    images = dcm2niix_images(needs_dcm2niix(), folder, work / "dcm2niix")
    assert len(images) == 1, images
    return np.asarray(images[0].dataobj, dtype=np.float64), images[0].affine


def assert_same_grid(
    expected: Volume, array: np.ndarray, affine: np.ndarray, atol_mm: float, atol_value: float
) -> None:
    """Same field of view (corner *sets*: readers order slices themselves) and voxels."""
    got = world_corners(affine, array.shape[:3])
    distance = np.linalg.norm(got[:, None] - expected.corners[None], axis=-1)
    assert distance.min(axis=1).max() < atol_mm
    assert distance.min(axis=0).max() < atol_mm
    if array.ndim == 3:
        array = array[..., None]
    # Reorient both to the closest RAS+ voxel order, then compare voxel by voxel.
    a = canonical(Volume(np.moveaxis(array, -1, 0), affine))
    b = canonical(expected)
    np.testing.assert_allclose(a.affine, b.affine, atol=atol_mm)
    np.testing.assert_allclose(
        a.array, np.asarray(b.array, dtype=np.float64), rtol=0, atol=atol_value
    )


def read_headers(paths: list[Path]) -> list[Dataset]:
    return [pydicom.dcmread(p) for p in paths]


def minimal_template() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "P123"
    ds.PatientBirthDate = "19800101"
    ds.PatientSex = "F"
    ds.StudyDate = "20240102"
    ds.StudyDescription = "Brain"
    ds.SeriesNumber = 7
    ds.SeriesDescription = "T2 TSE ax"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.Manufacturer = "ACME"
    ds.MagneticFieldStrength = "3"
    ds.EchoTime = "90"
    ds.RepetitionTime = "5000"
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "SK"
    ds.MRAcquisitionType = "2D"
    ds.PatientPosition = "HFS"
    # per-instance / geometry attributes that must NOT be copied
    ds.ImagePositionPatient = ["1", "2", "3"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = ["0.5", "0.5"]
    ds.Rows, ds.Columns = 512, 512
    ds.InstanceNumber = 99
    return ds


# --- geometry and values round-trip through real readers ---------------------------


@pytest.mark.parametrize("order", range(len(AXIS_ORDERS)))
def test_simpleitk_reads_same_geometry_and_values(order: int, tmp_path: Path) -> None:
    # All 48 signed axis orders: each takes ~20 ms, the whole set well under 20 s.
    volume = phantom(order, seed=order)
    write_dicom_series(volume, tmp_path / "series")
    array, affine = read_sitk(tmp_path / "series")
    assert_same_grid(volume, array, affine, atol_mm=1e-4, atol_value=0)


@pytest.mark.parametrize("order", range(0, len(AXIS_ORDERS), 5))
def test_dcm2niix_reads_same_geometry_and_values(order: int, tmp_path: Path) -> None:
    volume = phantom(order, seed=order)
    write_dicom_series(volume, tmp_path / "series")
    array, affine = read_dcm2niix(tmp_path / "series", tmp_path)
    # dcm2niix stores a float32 sform: ~5e-5 mm error seen at these ~120 mm offsets,
    # still within the 1e-4 mm geometry tolerance.
    assert_same_grid(volume, array, affine, atol_mm=1e-4, atol_value=0)


@pytest.mark.parametrize("scale,offset", [(1.0, 0.0), (0.0013, -0.2), (3.7e4, -1e5)])
def test_float_values_come_back_within_rescale_precision(
    scale: float, offset: float, tmp_path: Path
) -> None:
    base = phantom(3, seed=3, dtype="float32")
    data = np.asarray(base.array, dtype=np.float64) * scale + offset
    assert data.min() < 0 and not np.array_equal(data, np.round(data))
    volume = base.replace(array=data.astype(np.float32))
    expected = np.asarray(volume.array, dtype=np.float64)
    span = expected.max() - expected.min()
    paths = write_dicom_series(volume, tmp_path / "series")
    headers = read_headers(paths)
    assert {h.PixelRepresentation for h in headers} == {1}
    assert {(str(h.RescaleSlope), str(h.RescaleIntercept)) for h in headers} == {
        (str(headers[0].RescaleSlope), str(headers[0].RescaleIntercept))
    }  # one mapping for the whole series
    assert all(h.RescaleType == "US" for h in headers)
    array, affine = read_sitk(tmp_path / "series")
    assert_same_grid(volume, array, affine, atol_mm=1e-4, atol_value=1e-3 * span)
    # nothing clipped: the extremes come back
    assert abs(array.max() - expected.max()) <= 1e-4 * span
    assert abs(array.min() - expected.min()) <= 1e-4 * span
    assert float(headers[0].WindowWidth) > 0


def test_float_values_through_dcm2niix(tmp_path: Path) -> None:
    volume = phantom(9, seed=9, dtype="float32")
    expected = np.asarray(volume.array, dtype=np.float64)
    write_dicom_series(volume, tmp_path / "series")
    array, affine = read_dcm2niix(tmp_path / "series", tmp_path)
    span = expected.max() - expected.min()
    assert_same_grid(volume, array, affine, atol_mm=1e-4, atol_value=1e-3 * span)


# --- the pure helpers ---------------------------------------------------------------


@pytest.mark.parametrize(
    "values,dtype,exact",
    [
        ([-32768, 0, 32767], "int16", True),
        ([0, 40000, 65535], "uint16", True),
        ([-40000, 0, 40000], "int16", False),
        ([0, 70000], "uint16", False),
        ([0.25, 0.5, 0.75], "uint16", False),
        ([-1.5, 2.25], "int16", False),
        ([1e-9, 3e-9], "uint16", False),
        ([0.3, 0.3], "uint16", True),
    ],
)
def test_intensity_mapping_never_clips(values: list[float], dtype: str, exact: bool) -> None:
    data = np.array(values, dtype=np.float64)
    mapping = intensity_mapping(data)
    assert mapping.dtype == dtype
    # readers decode with the DS strings written, so use exactly those
    assert float(mapping.slope_ds) == mapping.slope
    assert float(mapping.intercept_ds) == mapping.intercept
    stored = to_stored(data, mapping)
    assert stored.dtype == np.dtype(dtype)
    decoded = stored.astype(np.float64) * mapping.slope + mapping.intercept
    span = data.max() - data.min()
    if exact:
        np.testing.assert_array_equal(decoded, data)
    else:
        np.testing.assert_allclose(decoded, data, rtol=0, atol=1e-4 * span)
        info = np.iinfo(dtype)
        assert stored.min() <= info.min + 1 and stored.max() >= info.max - 1  # full range used


def test_intensity_mapping_refuses_nan() -> None:
    with pytest.raises(InputError, match="NaN or infinite"):
        intensity_mapping(np.array([0.0, np.nan]))


def test_geometry_of_an_axial_grid() -> None:
    affine = np.diag([0.9, 1.2, 3.0, 1.0])
    affine[:3, 3] = [10.0, 20.0, 30.0]
    geometry = dicom_geometry(affine, (4, 5, 3))
    # RAS +x/+y are LPS -x/-y
    np.testing.assert_allclose(geometry.orientation, [-1, 0, 0, 0, -1, 0])
    assert geometry.pixel_spacing == pytest.approx((1.2, 0.9))  # (row = Y, column = X)
    assert geometry.slice_spacing == pytest.approx(3.0)
    np.testing.assert_allclose(geometry.normal, [0, 0, 1])
    np.testing.assert_allclose(geometry.positions, [[-10, -20, 30], [-10, -20, 33], [-10, -20, 36]])
    np.testing.assert_allclose(geometry.slice_locations, [30, 33, 36])


def test_geometry_of_a_left_handed_grid_keeps_positions_from_the_affine() -> None:
    affine = np.diag([0.9, 1.2, -3.0, 1.0])  # slices run inferior: against the normal
    geometry = dicom_geometry(affine, (4, 5, 3))
    assert geometry.slice_spacing == pytest.approx(3.0)
    np.testing.assert_allclose(geometry.slice_locations, [0, -3, -6])


@pytest.mark.parametrize(
    "column,sheared",
    [(2, [0.05, 0.0, 3.0]), (1, [0.02, 1.2, 0.0]), (2, [0.0, 0.3, 3.0])],
)
def test_sheared_affine_raises(column: int, sheared: list[float], tmp_path: Path) -> None:
    affine = np.diag([0.9, 1.2, 3.0, 1.0])
    affine[:3, column] = sheared
    with pytest.raises(GeometryError, match="sheared"):
        dicom_geometry(affine, (24, 20, 12))
    volume = Volume(np.zeros((1, 24, 20, 12), np.float32), affine)
    with pytest.raises(GeometryError, match="DICOM"):
        write_dicom_series(volume, tmp_path / "series")
    assert not (tmp_path / "series").exists()


def test_float32_rounding_noise_is_not_shear() -> None:
    # an affine read from a float32 NIfTI sform is orthogonal only to ~1e-7
    affine = phantom(17, seed=17).affine.astype(np.float32).astype(np.float64)
    dicom_geometry(affine, (24, 20, 12))


# --- header content -----------------------------------------------------------------


def test_headers_without_template_are_a_valid_generated_series(tmp_path: Path) -> None:
    volume = phantom(0, seed=0, shape=(6, 5, 4))
    paths = write_dicom_series(volume, tmp_path / "series")
    assert [p.name for p in paths] == [f"IM_{n:04d}.dcm" for n in range(1, 5)]
    headers = read_headers(paths)
    first = headers[0]
    assert first.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert first.file_meta.MediaStorageSOPClassUID == MRImageStorage
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    assert first.SOPClassUID == MRImageStorage
    assert first.SpecificCharacterSet == "ISO_IR 192"
    assert first.Modality == "MR"
    assert list(first.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert str(first.PatientName) == "mrisr^generated"
    assert first.PatientID == "MRISR-GENERATED"
    assert "not a real patient" in first.PatientComments
    assert "not a real patient" in first.ImageComments
    assert first.SeriesNumber == 1001
    assert "mrisr" in first.SoftwareVersions
    assert first.ContributingEquipmentSequence[0].Manufacturer == "mrisr"
    assert first.DerivationDescription
    assert "SourceImageSequence" not in first
    assert (first.Rows, first.Columns) == (5, 6)  # (Y, X)
    assert (first.BitsAllocated, first.SamplesPerPixel) == (16, 1)
    assert first.PhotometricInterpretation == "MONOCHROME2"
    assert float(first.SliceThickness) == pytest.approx(3.0)
    assert float(first.SpacingBetweenSlices) == pytest.approx(3.0)
    assert [h.InstanceNumber for h in headers] == [1, 2, 3, 4]
    assert len({h.SOPInstanceUID for h in headers}) == 4
    assert len({h.SeriesInstanceUID for h in headers}) == 1
    assert len({h.StudyInstanceUID for h in headers}) == 1
    np.testing.assert_array_equal(
        first.pixel_array, np.asarray(volume.array)[0, :, :, 0].T.astype(np.int16)
    )
    locations = [float(h.SliceLocation) for h in headers]
    assert np.allclose(np.abs(np.diff(locations)), 3.0)


def test_meta_uids_are_used_without_template(tmp_path: Path) -> None:
    study, frame = generate_uid(), generate_uid()
    volume = phantom(1, seed=1, shape=(4, 4, 2))
    volume = volume.replace(meta={"study_uid": study, "frame_of_reference_uid": frame})
    headers = read_headers(write_dicom_series(volume, tmp_path / "series"))
    assert {h.StudyInstanceUID for h in headers} == {study}
    assert {h.FrameOfReferenceUID for h in headers} == {frame}


def test_template_keeps_patient_study_frame_and_gets_new_uids(tmp_path: Path) -> None:
    template = minimal_template()
    sources = [(MRImageStorage, generate_uid()) for _ in range(5)]
    volume = phantom(2, seed=2, shape=(8, 6, 5))
    volume = volume.replace(
        meta={"dicom_template": template, "dicom_sources": sources, "derivation": "VDSR x3"}
    )
    headers = read_headers(write_dicom_series(volume, tmp_path / "series"))
    sop_uids = {h.SOPInstanceUID for h in headers}
    assert len(sop_uids) == len(headers) == 5
    assert template.SOPInstanceUID not in sop_uids
    assert {h.SeriesInstanceUID for h in headers} != {template.SeriesInstanceUID}
    assert len({h.SeriesInstanceUID for h in headers}) == 1
    for h in headers:
        assert h.StudyInstanceUID == template.StudyInstanceUID
        assert h.FrameOfReferenceUID == template.FrameOfReferenceUID
        assert str(h.PatientName) == "Doe^Jane" and h.PatientID == "P123"
        assert h.PatientBirthDate == "19800101" and h.StudyDescription == "Brain"
        assert h.Manufacturer == "ACME" and float(h.EchoTime) == 90
        assert h.ScanningSequence == "SE" and h.PatientPosition == "HFS"
        assert list(h.ImageType) == ["DERIVED", "SECONDARY", "M", "ND"]
        assert h.SeriesNumber == 1007
        assert h.SeriesDescription == "T2 TSE ax mrisr"
        assert h.DerivationDescription == "VDSR x3"
        assert "PatientComments" not in h
        refs = [
            (r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID) for r in h.SourceImageSequence
        ]
        assert refs == sources
        # geometry and per-instance values are the new grid's, not the template's
        assert (h.Rows, h.Columns) == (6, 8)
        assert h.InstanceNumber != 99
    assert [float(v) for v in headers[0].ImagePositionPatient] != [1.0, 2.0, 3.0]


def test_template_instance_is_the_source_when_no_sources_given(tmp_path: Path) -> None:
    template = minimal_template()
    volume = phantom(2, seed=2, shape=(4, 4, 2)).replace(meta={"dicom_template": template})
    header = read_headers(write_dicom_series(volume, tmp_path / "series"))[0]
    assert header.SourceImageSequence[0].ReferencedSOPInstanceUID == template.SOPInstanceUID


def test_multichannel_is_one_series_with_temporal_positions(tmp_path: Path) -> None:
    volume = phantom(4, seed=4, shape=(6, 5, 4), channels=3)
    paths = write_dicom_series(volume, tmp_path / "series")
    assert len(paths) == 3 * 4
    headers = read_headers(paths)
    assert sorted(h.InstanceNumber for h in headers) == list(range(1, 13))
    assert len({h.SOPInstanceUID for h in headers}) == 12
    assert len({h.SeriesInstanceUID for h in headers}) == 1
    assert {h.NumberOfTemporalPositions for h in headers} == {3}
    array = np.asarray(volume.array)
    for n, h in enumerate(headers):
        c, k = divmod(n, 4)
        assert h.TemporalPositionIdentifier == c + 1
        assert h.AcquisitionNumber == c + 1
        assert h.InstanceNumber == c * 4 + k + 1
        np.testing.assert_array_equal(h.pixel_array, array[c, :, :, k].T.astype(np.int16))


def test_multichannel_through_dcm2niix_is_4d(tmp_path: Path) -> None:
    volume = phantom(10, seed=10, channels=3)
    write_dicom_series(volume, tmp_path / "series")
    array, affine = read_dcm2niix(tmp_path / "series", tmp_path)
    assert array.shape[3] == 3
    assert_same_grid(volume, array, affine, atol_mm=1e-4, atol_value=0)


def test_torch_array_and_single_slice(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    volume = phantom(5, seed=5, shape=(8, 7, 1))
    as_torch = volume.replace(array=torch.from_numpy(np.asarray(volume.array)))
    paths = write_dicom_series(as_torch, tmp_path / "series")
    header = pydicom.dcmread(paths[0])
    assert float(header.SliceThickness) == pytest.approx(3.0)
    array, affine = read_sitk(tmp_path / "series")
    assert_same_grid(volume, array, affine, atol_mm=1e-4, atol_value=0)


def test_refuses_nan_and_a_file_as_folder(tmp_path: Path) -> None:
    volume = phantom(0, seed=0, shape=(4, 4, 2))
    data = np.array(volume.array)
    data[0, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        write_dicom_series(volume.replace(array=data), tmp_path / "nan")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        write_dicom_series(volume, tmp_path / "file")


def test_write_errors_become_output_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pydicom, "dcmwrite", refuse)
    volume = phantom(0, seed=0, shape=(4, 4, 2))
    folder = tmp_path / "series"
    with pytest.raises(OutputError) as caught:
        write_dicom_series(volume, folder)
    message = str(caught.value)
    assert str(folder) in message
    assert "cannot write DICOM files: Permission denied" in message
    assert "check that the folder is writable" in message
    assert isinstance(caught.value.__cause__, PermissionError)


def test_a_file_in_the_folder_path_becomes_an_output_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    folder = tmp_path / "file" / "series"  # mkdir fails: a parent is a file
    with pytest.raises(OutputError, match="cannot write DICOM files") as caught:
        write_dicom_series(phantom(0, seed=0, shape=(4, 4, 2)), folder)
    assert str(folder) in str(caught.value)


# --- templates and per-channel acquisition keys -------------------------------------


@pytest.mark.parametrize("name", [None, ""])
def test_template_without_patient_name_keeps_it_empty(name: str | None, tmp_path: Path) -> None:
    # anonymised data: a real PatientID and no name must not get a generated name
    template = minimal_template()
    del template.PatientName
    if name is not None:
        template.PatientName = name
    del template.PatientPosition
    volume = phantom(1, seed=1, shape=(4, 4, 2)).replace(meta={"dicom_template": template})
    for h in read_headers(write_dicom_series(volume, tmp_path / "series")):
        assert "PatientName" in h and str(h.PatientName) == ""  # type 2: present, empty
        assert h.PatientID == "P123"
        assert "PatientComments" not in h and "ImageComments" not in h
        assert h.PatientPosition == ""  # the template has none: nothing is invented
        assert "mrisr" not in str(h.PatientName) + h.PatientID
        assert h.Manufacturer == "ACME"


def test_real_anonymised_mosaic_keeps_its_empty_name(tmp_path: Path) -> None:
    source = Path("/work/shared/data/dicom/siemens_dwi_mosaic")
    if not source.is_dir():
        pytest.skip(f"needs the sample data at {source}")
    from mrisr.io import load

    volume = load(source)
    template = volume.meta["dicom_template"]
    header = read_headers(write_dicom_series(volume, tmp_path / "series"))[0]
    assert str(header.PatientName) == str(template.get("PatientName", "") or "")
    assert header.PatientID == template.PatientID
    assert header.PatientPosition == template.PatientPosition
    assert "PatientComments" not in header


def test_generated_series_has_a_default_patient_position(tmp_path: Path) -> None:
    header = read_headers(write_dicom_series(phantom(0, seed=0, shape=(4, 4, 2)), tmp_path / "a"))[0]
    assert header.PatientPosition == "HFS"
    template = minimal_template()
    template.PatientPosition = "FFS"
    volume = phantom(0, seed=0, shape=(4, 4, 2)).replace(meta={"dicom_template": template})
    header = read_headers(write_dicom_series(volume, tmp_path / "b"))[0]
    assert header.PatientPosition == "FFS"


@pytest.mark.parametrize(
    "described,expected",
    [
        ("T2 TSE ax", "T2 TSE ax mrisr"),
        ("T2 TSE ax mrisr", "T2 TSE ax mrisr"),
        ("mrisr derived", "mrisr derived"),
        ("", "mrisr derived"),
        ("x" * 64, "x" * 58 + " mrisr"),
    ],
)
def test_series_description_does_not_stack(described: str, expected: str, tmp_path: Path) -> None:
    template = minimal_template()
    template.SeriesDescription = described
    volume = phantom(0, seed=0, shape=(4, 4, 2)).replace(meta={"dicom_template": template})
    header = read_headers(write_dicom_series(volume, tmp_path / "series"))[0]
    assert header.SeriesDescription == expected


def test_derived_twice_keeps_one_suffix(tmp_path: Path) -> None:
    from mrisr.io import load

    template = minimal_template()
    volume = phantom(0, seed=0, shape=(4, 4, 2)).replace(meta={"dicom_template": template})
    write_dicom_series(volume, tmp_path / "once")
    again = load(tmp_path / "once")
    header = read_headers(write_dicom_series(again, tmp_path / "twice"))[0]
    assert header.SeriesDescription == "T2 TSE ax mrisr"


DWI_CHANNELS = [
    {"b_value": 0, "acquisition_number": 1, "temporal_position": 7},
    # Siemens' private gradient arrives as a tuple of floats
    {"b_value": 1000, "gradient": (0.6, 0.8, 0.0), "echo_time": 4.5, "echo_number": 2},
    {"b_value": "1000", "gradient": (0.0, -0.6, 0.8), "echo_time": 5.5, "echo_number": 3},
]


def test_channel_keys_are_written_per_channel(tmp_path: Path) -> None:
    template = minimal_template()  # EchoTime 90 for channels without their own
    volume = phantom(4, seed=4, shape=(6, 5, 3), channels=3)
    volume = volume.replace(meta={"dicom_template": template, "channels": DWI_CHANNELS})
    headers = read_headers(write_dicom_series(volume, tmp_path / "series"))
    for n, h in enumerate(headers):
        c = n // 3
        assert h.TemporalPositionIdentifier == c + 1  # never the source's
        assert float(h.DiffusionBValue) == [0.0, 1000.0, 1000.0][c]
        if c == 0:
            assert "DiffusionGradientOrientation" not in h
            assert float(h.EchoTime) == 90 and "EchoNumbers" not in h
        else:
            expected = DWI_CHANNELS[c]
            np.testing.assert_allclose(h.DiffusionGradientOrientation, expected["gradient"])
            assert float(h.EchoTime) == expected["echo_time"]
            assert int(h.EchoNumbers) == expected["echo_number"]


@pytest.mark.parametrize(
    "channels",
    [
        DWI_CHANNELS[:2],  # shorter than C
        [*DWI_CHANNELS, {"b_value": 5}],  # longer than C
        {"b_value": 1000},  # not a list
    ],
)
def test_channel_keys_of_another_length_are_ignored(channels: object, tmp_path: Path) -> None:
    volume = phantom(4, seed=4, shape=(4, 4, 2), channels=3).replace(meta={"channels": channels})
    for h in read_headers(write_dicom_series(volume, tmp_path / "series")):
        assert "DiffusionBValue" not in h and "DiffusionGradientOrientation" not in h


@pytest.mark.parametrize(
    "gradient",
    [(1.0, 0.0), (1.0, float("nan"), 0.0), "0.6\\0.8\\0", (1.0, "x", 0.0), None],
)
def test_gradient_only_when_three_finite_numbers(gradient: object, tmp_path: Path) -> None:
    channels = [{"b_value": 1000, "gradient": gradient}]
    volume = phantom(0, seed=0, shape=(4, 4, 2)).replace(meta={"channels": channels})
    header = read_headers(write_dicom_series(volume, tmp_path / "series"))[0]
    assert float(header.DiffusionBValue) == 1000
    assert "DiffusionGradientOrientation" not in header


@pytest.mark.parametrize("manufacturer", [None, "SIEMENS"])
def test_dcm2niix_writes_bval_and_bvec(manufacturer: str | None, tmp_path: Path) -> None:
    exe = needs_dcm2niix()
    # only the diffusion keys differ: dcm2niix splits a series on echo number
    channels = [{k: v for k, v in keys.items() if not k.startswith("echo")} for keys in DWI_CHANNELS]
    meta: dict[str, object] = {"channels": channels}
    if manufacturer is not None:
        template = minimal_template()
        template.Manufacturer = manufacturer
        meta["dicom_template"] = template
    volume = phantom(10, seed=10, channels=3).replace(meta=meta)
    write_dicom_series(volume, tmp_path / "series")
    out = tmp_path / "dcm2niix"
    out.mkdir()
    result = subprocess.run(
        [exe, "-z", "n", "-b", "y", "-f", "out", "-o", str(out), str(tmp_path / "series")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Patient Position" not in result.stdout  # generated: HFS; template: its own
    bval = out / "out.bval"
    bvec = out / "out.bvec"
    assert bval.exists() and bvec.exists(), (result.stdout, sorted(out.iterdir()))
    assert [float(v) for v in bval.read_text().split()] == [0.0, 1000.0, 1000.0]
    vectors = np.loadtxt(bvec).reshape(3, 3).T  # rows of the file are x, y, z
    np.testing.assert_allclose(vectors[0], 0.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors[1:], axis=1), 1.0, atol=1e-4)
    gradients = np.array([DWI_CHANNELS[c]["gradient"] for c in (1, 2)])  # LPS
    if manufacturer is None:
        # dcm2niix copies an unknown vendor's vectors as they are: compare the
        # angle between the two directions, which any rotation or reflection keeps
        assert float(vectors[1] @ vectors[2]) == pytest.approx(
            float(gradients[0] @ gradients[1]), abs=1e-4
        )
        return
    # A vendor dcm2niix knows: the bvec is in voxel axes (FSL: x flipped when det > 0)
    affine = nib.load(out / "out.nii").affine[:3, :3]
    axes = affine / np.linalg.norm(affine, axis=0)
    expected = (axes.T @ (LPS[:3, :3] @ gradients.T)).T
    if np.linalg.det(affine) > 0:
        expected[:, 0] *= -1
    np.testing.assert_allclose(vectors[1:], expected, atol=1e-4)
