"""The batch ledger: one SQLite row per item, so that a batch resumes instead of restarting.

The database lives in the output folder (``LEDGER_NAME``), in WAL mode, so that
``mrisr batch --status`` can read it while a batch runs. Only the coordinating process
writes to it (workers report back to the coordinator, which records their results);
there is no locking beyond SQLite's own, and none is needed with a single writer.

Rows are keyed by :func:`item_key`: the SHA-256 of the item's content hash plus the
processing parameters as canonical JSON, so the same files processed with the same
parameters are one row (an exact duplicate is done once), and changed parameters are new work.

States: ``pending`` -> ``running`` (:meth:`Ledger.claim`, one attempt more) -> ``done`` or
``failed``, or back to ``pending`` when the run is interrupted (:meth:`Ledger.release`). A
rerun asks :meth:`Ledger.to_run`: pending rows, failed rows with attempts left, and running
rows whose process is dead (claimed on this host by a pid that no longer exists, or by a
process that started at another time than the one recorded, the pid having been reused);
those are set back to pending first. Running rows claimed on another host are left
alone: this host cannot tell whether their process lives.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["Ledger", "LEDGER_NAME", "STATES", "item_key", "params_hash"]

LEDGER_NAME = "mrisr-ledger.sqlite"
STATES = ("pending", "running", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    key TEXT PRIMARY KEY,
    display TEXT NOT NULL,
    params_hash TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    outputs TEXT NOT NULL DEFAULT '[]',
    seconds REAL,
    pid INTEGER,
    pid_start TEXT,
    host TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    seq INTEGER NOT NULL
)
"""


def _canonical(params: Any) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)


def params_hash(params: Any) -> str:
    """SHA-256 of the processing parameters as canonical JSON (sorted keys)."""
    return hashlib.sha256(_canonical(params).encode()).hexdigest()


def item_key(content_hash: str, params: Any) -> str:
    """The ledger key of an item: SHA-256 of its content hash plus the parameters' JSON."""
    return hashlib.sha256((content_hash + _canonical(params)).encode()).hexdigest()


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (Linux: field 22 of /proc/PID/stat), to detect pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError:
        return False
    if start is not None:
        now = _process_start(pid)
        if now is not None and now != start:
            return False  # the pid now belongs to another process
    return True


