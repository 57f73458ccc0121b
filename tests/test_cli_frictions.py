"""What a new user hits at the command line: unwritable outputs refused before any work, help for
every option, close matches for a mistyped protocol, simulate's nominal default, and export-onnx
taking every model form that upscale takes."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import phantom

from mrisr import cli
from mrisr.io import load, save
from mrisr.volume import Volume


def _one_line_refusal(capsys, argv: list[str], pattern: str) -> float:
    """Run the CLI; assert exit 2 with one stderr line matching ``pattern``; return the seconds taken."""
    capsys.readouterr()
    start = time.perf_counter()
    status = cli.main(argv)
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert status == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mrisr: error: "), err
    assert pattern in lines[0], lines[0]
    assert "Traceback" not in err and "internal error" not in err
    return seconds


@pytest.fixture
def scan(tmp_path) -> Path:
    """A small 1 x 1 x 4 mm scan (the shipped 2D default's input class), saved as NIfTI."""
    volume = phantom(0, shape=(16, 16, 6), spacing=(1.0, 1.0, 4.0), dtype="int16")
    return save(volume, tmp_path / "in" / "scan.nii.gz")


def _commands(scan: Path, out: Path) -> dict[str, list[str]]:
    return {
        "upscale": ["upscale", str(scan), "-o", str(out / "sr.nii.gz")],
        "upscale-dicom": ["upscale", str(scan), "-o", str(out / "sr_dicom"), "--format", "dicom"],
        "simulate": ["simulate", str(scan), "-o", str(out / "lr.nii.gz"), "--protocol", "thick-slice-x4"],
        "train": ["train", "thick-slice-x4", "--data", str(scan), "--out", str(out / "run")],
        "export-onnx": ["export-onnx", "vdsr3d", "-o", str(out / "model.onnx")],
        "export-slicer": ["export-slicer", str(scan), "-o", str(out / "scene.mrb")],
        "convert": ["convert", str(scan), str(out / "scan.nrrd")],
        "evaluate": ["evaluate", "--reference", str(scan), "--prediction", str(scan), "--report", str(out / "rep")],
    }


@pytest.mark.parametrize("command", list(_commands(Path("x"), Path("y"))))
def test_read_only_output_is_refused_before_any_work(capsys, scan, read_only_dir, command) -> None:
    argv = _commands(scan, read_only_dir)[command]
    seconds = _one_line_refusal(capsys, argv, "cannot write in")
    assert seconds < 2.0, f"{command} took {seconds:.2f} s to refuse"


@pytest.mark.parametrize("command", ["upscale", "simulate", "convert"])
def test_output_under_a_file_is_refused_before_any_work(capsys, scan, command) -> None:
    argv = _commands(scan, scan.parent / "scan.nii.gz" / "sub")[command]  # a path through a file
    _one_line_refusal(capsys, argv, "is a file, not a folder")


def test_every_option_has_help_text() -> None:
    parser = cli.build_parser()
    missing = []

    def walk(p: argparse.ArgumentParser, name: str) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(sub, f"{name} {sub_name}")
            elif not action.help and not isinstance(action, argparse._HelpAction):
                missing.append(f"{name}: {'/'.join(action.option_strings) or action.dest}")

    walk(parser, "mrisr")
    assert not missing, f"options without help text: {missing}"


def test_a_mistyped_protocol_names_the_close_match(capsys, scan, tmp_path) -> None:
    _one_line_refusal(capsys, ["protocols", "thick-slice-4x"], "did you mean 'thick-slice-x4'?")
    _one_line_refusal(capsys, ["simulate", str(scan), "-o", str(tmp_path / "lr.nii.gz"), "--protocol",
                               "brain-t1-axial-5m"], "did you mean 'brain-t1-axial-5mm'")


def test_protocols_shows_one_protocol(capsys) -> None:
    assert cli.main(["protocols", "thick-slice-x4", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == "thick-slice-x4" and shown["nominal"]["slice_scale"] == 4.0


def _simulate(capsys, scan: Path, out: Path, *extra: str) -> tuple[Volume, dict]:
    assert cli.main(["simulate", str(scan), "-o", str(out), "--protocol", "thick-slice-x4", "--quiet", *extra]) == 0
    return load(out), json.loads(out.with_name(out.name.replace(".nii.gz", ".json")).read_text())


def test_simulate_without_flags_is_the_protocols_nominal_acquisition(capsys, tmp_path) -> None:
    hr = save(phantom(0, shape=(16, 16, 24), spacing=(1.0, 1.0, 1.0)), tmp_path / "hr.nii.gz")
    spacings = set()
    for seed in (1, 2, 3):
        low, record = _simulate(capsys, hr, tmp_path / f"lr{seed}.nii.gz", "--seed", str(seed))
        assert record["nominal"] is True and record["drawn_from_training_ranges"] is False
        spacings.add(round(float(low.spacing[2]), 6))
    assert spacings == {4.0}, f"thick-slice-x4 must give 4 mm slices of a 1 mm scan, whatever the seed: {spacings}"


def test_simulate_random_draws_from_the_training_ranges(capsys, tmp_path) -> None:
    hr = save(phantom(0, shape=(16, 16, 24), spacing=(1.0, 1.0, 1.0)), tmp_path / "hr.nii.gz")
    spacings = set()
    for seed in (1, 2, 3):
        low, record = _simulate(capsys, hr, tmp_path / f"lr{seed}.nii.gz", "--seed", str(seed), "--random")
        assert record["nominal"] is False and record["drawn_from_training_ranges"] is True
        spacings.add(round(float(low.spacing[2]), 6))
    assert len(spacings) > 1, "draws from the training ranges differ by seed"


@pytest.fixture
def tiny_run(tmp_path) -> Path:
    """A training run folder holding a tiny checkpoint in best/ (what mrisr train writes)."""
    from mrisr.models.card import save_checkpoint
    from mrisr.nets import VDSR

    torch.manual_seed(0)
    save_checkpoint(VDSR(3, features=4, depth=2).eval(), tmp_path / "run" / "best", {"note": "test"})
    return tmp_path / "run"


@pytest.mark.slow
def test_export_onnx_takes_every_model_form(capsys, tmp_path, tiny_run) -> None:
    pytest.importorskip("onnxruntime")
    from mrisr.models import shipped_models

    forms = {"run folder": tiny_run, "checkpoint folder": tiny_run / "best", "card": tiny_run / "best" / "model.json",
             "weights": tiny_run / "best" / "model.safetensors"}
    if "vdsr3d" in shipped_models():
        forms["shipped name"] = "vdsr3d"
    for i, (form, spec) in enumerate(forms.items()):
        out = tmp_path / f"m{i}.onnx"
        status = cli.main(["export-onnx", str(spec), "-o", str(out), "--quiet"])
        assert status == 0, (form, capsys.readouterr().err)
        assert out.stat().st_size > 0, form
    _one_line_refusal(capsys, ["export-onnx", "vdsr3", "-o", str(tmp_path / "x.onnx")], "did you mean 'vdsr3d'?")


def test_upscale_with_a_run_folder_and_the_same_spec_in_export(capsys, tmp_path, tiny_run) -> None:
    """One resolver for both: what upscale --model accepts, the checkpoint location names."""
    from mrisr.models.loaded import checkpoint_location

    assert checkpoint_location(tiny_run) == tiny_run / "best"
    assert checkpoint_location(tiny_run / "best" / "model.json") == tiny_run / "best" / "model.json"
    array = np.abs(np.random.default_rng(0).normal(100, 10, (1, 8, 8, 4))).astype(np.float32)
    src = save(Volume(array, np.diag([1.0, 1.0, 2.0, 1.0]), {}), tmp_path / "lr.nii.gz")
    assert cli.main(["upscale", str(src), "-o", str(tmp_path / "sr.nii.gz"), "--model", str(tiny_run),
                     "--quiet"]) == 0


def test_a_fresh_process_refuses_a_read_only_output_within_two_seconds(scan, read_only_dir) -> None:
    """What the user waits for: interpreter start, imports and the refusal, in a new process. The
    refusal itself must cost well under a second beyond starting Python and importing mrisr (the
    start-up alone is measured alongside, so a loaded machine does not fail the test)."""
    import subprocess
    import sys

    def timed(*argv: str) -> tuple[float, subprocess.CompletedProcess]:
        start = time.perf_counter()
        result = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=120)
        return time.perf_counter() - start, result

    startup, _ = timed("-c", "import mrisr.cli, mrisr.infer.job")
    seconds, result = timed("-m", "mrisr.cli", "upscale", str(scan), "-o", str(read_only_dir / "sr.nii.gz"))
    assert result.returncode == 2, result.stderr
    assert "cannot write in" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert seconds - startup < 0.5, f"{seconds:.2f} s, of which start-up {startup:.2f} s"
    assert seconds < max(2.0, 1.5 * startup), f"{seconds:.2f} s (start-up {startup:.2f} s)"


def test_force_never_lets_a_kind_change_through_before_the_work(capsys, scan, tmp_path) -> None:
    """--force replaces an output only by one of its kind, found before any work."""
    a_file = tmp_path / "was_a_file"
    a_file.write_text("x")
    _one_line_refusal(capsys, ["upscale", str(scan), "-o", str(a_file), "--format", "dicom", "--force"],
                      "replace a file with a folder")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    _one_line_refusal(capsys, ["evaluate", "--reference", str(scan), "--prediction", str(scan), "--report",
                               str(notes), "--force"], "not an mrisr report folder")
    _one_line_refusal(capsys, ["convert", str(scan), str(notes), "--format", "dicom", "--force"],
                      "not an mrisr DICOM series")
    assert (notes / "notes.txt").read_text() == "mine"


# --- mrisr info on a folder of several series --------------------------------------------------


def test_info_lists_the_series_of_a_folder(capsys, tmp_path) -> None:
    from dicom_factory import write_series
    from pydicom.uid import generate_uid

    rng = np.random.default_rng(0)
    folder = tmp_path / "study"
    axial = np.diag([-0.9, -0.9, 3.0, 1.0])  # RAS: L-R flipped, P-A flipped (LPS-like rows), 3 mm axial slices
    coronal = np.array([[-0.8, 0, 0, 0], [0, 0, 4.0, 0], [0, -0.8, 0, 0], [0, 0, 0, 1.0]])  # 4 mm coronal slices
    uids = generate_uid(), generate_uid()
    write_series(folder, rng.integers(0, 500, (10, 12, 6)), axial, series_uid=uids[0], series_number=2,
                 description="T1 axial", name_prefix="A")
    write_series(folder, rng.integers(0, 500, (8, 9, 5)), coronal, series_uid=uids[1], series_number=5,
                 description="T2 coronal", name_prefix="B")

    capsys.readouterr()
    assert cli.main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "2 found" in out and "T1 axial" in out and "T2 coronal" in out and uids[0] in out and uids[1] in out
    assert cli.main(["info", str(folder), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["series"]
    by_id = {s["id"]: s for s in listed}
    first, second = by_id[uids[0]], by_id[uids[1]]
    assert (first["n_slices"], first["orientation"], first["description"]) == (6, "axial", "T1 axial")
    assert first["spacing"] == pytest.approx([0.9, 0.9, 3.0])
    assert (second["n_slices"], second["orientation"]) == (5, "coronal")
    assert second["spacing"] == pytest.approx([0.8, 0.8, 4.0])
    for s in listed:  # the orientation agrees with what loading the series gives
        volume = load(folder, series=s["id"])
        assert "".join(volume.axcodes) == s["axcodes"]
        assert list(volume.spacing) == pytest.approx(s["spacing"])
    assert cli.main(["info", str(folder), "--series", uids[1], "--json"]) == 0  # one series: its geometry
    assert json.loads(capsys.readouterr().out)["shape"] == [8, 9, 5]


# --- the fitted slice grid reaches the sidecars -------------------------------------------------


def _ge_like_series(folder: Path) -> Path:
    """A 0.9 x 0.9 x 3 mm axial series whose positions are rounded to 0.1 mm around a constant offset."""
    from dicom_factory import LPS_TO_RAS, write_series

    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = [0.9, 0, 0], [0, 0.9 * 0.99, 0.9 * 0.141]
    lps[:3, 2], lps[:3, 3] = [0, -3.0 * 0.141, 3.0 * 0.99], [-5.0, -8.0, -4.0]
    affine = LPS_TO_RAS @ lps
    k = np.arange(8)[:, None]
    offset = np.array([0.0437, 0.0937, 0.0412])
    true = lps[:3, 3] + k * lps[:3, 2]
    stored = np.round((true - offset) / 0.1) * 0.1 + offset
    data = np.random.default_rng(1).integers(50, 500, (12, 12, 8))
    write_series(folder, data, affine, positions=stored, position_decimals=4)
    return folder


def test_the_fitted_slice_grid_is_in_every_sidecar(capsys, tmp_path) -> None:
    series = _ge_like_series(tmp_path / "ge")
    with pytest.warns(UserWarning, match="mm"):
        volume = load(series)
    grid = volume.meta["slice_grid"]
    assert grid["spacing_mm"] == pytest.approx(3.0, abs=0.01) and grid["max_residual_mm"] > 0.001
    assert cli.main(["simulate", str(series), "-o", str(tmp_path / "lr.nii.gz"), "--protocol", "thick-slice-x4",
                     "--quiet"]) == 0
    simulated = json.loads((tmp_path / "lr.json").read_text())
    assert simulated["input"]["slice_grid"] == pytest.approx(grid)

    from mrisr.infer.job import upscale_file
    from mrisr.models.loaded import LoadedModel
    from mrisr.nets import VDSR

    model = LoadedModel(VDSR(2, features=4, depth=2).eval(), {}, "tiny", "cpu")
    with pytest.warns(UserWarning):
        upscale_file(series, tmp_path / "sr.nii.gz", model=model, device="cpu")
    upscaled = json.loads((tmp_path / "sr.json").read_text())
    assert upscaled["input"]["slice_grid"] == pytest.approx(grid)
