"""Batch workers: GPU ids per worker, the worker set-up, tasks that fail as results (never raise),
a worker killed under its task (the pool starts anew), and the coordinator retrying such a task
once in the same run."""

from __future__ import annotations

import json
import os
import queue
import signal
from pathlib import Path

import pytest
import torch
from batch_data import ledger_rows, nifti, tiny_model

from mrisr.batch import BatchOptions, backends, run_batch, runner
from mrisr.batch.discover import discover
from mrisr.batch.worker import Result, Task, init_worker, run_task


def test_gpu_ids(monkeypatch) -> None:
    assert backends.gpu_ids("cpu") == []
    import mrisr.device

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")
    monkeypatch.setattr(mrisr.device, "resolve_device", lambda spec: torch.device("cuda" if spec == "auto" else spec))
    assert backends.gpu_ids("auto") == ["3", "5", "7"]
    assert backends.gpu_ids("cuda:1") == ["5"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert backends.gpu_ids("cuda") == ["0", "1", "2"]
    # Three workers on two GPUs: ids handed out round-robin, one per worker.
    monkeypatch.setattr(backends, "gpu_ids", lambda device: ["0", "1"])
    pool = backends.LocalPool(3, None, "auto", threads=1)
    executor = pool._start()
    try:
        ids = executor._initargs[4]
        assert [ids.get(timeout=5) for _ in range(3)] == ["0", "1", "0"] and executor._initargs[1] == "cuda"
    finally:
        executor.shutdown()


def test_init_worker_takes_its_gpu_and_threads(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    threads, handler = torch.get_num_threads(), signal.getsignal(signal.SIGINT)
    ids: queue.Queue = queue.Queue()
    ids.put("6")
    try:
        init_worker(None, "cpu", 1, parent=None, gpu_ids=ids)
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "6" and torch.get_num_threads() == 1
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        torch.set_num_threads(threads)
        signal.signal(signal.SIGINT, handler)


def test_failures_are_results(tmp_path: Path) -> None:
    nifti(tmp_path / "in" / "a.nii.gz", 1)
    (tmp_path / "in" / "bad.nii.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 40)
    good, bad = sorted(discover(tmp_path / "in"), key=lambda it: it.display)
    result = run_task(Task("k", bad, str(tmp_path / "out" / "bad.nii.gz"), "nifti", None))
    assert not result.ok and "broken gzip" in result.error and result.pid == os.getpid()
    result = run_task(Task("k", good, str(tmp_path / "out" / "a.nii.gz"), "nifti", str(tmp_path / "none.json")))
    assert not result.ok and "checkpoint not found" in result.error and "\n" not in result.error
    assert not (tmp_path / "out").exists()


def test_killed_worker_fails_its_task_and_the_pool_starts_anew(tmp_path: Path) -> None:
    nifti(tmp_path / "in" / "a.nii.gz", 1)
    [item] = discover(tmp_path / "in")
    card = str(tiny_model(tmp_path / "model"))
    task = Task("k", item, str(tmp_path / "out" / "a.nii.gz"), "nifti", card)
    pool = backends.LocalPool(1, card, "cpu", threads=1)
    try:
        pool.submit(task)
        [pid] = list(pool._executor._processes)
        os.kill(pid, signal.SIGKILL)
        [lost] = pool.results()
        assert not lost.ok and lost.crashed and "died" in lost.error
        pool.submit(task)
        [done] = pool.results()
        assert done.ok and done.pid != pid and Path(done.outputs[0]).is_file()
    finally:
        pool.close()


class _CrashOnce:
    """A backend whose first result for each task is a crash; then it runs tasks in-process."""

    capacity = 2
    workers = 1

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.pending: list[Task] = []

    def submit(self, task: Task) -> None:
        self.pending.append(task)

    def results(self) -> list[Result]:
        task = self.pending.pop(0)
        if task.key not in self.seen:
            self.seen.add(task.key)
            return [Result(task.key, False, error="the worker process died", crashed=True)]
        assert task.force and task.clean  # attempted before: may replace what it left
        return [run_task(task, "cpu")]

    def close(self) -> None:
        pass


def test_coordinator_retries_a_crashed_task_once(monkeypatch, tmp_path: Path) -> None:
    nifti(tmp_path / "in" / "a.nii.gz", 1)
    nifti(tmp_path / "in" / "b.nii.gz", 2)
    card = str(tiny_model(tmp_path / "model"))
    monkeypatch.setattr(runner, "_backend", lambda options: _CrashOnce())
    summary = run_batch([tmp_path / "in"], tmp_path / "out", BatchOptions(model=card, device="cpu"))
    assert summary.counts["done"] == 2
    assert [(r["state"], r["attempts"]) for r in ledger_rows(tmp_path / "out")] == [("done", 2), ("done", 2)]


@pytest.mark.parametrize("retries", [0, 1])
def test_a_crash_twice_fails(monkeypatch, tmp_path: Path, retries: int) -> None:
    class AlwaysCrash(_CrashOnce):
        def results(self) -> list[Result]:
            task = self.pending.pop(0)
            return [Result(task.key, False, error="the worker process died", crashed=True)]

    nifti(tmp_path / "in" / "a.nii.gz", 1)
    monkeypatch.setattr(runner, "_backend", lambda options: AlwaysCrash())
    card = str(tiny_model(tmp_path / "model"))
    summary = run_batch([tmp_path / "in"], tmp_path / "out", BatchOptions(model=card, retries=retries))
    assert summary.counts["failed"] == 1
    assert ledger_rows(tmp_path / "out")[0]["attempts"] == 2 + retries  # one free retry for a crash


def test_default_model_per_volume(monkeypatch, tmp_path: Path) -> None:
    """Without --model each scan gets the shipped default for its spacing; the shipped weights are in the keys."""
    from mrisr.infer.job import clear_model_cache
    from mrisr.models import registry
    from mrisr.models.card import save_checkpoint
    from mrisr.nets import VDSR

    shipped = tmp_path / "shipped"
    torch.manual_seed(0)
    save_checkpoint(VDSR(2, features=4, depth=3), shipped, {"name": "vdsr2d-thick"}, name="vdsr2d-thick")
    monkeypatch.setattr(registry, "MODELS_DIR", shipped)
    clear_model_cache()
    nifti(tmp_path / "in" / "thick.nii.gz", 1)  # 1x1x3 mm: through-plane loss, the 2D default
    try:
        summary = run_batch([tmp_path / "in"], tmp_path / "out", BatchOptions(workers=0, device="cpu"))
    finally:
        clear_model_cache()
    assert summary.counts["done"] == 1
    side = json.loads((tmp_path / "out" / "thick.json").read_text())
    assert side["model"]["path"] == "vdsr2d-thick"
    assert list(side["batch"]["parameters"]["model"]["default"]) == ["vdsr2d-thick"]
