"""mrisr batch end to end on tiny generated archives: every good item done once with 2 worker
processes, the corrupt one failed with its reason, a duplicate skipped, a rerun doing no work;
parts covering every item once; BIDS derivatives; derived DICOM series; retries and --force;
unsafe archives refused with nothing written outside OUT."""

from __future__ import annotations

import csv
import json
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from batch_data import archive_tree, files_on_disk, ledger_rows, nifti, series, tiny_model

import mrisr
from mrisr.batch import BatchOptions, run_batch
from mrisr.cli import main


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, int]]:
    """(root, model card, counts) of the 32-item archive, shared by this module's tests (read-only)."""
    base = tmp_path_factory.mktemp("archive")
    counts = archive_tree(base / "root", base / "staging")
    return base / "root", tiny_model(base / "model"), counts


def _run(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_archive_with_two_workers_then_a_rerun_does_no_work(capsys, tmp_path: Path, archive) -> None:
    root, card, counts = archive
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "batch", root, "-o", out, "--model", card, "--workers", 2, "--device", "cpu")
    assert code == 2, err  # the corrupt item fails the batch, after everything else was done
    assert "30 done, 1 failed, 1 skipped of 32 items" in stdout
    assert "corrupt.nii.gz" in err and err.strip().splitlines()[-1].startswith("mrisr: error: ")
    rows = ledger_rows(out)
    assert len(rows) == counts["good"] + counts["corrupt"]  # the duplicate has no row of its own
    done = [r for r in rows if r["state"] == "done"]
    [failed] = [r for r in rows if r["state"] == "failed"]
    assert len(done) == counts["good"] and all(r["attempts"] == 1 for r in rows)
    assert "corrupt.nii.gz" in failed["display"] and "broken gzip" in failed["last_error"]
    # Every good item's outputs exist, and nothing else was written.
    outputs = [o for r in done for o in json.loads(r["outputs"])]
    assert len(outputs) == len(set(outputs)) == 2 * counts["good"]
    assert files_on_disk(out) == set(outputs)
    sr = mrisr.load(out / "sub-02" / "anat" / "sub-02_acq-1_T2w.nii.gz")
    assert sr.shape == (8, 8, 18) and np.allclose(sr.spacing, 1.0)
    side = json.loads((out / "pacs" / "export" / "s0" / "series-20_T2_FLAIR.json").read_text())
    assert side["input"]["path"] == "pacs/export.zip/s0" and side["batch"]["key"] in {r["key"] for r in done}
    assert side["input"]["sources"][0]["path"].startswith("pacs/export.zip/s0/")  # not the temporary extraction
    # The summary: CSV and JSON, with the reason and the duplicate.
    summary = json.loads((out / "mrisr-summary.json").read_text())
    assert summary["counts"] == {"done": 30, "failed": 1, "skipped": 1, "pending": 0, "total": 32}
    with open(out / "mrisr-summary.csv", newline="") as fh:
        by_status = {}
        for row in csv.DictReader(fh):
            by_status.setdefault(row["status"], []).append(row)
    assert "broken gzip" in by_status["failed"][0]["reason"]
    assert by_status["skipped"][0]["reason"].startswith("duplicate of ")
    before = {p: (out / p).stat().st_mtime_ns for p in outputs}

    code, stdout, _ = _run(capsys, "batch", root, "-o", out, "--model", card, "--workers", 2, "--quiet")
    assert code == 2 and stdout == ""
    assert ledger_rows(out) == rows  # no attempt, no timing changed: no work
    assert {p: (out / p).stat().st_mtime_ns for p in outputs} == before
    summary = json.loads((out / "mrisr-summary.json").read_text())
    assert summary["counts"] == {"done": 0, "failed": 1, "skipped": 31, "pending": 0, "total": 32}


def test_parts_cover_every_item_once(capsys, tmp_path: Path, archive) -> None:
    root, card, counts = archive
    out = tmp_path / "out"
    keys = []
    for part in range(3):
        code, _, err = _run(capsys, "batch", root, "-o", out, "--model", card, "--workers", 0, "--quiet",
                            "--num-parts", 3, "--part-id", part)
        assert code in (0, 2), err
        rows = ledger_rows(out, f"mrisr-ledger-part{part}of3.sqlite")
        assert 10 <= len(rows) <= 11  # balanced to one item
        keys.extend(r["key"] for r in rows)
        assert (out / f"mrisr-summary-part{part}of3.csv").is_file()
    assert len(keys) == len(set(keys)) == counts["good"] + counts["corrupt"]
    code, stdout, _ = _run(capsys, "batch", "--status", out)
    assert code == 0 and "all parts: 30 done, 1 failed, 0 running, 0 pending of 31" in stdout
    # One run over the whole archive afterwards finds it all done by the parts.
    code, _, _ = _run(capsys, "batch", root, "-o", out, "--model", card, "--workers", 0, "--quiet")
    summary = json.loads((out / "mrisr-summary.json").read_text())
    assert summary["counts"]["done"] == 0 and summary["counts"]["skipped"] == 31
    assert any("(mrisr-ledger-part" in i["reason"] for i in summary["items"] if i["status"] == "skipped")


