"""The ``mrisr`` command: ``--version``, ``info`` (text and JSON), ``convert`` and its
output rules (--force, never onto an input), and that no command modifies an input."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import phantom
from dicom_factory import write_series

import mrisr
from mrisr.cli import main
from mrisr.volume import Volume, world_corners

JSON_KEYS = {
    "path",
    "format",
    "shape",
    "n_volumes",
    "spacing",
    "axcodes",
    "affine",
    "corners",
    "range",
    "series",
    "dtype",
    "series_id",
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``main(argv)``: (exit status, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def digest(path: Path) -> dict[str, str]:
    """sha256 of a file, or of every file under a folder (relative name -> hash)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def exact_phantom() -> Volume:
    """The conftest phantom with an affine that float32 (the NIfTI header's srow) holds exactly,
    so that geometry read back can be compared to 1e-6 mm."""
    ph = phantom()
    return ph.replace(affine=ph.affine.astype(np.float32).astype(np.float64))


def write_nifti_file(volume: Volume, path: Path) -> Path:
    """``mrisr.save``, or nibabel directly should mrisr's writer be broken."""
    try:
        mrisr.save(volume, path)
    except Exception:  # the writers are under development; the CLI is what is tested here
        data = np.rint(volume.array[0]).astype(np.int16)
        img = nib.Nifti1Image(data, volume.affine)
        img.set_sform(volume.affine, code=1)
        img.set_qform(volume.affine, code=1)
        nib.save(img, path)
    return path


@pytest.fixture
def nifti_in(tmp_path: Path) -> tuple[Path, Volume]:
    volume = exact_phantom()
    (tmp_path / "in").mkdir()
    return write_nifti_file(volume, tmp_path / "in" / "t1.nii.gz"), volume


@pytest.fixture
def dicom_in(tmp_path: Path) -> tuple[Path, Volume, list[Path]]:
    volume = exact_phantom()
    folder = tmp_path / "dicom_in"
    paths = write_series(folder, volume.array[0].astype(np.int16), volume.affine, description="t1 axial")
    return folder, volume, paths


# --------------------------------------------------------------------------- --version


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == "mrisr 0.1.0"


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    line = _one_error_line(capsys.readouterr().err)  # usage errors are one line too
    assert "COMMAND" in line and "--help" in line


# --------------------------------------------------------------------------- info


