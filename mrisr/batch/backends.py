"""Where batch tasks run: in the coordinator itself, or in a local pool of worker processes.

A backend takes :class:`~mrisr.batch.worker.Task` objects (``submit``, at most ``capacity``
in flight) and hands back :class:`~mrisr.batch.worker.Result` objects (``results``, blocking
until at least one is ready). On Ctrl-C the coordinator calls ``interrupt``: every worker is
stopped at once (killed, not waited for) and the results already finished are handed back.
The coordinator (:mod:`mrisr.batch.runner`) owns the ledger and the order of work; a backend
only runs tasks. The Ray backend (:mod:`mrisr.batch.ray_backend`) has the same shape.

Local pool: a ``ProcessPoolExecutor`` with the spawn start method (no fork of a process that
may hold CUDA or threads), whose initializer (:func:`~mrisr.batch.worker.init_worker`) loads
the model once per worker. On CUDA machines each worker takes one GPU id from a queue and
sets ``CUDA_VISIBLE_DEVICES`` to it before torch initialises CUDA (ids assigned round-robin
when there are more workers than GPUs). On the CPU the cores are shared out as torch threads.
A worker that dies (out of memory, a crash in native code) fails the tasks it and its pool
held with ``crashed=True``; the pool is started anew for the next task.
"""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Protocol

from .worker import Result, Task, init_worker, one_line, run_task

__all__ = ["Backend", "InProcess", "LocalPool", "gpu_ids", "cpu_count"]


class Backend(Protocol):
    """What the coordinator needs from a place that runs tasks."""

    capacity: int
    workers: int

    def submit(self, task: Task) -> None: ...

    def results(self) -> list[Result]: ...

    def interrupt(self) -> list[Result]: ...

    def close(self) -> None: ...


def cpu_count() -> int:
    """CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def gpu_ids(device: str) -> list[str]:
    """The ``CUDA_VISIBLE_DEVICES`` values the workers share: none for ``cpu`` or without CUDA,
    the one named by ``cuda:N``, else every visible GPU (this process's own
    ``CUDA_VISIBLE_DEVICES`` respected)."""
    if device == "cpu":
        return []
    from ..device import resolve_device

    dev = resolve_device(device)  # checks cuda:N exists
    if dev.type != "cuda":
        return []
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [s.strip() for s in visible.split(",") if s.strip()] if visible else []
    ids = ids or [str(i) for i in range(torch.cuda.device_count())]
    return [ids[dev.index]] if dev.index is not None else ids


class InProcess:
    """Tasks run one at a time in the coordinator's own process (``--workers 0``)."""

    capacity = 1
    workers = 0

    def __init__(self, model: str | None, device: str) -> None:
        from .worker import _device

        self.device = _device(device)
        if model is not None:
            from ..infer.job import cached_model

            cached_model(model, self.device)
        self._done: list[Result] = []

    def submit(self, task: Task) -> None:
        self._done.append(run_task(task, self.device))

    def results(self) -> list[Result]:
        done, self._done = self._done, []
        return done

    def interrupt(self) -> list[Result]:
        """The finished results (Ctrl-C stopped the task running here already)."""
        return self.results()

    def close(self) -> None:
        pass


class LocalPool:
    """``workers`` spawned processes, each holding the model; one GPU each when there are GPUs.

    Args:
        workers: how many processes.
        model: model spec to load in each (None: the default per volume, loaded on first use).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (see :func:`gpu_ids`).
        threads: torch CPU threads per worker (default: the CPUs shared out).
    """

    def __init__(self, workers: int, model: str | None, device: str, threads: int | None = None) -> None:
        import multiprocessing

        self.workers = workers
        self.capacity = 2 * workers  # one queued behind each running task: no idle gap between items
        self._ctx = multiprocessing.get_context("spawn")
        self._gpus = gpu_ids(device)
        self._device = "cuda" if self._gpus else "cpu"
        self._model = model
        self._threads = threads or max(1, cpu_count() // workers)
        self._futures: dict[Future, Task] = {}
        self._executor: ProcessPoolExecutor | None = None

    def _start(self) -> ProcessPoolExecutor:
        queue = None
        if self._gpus:
            queue = self._ctx.Queue()
            for i in range(self.workers):
                queue.put(self._gpus[i % len(self._gpus)])
        return ProcessPoolExecutor(
            self.workers, mp_context=self._ctx, initializer=init_worker,
            initargs=(self._model, self._device, self._threads, os.getpid(), queue),
        )

    def submit(self, task: Task) -> None:
        if self._executor is None:
            self._executor = self._start()
        self._futures[self._executor.submit(run_task, task, self._device)] = task

    def results(self) -> list[Result]:
        done, _ = wait(list(self._futures), return_when=FIRST_COMPLETED)
        out, broken = [], False
        for future in done:
            task = self._futures.pop(future)
            try:
                out.append(future.result())
            except Exception as exc:  # BrokenProcessPool: the worker died under it
                broken = True
                out.append(Result(task.key, False, error=f"the worker process died while running it ({one_line(exc)})",
                                  crashed=True))
        if broken:  # every other task of the broken pool fails the same way, now
            for future, task in list(self._futures.items()):
                future.cancel()
                out.append(Result(task.key, False, error="the worker pool broke while it waited (a worker died)",
                                  crashed=True))
            self._futures.clear()
            self._shutdown()
        return out

    def interrupt(self) -> list[Result]:
        """Kill every worker now (SIGKILL: a task may be deep in native code) and return the
        results they had finished; the pool is started anew if more tasks come."""
        ready = []
        for future in self._futures:
            if future.done() and not future.cancelled():
                try:
                    ready.append(future.result())
                except Exception:  # the pool broke under it: no result to record
                    pass
        self._futures.clear()
        executor, self._executor = self._executor, None
        if executor is not None:
            processes = list((getattr(executor, "_processes", None) or {}).values())
            for process in processes:
                process.kill()
            for process in processes:
                process.join(timeout=10)
            executor.shutdown(wait=True, cancel_futures=True)  # its threads see the workers gone, and end
        return ready

    def _shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