class Ledger:
    """The ledger of a batch.

    Args:
        path: the database file, or the output folder (then ``folder/LEDGER_NAME``).
            Created with its schema when absent; reopening keeps every row.
        readonly: open an existing ledger for reading only (``mrisr batch --status``, a
            dry run, another part's ledger): nothing is created or written.
    """

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / LEDGER_NAME
        self.path = path
        self.host = socket.gethostname()
        self.readonly = readonly
        if readonly:
            if not path.is_file():
                raise FileNotFoundError(path)
            self._conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
            self._conn.row_factory = sqlite3.Row
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, timeout=30.0)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        with self._conn:
            self._conn.execute(_SCHEMA)

    # --- lifecycle ---

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def journal_mode(self) -> str:
        return str(self._conn.execute("PRAGMA journal_mode").fetchone()[0])

    # --- writes (the coordinating process only) ---

    def upsert_pending(self, item_key: str, item_display: str, params_hash: str) -> bool:
        """Record an item as pending unless it is already known (its state is kept: resume).

        Returns:
            True when the row is new.
        """
        with self._conn:
            cur = self._conn.execute(
                "INSERT INTO items (key, display, params_hash, state, created, seq) "
                "VALUES (?, ?, ?, 'pending', ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM items)) "
                "ON CONFLICT(key) DO NOTHING",
                (item_key, item_display, params_hash, time.time()),
            )
        return cur.rowcount == 1

    def claim(self, key: str, pid: int | None = None) -> None:
        """Mark ``key`` running for process ``pid`` (default: this one) on this host; one attempt more.

        Raises:
            KeyError: unknown key. ValueError: the item is already done or running.
        """
        pid = os.getpid() if pid is None else pid
        state = self._state(key)
        if state in ("done", "running"):
            raise ValueError(f"cannot claim {key[:12]}: it is {state}")
        with self._conn:
            self._conn.execute(
                "UPDATE items SET state='running', attempts=attempts+1, pid=?, pid_start=?, host=?, started=?, "
                "finished=NULL WHERE key=?",
                (pid, _process_start(pid), self.host, time.time(), key),
            )

    def done(self, key: str, outputs: Sequence[str | os.PathLike[str]], seconds: float) -> None:
        """Mark ``key`` done with its output paths and processing time (s)."""
        self._state(key)
        with self._conn:
            self._conn.execute(
                "UPDATE items SET state='done', outputs=?, seconds=?, last_error=NULL, finished=?, pid=NULL, "
                "pid_start=NULL WHERE key=?",
                (json.dumps([str(o) for o in outputs]), float(seconds), time.time(), key),
            )

    def failed(self, key: str, error: str, seconds: float | None = None) -> None:
        """Mark ``key`` failed with the reason."""
        self._state(key)
        with self._conn:
            self._conn.execute(
                "UPDATE items SET state='failed', last_error=?, seconds=?, finished=?, pid=NULL, pid_start=NULL "
                "WHERE key=?",
                (str(error), seconds, time.time(), key),
            )

    def release(self, key: str, reason: str) -> None:
        """Set a running row back to pending: its run was interrupted (Ctrl-C) before it finished.
        Its attempt still counts (the rerun may replace what it left)."""
        self._state(key)
        with self._conn:
            self._conn.execute(
                "UPDATE items SET state='pending', last_error=?, pid=NULL, pid_start=NULL, finished=NULL "
                "WHERE key=? AND state='running'",
                (str(reason), key),
            )

    def reset(self, key: str) -> None:
        """Set a done or failed row back to pending (``--force``: process it again); attempts are kept."""
        self._state(key)
        with self._conn:
            self._conn.execute(
                "UPDATE items SET state='pending', pid=NULL, pid_start=NULL "
                "WHERE key=? AND state IN ('done', 'failed')",
                (key,),
            )

    def to_run(self, retries: int) -> list[str]:
        """The keys to process now, in the order they were first recorded.

        Pending rows; failed rows retried while ``attempts <= retries`` (``retries`` is the
        number of retries after the first attempt: 0 never retries); running rows left by a
        dead process on this host, which are set back to pending (their attempt still counts).
        """
        stale = [
            row["key"]
            for row in self._conn.execute("SELECT key, pid, pid_start, host FROM items WHERE state='running'")
            if row["host"] == self.host and (row["pid"] is None or not _alive(row["pid"], row["pid_start"]))
        ]
        if stale:
            with self._conn:
                self._conn.executemany(
                    "UPDATE items SET state='pending', last_error=?, pid=NULL, pid_start=NULL WHERE key=?",
                    [("interrupted: the process running it died", k) for k in stale],
                )
        rows = self._conn.execute(
            "SELECT key FROM items WHERE state='pending' OR (state='failed' AND attempts <= ?) ORDER BY seq",
            (int(retries),),
        )
        return [r["key"] for r in rows]

    # --- reads ---

    def summary(self) -> dict[str, int]:
        """Rows per state (every state present) and ``total``."""
        counts = dict.fromkeys(STATES, 0)
        for state, n in self._conn.execute("SELECT state, COUNT(*) FROM items GROUP BY state"):
            counts[state] = n
        counts["total"] = sum(counts[s] for s in STATES)
        return counts

    def rows(self) -> list[dict[str, Any]]:
        """Every row as a dict (``outputs`` decoded), in the order first recorded."""
        out = []
        for row in self._conn.execute("SELECT * FROM items ORDER BY seq"):
            d = dict(row)
            d["outputs"] = json.loads(d["outputs"])
            del d["seq"]
            out.append(d)
        return out

    def row(self, key: str) -> dict[str, Any]:
        """One row as a dict. Raises KeyError for an unknown key."""
        for d in self.rows():
            if d["key"] == key:
                return d
        raise KeyError(key)

    def _state(self, key: str) -> str:
        found = self._conn.execute("SELECT state FROM items WHERE key=?", (key,)).fetchone()
        if found is None:
            raise KeyError(key)
        return str(found[0])
