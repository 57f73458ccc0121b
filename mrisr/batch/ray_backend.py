"""The Ray backend: batch tasks on a Ray cluster, one actor per worker holding the model.

Ray is the engine: it places the actors (``num_gpus=1`` each on a cluster with GPUs, so
Ray gives each its own GPU and sets its ``CUDA_VISIBLE_DEVICES``), restarts nothing, and
moves tasks and results. The coordinator still owns the ledger and the order of work
(:mod:`mrisr.batch.runner`); this module only submits tasks to the least busy actor and
waits for results. An actor that dies fails its tasks with ``crashed=True`` and is replaced.

Inputs and ``OUT`` must be paths every node sees (a shared file system): actors read the
items and write the outputs themselves. mrisr must be installed on every node.

Ray is an optional extra: ``pip install 'mrisr[ray]'``. It is imported only here, when
``--ray-address`` is given; without it the batch stops with that one-line fix.
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from .worker import Result, Task, init_worker, one_line, run_task

__all__ = ["RayBackend", "BatchActor", "require_ray"]


def require_ray() -> Any:
    """The ``ray`` module, or an InputError naming the fix."""
    try:
        import ray
    except ImportError:
        raise InputError("the Ray backend needs the ray package, which is not installed", "--ray-address",
                         "pip install 'mrisr[ray]'") from None
    return ray


class BatchActor:
    """A Ray actor: sets up like a local worker (model loaded once), then runs tasks one by one."""

    def __init__(self, model: str | None, device: str, threads: int) -> None:
        init_worker(model, device, threads)  # Ray has set CUDA_VISIBLE_DEVICES for a GPU actor
        self.device = device

    def run(self, task: Task) -> Result:
        return run_task(task, self.device)


class RayBackend:
    """Tasks on Ray actors.

    Args:
        address: ``auto`` (the cluster this node belongs to), ``HOST:PORT``, or ``local`` (start
            a Ray instance on this machine). Ignored when this process already called ``ray.init``.
        workers: actors (None: one per GPU of the cluster, else one per CPU).
        model: model spec each actor loads (None: the default per volume).
        device: ``cpu`` forces CPU actors; otherwise GPUs are used when the cluster has them.
    """

    def __init__(self, address: str, workers: int | None, model: str | None, device: str) -> None:
        ray = require_ray()
        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            kwargs: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False}
            if address != "local":
                kwargs["address"] = address
            else:
                kwargs["include_dashboard"] = False
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise InputError(f"cannot connect to Ray at {address!r} ({one_line(exc)})", "--ray-address",
                                 "start the cluster (ray start --head), or give its HOST:PORT, or use local") from None
        resources = ray.cluster_resources()
        gpus = 0.0 if device == "cpu" else float(resources.get("GPU", 0.0))
        cpus = float(resources.get("CPU", 1.0))
        n = workers if workers else max(1, int(gpus) if gpus >= 1 else int(cpus))
        self.workers = n
        self.capacity = 2 * n
        use_gpu = gpus >= 1
        # Fractions when asked for more actors than the cluster has, so that none waits forever.
        self._options = {"num_cpus": min(1.0, cpus / n), "num_gpus": min(1.0, gpus / n) if use_gpu else 0,
                         "max_restarts": 0}
        self._args = (model, "cuda" if use_gpu else "cpu", 1)
        self._remote = ray.remote(**self._options)(BatchActor)
        self._actors = [self._remote.remote(*self._args) for _ in range(n)]
        self._busy: dict[Any, int] = {a: 0 for a in self._actors}
        self._refs: dict[Any, tuple[Task, Any]] = {}

    def submit(self, task: Task) -> None:
        actor = min(self._actors, key=lambda a: self._busy[a])
        self._busy[actor] += 1
        self._refs[actor.run.remote(task)] = (task, actor)

    def results(self) -> list[Result]:
        ray = self._ray
        ready, _ = ray.wait(list(self._refs), num_returns=1)
        out = []
        for ref in ready:
            task, actor = self._refs.pop(ref)
            if actor in self._busy:
                self._busy[actor] -= 1
            try:
                out.append(ray.get(ref))
            except ray.exceptions.RayActorError as exc:
                out.append(Result(task.key, False, error=f"the Ray worker died while running it ({one_line(exc)})",
                                  crashed=True))
                self._replace(actor)
            except Exception as exc:  # a task error Ray wraps (run_task itself never raises)
                out.append(Result(task.key, False, error=one_line(exc)))
        return out

    def _replace(self, actor: Any) -> None:
        if actor not in self._busy:
            return
        del self._busy[actor]
        self._actors.remove(actor)
        fresh = self._remote.remote(*self._args)
        self._actors.append(fresh)
        self._busy[fresh] = 0

    def interrupt(self) -> list[Result]:
        """Kill every actor now and return the results that were ready."""
        ray = self._ray
        out = []
        if self._refs:
            ready, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=0)
            for ref in ready:
                try:
                    result = ray.get(ref, timeout=0)
                except Exception:  # its actor died: no result to record
                    continue
                if isinstance(result, Result):
                    out.append(result)
        self._refs.clear()
        self._kill_actors()
        return out

    def _kill_actors(self) -> None:
        for actor in self._actors:
            try:
                self._ray.kill(actor)
            except Exception:  # already gone
                pass
        self._actors.clear()
        self._busy.clear()

    def close(self) -> None:
        self._kill_actors()
        if self._owns:
            self._ray.shutdown()
