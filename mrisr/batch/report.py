"""What a batch tells: the plan (``--dry-run``), the final summary (CSV and JSON in OUT) and the
ledger's state (``--status``).

Summary statuses, per item of the part: ``done`` (processed in this run), ``failed`` (with its
reason; failed earlier and not retried included), ``skipped`` (done earlier, or a duplicate of
another item), ``pending`` (not finished: the run was interrupted, or the item is running in
another process).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..io.atomic import atomic_output
from .ledger import STATES, Ledger

if TYPE_CHECKING:
    from .runner import Plan

__all__ = ["Summary", "summary_name", "entry_rows", "write_summary", "plan_table", "plan_dict", "ledger_status",
           "status_text", "STATUSES"]

STATUSES = ("done", "failed", "skipped", "pending")
_CSV_FIELDS = ("status", "item", "reason", "outputs", "seconds", "attempts", "kind", "key")


def summary_name(num_parts: int, part_id: int, suffix: str) -> str:
    """``mrisr-summary.<suffix>``, or ``mrisr-summary-part<I>of<K>.<suffix>`` for one of several parts."""
    return f"mrisr-summary.{suffix}" if num_parts == 1 else f"mrisr-summary-part{part_id}of{num_parts}.{suffix}"


@dataclass
class Summary:
    """What one run of one part did.

    Attributes:
        out: the output folder. part: ``(part_id, num_parts)``. seconds: wall time of the run.
        items: one dict per item (``status``, ``item``, ``reason``, ``outputs`` relative to OUT,
            ``seconds``, ``attempts``, ``kind``, ``key``), in discovery order.
        counts: items per status, and ``total``.
        json_path, csv_path: where it was written.
        interrupted: the run was stopped (Ctrl-C, SIGTERM); its ``pending`` items are left to a rerun.
    """

    out: Path
    part: tuple[int, int]
    seconds: float
    items: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    json_path: Path | None = None
    csv_path: Path | None = None
    interrupted: bool = False

    @classmethod
    def build(cls, plan: Plan, rows: Iterable[dict[str, Any]], finished: set[str], seconds: float) -> Summary:
        """From the plan, the ledger's rows after the run and the keys done in this run."""
        by_key = {r["key"]: r for r in rows}
        items = []
        for e in plan.entries:
            row = by_key.get(e.key, {})
            state = row.get("state")
            if e.action == "skip":
                status, reason = "skipped", e.reason
            elif e.key in finished:
                status, reason = "done", None
            elif e.action in ("fail", "failed") or state == "failed":
                status, reason = "failed", row.get("last_error") or e.reason
            elif state == "done":
                status, reason = "skipped", "done earlier"
            else:
                status, reason = "pending", "not finished (interrupted, or running in another process)"
            outputs: list[str] = []
            if status == "done" or (status == "skipped" and (reason or "").startswith("done earlier")):
                outputs = list(row.get("outputs") or []) or ([e.output.as_posix()] if e.output else [])
            items.append({
                "status": status, "item": e.item.display, "reason": reason, "outputs": outputs,
                "seconds": row.get("seconds") if status == "done" else None,
                "attempts": int(row.get("attempts") or 0), "kind": e.item.kind, "key": e.key,
            })
        counts = {s: sum(i["status"] == s for i in items) for s in STATUSES}
        counts["total"] = len(items)
        o = plan.options
        return cls(plan.out, (o.part_id, o.num_parts), seconds, items, counts)

    def as_dict(self) -> dict[str, Any]:
        return {"mrisr_version": __version__, "out": str(self.out), "part": list(self.part),
                "seconds": round(self.seconds, 3), "interrupted": self.interrupted, "counts": self.counts,
                "items": self.items}

    def line(self) -> str:
        """One line for the terminal."""
        c = self.counts
        text = (f"batch: {c['done']} done, {c['failed']} failed, {c['skipped']} skipped"
                + (f", {c['pending']} pending" if c["pending"] else "")
                + f" of {c['total']} items in {self.seconds:.1f} s")
        return text + (f"; summary: {self.csv_path}" if self.csv_path else "")


def entry_rows(summary: Summary) -> list[dict[str, Any]]:
    """The CSV rows of a summary (outputs joined with ``;``)."""
    return [{k: (";".join(i[k]) if k == "outputs" else ("" if i[k] is None else i[k])) for k in _CSV_FIELDS}
            for i in summary.items]


def write_summary(out: Path, summary: Summary, rows: Sequence[dict[str, Any]]) -> Summary:
    """Write the summary as JSON and CSV in ``out`` (atomically, replacing the last run's)."""
    part_id, num_parts = summary.part
    summary.json_path = out / summary_name(num_parts, part_id, "json")
    summary.csv_path = out / summary_name(num_parts, part_id, "csv")
    with atomic_output(summary.json_path, force=True) as tmp:
        tmp.write_text(json.dumps(summary.as_dict(), indent=2) + "\n", encoding="utf-8")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_output(summary.csv_path, force=True) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    return summary


