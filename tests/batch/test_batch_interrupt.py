"""Ctrl-C (SIGINT) or SIGTERM in a batch: the workers stop at once, items whose outputs are complete
are done, the others pending (none left running), the summary is written, the command exits
130 (143) with one line saying how to resume, and a rerun does only the remaining items."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from batch_data import done_rows, files_on_disk, ledger_rows, nifti, tiny_model

from mrisr.batch import BatchOptions, run_batch, runner
from mrisr.batch.worker import Result, Task, run_task
from mrisr.cli import main

_REAL_BACKEND = runner._backend


def _sigint_default() -> None:
    """In the child: Ctrl-C raises KeyboardInterrupt even when the test runner ignores SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_keeps_what_was_done_and_the_rerun_does_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for k in range(12):
        nifti(root / "vols" / f"v{k:02d}.nii.gz", k, shape=(24, 24, 10))
    card = tiny_model(tmp_path / "model")
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "mrisr.cli", "batch", str(root), "-o", str(out), "--model", str(card),
            "--workers", "1", "--device", "cpu", "--quiet"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_sigint_default)
    deadline = time.monotonic() + 600
    try:
        while done_rows(out) < 1:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the batch recorded nothing in time"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGINT)
        sent = time.monotonic()
        stdout, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert took < 10, f"{took:.1f} s from Ctrl-C to exit"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mrisr: interrupted: ") and "Rerun the same command" in lines[0], \
        stderr
    assert "Traceback" not in stderr and stdout == ""
    on_disk = files_on_disk(out)
    time.sleep(1.0)
    assert files_on_disk(out) == on_disk, "a worker went on writing after the batch stopped"

    rows = ledger_rows(out)
    states = {r["key"]: r["state"] for r in rows}
    assert len(rows) == 12 and set(states.values()) <= {"done", "pending"}, states
    done = [r for r in rows if r["state"] == "done"]
    pending = [r for r in rows if r["state"] == "pending"]
    assert done and pending, "the interrupt came after the end"
    for r in done:  # complete: the output and its sidecar, recorded
        outputs = json.loads(r["outputs"])
        assert len(outputs) == 2 and all((out / o).is_file() for o in outputs), r
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]
    summary = json.loads((out / "mrisr-summary.json").read_text())
    assert summary["interrupted"] is True
    assert summary["counts"] == {"done": len(done), "failed": 0, "skipped": 0, "pending": len(pending), "total": 12}
    assert str(len(done)) in lines[0] and "mrisr-summary.csv" in lines[0]
    assert (out / "mrisr-summary.csv").is_file()

    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    after = {r["key"]: r for r in ledger_rows(out)}
    assert {r["state"] for r in after.values()} == {"done"}
    for r in done:  # not redone
        assert after[r["key"]]["attempts"] == r["attempts"] == 1 and after[r["key"]]["finished"] == r["finished"]
    summary = json.loads((out / "mrisr-summary.json").read_text())
    assert summary["interrupted"] is False
    assert summary["counts"] == {"done": len(pending), "failed": 0, "skipped": len(done), "pending": 0, "total": 12}
    outputs = [o for r in after.values() for o in json.loads(r["outputs"])]
    assert files_on_disk(out) == set(outputs) and len(outputs) == 24


class _StopMidway:
    """A backend stopped by SIGTERM with four tasks in flight: one result handed back before, then
    one finished but held (given by ``interrupt``), one whose outputs were written whole but whose
    result never came, two never started; more tasks queued behind."""

    capacity = 4
    workers = 1

    def __init__(self) -> None:
        self.tasks: list[Task] = []
        self.calls = 0
        self.held: list[Result] = []
        self.interrupted = False

    def submit(self, task: Task) -> None:
        self.tasks.append(task)

    def results(self) -> list[Result]:
        self.calls += 1
        if self.calls == 1:
            return [run_task(self.tasks[0], "cpu")]
        self.held = [run_task(self.tasks[1], "cpu")]
        assert run_task(self.tasks[2], "cpu").ok  # written, never reported
        # Without a handler SIGTERM would end the test run itself: the batch would die unrecorded.
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None), "SIGTERM is not handled"
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler stops the batch here
        raise AssertionError("SIGTERM did not stop the batch")

    def interrupt(self) -> list[Result]:
        self.interrupted = True
        return self.held

    def close(self) -> None:
        pass


