"""mrisr batch on the command line: one-line errors (exit 2, no traceback), --dry-run as a table
and as JSON (writing nothing), --status and --json summaries, the missing-Ray message."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest
from batch_data import nifti, series, tiny_model

from mrisr.cli import main


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(root with two NIfTI files and a DICOM series, model card)."""
    base = tmp_path_factory.mktemp("small")
    root = base / "root"
    nifti(root / "a" / "one.nii.gz", 1)
    nifti(root / "b" / "two.nii", 2)
    series(root / "dcm", 3, number=9, description="T2 AX")
    return root, tiny_model(base / "model")


def _run(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line_error(code: int, err: str, *phrases: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("mrisr: error: ") and "Traceback" not in err, err
    for phrase in phrases:
        assert phrase in err, err


def test_one_line_errors(capsys, tmp_path: Path, small) -> None:
    root, card = small
    out = tmp_path / "out"
    _one_line_error(*_run(capsys, "batch", "-o", out, "--model", card)[::2], "no input given")
    _one_line_error(*_run(capsys, "batch", root)[::2], "no output folder given", "-o OUT")
    _one_line_error(*_run(capsys, "batch", root, "-o", out, "--num-parts", 3, "--part-id", 3)[::2],
                    "--part-id 3 is not in 0..2")
    _one_line_error(*_run(capsys, "batch", root, "-o", out, "--layout", "bids", "--format", "dicom")[::2],
                    "--layout bids writes NIfTI")
    _one_line_error(*_run(capsys, "batch", tmp_path / "missing", "-o", out)[::2], "does not exist")
    _one_line_error(*_run(capsys, "batch", root, "-o", out, "--model", tmp_path / "nope.json")[::2],
                    "checkpoint not found")
    _one_line_error(*_run(capsys, "batch", root, "-o", out, "--series-description", "(")[::2],
                    "not a regular expression")
    _one_line_error(*_run(capsys, "batch", root, "-o", root, "--model", card)[::2], "is the input folder too")
    _one_line_error(*_run(capsys, "batch", "--status", tmp_path)[::2], "holds no batch ledger")
    with pytest.raises(SystemExit) as exited:  # argparse's own errors, one line too
        main(["batch", str(root), "-o", str(out), "--workers", "two"])
    _one_line_error(exited.value.code, capsys.readouterr().err, "invalid int value")
    assert not out.exists()


def test_missing_ray_names_the_fix(capsys, monkeypatch, tmp_path: Path, small) -> None:
    root, card = small
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    code, _, err = _run(capsys, "batch", root, "-o", tmp_path / "out", "--model", card, "--ray-address", "auto",
                        "--quiet")
    _one_line_error(code, err, "needs the ray package", "pip install 'mrisr[ray]'")


def test_dry_run_table_and_json_write_nothing(capsys, tmp_path: Path, small) -> None:
    root, card = small
    out = tmp_path / "out"
    code, table, err = _run(capsys, "batch", root, "-o", out, "--model", card, "--dry-run")
    assert code == 0, err
    lines = table.splitlines()
    assert lines[0].split()[:6] == ["KEY", "KIND", "SLICES", "SPACING_MM", "ACTION", "ITEM"]
    assert any(line.split()[1] == "dicom" and "dcm/series-9_T2_AX.nii.gz" in line for line in lines)
    assert lines[-1].startswith("3 items: 3 to run, 0 to skip, 0 failing")
    code, text, _ = _run(capsys, "batch", root, "-o", out, "--model", card, "--dry-run", "--json",
                         "--include", "*.nii*")
    plan = json.loads(text)
    assert code == 0 and plan["counts"]["run"] == 2 and plan["parameters"]["layout"] == "mirror"
    assert [i["output"] for i in plan["items"]] == ["a/one.nii.gz", "b/two.nii.gz"]
    assert all(len(i["key"]) == 64 and i["action"] == "run" for i in plan["items"])
    assert not out.exists()


def test_json_summary_then_status(capsys, tmp_path: Path, small) -> None:
    root, card = small
    out = tmp_path / "out"
    code, text, err = _run(capsys, "batch", root, "-o", out, "--model", card, "--workers", 0, "--json",
                           "--exclude", "b/*")
    assert code == 0, err
    summary = json.loads(text)
    assert summary["counts"] == {"done": 2, "failed": 0, "skipped": 0, "pending": 0, "total": 2}
    assert Path(summary["summary_csv"]).is_file() and Path(summary["summary_json"]).is_file()
    assert sorted(o for i in summary["items"] for o in i["outputs"]) == [
        "a/one.json", "a/one.nii.gz", "dcm/series-9_T2_AX.json", "dcm/series-9_T2_AX.nii.gz"]
    code, text, _ = _run(capsys, "batch", "--status", out)
    assert code == 0 and "mrisr-ledger.sqlite: 2 done, 0 failed, 0 running, 0 pending of 2" in text
    code, text, _ = _run(capsys, "batch", "--status", out, "--json")
    status = json.loads(text)
    assert status["counts"]["done"] == 2 and status["ledgers"][0]["file"] == "mrisr-ledger.sqlite"
    # The dry run now knows what is done.
    code, text, _ = _run(capsys, "batch", root, "-o", out, "--model", card, "--dry-run")
    assert text.splitlines()[-1].startswith("3 items: 1 to run, 2 to skip")
    assert "(done earlier)" in text
