"""Batch ledger: state transitions, attempts and retries, resume semantics (done skipped, failed
retried up to N, running rows of a dead process back to pending), WAL mode, summary, reopening."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mrisr.batch.ledger import LEDGER_NAME, Ledger, item_key, params_hash

PARAMS = {"model": "vdsr", "spacing": [1.0, 1.0, 1.0]}


def _dead_pid() -> int:
    """A pid that existed and has exited (reaped), so no process holds it now."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _fill(ledger: Ledger, n: int) -> list[str]:
    keys = [item_key(f"content{i}", PARAMS) for i in range(n)]
    for i, k in enumerate(keys):
        assert ledger.upsert_pending(k, f"item{i}", params_hash(PARAMS))
    return keys


def test_keys_hash_content_and_parameters() -> None:
    assert item_key("abc", PARAMS) == item_key("abc", dict(reversed(list(PARAMS.items()))))
    assert item_key("abc", PARAMS) != item_key("abd", PARAMS)
    assert item_key("abc", PARAMS) != item_key("abc", {**PARAMS, "model": "other"})
    assert len(item_key("abc", PARAMS)) == 64 and params_hash(PARAMS) == params_hash(dict(PARAMS))


def test_state_transitions_and_wal(tmp_path: Path) -> None:
    with Ledger(tmp_path) as ledger:
        assert ledger.path == tmp_path / LEDGER_NAME and ledger.journal_mode == "wal"
        a, b, c = _fill(ledger, 3)
        assert not ledger.upsert_pending(a, "again", "x")  # known: kept as is
        assert ledger.summary() == {"pending": 3, "running": 0, "done": 0, "failed": 0, "total": 3}
        ledger.claim(a)
        row = ledger.row(a)
        assert row["state"] == "running" and row["attempts"] == 1 and row["pid"] == os.getpid()
        assert row["host"] and row["started"] is not None and row["display"] == "item0"
        with pytest.raises(ValueError, match="running"):
            ledger.claim(a)
        ledger.done(a, [tmp_path / "out" / "a.nii.gz"], 1.5)
        row = ledger.row(a)
        assert row["state"] == "done" and row["outputs"] == [str(tmp_path / "out" / "a.nii.gz")]
        assert row["seconds"] == 1.5 and row["pid"] is None and row["finished"] >= row["started"]
        with pytest.raises(ValueError, match="done"):
            ledger.claim(a)
        ledger.claim(b)
        ledger.failed(b, "InputError: broken gzip")
        assert ledger.row(b)["last_error"] == "InputError: broken gzip"
        assert ledger.summary() == {"pending": 1, "running": 0, "done": 1, "failed": 1, "total": 3}
        assert [r["key"] for r in ledger.rows()] == [a, b, c]
        with pytest.raises(KeyError):
            ledger.claim("nope")
        with pytest.raises(KeyError):
            ledger.done("nope", [], 0)
    # Another connection (mrisr batch --status) sees WAL mode on the file itself.
    conn = sqlite3.connect(tmp_path / LEDGER_NAME)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_retries_count_attempts(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite") as ledger:
        [k] = _fill(ledger, 1)
        assert ledger.to_run(retries=2) == [k]
        for attempt in (1, 2, 3):
            ledger.claim(k)
            ledger.failed(k, f"boom {attempt}")
            assert ledger.row(k)["attempts"] == attempt
            expected = [k] if attempt <= 2 else []
            assert ledger.to_run(retries=2) == expected
        assert ledger.to_run(retries=0) == [] and ledger.to_run(retries=3) == [k]
        # A success after failures clears the error.
        ledger.claim(k)
        ledger.done(k, ["o"], 0.1)
        assert ledger.row(k)["last_error"] is None and ledger.to_run(retries=99) == []


def test_resume_after_reopen_and_dead_process(tmp_path: Path) -> None:
    with Ledger(tmp_path) as ledger:
        done, failed_once, failed_out, stale, live, foreign, fresh = _fill(ledger, 7)
        ledger.claim(done)
        ledger.done(done, ["d"], 0.5)
        ledger.claim(failed_once)
        ledger.failed(failed_once, "first failure")
        for _ in range(2):
            ledger.claim(failed_out)
            ledger.failed(failed_out, "always fails")
        ledger.claim(stale, pid=_dead_pid())
        ledger.claim(live)  # this process: alive
        ledger.claim(foreign, pid=_dead_pid())
    # The foreign row was claimed on another host: it cannot be judged from here.
    conn = sqlite3.connect(tmp_path / LEDGER_NAME)
    with conn:
        conn.execute("UPDATE items SET host='elsewhere' WHERE key=?", (foreign,))
    conn.close()

    with Ledger(tmp_path) as ledger:  # reopened: every state kept
        assert ledger.summary() == {"pending": 1, "running": 3, "done": 1, "failed": 2, "total": 7}
        todo = ledger.to_run(retries=1)
        assert todo == [failed_once, stale, fresh]  # done skipped, retries spent, live and foreign left
        row = ledger.row(stale)
        assert row["state"] == "pending" and row["attempts"] == 1 and "interrupted" in row["last_error"]
        assert ledger.row(live)["state"] == "running" and ledger.row(foreign)["state"] == "running"
        assert ledger.summary() == {"pending": 2, "running": 2, "done": 1, "failed": 2, "total": 7}
        assert ledger.row(done)["outputs"] == ["d"]


def test_reused_pid_is_dead(tmp_path: Path) -> None:
    """A live pid whose process started at another time than recorded is another process."""
    with Ledger(tmp_path) as ledger:
        [k] = _fill(ledger, 1)
        ledger.claim(k)
        if ledger.row(k)["pid_start"] is None:
            pytest.skip("no /proc here: pid reuse cannot be told")
    conn = sqlite3.connect(tmp_path / LEDGER_NAME)
    with conn:
        conn.execute("UPDATE items SET pid_start='1' WHERE key=?", (k,))
    conn.close()
    with Ledger(tmp_path) as ledger:
        assert ledger.to_run(retries=0) == [k]
