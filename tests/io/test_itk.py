"""read_itk / write_itk: NIfTI <-> NRRD/MHA round trips, LPS headers, bad files."""

from __future__ import annotations

import gzip
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import AXIS_ORDERS, needs_shared_data, phantom

from mrisr.errors import InputError, OutputError
from mrisr.io import itk, save
from mrisr.io.itk import _data_files, read_itk, write_itk
from mrisr.io.nifti import read_nifti, write_nifti
from mrisr.volume import GEOMETRY_ATOL_MM, Volume


def _nrrd_header(path: Path) -> dict[str, str]:
    """The ``key: value`` fields of an attached-header NRRD file."""
    raw = path.read_bytes()
    text = raw[: raw.index(b"\n\n")].decode("ascii")
    assert text.startswith("NRRD")
    return dict(line.split(": ", 1) for line in text.splitlines()[1:] if not line.startswith("#"))


def _vectors(field: str) -> list[list[float]]:
    """``(a,b,c) (d,e,f)`` -> ``[[a,b,c], [d,e,f]]``; ``none`` entries are skipped."""
    return [[float(x) for x in g.split(",")] for g in re.findall(r"\(([^)]*)\)", field)]


def _assert_same(back: Volume, volume: Volume, dtype: str) -> None:
    assert np.abs(back.corners - volume.corners).max() < GEOMETRY_ATOL_MM
    assert back.array.shape == volume.array.shape and back.array.dtype == np.float32
    if np.dtype(dtype).kind in "iu":
        assert np.array_equal(back.array, volume.array)
    else:
        np.testing.assert_allclose(back.array, volume.array, rtol=1e-3, atol=0)


def _nifti_nrrd_nifti(volume: Volume, folder: Path) -> tuple[Volume, Volume]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_nifti(volume, folder / "a.nii.gz")
        first = read_nifti(folder / "a.nii.gz")
        write_itk(first, folder / "b.nrrd")
        middle = read_itk(folder / "b.nrrd")
        write_nifti(middle, folder / "c.nii.gz")
        return middle, read_nifti(folder / "c.nii.gz")


@pytest.mark.parametrize("order", range(len(AXIS_ORDERS)))
@pytest.mark.parametrize("dtype", ["int16", "float32"])
def test_nifti_nrrd_nifti_round_trip_all_axis_orders(tmp_path: Path, order: int, dtype: str) -> None:
    volume = phantom(order, seed=order, dtype=dtype)
    middle, back = _nifti_nrrd_nifti(volume, tmp_path)
    _assert_same(middle, volume, dtype)
    _assert_same(back, volume, dtype)
    assert middle.meta["source_format"] == "nrrd" and middle.meta["dtype"] == dtype
    assert back.meta["dtype"] == dtype


@pytest.mark.slow
def test_nifti_nrrd_nifti_round_trip_real_volumes(tmp_path: Path) -> None:
    folder = needs_shared_data("volumes")
    paths = sorted(folder.glob("*.nii*"))
    assert paths, f"no NIfTI files in {folder}"
    for path in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # real headers may carry sform/qform quirks
            original = read_nifti(path)
        write_itk(original, tmp_path / "b.nrrd")
        middle = read_itk(tmp_path / "b.nrrd")
        write_nifti(middle, tmp_path / "c.nii.gz")
        back = read_nifti(tmp_path / "c.nii.gz")
        for result in (middle, back):
            assert np.abs(result.corners - original.corners).max() < GEOMETRY_ATOL_MM, path.name
            assert np.array_equal(result.array, original.array), path.name
        assert back.meta["dtype"] == original.meta["dtype"], path.name


@pytest.mark.parametrize("order", [0, 7, 21, 46])
def test_nrrd_header_is_lps_like_slicer(tmp_path: Path, order: int) -> None:
    volume = phantom(order, seed=order)
    path = tmp_path / "p.nrrd"
    write_itk(volume, path)
    header = _nrrd_header(path)
    assert header["space"] == "left-posterior-superior"
    assert header["encoding"] == "gzip"
    assert header["type"] == "short"
    assert header["sizes"].split() == [str(n) for n in volume.shape]
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.affine
    directions = np.array(_vectors(header["space directions"]))  # one row per voxel axis
    np.testing.assert_allclose(directions, lps[:3, :3].T, atol=1e-9)
    np.testing.assert_allclose(_vectors(header["space origin"])[0], lps[:3, 3], atol=1e-9)


