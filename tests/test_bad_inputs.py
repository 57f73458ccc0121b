"""The bad-input corpus: every broken input gives exit status 2 and ONE line on stderr,
``mrisr: error: <file>: <problem>. Fix: <fix>.``, never a traceback; ``mrisr.load`` raises
an ``MrisrError`` subclass with the same message. Inputs are built in ``tmp_path``."""

from __future__ import annotations

import gzip
import io
import shutil
import struct
import tarfile
import tempfile
import uuid
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import phantom
from dicom_factory import lps_geometry, write_series
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import mrisr
from mrisr.cli import main
from mrisr.errors import GeometryError, InputError, MrisrError, OutputError


@dataclass
class Case:
    """A bad input: the command to run and what its one-line error must contain."""

    argv: list[str]
    name: str  # the file or folder name the message must name
    keywords: list[str]  # the problem, in words (case-insensitive)
    load: Path | None = None  # mrisr.load(load, **load_kwargs) must raise `error`
    load_kwargs: dict = field(default_factory=dict)
    error: type[MrisrError] = InputError
    forbidden: list[Path] = field(default_factory=list)  # must not exist afterwards


def info(path: Path, *extra: str, keywords: list[str], name: str | None = None, **kw) -> Case:
    return Case(["info", str(path), *extra], name or path.name, keywords, load=path, **kw)


# --------------------------------------------------------------------------- builders


def _volume_data(shape: tuple[int, int, int] = (24, 20, 12)) -> tuple[np.ndarray, np.ndarray]:
    ph = phantom(shape=shape)
    return ph.array[0].astype(np.int16), ph.affine


def _series(folder: Path, **kw) -> list[Path]:
    data, affine = _volume_data()
    return write_series(folder, data, affine, **kw)


def _lps_positions(spacings_mm: list[float], shift_mm: float = 0.0) -> np.ndarray:
    """Slice positions (LPS) of the phantom along its normal at the given cumulative offsets,
    each shifted by ``k * shift_mm`` along the row direction (a gantry tilt)."""
    _, affine = _volume_data()
    row, _, _, step = lps_geometry(affine)
    origin = (np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine)[:3, 3]
    unit = step / np.linalg.norm(step)
    return np.array([origin + d * unit + k * shift_mm * row for k, d in enumerate(spacings_mm)])


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    affine = np.diag([1.0, 1.0, 2.0, 1.0]) if affine is None else affine
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, path)
    return path