def test_info_json_nifti(capsys: pytest.CaptureFixture[str], nifti_in: tuple[Path, Volume]) -> None:
    path, volume = nifti_in
    code, out, err = run(capsys, "info", path, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert set(info) == JSON_KEYS
    assert info["path"] == str(path)
    assert info["format"] == "nifti"
    assert info["shape"] == [24, 20, 12]
    assert info["n_volumes"] == 1
    np.testing.assert_allclose(info["spacing"], [0.9, 1.2, 3.0], atol=1e-6)
    assert info["axcodes"] == "".join(nib.aff2axcodes(volume.affine))
    assert np.shape(info["affine"]) == (4, 4)
    np.testing.assert_allclose(info["affine"], volume.affine, atol=1e-6)
    assert np.shape(info["corners"]) == (8, 3)
    np.testing.assert_allclose(info["corners"], world_corners(volume.affine, volume.shape), atol=1e-6)
    assert info["range"] == [float(volume.array.min()), float(volume.array.max())]
    assert info["series"] == []
    assert info["dtype"] == "int16"
    assert info["series_id"] is None


def test_info_text_nifti(capsys: pytest.CaptureFixture[str], nifti_in: tuple[Path, Volume]) -> None:
    path, volume = nifti_in
    code, out, err = run(capsys, "info", path)
    assert code == 0, err
    assert "0.9000 x 1.2000 x 3.0000 mm" in out
    axcodes = "".join(nib.aff2axcodes(volume.affine))
    assert any(line.split() == ["axcodes", axcodes] for line in out.splitlines())
    assert str(path) in out
    assert "24 x 20 x 12" in out


def test_info_dicom_folder_lists_series(
    capsys: pytest.CaptureFixture[str], dicom_in: tuple[Path, Volume, list[Path]]
) -> None:
    folder, volume, paths = dicom_in
    uid = str(pydicom.dcmread(paths[0]).SeriesInstanceUID)
    code, out, err = run(capsys, "info", folder)
    assert code == 0, err
    assert "series      1 found" in out
    assert uid in out and "t1 axial" in out and "12 slices" in out

    code, out, err = run(capsys, "info", folder, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert set(info) == JSON_KEYS
    assert info["format"] == "dicom"
    assert info["series_id"] == uid
    assert [s["id"] for s in info["series"]] == [uid]
    assert info["series"][0]["n_slices"] == 12
    assert info["shape"] == [24, 20, 12]
    # DICOM strings hold about 10 significant digits: 1e-4 mm.
    np.testing.assert_allclose(info["corners"], world_corners(volume.affine, volume.shape), atol=1e-4)


def test_info_dicom_folder_with_series_option(
    capsys: pytest.CaptureFixture[str], dicom_in: tuple[Path, Volume, list[Path]]
) -> None:
    folder, _, paths = dicom_in
    uid = str(pydicom.dcmread(paths[0]).SeriesInstanceUID)
    code, out, err = run(capsys, "info", folder, "--series", uid, "--json")
    assert code == 0, err
    assert json.loads(out)["series_id"] == uid


# --------------------------------------------------------------------------- convert


@pytest.mark.parametrize(
    ("name", "extra", "fmt"),
    [
        ("out.nrrd", [], "nrrd"),
        ("out.nii.gz", [], "nifti"),
        ("out.mha", [], "mha"),
        ("outdir", ["--format", "dicom"], "dicom"),
    ],
    ids=["nrrd", "nii.gz", "mha", "dicom"],
)
def test_convert_nifti_round_trip(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    nifti_in: tuple[Path, Volume],
    name: str,
    extra: list[str],
    fmt: str,
) -> None:
    src, volume = nifti_in
    before = digest(src)
    out = tmp_path / name
    code, stdout, err = run(capsys, "convert", src, out, *extra)
    assert code == 0, err
    assert str(out) in stdout
    assert out.exists()
    back = mrisr.load(out)
    assert back.meta["source_format"] == fmt
    assert back.shape == volume.shape
    assert np.abs(back.corners - world_corners(volume.affine, volume.shape)).max() < 1e-4
    assert np.array_equal(back.array, volume.array)
    assert digest(src) == before


@pytest.mark.parametrize("name", ["out.nii.gz", "out.nrrd"])
def test_convert_dicom_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, dicom_in: tuple[Path, Volume, list[Path]], name: str
) -> None:
    folder, volume, _ = dicom_in
    before = digest(folder)
    out = tmp_path / name
    code, _, err = run(capsys, "convert", folder, out)
    assert code == 0, err
    back = mrisr.load(out)
    assert np.abs(back.corners - world_corners(volume.affine, volume.shape)).max() < 1e-4
    assert np.array_equal(back.array, volume.array)
    assert digest(folder) == before
    assert sorted(p.name for p in folder.iterdir()) == sorted(Path(k).name for k in before)


def test_convert_quiet_prints_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, nifti_in: tuple[Path, Volume]
) -> None:
    src, _ = nifti_in
    code, out, err = run(capsys, "--quiet", "convert", src, tmp_path / "q.nrrd")
    assert (code, out, err) == (0, "", "")


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mrisr: error: ")
    assert "Fix:" in lines[0]
    return lines[0]


@pytest.mark.parametrize(("name", "extra"), [("out.nii.gz", []), ("outdir", ["--format", "dicom"])])
def test_convert_existing_output_needs_force(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    nifti_in: tuple[Path, Volume],
    name: str,
    extra: list[str],
) -> None:
    src, volume = nifti_in
    out = tmp_path / name
    if extra:
        out.mkdir()
        assert main(["convert", str(src), str(out / "x"), "--format", "dicom", "--quiet"]) == 0
        (out / "x" / "IM_0001.dcm").rename(out / "IM_0001.dcm")  # a previous mrisr output may be replaced
        shutil.rmtree(out / "x")
        capsys.readouterr()
    else:
        out.write_bytes(b"old output")
    before = digest(out)
    code, stdout, err = run(capsys, "convert", src, out, *extra)
    assert code == 2
    assert stdout == ""
    line = _one_error_line(err)
    assert str(out) in line and "--force" in line
    assert digest(out) == before  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in", name])  # no temporary left

    code, _, err = run(capsys, "convert", src, out, *extra, "--force")
    assert code == 0, err
    back = mrisr.load(out)
    assert np.abs(back.corners - world_corners(volume.affine, volume.shape)).max() < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in", name])


