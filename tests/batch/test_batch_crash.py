"""A batch killed with SIGKILL mid-run resumes: every item ends done exactly once, nothing partial
or temporary is left in OUT, and the ledger's counts match the files on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from batch_data import done_rows, files_on_disk, ledger_rows, nifti, series, tiny_model


def test_sigkill_mid_run_then_resume(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for k in range(10):
        nifti(root / "vols" / f"v{k:02d}.nii.gz", k, shape=(16, 16, 8))
    for k in range(4):
        series(root / "dicom" / f"s{k}", 50 + k, number=k + 1, n_slices=6)
    card = tiny_model(tmp_path / "model")
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "mrisr.cli", "batch", str(root), "-o", str(out), "--model", str(card),
            "--workers", "1", "--device", "cpu", "--quiet"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 900
    try:
        while done_rows(out) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the batch recorded nothing in time"
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
    killed = {r["key"]: r["state"] for r in ledger_rows(out)}
    assert proc.returncode == -signal.SIGKILL
    assert "done" in killed.values() and set(killed.values()) != {"done"}, "the kill came after the end"
    time.sleep(0.5)  # the worker dies with its coordinator (PR_SET_PDEATHSIG)

    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = ledger_rows(out)
    assert len(rows) == 14 and {r["state"] for r in rows} == {"done"}
    assert {r["key"] for r in rows} == set(killed)
    # Done before the kill: not redone. Interrupted: redone once more.
    assert all(r["attempts"] == 1 for r in rows if killed[r["key"]] == "done")
    outputs = [o for r in rows for o in json.loads(r["outputs"])]
    assert len(outputs) == len(set(outputs)) == 28
    assert files_on_disk(out) == set(outputs)  # nothing partial, nothing temporary, nothing twice
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]
    summary = json.loads((out / "mrisr-summary.json").read_text())
    assert summary["counts"]["done"] + summary["counts"]["skipped"] == 14 and summary["counts"]["failed"] == 0
