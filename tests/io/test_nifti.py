"""read_nifti / write_nifti: geometry, axes, dtypes, sform/qform rules, bad files."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import AXIS_ORDERS, phantom, phantom_affine

from mrisr.errors import InputError, OutputError
from mrisr.io.nifti import read_nifti, write_nifti
from mrisr.volume import GEOMETRY_ATOL_MM, Volume, world_corners


def _save(data: np.ndarray, affine: np.ndarray, path: Path, **codes: int) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=codes.get("sform", 1))
    img.set_qform(affine, code=codes.get("qform", 1))
    nib.save(img, path)
    return path


def _read_quietly(path: Path) -> Volume:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # our own files must read without any warning
        return read_nifti(path)


def _sitk_ras_affine(image: sitk.Image) -> np.ndarray:
    """An independent LPS -> RAS conversion of SimpleITK's geometry."""
    lps = np.eye(4)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    lps[:3, :3] = direction @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


@pytest.mark.parametrize("order", range(len(AXIS_ORDERS)))
@pytest.mark.parametrize("dtype", ["int16", "uint8", "float32"])
def test_round_trip_all_axis_orders(tmp_path: Path, order: int, dtype: str) -> None:
    volume = phantom(order, seed=order, dtype=dtype)
    path = tmp_path / "p.nii.gz"
    write_nifti(volume, path)
    back = _read_quietly(path)
    assert np.abs(back.corners - volume.corners).max() < GEOMETRY_ATOL_MM
    assert back.array.dtype == np.float32 and back.array.shape == volume.array.shape
    assert np.array_equal(back.array, volume.array)
    assert nib.load(path).get_data_dtype() == np.dtype(dtype)
    assert back.meta["dtype"] == dtype
    assert back.meta["range"] == volume.meta["range"]


def test_written_header_codes_units_and_descrip(tmp_path: Path) -> None:
    volume = phantom(11, seed=3)
    path = tmp_path / "p.nii"
    write_nifti(volume, path)
    header = nib.load(path).header
    sform, s_code = header.get_sform(coded=True)
    qform, q_code = header.get_qform(coded=True)
    assert (int(s_code), int(q_code)) == (1, 1)
    np.testing.assert_allclose(sform, volume.affine, atol=1e-4)
    np.testing.assert_allclose(qform, volume.affine, atol=1e-4)
    assert header.get_xyzt_units()[0] == "mm"
    assert b"mrisr" in header["descrip"].tobytes()


def test_nifti_read_by_simpleitk_has_the_same_corners(tmp_path: Path) -> None:
    for order in (0, 13, 29, 47):
        volume = phantom(order, seed=order)
        path = tmp_path / f"p{order}.nii.gz"
        write_nifti(volume, path)
        image = sitk.ReadImage(str(path))
        assert image.GetSize() == volume.shape
        corners = world_corners(_sitk_ras_affine(image), image.GetSize())
        assert np.abs(corners - volume.corners).max() < GEOMETRY_ATOL_MM
        values = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
        assert np.array_equal(values, volume.array[0])


def test_channels_become_4d_and_back(tmp_path: Path) -> None:
    volume = phantom(4, seed=1, channels=3, dtype="float32")
    path = tmp_path / "dwi.nii.gz"
    write_nifti(volume, path)
    assert nib.load(path).shape == (*volume.shape, 3)
    back = _read_quietly(path)
    assert back.n_channels == 3
    np.testing.assert_array_equal(back.array, volume.array)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((5, 6), (1, 5, 6, 1)),
        ((5, 6, 7), (1, 5, 6, 7)),
        ((5, 6, 7, 1), (1, 5, 6, 7)),  # robex_atlas-style singleton 4th axis
        ((5, 6, 7, 2), (2, 5, 6, 7)),
        ((5, 6, 7, 2, 1), (2, 5, 6, 7)),
        ((5, 6, 7, 1, 1, 1), (1, 5, 6, 7)),
    ],
)
def test_axis_rules(tmp_path: Path, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    data = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    path = _save(data, np.diag([0.5, 0.7, 2.0, 1.0]), tmp_path / "x.nii")
    volume = _read_quietly(path)
    assert volume.array.shape == expected
    flat = data.reshape(shape[:2] + (-1,) if len(shape) == 2 else shape[:3] + (-1,))
    np.testing.assert_array_equal(np.moveaxis(flat, -1, 0).reshape(expected), volume.array)


def test_5d_with_non_singleton_extra_axis_is_refused(tmp_path: Path) -> None:
    path = _save(np.zeros((4, 4, 4, 1, 3), np.float32), np.eye(4), tmp_path / "warp.nii.gz")
    with pytest.raises(InputError, match="5D NIfTI not supported") as info:
        read_nifti(path)
    assert "warp.nii.gz" in str(info.value) and "fslsplit" in str(info.value)


def test_nifti2_is_read(tmp_path: Path) -> None:
    affine = phantom_affine(9, seed=2)
    data = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    img = nib.Nifti2Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, tmp_path / "n2.nii")
    volume = _read_quietly(tmp_path / "n2.nii")
    np.testing.assert_array_equal(volume.array[0], data)
    assert np.abs(volume.corners - world_corners(affine, data.shape)).max() < 1e-4
    assert volume.meta["dtype"] == "uint8"


