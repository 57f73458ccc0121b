"""mrisr batch checks its output folder before any work: a read-only OUT (or nearest existing
folder above it) stops it in well under 2 s with one line and exit 2, before discovery, model
loading or any item; a dry run only warns; OUT is never an input, inside one, or holding one."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from batch_data import nifti

from mrisr.batch import runner
from mrisr.cli import main


def _run(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str, float]:
    capsys.readouterr()
    start = time.perf_counter()
    code = main([str(a) for a in argv])
    seconds = time.perf_counter() - start
    out = capsys.readouterr()
    return code, out.out, out.err, seconds


def _one_line_error(code: int, err: str, *phrases: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("mrisr: error: ") and "Traceback" not in err, err
    assert "internal error" not in err, err
    for phrase in phrases:
        assert phrase in err, err


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the batch gets as far as discovery or the model."""
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the batch went on to discovery or the model before checking its output folder")

    monkeypatch.setattr(runner, "discover", forbidden)
    monkeypatch.setattr(runner, "_model_identity", forbidden)


@pytest.mark.parametrize("where", ["out", "out/deeper", "."])
def test_read_only_output_fails_at_once(capsys, tmp_path: Path, read_only_dir: Path, no_work, where: str) -> None:
    nifti(tmp_path / "in" / "a.nii.gz", 1)
    out = read_only_dir if where == "." else read_only_dir / where  # to be made inside it, or it itself
    code, stdout, err, seconds = _run(capsys, "batch", tmp_path / "in", "-o", out, "--workers", 0)
    _one_line_error(code, err, "cannot write in", str(read_only_dir))
    assert seconds < 2.0, seconds
    assert stdout == "" and list(read_only_dir.iterdir()) == []


def test_read_only_output_named_model_not_loaded(capsys, tmp_path: Path, read_only_dir: Path) -> None:
    """The output is checked before the model: a model that does not exist is not what it reports."""
    nifti(tmp_path / "in" / "a.nii.gz", 1)
    code, _, err, seconds = _run(capsys, "batch", tmp_path / "in", "-o", read_only_dir / "out", "--model",
                                 tmp_path / "no-such-model.json", "--workers", 2)
    _one_line_error(code, err, "cannot write in")
    assert "checkpoint" not in err and seconds < 2.0


def test_read_only_output_run_batch_raises(tmp_path: Path, read_only_dir: Path, no_work) -> None:
    from mrisr.batch import BatchOptions, run_batch
    from mrisr.errors import OutputError

    nifti(tmp_path / "in" / "a.nii.gz", 1)
    with pytest.raises(OutputError, match="cannot write in"):
        run_batch([tmp_path / "in"], read_only_dir / "out", BatchOptions(workers=0))


def test_dry_run_into_read_only_output_warns(capsys, tmp_path: Path, read_only_dir: Path) -> None:
    nifti(tmp_path / "in" / "a.nii.gz", 1)
    out = read_only_dir / "out"
    code, stdout, err, _ = _run(capsys, "batch", tmp_path / "in", "-o", out, "--dry-run")
    assert code == 0, err
    assert err.count("\n") == 1 and err.startswith("mrisr: warning: the batch would stop here: ") and \
        "cannot write in" in err, err
    assert "a.nii.gz" in stdout and "1 to run" in stdout
    code, stdout, err, _ = _run(capsys, "batch", tmp_path / "in", "-o", out, "--dry-run", "--json")
    plan = json.loads(stdout)
    assert code == 0 and len(plan["warnings"]) == 1 and "cannot write in" in plan["warnings"][0]
    assert list(read_only_dir.iterdir()) == []


def test_writable_dry_run_has_no_warning_and_leaves_nothing(capsys, tmp_path: Path) -> None:
    nifti(tmp_path / "in" / "a.nii.gz", 1)
    before = sorted(tmp_path.rglob("*"))
    code, stdout, err, _ = _run(capsys, "batch", tmp_path / "in", "-o", tmp_path / "out", "--dry-run", "--json")
    assert code == 0 and err == "" and json.loads(stdout)["warnings"] == []
    assert sorted(tmp_path.rglob("*")) == before  # the write probe is gone too


def test_output_never_inside_or_holding_an_input(capsys, tmp_path: Path, no_work) -> None:
    root = tmp_path / "in"
    nifti(root / "a.nii.gz", 1)
    code, _, err, _ = _run(capsys, "batch", root, "-o", root / "sr")
    _one_line_error(code, err, "lies inside the input", "writes nothing inside its inputs")
    code, _, err, _ = _run(capsys, "batch", root, "-o", root / "sub" / "sr", "--dry-run")
    _one_line_error(code, err, "lies inside the input")
    code, _, err, _ = _run(capsys, "batch", root, "-o", tmp_path)  # OUT holds the input
    _one_line_error(code, err, "holds the input")
    code, _, err, _ = _run(capsys, "batch", root, "-o", root)
    _one_line_error(code, err, "is the input folder too")
    assert sorted(p.name for p in root.iterdir()) == ["a.nii.gz"]
