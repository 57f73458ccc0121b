"""benchmarks/quality.py on a tiny phantom with a tiny untrained model: rows, tables, goal, figure, ECLARE plumbing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import phantom

from mrisr.models.card import save_checkpoint
from mrisr.nets import VDSR
from mrisr.protocol import load_protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import quality  # noqa: E402  (a script folder, not a package)

NO_ECLARE = quality.Eclare(None, 15.0, None, frozenset({"thick-slice-x4"}))


@pytest.fixture(scope="module")
def hr():
    return phantom(0, seed=1, shape=(24, 24, 24), spacing=(1.0, 1.0, 1.0), dtype="float32")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> quality.ModelSpec:
    card = {"protocol": {"name": "tiny"}, "wall_time_s": 90.0, "training_data": [{"path": "x", "sha256": "abc"}]}
    path = save_checkpoint(VDSR(2, features=4, depth=3), tmp_path_factory.mktemp("model"), card)
    return quality.describe_model(str(path))


def test_a_through_plane_case_gives_tricubic_the_model_and_eclare_absent(hr, model, tmp_path):
    case = quality.run_case(load_protocol("thick-slice-x4"), hr, "held", 0, [model], NO_ECLARE, quality.resolve_device(
        "cpu"), "abc")
    assert [r.method for r in case.rows] == ["tricubic", model.arg, "ECLARE"]
    assert case.baseline == "tricubic" and case.lr.shape == (24, 24, 6)
    tricubic, sr, eclare = case.rows
    assert np.isfinite([tricubic.psnr_db, tricubic.ssim, sr.psnr_db, sr.ssim]).all()
    assert sr.image.shape == hr.shape and np.allclose(sr.image.affine, hr.affine)
    assert sr.note == "TRAINED ON THIS VOLUME" and eclare.note == "not installed" and eclare.psnr_db is None
    table = quality.markdown_table(case).splitlines()
    assert len(table) == 5 and table[2].startswith("| tricubic |") and "| +0.00 |" in table[2]
    assert "not measured (no model" in quality.goal_verdict([case], "held", quick=True)  # trained on it: no goal
    pngs = quality.write_figures(case, tmp_path)
    assert [p.name for p in pngs] == [f"thick-slice-x4_held_view{v}.png" for v in range(3)]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size < 300_000 for p in pngs)
    assert quality.eclare_budget(None, [model]) == 2.0 and quality.eclare_budget(5.0, [model]) == 5.0


def test_an_in_plane_case_has_the_zero_filled_baseline_and_marks_a_2d_model(hr, model):
    elsewhere = quality.Eclare(("true",), 15.0, None, frozenset({"thick-slice-x4"}))
    case = quality.run_case(load_protocol("lowfield-fast-6mm"), hr, "held", 0, [model], elsewhere,
                            quality.resolve_device("cpu"), None)
    assert [r.method for r in case.rows[:3]] == ["zero-filled k-space", "tricubic", model.arg]
    assert case.baseline == "zero-filled k-space"
    assert "from the acquired grid 12 x 12 x 4" in case.rows[1].note
    assert case.rows[2].note.startswith("does not apply: 2D through-plane model")
    assert case.rows[3].note == "not run on this protocol (--eclare-protocols)"
    verdict = quality.goal_verdict([case], "held", quick=False)
    assert verdict.endswith("not measured (this run did not include that case).")


def test_goal_verdict_says_by_how_much_it_falls_short(hr):
    case = quality.Case(load_protocol("thick-slice-x4"), "held", hr, hr, "tricubic", [
        quality.Row("tricubic", 30.0, 0.9), quality.Row("m", 32.5, 0.95, label="SR1"),
        quality.Row("ECLARE", 31.0, 0.93)])
    verdict = quality.goal_verdict([case], "held", quick=False)
    assert "**not met (short by 0.50 dB)**; best model `m`: +2.50 dB" in verdict
    assert "Ahead of ECLARE at an equal time budget: yes (+1.50 dB)" in verdict


def test_eclare_runs_as_a_command_within_its_budget(hr, tmp_path, monkeypatch):
    monkeypatch.setattr(quality, "WORK", tmp_path)
    case = quality.run_case(load_protocol("thick-slice-x4"), hr, "held", 0, [], NO_ECLARE,
                            quality.resolve_device("cpu"), None)
    cpu = quality.resolve_device("cpu")
    # a stand-in that returns its input (on the LR grid): run, found, refused for its grid
    copy = ("sh", "-c", 'mkdir -p "$4" && cp "$2" "$4/lr_eclare.nii.gz"', "fake")
    row = quality.eclare_row(quality.Eclare(copy, 1.0, 8, frozenset({"thick-slice-x4"})), case, np.ones(hr.shape,
                             bool), cpu)
    assert row.psnr_db is None and row.note.startswith("output grid [24, 24, 6] differs")
    quality.mrisr.save(hr.replace(array=hr.array * 1.01), tmp_path / "sr.nii.gz")  # one on the reference grid
    found = ("sh", "-c", f'mkdir -p "$4" && cp {tmp_path / "sr.nii.gz"} "$4/lr_eclare.nii.gz"', "fake")
    row = quality.eclare_row(quality.Eclare(found, 1.0, None, frozenset({"thick-slice-x4"})), case,
                             np.ones(hr.shape, bool), cpu)
    assert 30 < row.psnr_db < 60 and row.label == "ECLARE" and row.note.startswith("budget 1 min; --gpu-id -1")
    sleeper = ("sh", "-c", "sleep 30", "fake")
    row = quality.eclare_row(quality.Eclare(sleeper, 0.02, None, frozenset({"thick-slice-x4"})), case,
                             np.ones(hr.shape, bool), cpu)
    assert row.note.startswith("did not finish within the budget (0.02 min;") and row.seconds < 10
    args = quality.eclare_arguments(case.lr, load_protocol("thick-slice-x4").acquisition.nominal(), hr, cpu, 500)
    assert args == ["--gpu-id", "-1", "--relative-slice-thickness", "4.0000", "--relative-slice-profile-type", "rect",
                    "--n-patches", "500"]