def test_channels_are_vector_components(tmp_path: Path) -> None:
    volume = phantom(30, seed=4, channels=3, dtype="float32")
    path = tmp_path / "v.nrrd"
    write_itk(volume, path)
    header = _nrrd_header(path)
    assert header["kinds"].split()[0] == "vector" and header["sizes"].split()[0] == "3"
    assert header["space directions"].startswith("none")
    back = read_itk(path)
    _assert_same(back, volume, "float32")
    assert back.n_channels == 3


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_mha_round_trip(tmp_path: Path, dtype: str) -> None:
    volume = phantom(17, seed=9, dtype=dtype)
    write_itk(volume, tmp_path / "p.mha")
    back = read_itk(tmp_path / "p.mha")
    _assert_same(back, volume, dtype)
    assert back.meta["source_format"] == "mha"
    assert sitk.ReadImage(str(tmp_path / "p.mha")).GetPixelID() == (
        sitk.sitkUInt8 if dtype == "uint8" else sitk.sitkFloat32
    )


def test_non_integer_values_are_not_squeezed_into_the_source_dtype(tmp_path: Path) -> None:
    volume = phantom(1, seed=1, dtype="int16")
    volume = volume.replace(array=volume.array * 0.5)  # now holds halves
    write_itk(volume, tmp_path / "p.nrrd")
    assert _nrrd_header(tmp_path / "p.nrrd")["type"] == "float"
    np.testing.assert_array_equal(read_itk(tmp_path / "p.nrrd").array, volume.array)


def test_2d_image_reads_as_singleton_z(tmp_path: Path) -> None:
    data = np.arange(12, dtype=np.int16).reshape(3, 4)  # (Y, X) in numpy order
    image = sitk.GetImageFromArray(data)
    image.SetSpacing((0.5, 0.8))
    image.SetOrigin((10.0, 20.0))
    sitk.WriteImage(image, str(tmp_path / "slice.nrrd"))
    volume = read_itk(tmp_path / "slice.nrrd")
    assert volume.array.shape == (1, 4, 3, 1)
    np.testing.assert_array_equal(volume.array[0, :, :, 0], data.T)
    np.testing.assert_allclose(volume.affine[:3, 3], [-10.0, -20.0, 0.0])
    np.testing.assert_allclose(volume.spacing, [0.5, 0.8, 1.0])


def test_corrupt_nrrd(tmp_path: Path) -> None:
    good = tmp_path / "good.nrrd"
    write_itk(phantom(), good)
    raw = good.read_bytes()
    bad = tmp_path / "truncated.nrrd"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="truncated or corrupt NRRD") as info:
        read_itk(bad)
    assert "truncated.nrrd" in str(info.value)


@pytest.mark.parametrize("name", ["notes.nrrd", "notes.mha"])
def test_text_file_is_refused(tmp_path: Path, name: str) -> None:
    bad = tmp_path / name
    bad.write_text("this is not an image\n")
    with pytest.raises(InputError, match="truncated or corrupt") as info:
        read_itk(bad)
    assert name in str(info.value)


def test_nifti_content_named_nrrd_is_refused(tmp_path: Path) -> None:
    write_nifti(phantom(), tmp_path / "a.nii")
    disguised = tmp_path / "disguised.nrrd"
    disguised.write_bytes((tmp_path / "a.nii").read_bytes())
    with pytest.raises(InputError, match="disguised.nrrd"):
        read_itk(disguised)


def test_nan_voxels_are_refused(tmp_path: Path) -> None:
    data = np.ones((4, 5, 6), np.float32)
    data[0, 0, 0] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(data), str(tmp_path / "holes.nrrd"))
    with pytest.raises(InputError, match="1 NaN") as info:
        read_itk(tmp_path / "holes.nrrd")
    assert "holes.nrrd" in str(info.value)


def test_gzip_garbage_named_nhdr_and_unknown_content(tmp_path: Path) -> None:
    bad = tmp_path / "x.nhdr"
    bad.write_bytes(gzip.compress(b"garbage"))
    with pytest.raises(InputError, match="x.nhdr"):
        read_itk(bad)
    picture = tmp_path / "x.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(InputError, match="not an NRRD or MetaImage file"):
        read_itk(picture)
    with pytest.raises(InputError, match="not found"):
        read_itk(tmp_path / "absent.nrrd")


def test_nrrd_content_is_recognised_whatever_the_suffix(tmp_path: Path) -> None:
    volume = phantom(3, seed=3)
    write_itk(volume, tmp_path / "p.nrrd")
    renamed = tmp_path / "p.dat"
    renamed.write_bytes((tmp_path / "p.nrrd").read_bytes())
    back = read_itk(renamed)
    assert back.meta["source_format"] == "nrrd"
    _assert_same(back, volume, "int16")