def test_bids_layout(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    nifti(root / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_T2w.nii.gz", 1)
    nifti(root / "sub-02" / "anat" / "sub-02_FLAIR.nii.gz", 2)
    series(root / "sub-03" / "dicom", 3, number=4, description="T2 AX thick")
    series(root / "sub-04" / "dicom", 4, number=1, description="localizer")
    card = tiny_model(tmp_path / "model")
    out = tmp_path / "out"  # not inside the input: only the dataset itself takes its derivatives (test_batch_bids)
    summary = run_batch([root], out, BatchOptions(model=str(card), layout="bids", workers=0, device="cpu"))
    assert summary.counts == {"done": 3, "failed": 1, "skipped": 0, "pending": 0, "total": 4}
    deriv = out / "derivatives" / "mrisr"
    desc = json.loads((deriv / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "mrisr"
    assert desc["DatasetLinks"] == {"raw": root.resolve().as_uri()}
    written = sorted(p.relative_to(deriv).as_posix() for p in deriv.rglob("*") if p.is_file())
    assert written == [
        "dataset_description.json",
        "sub-01/ses-1/anat/sub-01_ses-1_desc-sr_T2w.json",
        "sub-01/ses-1/anat/sub-01_ses-1_desc-sr_T2w.nii.gz",
        "sub-02/anat/sub-02_desc-sr_FLAIR.json",
        "sub-02/anat/sub-02_desc-sr_FLAIR.nii.gz",
        "sub-03/anat/sub-03_acq-T2AXthick_run-4_desc-sr_T2w.json",
        "sub-03/anat/sub-03_acq-T2AXthick_run-4_desc-sr_T2w.nii.gz",
    ]
    side = json.loads((deriv / "sub-01/ses-1/anat/sub-01_ses-1_desc-sr_T2w.json").read_text())
    assert side["Sources"] == ["bids:raw:sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz"]
    assert len(json.loads((deriv / "sub-03/anat/sub-03_acq-T2AXthick_run-4_desc-sr_T2w.json").read_text())[
        "Sources"]) == 5
    [failed] = [i for i in summary.items if i["status"] == "failed"]
    assert "cannot tell the BIDS suffix" in failed["reason"] and "localizer" in failed["reason"]


def test_dicom_format_force_and_retries(capsys, tmp_path: Path) -> None:
    root = tmp_path / "root"
    series(root / "t2", 1, number=5, description="T2 AX")
    nifti(root / "vol.nii.gz", 2)
    truncated = nifti(root / "cut.nii", 3)  # a readable header, data cut short: fails in the worker
    truncated.write_bytes(truncated.read_bytes()[:400])
    card = tiny_model(tmp_path / "model")
    out = tmp_path / "out"
    args = ("batch", root, "-o", out, "--model", card, "--workers", 0, "--format", "dicom", "--quiet")
    code, _, _ = _run(capsys, *args, "--retries", 1)
    assert code == 2
    rows = {r["display"]: r for r in ledger_rows(out)}
    assert rows["cut.nii"]["state"] == "failed" and rows["cut.nii"]["attempts"] == 2  # retried once in the run
    folder = out / "t2" / "series-5_T2_AX"
    files = sorted(folder.iterdir())
    assert len(files) == 15 and (out / "vol.nii.gz").is_file()
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert "DERIVED" in header.ImageType and header.SeriesDescription
    assert mrisr.load(folder).shape == (8, 6, 15)
    # A rerun with more retries tries the failed item again; --force redoes the done ones too.
    _run(capsys, *args, "--retries", 2)
    assert {r["display"]: r["attempts"] for r in ledger_rows(out)}["cut.nii"] == 3
    code, _, _ = _run(capsys, *args, "--force")
    rows = {r["display"]: r for r in ledger_rows(out)}
    assert rows["t2"]["attempts"] == 2 and rows["t2"]["state"] == "done" and rows["vol.nii.gz"]["attempts"] == 2
    assert len(list(folder.iterdir())) == 15 and not [p for p in out.rglob(".*") if ".tmp-" in p.name]


def test_existing_foreign_output_is_kept(capsys, tmp_path: Path) -> None:
    root = tmp_path / "root"
    nifti(root / "a.nii.gz", 1)
    card = tiny_model(tmp_path / "model")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.nii.gz").write_bytes(b"someone else's file")
    code, _, err = _run(capsys, "batch", root, "-o", out, "--model", card, "--workers", 0)
    assert code == 2 and "output already exists" in err
    assert (out / "a.nii.gz").read_bytes() == b"someone else's file"
    code, _, _ = _run(capsys, "batch", root, "-o", out, "--model", card, "--workers", 0, "--force", "--quiet")
    assert code == 0 and nib.load(out / "a.nii.gz").shape == (8, 8, 18)


def test_unsafe_archives_refused_nothing_written_outside(capsys, tmp_path: Path) -> None:
    root = tmp_path / "root"
    nifti(root / "ok.nii.gz", 1)
    with zipfile.ZipFile(root / "slip.zip", "w") as zf:
        zf.writestr("series/IM_0001.dcm", b"x" * 200)
        zf.writestr("../../escaped.txt", b"gotcha")
    with zipfile.ZipFile(root / "absolute.zip", "w") as zf:
        zf.writestr(str(tmp_path / "absolute.txt"), b"gotcha")
    card = tiny_model(tmp_path / "model")
    before = {p for p in tmp_path.rglob("*")}
    out = tmp_path / "out"
    code, _, err = _run(capsys, "batch", root, "-o", out, "--model", card, "--workers", 0, "--quiet")
    assert code == 2
    reasons = {i["item"]: i["reason"] for i in json.loads((out / "mrisr-summary.json").read_text())["items"]}
    assert "unsafe archive entry '../../escaped.txt'" in reasons["slip.zip"]
    assert "unsafe archive entry" in reasons["absolute.zip"] and "absolute.txt" in reasons["absolute.zip"]
    assert reasons["ok.nii.gz"] is None and err.count("\n") == 1
    after = {p for p in tmp_path.rglob("*")}
    assert {p for p in after - before if out not in p.parents and p != out} == set()
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path.parent / "escaped.txt").exists()
    shutil.rmtree(out)