def test_sigterm_records_finished_work(capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k in range(7):
        nifti(tmp_path / "in" / f"v{k}.nii.gz", k)
    card = str(tiny_model(tmp_path / "model"))
    out = tmp_path / "out"
    backend = _StopMidway()
    monkeypatch.setattr(runner, "_backend", lambda options: backend)
    handler = signal.getsignal(signal.SIGTERM)
    capsys.readouterr()
    code = main(["batch", str(tmp_path / "in"), "-o", str(out), "--model", card, "--quiet"])
    err = capsys.readouterr().err
    assert code == 128 + signal.SIGTERM and backend.interrupted
    assert err.count("\n") == 1 and err.startswith("mrisr: interrupted: 3 done in this run, 4 pending of 7"), err
    assert signal.getsignal(signal.SIGTERM) == handler  # put back
    rows = {r["display"]: r for r in ledger_rows(out)}
    assert {d: r["state"] for d, r in rows.items()} == {
        "v0.nii.gz": "done", "v1.nii.gz": "done", "v2.nii.gz": "done",  # reported, held, written whole
        "v3.nii.gz": "pending", "v4.nii.gz": "pending", "v5.nii.gz": "pending", "v6.nii.gz": "pending"}
    assert json.loads(rows["v2.nii.gz"]["outputs"]) == ["v2.nii.gz", "v2.json"]
    for name in ("v3.nii.gz", "v4.nii.gz"):  # in flight, never run: their attempt counts
        assert rows[name]["attempts"] == 1 and "interrupted" in rows[name]["last_error"]
    assert rows["v5.nii.gz"]["attempts"] == rows["v6.nii.gz"]["attempts"] == 0  # still queued
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    summary = json.loads((out / "mrisr-summary.json").read_text())
    assert summary["interrupted"] is True and summary["counts"]["pending"] == 4

    monkeypatch.setattr(runner, "_backend", _REAL_BACKEND)
    summary = run_batch([tmp_path / "in"], out, BatchOptions(model=card, workers=0, device="cpu"))
    assert summary.counts == {"done": 4, "failed": 0, "skipped": 3, "pending": 0, "total": 7}
    rows = {r["display"]: r for r in ledger_rows(out)}
    assert rows["v3.nii.gz"]["attempts"] == 2 and rows["v0.nii.gz"]["attempts"] == 1


def test_ctrl_c_in_process_raises_batch_interrupted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The Python API: Ctrl-C while items run is a KeyboardInterrupt (BatchInterrupted) after recording."""
    from mrisr.batch.runner import BatchInterrupted

    for k in range(3):
        nifti(tmp_path / "in" / f"v{k}.nii.gz", k)
    card = str(tiny_model(tmp_path / "model"))

    class CtrlC(_StopMidway):
        def results(self) -> list[Result]:
            self.calls += 1
            if self.calls == 1:
                return [run_task(self.tasks[0], "cpu")]
            raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_backend", lambda options: CtrlC())
    with pytest.raises(BatchInterrupted) as stopped:
        run_batch([tmp_path / "in"], tmp_path / "out", BatchOptions(model=card))
    assert isinstance(stopped.value, KeyboardInterrupt) and stopped.value.signum == signal.SIGINT
    assert stopped.value.summary.counts["done"] == 1 and stopped.value.summary.counts["pending"] == 2
    assert [r["state"] for r in ledger_rows(tmp_path / "out")] == ["done", "pending", "pending"]


def test_an_earlier_runs_outputs_are_not_taken_for_this_runs(tmp_path: Path) -> None:
    """After Ctrl-C under --force, an item whose worker had not yet rewritten its outputs is pending,
    not done from the outputs an earlier run left (the sidecar must be no older than the claim)."""
    import json
    import os
    import time

    from mrisr.batch.interrupt import MTIME_SLACK_S, finished_outputs

    output = tmp_path / "sr.nii.gz"
    output.write_bytes(b"old result")
    sidecar = tmp_path / "sr.json"
    sidecar.write_text(json.dumps({"batch": {"key": "k1"}, "seconds": {"upscale": 1.5}}))
    task = Task("k1", None, str(output), "nifti", None)  # type: ignore[arg-type]  (the item is not read)
    assert finished_outputs(task) == ([str(output), str(sidecar)], 1.5)
    claimed = time.time()
    old = claimed - 10 * MTIME_SLACK_S
    os.utime(sidecar, (old, old))
    assert finished_outputs(task, since=claimed) is None
    os.utime(sidecar, (claimed, claimed))
    assert finished_outputs(task, since=claimed) is not None