# --- the plan --------------------------------------------------------------------------------


def _output_path(plan: Plan, output: Any) -> Path | None:
    """Where an entry's output is: OUT (as given) joined with its path relative to OUT."""
    return None if output is None else plan.out / Path(*output.parts)


def plan_dict(plan: Plan) -> dict[str, Any]:
    """The plan as JSON: parameters, counts, warnings (what the run would stop at), and per item
    its discovery fields plus ``key``, ``action``, ``reason``, ``output`` (relative to OUT) and
    ``output_path`` (absolute); a duplicate's output is its original's, None when there is none."""
    o = plan.options
    return {
        "out": str(plan.out), "part": [o.part_id, o.num_parts], "ledger": str(plan.ledger_path),
        "parameters": plan.params, "counts": plan.counts(), "warnings": list(plan.warnings),
        "items": [{**e.item.as_dict(), "key": e.key, "action": e.action, "reason": e.reason,
                   "output": None if e.output is None else e.output.as_posix(),
                   "output_path": None if e.output is None else os.path.abspath(_output_path(plan, e.output))}
                  for e in plan.entries],
    }


def spacing_text(spacing: Sequence[float] | None) -> str:
    """Voxel spacing as ``0.9375x0.9375x5`` (four significant digits), empty when unknown."""
    return "" if spacing is None else "x".join(f"{s:.4g}" for s in spacing)


def plan_table(plan: Plan) -> str:
    """The plan as a text table (one row per item: its output path, OUT included, and why it is
    skipped or fails), a line of counts, and the plan's warnings (what the run would stop at)."""
    header = ("KEY", "KIND", "SLICES", "SPACING_MM", "ACTION", "ITEM", "OUTPUT", "NOTE")
    rows = []
    for e in plan.entries:
        it = e.item
        output = _output_path(plan, e.output)
        rows.append((e.key[:12], it.kind, "" if it.n_slices is None else str(it.n_slices), spacing_text(it.spacing),
                     e.action, it.display, "-" if output is None else str(output), f"({e.reason})" if e.reason else ""))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
             for r in [header, *rows]]
    c = plan.counts()
    lines.append(f"{c['total']} items: {c['run']} to run, {c['skip']} to skip, {c['fail'] + c['failed']} failing"
                 f" (part {plan.options.part_id} of 0..{plan.options.num_parts - 1}; outputs in {plan.out})")
    lines.extend(f"warning: {w}" for w in plan.warnings)  # in the table itself: --quiet hides warnings
    return "\n".join(line.rstrip() for line in lines)


# --- the ledger's state --------------------------------------------------------------------------


def ledger_status(paths: Sequence[Path]) -> dict[str, Any]:
    """Counts per state of each ledger (read-only), their total, failed and running items."""
    ledgers = []
    total = dict.fromkeys((*STATES, "total"), 0)
    for path in paths:
        with Ledger(path, readonly=True) as ledger:
            counts = ledger.summary()
            rows = ledger.rows()
        for k, v in counts.items():
            total[k] += v
        ledgers.append({
            "file": path.name, "counts": counts,
            "failed": [{"item": r["display"], "error": r["last_error"], "attempts": r["attempts"]}
                       for r in rows if r["state"] == "failed"],
            "running": [{"item": r["display"], "pid": r["pid"], "host": r["host"]}
                        for r in rows if r["state"] == "running"],
            "seconds_done": round(sum(r["seconds"] or 0.0 for r in rows if r["state"] == "done"), 3),
        })
    return {"counts": total, "ledgers": ledgers}


def status_text(status: dict[str, Any], out: Path) -> str:
    """``--status`` as text: one line per ledger, the total, then failed and running items."""
    def counts(c: dict[str, int]) -> str:
        return ", ".join(f"{c[s]} {s}" for s in ("done", "failed", "running", "pending")) + f" of {c['total']}"

    lines = [f"{out}:"]
    for led in status["ledgers"]:
        lines.append(f"  {led['file']}: {counts(led['counts'])}")
    if len(status["ledgers"]) > 1:
        lines.append(f"  all parts: {counts(status['counts'])}")
    failed = [f for led in status["ledgers"] for f in led["failed"]]
    running = [r for led in status["ledgers"] for r in led["running"]]
    if failed:
        lines.append("failed:")
        lines.extend(f"  {f['item']}: {f['error']} (attempts {f['attempts']})" for f in failed)
    if running:
        lines.append("running (or interrupted; a rerun resumes them):")
        lines.extend(f"  {r['item']} (pid {r['pid']} on {r['host']})" for r in running)
    return "\n".join(lines)
