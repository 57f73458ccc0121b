"""Round trips through mrisr.save/mrisr.load: NIfTI -> DICOM -> NIfTI and NIfTI -> NRRD -> NIfTI,
and a derived series from real DICOM checked with SimpleITK and dcm2niix."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import AXIS_ORDERS, needs_dcm2niix, needs_shared_data, phantom

import mrisr
from mrisr.volume import Volume, canonical, world_corners

TOL_MM = 1e-4


def _same_geometry(a: Volume, b: Volume) -> None:
    """Same voxels on the same grid, after both are put in RAS+ voxel order."""
    ca, cb = canonical(a), canonical(b)
    assert ca.shape == cb.shape
    np.testing.assert_allclose(
        world_corners(ca.affine, ca.shape), world_corners(cb.affine, cb.shape), atol=TOL_MM, rtol=0
    )
    np.testing.assert_allclose(ca.affine, cb.affine, atol=TOL_MM, rtol=0)


def _same_values(a: Volume, b: Volume, integer: bool) -> None:
    ca, cb = canonical(a), canonical(b)
    if integer:
        np.testing.assert_array_equal(np.asarray(ca.array), np.asarray(cb.array))
    else:
        span = float(np.ptp(np.asarray(ca.array)))
        np.testing.assert_allclose(np.asarray(ca.array), np.asarray(cb.array), atol=1e-3 * span, rtol=0)


def _chain(volume: Volume, tmp: Path, middle: str) -> tuple[Volume, Volume, Volume]:
    """NIfTI -> middle format -> NIfTI, each step through mrisr.save and mrisr.load."""
    first = mrisr.load(mrisr.save(volume, tmp / "in.nii.gz"))
    mid_path = tmp / ("mid_dicom" if middle == "dicom" else f"mid.{middle}")
    mid = mrisr.load(mrisr.save(first, mid_path, format=middle))
    last = mrisr.load(mrisr.save(mid, tmp / "out.nii.gz"))
    return first, mid, last


@pytest.mark.parametrize("middle", ["dicom", "nrrd"])
@pytest.mark.parametrize("dtype", ["int16", "float32"])
@pytest.mark.parametrize("order", range(len(AXIS_ORDERS)))
def test_phantom_round_trip(tmp_path: Path, order: int, dtype: str, middle: str) -> None:
    vol = phantom(order, seed=order, shape=(12, 10, 6), dtype=dtype)
    if dtype == "float32":
        vol = vol.replace(array=vol.array * np.float32(0.37) - np.float32(11.5), meta={"dtype": "float32"})
    first, mid, last = _chain(vol, tmp_path, middle)
    for v in (first, mid, last):
        _same_geometry(vol, v)
        _same_values(vol, v, integer=dtype == "int16")
    assert last.meta["dtype"] == dtype


def test_multichannel_dicom_round_trip(tmp_path: Path) -> None:
    vol = phantom(7, seed=3, shape=(10, 8, 5), channels=3)
    _, mid, last = _chain(vol, tmp_path, "dicom")
    assert mid.n_channels == 3 and last.n_channels == 3
    _same_geometry(vol, last)
    _same_values(vol, last, integer=True)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    ["mni152_2009a_T1w.nii.gz", "pycortex_S1_T1w.nii.gz", "pydeface_mean_T1w.nii.gz", "robex_atlas_T1w.nii.gz"],
)
def test_shared_volume_dicom_round_trip(tmp_path: Path, name: str) -> None:
    src = needs_shared_data("volumes") / name
    vol = mrisr.load(src)
    mid = mrisr.load(mrisr.save(vol, tmp_path / "dicom", format="dicom"))
    last = mrisr.load(mrisr.save(mid, tmp_path / "out.nii.gz"))
    for v in (mid, last):
        _same_geometry(vol, v)
        _same_values(vol, v, integer=True)
    # MR DICOM stores 16 bits (the MR IOD's BitsAllocated), so uint8 comes back as int16: still exact.
    assert np.issubdtype(np.dtype(last.meta["dtype"]), np.integer)


def _sitk_ras_corners(image: sitk.Image) -> np.ndarray:
    direction = np.array(image.GetDirection()).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.array(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return world_corners(np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, image.GetSize())


def _sorted_rows(a: np.ndarray) -> np.ndarray:
    return a[np.lexsort(np.round(a, 2).T[::-1])]


def test_derived_series_from_real_dicom(tmp_path: Path) -> None:
    """Real mosaic DWI -> derived series: new Series/SOP UIDs, DERIVED\\SECONDARY, the source's
    Study and Frame of Reference UIDs; SimpleITK and dcm2niix read the same geometry."""
    src = needs_shared_data("dicom/siemens_dwi_mosaic")
    vol = mrisr.load(src)
    one = vol.replace(array=vol.array[:1])  # SimpleITK's series reader is 3D
    out = mrisr.save(one, tmp_path / "derived", format="dicom")
    files = sorted(out.iterdir())
    assert len(files) == one.shape[2]
    source = pydicom.dcmread(next(src.iterdir()), stop_before_pixels=True)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert {h.SeriesInstanceUID for h in headers} == {headers[0].SeriesInstanceUID} != {source.SeriesInstanceUID}
    assert len({h.SOPInstanceUID for h in headers}) == len(headers)
    assert source.SOPInstanceUID not in {h.SOPInstanceUID for h in headers}
    assert all(list(h.ImageType)[:2] == ["DERIVED", "SECONDARY"] for h in headers)
    assert all(h.StudyInstanceUID == source.StudyInstanceUID for h in headers)
    assert all(h.FrameOfReferenceUID == source.FrameOfReferenceUID for h in headers)

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(out)))
    image = reader.Execute()
    np.testing.assert_allclose(_sorted_rows(_sitk_ras_corners(image)), _sorted_rows(one.corners), atol=TOL_MM)

    exe = needs_dcm2niix()
    subprocess.run([exe, "-z", "n", "-b", "n", "-f", "d2n", "-o", str(tmp_path), str(out)],
                   check=True, capture_output=True)
    img = nib.load(tmp_path / "d2n.nii")
    d2n = Volume(np.asarray(img.dataobj, dtype=np.float32)[None], img.affine)
    _same_geometry(one, d2n)  # dcm2niix stores a float32 affine: still within 1e-4 mm here
    _same_values(one, d2n, integer=True)
    again = mrisr.load(out)
    _same_geometry(one, again)
    _same_values(one, again, integer=True)