def _png(path: Path) -> Path:
    """A valid 2x2 8-bit greyscale PNG, written by hand."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"".join(b"\x00" + bytes([10 * r, 10 * r + 5]) for r in range(2))  # filter byte + 2 pixels
    ihdr = struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return path


def missing_path(tmp: Path) -> Case:
    return info(tmp / "nothere.nii.gz", keywords=["does not exist"])


def empty_folder(tmp: Path) -> Case:
    (tmp / "empty_dir").mkdir()
    return info(tmp / "empty_dir", keywords=["empty"])


def empty_file(tmp: Path) -> Case:
    (tmp / "zero.nii.gz").write_bytes(b"")
    return info(tmp / "zero.nii.gz", keywords=["empty"])


def text_named_dcm(tmp: Path) -> Case:
    path = tmp / "notes.dcm"
    path.write_text("Patient notes: this is a text file, not an image.\n" * 5)
    return info(path, keywords=["not", "DICOM"])


def only_text_in_folder(tmp: Path) -> Case:
    folder = tmp / "export"
    folder.mkdir()
    (folder / "README.txt").write_text("exported by a viewer\n" * 5)
    return info(folder, keywords=["no readable DICOM", "README.txt"])


def truncated_dicom_in_pixels(tmp: Path) -> Case:
    """A 64x64 slice cut to half its bytes: the cut lies inside the pixel data."""
    data, affine = _volume_data((64, 64, 3))
    paths = write_series(tmp / "src", data, affine)
    blob = paths[0].read_bytes()
    path = tmp / "cut.dcm"
    path.write_bytes(blob[: len(blob) // 2])
    return info(path, keywords=["truncated"])


def truncated_dicom_in_header(tmp: Path) -> Case:
    """The phantom's 24x20 slice cut to half its bytes: the cut lies inside the header."""
    paths = _series(tmp / "src")
    blob = paths[0].read_bytes()
    pixel_tag = blob.rindex(b"\xe0\x7f\x10\x00OW")  # (7FE0,0010) OW, explicit VR little endian
    path = tmp / "cut.dcm"
    path.write_bytes(blob[: min(len(blob) // 2, pixel_tag - 16)])
    return info(path, keywords=["truncated"])


def _truncated_in_series(tmp: Path, index: int, shape: tuple[int, int, int]) -> Case:
    data, affine = _volume_data(shape)
    paths = write_series(tmp / "series", data, affine)
    blob = paths[index].read_bytes()
    paths[index].write_bytes(blob[: len(blob) // 2])
    return info(tmp / "series", name=paths[index].name, keywords=["truncated"])


def truncated_slice_mid_series(tmp: Path) -> Case:
    return _truncated_in_series(tmp, 2, (64, 64, 6))


def truncated_last_slice_series(tmp: Path) -> Case:
    return _truncated_in_series(tmp, -1, (64, 64, 6))


def truncated_header_mid_series(tmp: Path) -> Case:
    return _truncated_in_series(tmp, 5, (24, 20, 12))


def truncated_header_last_slice_series(tmp: Path) -> Case:
    return _truncated_in_series(tmp, -1, (24, 20, 12))


def truncated_nii_gz(tmp: Path) -> Case:
    data, affine = _volume_data()
    full = _nifti(tmp / "full.nii.gz", data, affine)
    blob = full.read_bytes()
    path = tmp / "cut.nii.gz"
    path.write_bytes(blob[: len(blob) // 2])
    full.unlink()
    return info(path, keywords=["truncated"])


def truncated_nii(tmp: Path) -> Case:
    data, affine = _volume_data()
    full = _nifti(tmp / "full.nii", data, affine)
    blob = full.read_bytes()
    path = tmp / "cut.nii"
    path.write_bytes(blob[: len(blob) // 2])
    full.unlink()
    return info(path, keywords=["truncated"])


def gzip_of_text(tmp: Path) -> Case:
    path = tmp / "scan.nii.gz"
    path.write_bytes(gzip.compress(b"not an image at all\n" * 100))
    return info(path, keywords=["gzip"])


def dicom_without_pixel_data(tmp: Path) -> Case:
    """A Basic Text SR (a report): a valid DICOM file without an image."""
    sr_class = "1.2.840.10008.5.1.4.1.1.88.11"
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sr_class
    ds.file_meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sr_class, uid
    ds.Modality = "SR"
    ds.PatientID = "PHANTOM"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.ValueType = "CONTAINER"
    path = tmp / "report.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return info(path, keywords=["pixel data"])


def two_series(tmp: Path) -> Case:
    folder = tmp / "mixed"
    uids = [generate_uid(), generate_uid()]
    _series(folder, series_uid=uids[0], name_prefix="A", series_number=1)
    _series(folder, series_uid=uids[1], name_prefix="B", series_number=2)
    out = tmp / "out.nii.gz"  # info lists the series (tests/test_cli_frictions.py); convert must pick one
    return Case(["convert", str(folder), str(out)], folder.name, ["2 series", *uids, "--series"], load=folder,
                forbidden=[out])


def unknown_series_option(tmp: Path) -> Case:
    folder = tmp / "mixed"
    uids = [generate_uid(), generate_uid()]
    _series(folder, series_uid=uids[0], name_prefix="A", series_number=1)
    _series(folder, series_uid=uids[1], name_prefix="B", series_number=2)
    return info(
        folder,
        "--series",
        "1.2.3.nope",
        keywords=["no series", "1.2.3.nope", *uids],
        load_kwargs={"series": "1.2.3.nope"},
    )


def series_option_on_nifti(tmp: Path) -> Case:
    data, affine = _volume_data()
    path = _nifti(tmp / "t1.nii.gz", data, affine)
    return info(path, "--series", "1.2.3", keywords=["DICOM", "--series"], load_kwargs={"series": "1.2.3"})


def missing_slice(tmp: Path) -> Case:
    _series(tmp / "gap", slice_indices=[k for k in range(12) if k != 5])
    return info(tmp / "gap", keywords=["missing slice"], error=GeometryError)


def duplicated_slice(tmp: Path) -> Case:
    paths = _series(tmp / "dup")
    shutil.copy(paths[3], paths[3].with_name("IM_0004_copy.dcm"))
    return info(tmp / "dup", keywords=["duplicated", "IM_0004"], error=GeometryError)


def duplicated_position(tmp: Path) -> Case:
    """Two different images (distinct SOPInstanceUIDs) at one position, nothing tells them apart."""
    offsets = [3.0 * k for k in range(12)]
    offsets[6] = offsets[5]
    _series(tmp / "dup", positions=_lps_positions(offsets))
    return info(tmp / "dup", keywords=["duplicated", "same position"], error=GeometryError)


def non_uniform_spacing(tmp: Path) -> Case:
    offsets = np.cumsum([0.0] + [3.0] * 5 + [4.5] + [3.0] * 5).tolist()
    _series(tmp / "uneven", positions=_lps_positions(offsets))
    return info(tmp / "uneven", keywords=["non-uniform"], error=GeometryError)


def gantry_tilt(tmp: Path) -> Case:
    _series(tmp / "tilted", positions=_lps_positions([3.0 * k for k in range(12)], shift_mm=0.6))
    return info(tmp / "tilted", keywords=["tilt"], error=GeometryError)


def png_picture(tmp: Path) -> Case:
    return info(_png(tmp / "slice.png"), keywords=["2D", "PNG"])


def png_named_dcm(tmp: Path) -> Case:
    return info(_png(tmp / "slice.dcm"), keywords=["2D", "PNG"])


def secondary_capture(tmp: Path) -> Case:
    """A DICOM secondary capture: one 2D image without ImagePositionPatient/ImageOrientationPatient."""
    data, affine = _volume_data((24, 20, 1))
    (path,) = write_series(tmp / "src", data, affine)
    ds = pydicom.dcmread(path)
    del ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.FrameOfReferenceUID
    sc_class = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sc_class
    ds.Modality = "OT"
    out = tmp / "screenshot.dcm"
    ds.save_as(out, enforce_file_format=True)
    shutil.rmtree(tmp / "src")
    return info(out, keywords=["ImagePositionPatient", "3D geometry"])


def colour_dicom(tmp: Path) -> Case:
    paths = _series(
        tmp / "rgb", extra={"SamplesPerPixel": 3, "PhotometricInterpretation": "RGB", "PlanarConfiguration": 0}
    )
    return info(paths[0], keywords=["colour"])


def nan_voxels(tmp: Path) -> Case:
    data = np.ones((6, 5, 4), dtype=np.float32)
    data[2, 3, 1] = np.nan
    return info(_nifti(tmp / "nan.nii.gz", data), keywords=["NaN", "not finite"])


def five_d_nifti(tmp: Path) -> Case:
    data = np.zeros((6, 5, 4, 1, 2), dtype=np.int16)
    return info(_nifti(tmp / "five.nii.gz", data), keywords=["5D"])


def singular_affine(tmp: Path) -> Case:
    data = np.ones((6, 5, 4), dtype=np.int16)
    img = nib.Nifti1Image(data, None)
    img.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)
    path = tmp / "flat.nii.gz"
    nib.save(img, path)
    return info(path, keywords=["singular"], error=GeometryError)


def _zip_with(tmp: Path, name: str, entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    valid = _series(tmp / "src")
    path = tmp / name
    with zipfile.ZipFile(path, "w") as zf:
        for p in valid:
            zf.write(p, f"series/{p.name}")
        for entry, blob in entries:
            zf.writestr(entry, blob)
    shutil.rmtree(tmp / "src")
    return path


def _outside_names(tmp: Path, name: str) -> list[Path]:
    """Where an entry ``../name`` would land: beside the archive, beside the extraction folder."""
    return [tmp.parent / name, tmp / name, Path(tempfile.gettempdir()) / name, Path.cwd().parent / name]


def zip_dotdot_entry(tmp: Path) -> Case:
    evil = f"evil-{uuid.uuid4().hex}.dcm"
    path = _zip_with(tmp / "z", "upload.zip", [(f"../{evil}", b"x" * 200)])
    return info(path, keywords=["unsafe archive entry", f"../{evil}"], forbidden=_outside_names(tmp / "z", evil))


def zip_nested_dotdot_entry(tmp: Path) -> Case:
    evil = f"evil-{uuid.uuid4().hex}.dcm"
    path = _zip_with(tmp / "z", "upload.zip", [(f"series/../../{evil}", b"x" * 200)])
    return info(path, keywords=["unsafe archive entry"], forbidden=_outside_names(tmp / "z", evil))


def zip_absolute_entry(tmp: Path) -> Case:
    target = tmp / "outside" / f"evil-{uuid.uuid4().hex}.dcm"
    path = _zip_with(tmp / "z", "upload.zip", [(str(target), b"x" * 200)])
    return info(path, keywords=["unsafe archive entry", "absolute"], forbidden=[target, target.parent])


def zip_symlink_entry(tmp: Path) -> Case:
    link = zipfile.ZipInfo("series/link.dcm")
    link.external_attr = 0o120777 << 16
    path = _zip_with(tmp / "z", "upload.zip", [(link, b"../../../../etc/passwd")])
    return info(path, keywords=["unsafe archive entry", "link"])


def tar_dotdot_entry(tmp: Path) -> Case:
    evil = f"evil-{uuid.uuid4().hex}.dcm"
    valid = _series(tmp / "src")
    path = tmp / "z" / "upload.tar.gz"
    path.parent.mkdir()
    with tarfile.open(path, "w:gz") as tf:
        for p in valid:
            tf.add(p, f"series/{p.name}")
        info_ = tarfile.TarInfo(f"../{evil}")
        info_.size = 200
        tf.addfile(info_, io.BytesIO(b"x" * 200))
    shutil.rmtree(tmp / "src")
    return info(path, keywords=["unsafe archive entry"], forbidden=_outside_names(tmp / "z", evil))


def truncated_zip(tmp: Path) -> Case:
    """A zip cut short (an interrupted download): local entries intact, central directory gone."""
    path = _zip_with(tmp, "upload.zip", [])
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    return info(path, keywords=["broken zip archive"])


def zip_bad_crc(tmp: Path) -> Case:
    """A zip whose stored member has a flipped byte: extraction fails its CRC check."""
    path = _zip_with(tmp, "upload.zip", [])
    blob = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        first = zf.infolist()[0]
        start = first.header_offset + 30 + len(first.filename.encode()) + len(first.extra)
    blob[start + first.compress_size - 1] ^= 0xFF  # the last pixel byte of the first slice
    path.write_bytes(bytes(blob))
    return info(path, keywords=["broken zip archive"])


def convert_unknown_extension(tmp: Path) -> Case:
    data, affine = _volume_data()
    src = _nifti(tmp / "t1.nii.gz", data, affine)
    out = tmp / "out.xyz"
    return Case(
        ["convert", str(src), str(out)], "out.xyz", ["output format", ".nii.gz"], error=OutputError, forbidden=[out]
    )


# --------------------------------------------------------------------------- the tests

CASES: dict[str, tuple[Callable[[Path], Case], str | None]] = {
    "missing-path": (missing_path, None),
    "empty-folder": (empty_folder, None),
    "empty-file": (empty_file, None),
    "text-named-dcm": (text_named_dcm, None),
    "folder-with-only-text": (only_text_in_folder, None),
    "truncated-dicom-in-pixels": (truncated_dicom_in_pixels, None),
    "truncated-dicom-in-header": (truncated_dicom_in_header, None),
    "truncated-slice-mid-series": (truncated_slice_mid_series, None),
    "truncated-last-slice-series": (truncated_last_slice_series, None),
    "truncated-header-mid-series": (truncated_header_mid_series, None),
    "truncated-header-last-slice-series": (truncated_header_last_slice_series, None),
    "truncated-nii-gz": (truncated_nii_gz, None),
    "truncated-nii": (truncated_nii, None),
    "gzip-of-text": (gzip_of_text, None),
    "dicom-without-pixel-data": (dicom_without_pixel_data, None),
    "two-series": (two_series, None),
    "unknown-series-option": (unknown_series_option, None),
    "series-option-on-nifti": (series_option_on_nifti, None),
    "missing-slice": (missing_slice, None),
    "duplicated-slice": (duplicated_slice, None),
    "duplicated-position": (duplicated_position, None),
    "non-uniform-spacing": (non_uniform_spacing, None),
    "gantry-tilt": (gantry_tilt, None),
    "png-picture": (png_picture, None),
    "png-named-dcm": (png_named_dcm, None),
    "secondary-capture": (secondary_capture, None),
    "colour-dicom": (colour_dicom, None),
    "nan-voxels": (nan_voxels, None),
    "5d-nifti": (five_d_nifti, None),
    "singular-affine": (singular_affine, None),
    "zip-dotdot-entry": (zip_dotdot_entry, None),
    "zip-nested-dotdot-entry": (zip_nested_dotdot_entry, None),
    "zip-absolute-entry": (zip_absolute_entry, None),
    "zip-symlink-entry": (zip_symlink_entry, None),
    "tar-dotdot-entry": (tar_dotdot_entry, None),
    "truncated-zip": (truncated_zip, None),
    "zip-bad-crc": (zip_bad_crc, None),
    "convert-unknown-extension": (convert_unknown_extension, None),
}


#: Cases that are about a command line, not about what ``mrisr.load`` reads.
CLI_ONLY = {"convert-unknown-extension"}


def _params(load: bool = False) -> list:
    params = []
    for case_id, (_, bug) in CASES.items():
        if load and case_id in CLI_ONLY:
            continue
        marks = [pytest.mark.xfail(reason=bug, strict=True)] if bug else []
        params.append(pytest.param(case_id, id=case_id, marks=marks))
    return params


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _check_line(line: str, case: Case, tmp_path: Path) -> None:
    assert line.startswith("mrisr: error: "), line
    assert case.name in line, f"{case.name!r} not named in: {line}"
    assert "Fix:" in line, line
    # tmp_path's name holds the test id (e.g. "truncated"): look for the keywords elsewhere.
    text = line.replace(str(tmp_path), "<tmp>").lower()
    for keyword in case.keywords:
        assert keyword.lower() in text, f"{keyword!r} not in: {line}"


@pytest.mark.parametrize("case_id", _params())
def test_cli_bad_input(case_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES[case_id][0](tmp_path)
    before = _tree(tmp_path)
    capsys.readouterr()
    code = main(case.argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert "internal error" not in err
    assert code == 2, (code, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    _check_line(lines[0], case, tmp_path)
    assert _tree(tmp_path) == before  # inputs untouched, nothing written
    for path in case.forbidden:
        assert not path.exists(), f"{path} was written"


@pytest.mark.parametrize("case_id", _params(load=True))
def test_load_bad_input(case_id: str, tmp_path: Path) -> None:
    case = CASES[case_id][0](tmp_path)
    assert case.load is not None
    with pytest.raises(MrisrError) as exc:
        mrisr.load(case.load, **case.load_kwargs)
    assert isinstance(exc.value, case.error), type(exc.value)
    assert isinstance(exc.value, ValueError)
    message = str(exc.value)
    assert "\n" not in message
    _check_line("mrisr: error: " + message, case, tmp_path)
    for path in case.forbidden:
        assert not path.exists(), f"{path} was written"


def test_convert_bad_input_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A failing convert leaves no output and no temporary file."""
    _series(tmp_path / "gap", slice_indices=[k for k in range(12) if k != 5])
    out = tmp_path / "out.nii.gz"
    code = main(["convert", str(tmp_path / "gap"), str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1 and "missing slice" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gap"]