@pytest.mark.parametrize("name", ["p.mhd", "p.nhdr", "p.nii.gz"])
def test_write_refuses_detached_and_foreign_formats(tmp_path: Path, name: str) -> None:
    with pytest.raises(OutputError, match=r"\.nrrd or \.mha"):
        write_itk(phantom(), tmp_path / name)


def _sitk_image(volume: Volume) -> sitk.Image:
    return sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(volume.array[0], (2, 1, 0))))


@pytest.mark.parametrize(("header", "data"), [("p.nhdr", "p.raw"), ("p.mhd", "p.raw"), ("z.nhdr", "z.raw.gz")])
def test_detached_header_lists_its_data_file_as_a_source(tmp_path: Path, header: str, data: str) -> None:
    volume = phantom(2, seed=2)
    sitk.WriteImage(_sitk_image(volume), str(tmp_path / header), useCompression=header.startswith("z"))
    assert (tmp_path / data).is_file()
    back = read_itk(tmp_path / header)
    assert back.meta["source_paths"] == [str(tmp_path / header), str(tmp_path / data)]
    np.testing.assert_array_equal(back.array, volume.array)


def test_force_never_overwrites_a_detached_data_file(tmp_path: Path) -> None:
    # A MetaImage header whose raw data file happens to carry an output suffix.
    sitk.WriteImage(_sitk_image(phantom(0, seed=1)), str(tmp_path / "p.mhd"))
    (tmp_path / "p.raw").rename(tmp_path / "pixels.nrrd")
    text = (tmp_path / "p.mhd").read_text().replace("ElementDataFile = p.raw", "ElementDataFile = pixels.nrrd")
    (tmp_path / "p.mhd").write_text(text)
    raw = (tmp_path / "pixels.nrrd").read_bytes()
    volume = read_itk(tmp_path / "p.mhd")
    with pytest.raises(OutputError, match="input"):
        save(volume, tmp_path / "pixels.nrrd", force=True)
    assert (tmp_path / "pixels.nrrd").read_bytes() == raw
    save(volume, tmp_path / "copy.nrrd")  # a new path is fine


@pytest.mark.parametrize(
    ("field", "names"),
    [
        ("data file: LIST 2\ns0.raw\ns1.raw\n", ["s0.raw", "s1.raw"]),
        ("data file: s%02d.raw 1 5 2 2\n", ["s01.raw", "s03.raw", "s05.raw"]),
        ("data file: sub/one.raw\n", ["sub/one.raw"]),
    ],
)
def test_nrrd_data_file_forms(tmp_path: Path, field: str, names: list[str]) -> None:
    head = f"NRRD0004\ntype: short\ndimension: 3\n{field}".encode()
    header = tmp_path / "h.nhdr"
    assert _data_files(header, head, "nrrd") == [tmp_path / n for n in names]


@pytest.mark.parametrize(
    ("field", "names"),
    [
        ("ElementDataFile = LOCAL\n\x00\x01", []),
        ("ElementDataFile = LIST\na.raw\nb.raw\n", ["a.raw", "b.raw"]),
        ("ElementDataFile = im%03d.raw 1 2 1\n", ["im001.raw", "im002.raw"]),
        ("ElementDataFile = my data.raw\n", ["my data.raw"]),
    ],
)
def test_metaimage_data_file_forms(tmp_path: Path, field: str, names: list[str]) -> None:
    head = f"ObjectType = Image\nNDims = 3\n{field}".encode("latin-1")
    header = tmp_path / "h.mhd"
    assert _data_files(header, head, "mha") == [tmp_path / n for n in names]


def test_missing_data_file_is_named(tmp_path: Path) -> None:
    sitk.WriteImage(_sitk_image(phantom()), str(tmp_path / "p.nhdr"))
    (tmp_path / "p.raw").unlink()
    with pytest.raises(InputError, match=r"p\.nhdr: its data file .*p\.raw is missing"):
        read_itk(tmp_path / "p.nhdr")


def test_unreadable_file_is_an_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.nrrd"
    write_itk(phantom(), path)

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(args[0]))

    monkeypatch.setattr(itk, "open", refuse, raising=False)
    with pytest.raises(InputError, match=r"locked\.nrrd: cannot read: Permission denied\. Fix: check"):
        read_itk(path)


@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied"), OSError(5, "Input/output error")])
def test_os_errors_from_simpleitk_are_input_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: OSError
) -> None:
    path = tmp_path / "p.mha"
    write_itk(phantom(), path)

    def execute(self: sitk.ImageFileReader) -> sitk.Image:
        raise error

    monkeypatch.setattr(sitk.ImageFileReader, "Execute", execute)
    with pytest.raises(InputError, match=rf"p\.mha: cannot read: {error.strerror}") as info:
        read_itk(path)
    assert info.value.__cause__ is error
