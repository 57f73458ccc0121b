"""mrisr batch ds -o ds --layout bids (the documented example): a BIDS dataset takes its own
derivatives in derivatives/mrisr (ledger and summary there too), discovery never takes files
under derivatives/ as inputs, a rerun does nothing new, and the raw files are never touched;
any other output inside an input is refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from batch_data import ledger_rows, nifti, tiny_model

from mrisr.cli import main


def _run(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A tiny BIDS dataset, with another pipeline's derivative already in it."""
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.10.0"}))
    nifti(ds / "sub-01" / "anat" / "sub-01_T1w.nii.gz", 1)
    nifti(ds / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_T2w.nii.gz", 2)
    nifti(ds / "derivatives" / "other" / "sub-01" / "anat" / "sub-01_desc-preproc_T1w.nii.gz", 3)
    return ds


def test_bids_dataset_takes_its_own_derivatives(capsys, tmp_path: Path, dataset: Path) -> None:
    ds = dataset
    card = tiny_model(tmp_path / "model")
    raw = _hashes(ds)
    args = ("batch", ds, "-o", ds, "--layout", "bids", "--model", card, "--workers", 0, "--quiet")
    code, _, err = _run(capsys, *args)
    assert code == 0, err
    deriv = ds / "derivatives" / "mrisr"
    written = sorted(p.relative_to(deriv).as_posix() for p in deriv.rglob("*") if p.is_file())
    assert [w for w in written if not w.startswith("mrisr-")] == [
        "dataset_description.json",
        "sub-01/anat/sub-01_desc-sr_T1w.json",
        "sub-01/anat/sub-01_desc-sr_T1w.nii.gz",
        "sub-02/ses-1/anat/sub-02_ses-1_desc-sr_T2w.json",
        "sub-02/ses-1/anat/sub-02_ses-1_desc-sr_T2w.nii.gz",
    ]
    assert {"mrisr-ledger.sqlite", "mrisr-summary.csv", "mrisr-summary.json"} <= set(written)
    # Nothing but derivatives/mrisr is new; no raw file (nor the other pipeline's) changed.
    assert {k: v for k, v in _hashes(ds).items() if not k.startswith("derivatives/mrisr/")} == raw
    assert not (ds / "mrisr-ledger.sqlite").exists() and not (ds / "mrisr-summary.csv").exists()
    rows = ledger_rows(deriv)
    assert sorted(r["display"] for r in rows) == ["sub-01/anat/sub-01_T1w.nii.gz",
                                                  "sub-02/ses-1/anat/sub-02_ses-1_T2w.nii.gz"]
    assert all(r["state"] == "done" for r in rows)
    side = json.loads((deriv / "sub-01/anat/sub-01_desc-sr_T1w.json").read_text())
    assert side["Sources"] == ["bids:raw:sub-01/anat/sub-01_T1w.nii.gz"]
    summary = json.loads((deriv / "mrisr-summary.json").read_text())
    assert summary["counts"]["done"] == 2 and summary["counts"]["total"] == 2
    assert "derivatives/mrisr/sub-01/anat/sub-01_desc-sr_T1w.nii.gz" in [o for i in summary["items"]
                                                                         for o in i["outputs"]]
    stamps = {p: p.stat().st_mtime_ns for p in deriv.rglob("*.nii.gz")}

    # The rerun finds the same two items (not its own outputs, nor the other pipeline's) and does nothing.
    code, _, err = _run(capsys, *args)
    assert code == 0, err
    assert ledger_rows(deriv) == rows
    summary = json.loads((deriv / "mrisr-summary.json").read_text())
    assert summary["counts"] == {"done": 0, "failed": 0, "skipped": 2, "pending": 0, "total": 2}
    assert {p: p.stat().st_mtime_ns for p in deriv.rglob("*.nii.gz")} == stamps
    assert {k: v for k, v in _hashes(ds).items() if not k.startswith("derivatives/mrisr/")} == raw
    code, text, _ = _run(capsys, "batch", "--status", ds)
    assert code == 0 and "mrisr-ledger.sqlite: 2 done, 0 failed, 0 running, 0 pending of 2" in text
    code, text, _ = _run(capsys, "batch", ds, "-o", ds, "--layout", "bids", "--model", card, "--dry-run")
    assert code == 0 and text.splitlines()[-1].startswith("2 items: 0 to run, 2 to skip")


def test_bids_dry_run_in_place_writes_nothing(capsys, tmp_path: Path, dataset: Path) -> None:
    before = _hashes(dataset)
    code, text, err = _run(capsys, "batch", dataset, "-o", dataset, "--layout", "bids", "--dry-run", "--json")
    assert code == 0 and err == "", err
    plan = json.loads(text)
    assert plan["ledger"] == str(dataset / "derivatives" / "mrisr" / "mrisr-ledger.sqlite")
    assert sorted(i["output"] for i in plan["items"]) == [
        "derivatives/mrisr/sub-01/anat/sub-01_desc-sr_T1w.nii.gz",
        "derivatives/mrisr/sub-02/ses-1/anat/sub-02_ses-1_desc-sr_T2w.nii.gz",
    ]
    assert _hashes(dataset) == before and not (dataset / "derivatives" / "mrisr").exists()


def test_only_the_dataset_itself_takes_derivatives(capsys, tmp_path: Path, dataset: Path) -> None:
    def refused(*argv: object) -> str:
        code, _, err = _run(capsys, "batch", *argv)
        assert code == 2 and err.count("\n") == 1 and err.startswith("mrisr: error: "), err
        return err

    err = refused(dataset, "-o", dataset / "derivatives" / "mrisr", "--layout", "bids")
    assert "lies inside the input" in err and f"give -o {dataset}" in err
    assert "lies inside the input" in refused(dataset, "-o", dataset / "sr", "--layout", "bids")
    assert "is the input folder too" in refused(dataset, "-o", dataset)  # mirror into the dataset
    plain = tmp_path / "plain"
    nifti(plain / "sub-01" / "anat" / "sub-01_T1w.nii.gz", 4)
    assert "not a BIDS dataset" in refused(plain, "-o", plain, "--layout", "bids")
    assert not (dataset / "derivatives" / "mrisr").exists() and not (plain / "derivatives").exists()
