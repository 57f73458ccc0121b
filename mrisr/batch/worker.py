"""What a batch worker does: one :class:`Task` in, one :class:`Result` out, never an exception.

A worker is a process (local ``ProcessPoolExecutor`` with the spawn start method, or a Ray
actor) that loads the model once (:func:`init_worker`, cached by
:func:`mrisr.infer.job.cached_model`) and runs :func:`run_task` per item: the item's files
(extracted from its archive when it lies in one), :func:`mrisr.infer.job.upscale_file`,
done. Workers never touch the ledger: the coordinator records their results.

A worker started by the local pool dies with its coordinator (Linux ``PR_SET_PDEATHSIG``),
so that a killed batch leaves no process writing into ``OUT`` behind it; the rerun cleans
what the killed writes left (:func:`mrisr.batch.outputs.remove_stale_temporaries`). On
Ctrl-C the coordinator kills its workers itself (:meth:`mrisr.batch.backends.LocalPool.interrupt`)
and records what they finished.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, MrisrError
from ..export.sidecar import sidecar_path
from .discover import Item, item_files
from .outputs import remove_stale_temporaries

__all__ = ["Task", "Result", "run_task", "init_worker", "one_line"]


@dataclass(frozen=True)
class Task:
    """One item to process, as the coordinator sends it to a worker (picklable).

    Attributes:
        key: the item's ledger key.
        item: the discovered item (its files, archive, DICOM series id).
        output: absolute path of the output file, or folder for ``fmt="dicom"``.
        fmt: ``nifti``, ``nrrd`` or ``dicom``.
        model: model spec (checkpoint path or shipped name), None for the default per volume.
        spacing: target spacing in mm (one or three values), or None.
        scale: upsampling factor per axis (one or three values), or None.
        force: replace existing outputs (the item was attempted before, or ``--force``).
        clean: remove temporaries an interrupted earlier attempt left beside the outputs.
        extra: more sidecar fields (the ledger key, BIDS ``Sources``).
    """

    key: str
    item: Item
    output: str
    fmt: str
    model: str | None
    spacing: tuple[float, ...] | None = None
    scale: tuple[float, ...] | None = None
    force: bool = False
    clean: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    """What a worker reports for a task.

    Attributes:
        key: the task's ledger key.
        ok: the outputs were written.
        outputs: absolute paths written (the output, then its sidecar).
        error: why it failed, one line.
        seconds: wall time in the worker (s).
        timings: ``load``, ``upscale`` and ``write`` seconds from the job's sidecar.
        pid: the worker process.
        crashed: the worker died under the task (the task itself may be innocent).
    """

    key: str
    ok: bool
    outputs: tuple[str, ...] = ()
    error: str | None = None
    seconds: float = 0.0
    timings: Mapping[str, float] = field(default_factory=dict)
    pid: int = 0
    crashed: bool = False


def one_line(exc: BaseException) -> str:
    """An exception as one line: an MrisrError's own, else ``Type: message`` (300 characters at most)."""
    if isinstance(exc, MrisrError):
        return exc.one_line()
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


# --- the worker process ---------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """Linux: be killed when the coordinator dies (even by SIGKILL); elsewhere nothing."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def init_worker(
    model: str | None,
    device: str,
    threads: int,
    parent: int | None = None,
    gpu_ids: Any = None,
) -> None:
    """Set up a worker process: signals, its GPU, torch threads, the model (loaded once).

    Args:
        model: model spec to load now (None: loaded per volume's default, on first use).
        device: ``cpu`` or ``cuda`` (inside the worker, after ``CUDA_VISIBLE_DEVICES``).
        threads: torch CPU threads.
        parent: the coordinator's pid; the worker dies with it (local pool only).
        gpu_ids: a multiprocessing queue of ``CUDA_VISIBLE_DEVICES`` values, one taken per
            worker before torch initialises CUDA; None leaves the environment as it is.
    """
    # The coordinator handles Ctrl-C and SIGTERM (a SIGTERM to the whole process group, e.g. scancel, must not
    # fail items as crashed); it kills its workers with SIGKILL, and so does their parent-death signal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if parent is not None:
        _die_with_parent(parent)
    _no_shared_semaphores()
    if gpu_ids is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_ids.get())
    import torch

    torch.set_num_threads(max(1, int(threads)))
    if model is not None:
        from ..infer.job import cached_model

        cached_model(model, _device(device))


def _no_shared_semaphores() -> None:
    """tqdm's bars lock with a multiprocessing lock by default: a named semaphore that a worker
    killed on Ctrl-C could not release, which the resource tracker then reports as leaked.
    A worker's bars are its own (progress is off in workers): a thread lock is enough."""
    import threading

    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


def _device(device: str) -> str:
    from ..device import resolve_device

    return str(resolve_device(device))


def _input(item: Item, files: Sequence[Path]) -> Path | list[Path]:
    return list(files) if item.kind == "dicom" else files[0]


def run_task(task: Task, device: str = "cpu") -> Result:
    """Process one task; every failure is a :class:`Result` with its one-line reason.

    Args:
        task: what to do.
        device: ``cpu`` or ``cuda`` (``auto`` resolves here).
    """
    start = time.perf_counter()
    pid = os.getpid()
    item = task.item
    output = Path(task.output)
    try:
        if item.error is not None:
            raise InputError(item.error)
        if task.clean:
            remove_stale_temporaries(output)
            remove_stale_temporaries(sidecar_path(output))
        from ..infer.job import upscale_file

        with item_files(item) as files:
            labels = {str(f): rel for f, rel in zip(files, item.rel_paths, strict=False)}
            summary = upscale_file(
                _input(item, files), output, model=task.model, spacing=task.spacing, scale=task.scale,
                fmt=task.fmt, device=_device(device), force=task.force,
                series=item.series_id if item.kind == "dicom" else None, input_label=item.display,
                source_labels=labels, extra=dict(task.extra),
            )
        return Result(task.key, True, (str(output), str(sidecar_path(output))), None,
                      time.perf_counter() - start, dict(summary.get("seconds", {})), pid)
    except Exception as exc:  # reported, never raised: one item must not stop the batch
        return Result(task.key, False, (), one_line(exc), time.perf_counter() - start, {}, pid)