def test_force_never_deletes_other_files(capsys: pytest.CaptureFixture[str], tmp_path: Path, nifti_in) -> None:
    """--force replaces an earlier mrisr series, never a folder holding anything else."""
    src, _ = nifti_in
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.docx").write_text("years of work")
    code, _, err = run(capsys, "convert", src, out, "--format", "dicom", "--force")
    assert code == 2
    assert "thesis.docx" in _one_error_line(err)
    assert (out / "thesis.docx").read_text() == "years of work"


def test_convert_onto_input_file_refused_even_with_force(
    capsys: pytest.CaptureFixture[str], nifti_in: tuple[Path, Volume]
) -> None:
    src, _ = nifti_in
    before = digest(src)
    for extra in ([], ["--force"]):
        code, _, err = run(capsys, "convert", src, src, *extra)
        assert code == 2
        line = _one_error_line(err)
        assert str(src) in line and "input" in line
        assert digest(src) == before
    assert sorted(p.name for p in src.parent.iterdir()) == [src.name]


def test_convert_onto_folder_holding_input_refused(
    capsys: pytest.CaptureFixture[str], nifti_in: tuple[Path, Volume]
) -> None:
    src, _ = nifti_in
    before = digest(src.parent)
    code, _, err = run(capsys, "convert", src, src.parent, "--format", "dicom", "--force")
    assert code == 2
    line = _one_error_line(err)
    assert str(src.parent) in line and "input" in line
    assert digest(src.parent) == before


def test_convert_dicom_folder_onto_itself_refused(
    capsys: pytest.CaptureFixture[str], dicom_in: tuple[Path, Volume, list[Path]]
) -> None:
    folder, _, _ = dicom_in
    before = digest(folder)
    code, _, err = run(capsys, "convert", folder, folder, "--format", "dicom", "--force")
    assert code == 2
    line = _one_error_line(err)
    assert str(folder) in line and "input" in line
    assert digest(folder) == before


def test_convert_onto_one_input_slice_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, dicom_in: tuple[Path, Volume, list[Path]]
) -> None:
    folder, _, paths = dicom_in
    # A NIfTI name for a DICOM slice: the format is fine, the path is an input.
    target = paths[3].with_name("slice.nii")
    paths[3].rename(target)
    before = digest(folder)
    code, _, err = run(capsys, "convert", folder, target, "--force")
    assert code == 2
    line = _one_error_line(err)
    assert str(target) in line
    assert digest(folder) == before


def test_info_and_convert_never_modify_inputs(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    nifti_in: tuple[Path, Volume],
    dicom_in: tuple[Path, Volume, list[Path]],
) -> None:
    src, _ = nifti_in
    folder, _, _ = dicom_in
    before = {**digest(src), **digest(folder)}
    listing = sorted(p.name for p in tmp_path.rglob("*"))
    for argv in (
        ["info", src],
        ["info", src, "--json"],
        ["info", folder],
        ["info", folder, "--json"],
    ):
        code, _, err = run(capsys, *argv)
        assert code == 0, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == listing  # info writes nothing
    for argv in (
        ["convert", src, tmp_path / "o1.nrrd"],
        ["convert", folder, tmp_path / "o2.nii.gz"],
        ["convert", src, tmp_path / "o3", "--format", "dicom"],
        ["convert", folder, tmp_path / "o4", "--format", "dicom"],
    ):
        code, _, err = run(capsys, *argv)
        assert code == 0, err
    assert {**digest(src), **digest(folder)} == before
