"""Ctrl-C and SIGTERM in a batch: the signals while it runs, and what an interrupt leaves recorded.

:class:`Signals` makes SIGTERM stop the coordinator as Ctrl-C does and holds both off while an
interrupted batch records its state; :func:`settle` marks each item left running done when its
outputs are complete and pending otherwise; :class:`BatchInterrupted` is what
:func:`mrisr.batch.run_batch` raises then (the CLI exits 130, or 143 for SIGTERM).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..export.sidecar import sidecar_path
from .ledger import Ledger
from .outputs import relative_to_out, remove_stale_temporaries
from .worker import Task

if TYPE_CHECKING:
    from .report import Summary

__all__ = ["BatchInterrupted", "Signals", "Terminated", "finished_outputs", "settle"]

#: File systems that keep coarse modification times (FAT: 2 s) may date a new file before its claim.
MTIME_SLACK_S = 2.0


class BatchInterrupted(KeyboardInterrupt):
    """A batch stopped by Ctrl-C (SIGINT) or SIGTERM, after it recorded where it stopped.

    The workers were stopped at once; items whose outputs are complete are done in the
    ledger, the others pending again (a rerun does them, and only them); the summary is
    written. A ``KeyboardInterrupt``, so that code that does not know it still stops.

    Attributes:
        summary: the run's summary (written; its ``pending`` items are left for a rerun).
        signum: the signal that stopped it (``signal.SIGINT`` or ``signal.SIGTERM``).
    """

    def __init__(self, summary: Summary, signum: int) -> None:
        super().__init__(f"batch interrupted by {signal.Signals(signum).name}")
        self.summary = summary
        self.signum = int(signum)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the coordinator like Ctrl-C's ``KeyboardInterrupt``."""

    signum = signal.SIGTERM


class Signals:
    """The coordinator's signals while it runs a batch (main thread only; elsewhere nothing).

    SIGTERM stops it as Ctrl-C does (unless SIGTERM was ignored when it started). :meth:`hold`
    ignores both while an interrupted batch records its state, so a second Ctrl-C cannot lose
    it; the handlers found on entry are put back on exit.
    """

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> Signals:
        self._saved: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return self
        self._saved = {s: signal.getsignal(s) for s in self._SIGNALS if signal.getsignal(s) is not None}
        if self._saved.get(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, self._terminate)
        return self

    @staticmethod
    def _terminate(signum: int, frame: object) -> None:
        raise Terminated()

    def hold(self) -> None:
        for s in self._saved:
            signal.signal(s, signal.SIG_IGN)

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._saved.items():
            signal.signal(s, handler)


def finished_outputs(task: Task, since: float | None = None) -> tuple[list[str], float] | None:
    """The outputs of ``task`` and their seconds when it wrote them whole: the output (renamed
    into place, so whole when there) and its sidecar, which is written last and names the key;
    with ``since`` (a time.time() value: when the task was claimed) the sidecar must be no older,
    so an earlier run's outputs (``--force`` redoes them) are not taken for this run's."""
    output = Path(task.output)
    sidecar = sidecar_path(output)
    try:
        if since is not None and sidecar.stat().st_mtime < since - MTIME_SLACK_S:
            return None
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    batch = record.get("batch") if isinstance(record, dict) else None
    if not isinstance(batch, dict) or batch.get("key") != task.key or not output.exists():
        return None
    seconds = record.get("seconds")
    total = sum(float(v) for v in seconds.values()) if isinstance(seconds, dict) else 0.0
    return [str(output), str(sidecar)], total


def settle(out: Path, ledger: Ledger, tasks: dict[str, Task], done: set[str]) -> None:
    """After an interrupt (the workers stopped): each item this run left running is done when its
    outputs are complete (:func:`finished_outputs`), else pending again, with what its killed
    write left beside its outputs removed."""
    pid = os.getpid()
    for row in ledger.rows():
        if row["state"] != "running" or row["pid"] != pid or row["host"] != ledger.host:
            continue
        task = tasks.get(row["key"])
        finished = None if task is None else finished_outputs(task, since=row["started"])
        if finished is not None:
            outputs, seconds = finished
            ledger.done(row["key"], relative_to_out(out, outputs), seconds)
            done.add(row["key"])
            continue
        ledger.release(row["key"], "interrupted (Ctrl-C or SIGTERM) before it finished")
        if task is not None:
            remove_stale_temporaries(Path(task.output))
            remove_stale_temporaries(sidecar_path(Path(task.output)))