def test_scaling_is_applied_and_meta_filled(tmp_path: Path) -> None:
    data = np.array([[[0, 1], [2, 3]]], dtype=np.int16)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(0.5, 10.0)
    img.set_sform(np.eye(4), code=1)
    img.set_qform(np.eye(4), code=1)
    path = tmp_path / "scaled.nii"
    nib.save(img, path)
    volume = _read_quietly(path)
    np.testing.assert_array_equal(volume.array[0], data * 0.5 + 10.0)
    assert volume.meta == {
        "source_format": "nifti",
        "source_paths": [str(path)],
        "dtype": "int16",
        "range": [10.0, 11.5],
        "nifti_sform_code": 1,
        "nifti_qform_code": 1,
    }
    out = tmp_path / "out.nii"
    write_nifti(volume, out)  # 10.5 is not an integer: stored as float32, not rounded
    assert nib.load(out).get_data_dtype() == np.float32
    np.testing.assert_array_equal(read_nifti(out).array, volume.array)


def test_sform_code_0_uses_qform(tmp_path: Path) -> None:
    qform = phantom_affine(20, seed=5)
    img = nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), qform)
    img.set_qform(qform, code=1)
    img.set_sform(np.diag([9.0, 9.0, 9.0, 1.0]), code=0)  # present but not coded
    path = tmp_path / "q.nii"
    nib.save(img, path)
    assert np.allclose(nib.load(path).header.get_sform(), np.diag([9.0, 9.0, 9.0, 1.0]))
    volume = _read_quietly(path)
    assert np.abs(volume.corners - world_corners(qform, (4, 5, 6))).max() < 1e-4
    assert volume.meta["nifti_sform_code"] == 0 and volume.meta["nifti_qform_code"] == 1


def test_disagreeing_sform_and_qform_warn_and_sform_wins(tmp_path: Path) -> None:
    sform = phantom_affine(2, seed=1)
    qform = sform.copy()
    qform[:3, 3] += [0.0, 0.5, 0.0]
    img = nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), sform)
    img.set_sform(sform, code=2)
    img.set_qform(qform, code=1)
    path = tmp_path / "both.nii"
    nib.save(img, path)
    with pytest.warns(UserWarning, match=r"disagree by up to 0\.5") as record:
        volume = read_nifti(path)
    assert "both.nii" in str(record[0].message)
    assert np.abs(volume.corners - world_corners(sform, (4, 5, 6))).max() < 1e-4


def test_no_coded_transform_warns_and_uses_pixdim(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), np.diag([2.0, 3.0, 4.0, 1.0]))
    img.set_sform(None, code=0)
    img.set_qform(None, code=0)
    path = tmp_path / "bare.nii"
    nib.save(img, path)
    with pytest.warns(UserWarning, match="both 0"):
        volume = read_nifti(path)
    np.testing.assert_allclose(volume.affine, np.diag([2.0, 3.0, 4.0, 1.0]))


def test_truncated_nii_gz(tmp_path: Path) -> None:
    good = tmp_path / "good.nii.gz"
    write_nifti(phantom(0, seed=0), good)
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated or corrupt NIfTI") as info:
        read_nifti(bad)
    assert "truncated.nii.gz" in str(info.value) and "Fix:" in str(info.value)


def test_header_only_file(tmp_path: Path) -> None:
    good = tmp_path / "good.nii"
    write_nifti(phantom(0, seed=0), good)
    bad = tmp_path / "header_only.nii"
    bad.write_bytes(good.read_bytes()[:352])
    with pytest.raises(InputError, match="truncated or corrupt NIfTI") as info:
        read_nifti(bad)
    assert "header_only.nii" in str(info.value)


def test_gzip_of_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.nii.gz"
    bad.write_bytes(gzip.compress(b"not a nifti header" * 50))
    with pytest.raises(InputError, match="garbage.nii.gz"):
        read_nifti(bad)


def test_text_file_named_nii(tmp_path: Path) -> None:
    bad = tmp_path / "notes.nii"
    bad.write_text("this is not an image\n")
    with pytest.raises(InputError, match="truncated or corrupt NIfTI") as info:
        read_nifti(bad)
    assert "notes.nii" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_nifti(tmp_path / "absent.nii")


def test_nan_voxels_are_refused(tmp_path: Path) -> None:
    data = np.ones((4, 4, 4), np.float32)
    data[1, 2, 3] = np.nan
    path = _save(data, np.eye(4), tmp_path / "holes.nii.gz")
    with pytest.raises(InputError, match="1 NaN") as info:
        read_nifti(path)
    assert "holes.nii.gz" in str(info.value) and "nan_to_num" in str(info.value)


def test_write_refuses_other_suffixes(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"\.nii or \.nii\.gz"):
        write_nifti(phantom(), tmp_path / "x.nrrd")


def test_sheared_affine_writes_exact_sform_and_no_qform(tmp_path: Path) -> None:
    volume = phantom(5, seed=4)
    sheared = volume.affine.copy()
    sheared[:3, 1] += 0.05 * sheared[:3, 0]  # column 1 leans towards column 0: no rotation x zooms
    volume = Volume(volume.array, sheared, volume.meta)
    path = tmp_path / "sheared.nii.gz"
    write_nifti(volume, path)
    header = nib.load(path).header
    assert (int(header["sform_code"]), int(header["qform_code"])) == (1, 0)
    back = _read_quietly(path)  # no "sform and qform disagree" warning from our own file
    np.testing.assert_allclose(back.affine, sheared, rtol=0, atol=1e-4)  # float32 storage
    np.testing.assert_array_equal(back.affine, header.get_sform())
    assert back.meta["nifti_sform_code"] == 1 and back.meta["nifti_qform_code"] == 0


def test_nearly_orthogonal_affine_keeps_both_codes(tmp_path: Path) -> None:
    volume = phantom(9, seed=6)
    affine = volume.affine.copy()
    affine[:3, 1] += 1e-7 * affine[:3, 0]  # rounding noise, as in DICOM orientations
    path = tmp_path / "rigid.nii"
    write_nifti(Volume(volume.array, affine, volume.meta), path)
    header = nib.load(path).header
    assert (int(header["sform_code"]), int(header["qform_code"])) == (1, 1)
    _read_quietly(path)
