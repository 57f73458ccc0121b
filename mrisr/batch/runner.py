"""Run a batch: discover the items, plan them against the ledger, dispatch, record, summarise.

The coordinator is the process that calls :func:`run_batch`. It alone writes the ledger
(:class:`~mrisr.batch.ledger.Ledger`), holding an exclusive lock on it (``<ledger>.lock``,
``flock``: released by the kernel even when the process is killed), so a second batch into
the same output part is refused instead of sharing the ledger. Workers (:mod:`.backends`,
:mod:`.ray_backend`) only run tasks and report back.

Planning (:func:`plan_batch`, also what ``--dry-run`` prints):

0. Where it writes, before any other work (:func:`_locations`): never inside an input nor
   into a folder holding one, except a BIDS dataset's own ``derivatives/mrisr`` (``-o`` the
   dataset, ``--layout bids``), which then holds the ledger and summary too; and OUT must be
   writable (:func:`mrisr.io.atomic.check_writable`; a dry run only warns).
1. :func:`~mrisr.batch.discover.discover` over each input (the output folder, and with
   ``--layout bids`` every BIDS dataset's ``derivatives/``, skipped); with several inputs
   each one's items are named under its folder's name.
2. Each item's ledger key is :func:`~mrisr.batch.ledger.item_key` of its content hash and the
   parameters (model weights' sha256, spacing or scale, layout, format): an exact duplicate
   is the same key, done once and reported as skipped.
3. ``--num-parts K --part-id I`` keeps the keys whose position in the sorted list of distinct
   keys is ``I`` modulo ``K``: deterministic, balanced to one item, and a duplicate goes
   with its original. Each part keeps its own ledger (``mrisr-ledger-part<I>of<K>.sqlite``:
   SQLite in WAL mode wants one writer on one host), and every part reads the others' to
   skip what they finished.
4. Output paths (:mod:`.outputs`) are planned over all parts' items, so a clash is resolved
   the same way in every part; paths recorded for done items stay theirs.

Resume: done items are skipped (``--force`` redoes them); failed ones are retried while
their attempts are at most ``--retries``, also within the run; a running row whose process
died counts as pending. A task lost with its worker (``crashed``) is retried once more in
the run. An item attempted before may replace its own outputs (a killed run may have
written them without recording it) after removing the temporaries a killed write left.

Ctrl-C (or SIGTERM): the workers are killed at once, the results they had finished are
recorded, every item left running is done when its outputs are complete (its sidecar,
written last, names its key) and pending otherwise, the summary is written, and
:class:`BatchInterrupted` is raised (the CLI exits 130, or 143 for SIGTERM).
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import InputError, MrisrError, OutputError
from ..io.atomic import check_writable
from . import outputs as layout_
from .discover import Item, discover
from .interrupt import BatchInterrupted, Signals, settle
from .ledger import LEDGER_NAME, Ledger, item_key, params_hash
from .outputs import relative_to_out
from .report import Summary, entry_rows, write_summary
from .worker import Result, Task

__all__ = ["BatchOptions", "PlanEntry", "Plan", "plan_batch", "run_batch", "BatchInterrupted", "ledger_name",
           "ledger_files", "is_bids_dataset"]


@dataclass(frozen=True)
class BatchOptions:
    """What to do with each item, and how to spread the work (see ``mrisr batch --help``).

    Attributes:
        model: model spec (checkpoint path or shipped name); None: the default per volume.
        spacing, scale: target grid (mm, or factor per axis), one or three values; at most one.
        layout: ``mirror`` or ``bids``. fmt: ``nifti``, ``nrrd`` or ``dicom``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        workers: local worker processes (0: in the coordinator; None: one per GPU, else 1);
            with Ray, actors (None: one per GPU, else one per CPU of the cluster).
        num_parts, part_id: this process's share of the work (``0 <= part_id < num_parts``).
        ray_address: run on Ray (``auto``, ``HOST:PORT`` or ``local``) instead of local workers.
        retries: retries of a failed item after its first attempt. force: redo done items.
        include ... min_through_plane_mm: discovery filters (:func:`~mrisr.batch.discover.discover`).
        progress: a progress bar on stderr.
    """

    model: str | None = None
    spacing: tuple[float, ...] | None = None
    scale: tuple[float, ...] | None = None
    layout: str = "mirror"
    fmt: str = "nifti"
    device: str = "auto"
    workers: int | None = None
    num_parts: int = 1
    part_id: int = 0
    ray_address: str | None = None
    retries: int = 0
    force: bool = False
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    series_description: str | None = None
    modality: str | None = None
    min_slices: int = 1
    min_through_plane_mm: float | None = None
    progress: bool = False


@dataclass
class PlanEntry:
    """One item of this part and what the batch will do with it.

    ``action``: ``run``; ``skip`` (done earlier, or a duplicate); ``fail`` (an error found
    before any work: discovery, naming); ``failed`` (failed earlier, retries spent).
    ``output`` is relative to OUT: where the item's result is or will be (a duplicate's is
    its original's, written once); None when there is none (a failing item).
    """

    item: Item
    key: str
    action: str
    output: PurePosixPath | None = None
    reason: str | None = None
    attempts: int = 0


@dataclass
class Plan:
    """A batch's plan for one part: its entries in discovery order, and the context.

    ``state``: the folder of the ledger, its lock and the summary: OUT, or
    ``OUT/derivatives/mrisr`` for a BIDS dataset's own derivatives (OUT the dataset itself).
    ``warnings``: problems a dry run found that the run would stop at (an unwritable OUT).
    """

    out: Path
    options: BatchOptions
    params: dict[str, Any]
    entries: list[PlanEntry] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)
    state: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def state_dir(self) -> Path:
        return self.out if self.state is None else self.state

    @property
    def ledger_path(self) -> Path:
        return self.state_dir / ledger_name(self.options.num_parts, self.options.part_id)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("run", "skip", "fail", "failed"), 0)
        for e in self.entries:
            counts[e.action] += 1
        counts["total"] = len(self.entries)
        return counts


def ledger_name(num_parts: int, part_id: int) -> str:
    """``mrisr-ledger.sqlite``, or ``mrisr-ledger-part<I>of<K>.sqlite`` for one of several parts."""
    return LEDGER_NAME if num_parts == 1 else f"mrisr-ledger-part{part_id}of{num_parts}.sqlite"


def ledger_files(out: Path) -> list[Path]:
    """Every batch ledger in ``out`` (one per part), sorted."""
    return sorted(p for p in Path(out).glob("mrisr-ledger*.sqlite") if p.is_file())


def _check_options(inputs: Sequence[Path], out: Path, o: BatchOptions) -> None:
    if not inputs:
        raise InputError("no input given", "INPUT", "name at least one folder, archive or scan")
    if o.num_parts < 1 or not 0 <= o.part_id < o.num_parts:
        raise InputError(f"--part-id {o.part_id} is not in 0..{o.num_parts - 1} (--num-parts {o.num_parts})",
                         "--part-id", "give 0 <= --part-id < --num-parts (both >= 1)")
    if o.layout not in layout_.LAYOUTS:
        raise InputError(f"unknown layout {o.layout!r}", "--layout", "use mirror or bids")
    if o.fmt not in layout_.FORMATS:
        raise InputError(f"unknown format {o.fmt!r}", "--format", f"use one of {', '.join(layout_.FORMATS)}")
    if o.layout == "bids" and o.fmt != "nifti":
        raise InputError(f"--layout bids writes NIfTI (.nii.gz), not {o.fmt}", "--format",
                         "drop --format, or use --layout mirror")
    if o.retries < 0 or (o.workers is not None and o.workers < 0):
        raise InputError("--retries and --workers must not be negative", "--retries/--workers", "give 0 or more")
    if o.spacing is not None and o.scale is not None:
        raise InputError("give --spacing or --scale, not both", "--spacing/--scale", "drop one of them")
    for path in inputs:
        if not path.exists():
            raise InputError("does not exist", path, "check the path (and quote paths with spaces)")
    if out.exists() and not out.is_dir():
        raise OutputError("is a file, not a folder", out, "give a folder for the batch's outputs")


def is_bids_dataset(path: Path) -> bool:
    """A folder with a ``dataset_description.json`` at its top: a BIDS dataset."""
    return path.is_dir() and (path / "dataset_description.json").is_file()


def _locations(inputs: Sequence[Path], out: Path, o: BatchOptions) -> tuple[Path, list[Path]]:
    """Where the batch keeps its ledger and summary, and the folders discovery skips.

    Nothing is written inside an input, with one exception: ``--layout bids`` with OUT the BIDS
    dataset given as input writes its derivatives inside it, by the BIDS convention
    (``OUT/derivatives/mrisr``, which then holds the ledger and the summary too). Every BIDS
    dataset's ``derivatives/`` folder is skipped by discovery with ``--layout bids``: derivatives
    are never raw inputs (nor, on a rerun, the batch's own outputs).

    Raises:
        OutputError: OUT is an input (other than that BIDS case), lies inside one, or holds one.
    """
    target = out.resolve()
    sources = [p.resolve() for p in inputs]
    in_place = o.layout == "bids" and any(s == target and is_bids_dataset(s) for s in sources)
    written = target / layout_.BIDS_ROOT if in_place else target
    skip = [] if in_place else [out]
    for path, source in zip(inputs, sources, strict=True):
        dataset = o.layout == "bids" and is_bids_dataset(source)
        if dataset:
            skip.append(source / "derivatives")
        if source == target and in_place:
            continue
        if source == target and o.layout == "bids":
            raise OutputError("is the input folder too, and not a BIDS dataset (no dataset_description.json)",
                              out, "write the batch into a new folder, or add the dataset's "
                                   "dataset_description.json to write its derivatives/mrisr")
        if source == target:
            raise OutputError("is the input folder too", out, "write the batch into a new folder (a BIDS "
                                                              "dataset takes its own derivatives: --layout bids)")
        if source in written.parents:
            hint = f"; for this dataset's derivatives give -o {path}" if dataset else ""
            raise OutputError(f"lies inside the input {path}; a batch writes nothing inside its inputs", out,
                              f"write the batch into a folder outside the inputs{hint}")
        if written in source.parents:
            raise OutputError(f"holds the input {path}; a batch writes nothing where its inputs are", out,
                              "write the batch into a folder outside the inputs")
    return (out / layout_.BIDS_ROOT if in_place else out), skip


def _model_identity(model: str | None) -> dict[str, Any]:
    """What in the model decides the outputs: its weights' sha256; for None (the shipped default
    per volume), the sha256 of every shipped model's weights, so new weights are new work."""
    if model is None:
        from ..models import shipped_models
        from ..models.card import read_card

        return {"default": {name: read_card(card).get("weights", {}).get("sha256")
                            for name, card in shipped_models().items()}}
    from ..infer.job import cached_model

    card = cached_model(model, "cpu").card  # also checks it loads, before any work
    sha = card.get("weights", {}).get("sha256")
    return {"sha256": sha} if sha else {"spec": str(model)}


def _prefixed(item: Item, prefix: str) -> Item:
    if not prefix:
        return item
    folder = None if item.folder is None else (prefix if item.folder == "." else f"{prefix}/{item.folder}")
    return replace(item, display=f"{prefix}/{item.display}", rel_paths=tuple(f"{prefix}/{r}" for r in item.rel_paths),
                   folder=folder)


def _discover_all(inputs: Sequence[Path], skip: Sequence[Path], o: BatchOptions) -> tuple[list[Item], dict[str, str]]:
    """Items of every input (named under the input's folder name when there are several),
    and the BIDS dataset links (name -> ``file://`` URI of each input folder); ``skip``: the
    folders not walked (:func:`_locations`)."""
    items: list[Item] = []
    links: dict[str, str] = {}
    used: set[str] = set()
    for path in inputs:
        prefix = ""
        if len(inputs) > 1:
            base = layout_.safe_name(path.resolve().name, "input")
            prefix, n = base, 1
            while prefix in used:
                n += 1
                prefix = f"{base}-{n}"
            used.add(prefix)
        root = path if path.is_dir() else path.parent
        links[prefix or "raw"] = root.resolve().as_uri()
        found = discover(
            path, include=o.include, exclude=o.exclude, series_description=o.series_description,
            modality=o.modality, min_slices=o.min_slices, min_through_plane_mm=o.min_through_plane_mm,
            skip_dirs=skip,
        )
        items.extend(_prefixed(it, prefix) for it in found)
    return items, links


def _other_ledgers(out: Path, own: Path) -> tuple[dict[str, tuple[list[str], str]], dict[str, dict[str, Any]]]:
    """Done rows of every ledger in ``out`` (key -> (outputs, ledger name)), and this part's rows."""
    done: dict[str, tuple[list[str], str]] = {}
    rows: dict[str, dict[str, Any]] = {}
    for path in ledger_files(out):
        try:
            with Ledger(path, readonly=True) as ledger:
                for row in ledger.rows():
                    if path.name == own.name:
                        rows[row["key"]] = row
                    if row["state"] == "done":
                        done.setdefault(row["key"], (row["outputs"], path.name))
        except Exception as exc:  # sqlite3.DatabaseError, locked: say which file
            raise OutputError(f"cannot read the batch ledger ({exc})", path,
                              "remove the damaged ledger (its items will be redone) or choose a new folder") from exc
    return done, rows


def plan_batch(inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
               options: BatchOptions = BatchOptions(), *, for_run: bool = False) -> Plan:
    """The plan of one part of a batch; reads the ledgers in ``out`` but writes nothing.

    Before any discovery or model loading, OUT is checked (:func:`mrisr.io.atomic.check_writable`:
    with ``for_run`` (:func:`run_batch`) it creates and removes a hidden test file in OUT or the
    nearest folder above it that exists, and a folder that cannot be written stops the batch;
    without (a dry run) it writes nothing, reading the mount's read-only flag and the permission
    bits, and a folder that cannot be written is a warning, also in ``Plan.warnings``).

    Raises:
        InputError, OutputError: bad options, a missing input, OUT inside an input (or, with
            ``for_run``, not writable), a model that does not load, a damaged ledger.
    """
    o = options
    out = Path(out)
    paths = [Path(p) for p in inputs]
    _check_options(paths, out, o)
    state, skip = _locations(paths, out, o)
    problems = []
    try:
        # the inputs were checked against OUT by _locations; a dry run writes nothing
        check_writable(state, folder=True, probe=for_run)
    except OutputError as exc:
        if for_run:
            raise
        problems.append(f"the batch would stop here: {exc.one_line()}")
        warnings.warn(problems[-1], stacklevel=2)
    params = {"model": _model_identity(o.model), "spacing": None if o.spacing is None else list(o.spacing),
              "scale": None if o.scale is None else list(o.scale), "layout": o.layout, "format": o.fmt}
    items, links = _discover_all(paths, skip, o)
    plan = Plan(out, o, params, links=links, state=None if state == out else state, warnings=problems)
    done_anywhere, own_rows = _other_ledgers(plan.state_dir, plan.ledger_path)

    first: dict[str, Item] = {}
    keyed = []
    for item in items:
        key = item_key(item.id, params)
        keyed.append((item, key))
        first.setdefault(key, item)
    distinct = sorted(first)
    mine = set(distinct[o.part_id :: o.num_parts])

    wanted: dict[str, PurePosixPath] = {}
    naming_errors: dict[str, str] = {}
    for key, item in first.items():
        if item.error is not None:
            continue
        try:
            wanted[key] = layout_.relative_output(item, o.layout, o.fmt)
        except MrisrError as exc:
            naming_errors[key] = exc.one_line()
    reserved = {out_: k for k, (outs, _) in done_anywhere.items() for out_ in outs[:1]}
    assigned = layout_.assign(wanted, reserved, o.layout)

    originals: dict[str, PlanEntry] = {}
    for item, key in keyed:
        if key not in mine:
            continue
        row = own_rows.get(key, {})
        entry = PlanEntry(item, key, "run", assigned.get(key), attempts=int(row.get("attempts") or 0))
        if first[key] is not item:  # done once, as its original: same output
            entry.action, entry.reason = "skip", f"duplicate of {first[key].display}"
            entry.output = originals[key].output if key in originals else None
            plan.entries.append(entry)
            continue
        originals[key] = entry
        if item.error is not None or key in naming_errors:
            entry.action, entry.output, entry.reason = "fail", None, item.error or naming_errors[key]
        elif key in done_anywhere and not o.force:
            outs, where = done_anywhere[key]
            elsewhere = "" if where == plan.ledger_path.name else f" ({where})"
            entry.action, entry.reason = "skip", "done earlier" + elsewhere
            entry.output = PurePosixPath(outs[0]) if outs else entry.output
        elif row.get("state") == "failed" and entry.attempts > o.retries and not o.force:
            entry.action, entry.output = "failed", None
            entry.reason = f"{row.get('last_error')} (not retried: attempts spent, see --retries)"
        plan.entries.append(entry)
    return plan


# --- execution ---------------------------------------------------------------------------------


class _Lock:
    """An exclusive ``flock`` on ``path`` for the coordinator's lifetime (POSIX; elsewhere none)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> _Lock:
        try:
            import fcntl
        except ImportError:
            return self
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise OutputError("another mrisr batch is writing this part of the output folder now", self.path.parent,
                              "wait for it to finish, or write into another folder") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)


def _backend(o: BatchOptions):  # noqa: ANN202 (a Backend)
    from .backends import InProcess, LocalPool, gpu_ids

    if o.ray_address is not None:
        from .ray_backend import RayBackend

        return RayBackend(o.ray_address, o.workers, o.model, o.device)
    workers = o.workers if o.workers is not None else max(1, len(gpu_ids(o.device)))
    if workers == 0:
        return InProcess(o.model, o.device)
    return LocalPool(workers, o.model, o.device)


def _task(plan: Plan, entry: PlanEntry) -> Task:
    o = plan.options
    item = entry.item
    extra: dict[str, Any] = {"batch": {"key": entry.key, "item": item.display, "content_sha256": item.id,
                                       "parameters": plan.params}}
    if o.layout == "bids":
        dataset = item.display.split("/", 1)[0] if len(plan.links) > 1 else "raw"
        rels = [r.split("/", 1)[1] for r in item.rel_paths] if len(plan.links) > 1 else list(item.rel_paths)
        extra["Sources"] = [f"bids:{dataset}:{r}" for r in rels]
    return Task(
        key=entry.key, item=item, output=str(layout_.inside(plan.out, entry.output)),
        fmt=layout_.item_format(item, o.fmt), model=o.model, spacing=o.spacing, scale=o.scale,
        force=o.force or entry.attempts > 0, clean=entry.attempts > 0, extra=extra,
    )


def run_batch(inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
              options: BatchOptions = BatchOptions()) -> Summary:
    """Run (or resume) one part of a batch; returns what happened (also written as
    ``mrisr-summary[-part<I>of<K>].json`` and ``.csv`` beside the ledger).

    Raises:
        InputError, OutputError: bad options or inputs, an output folder that cannot be
            written (found before any discovery, model loading or work), a model that does not
            load, another batch writing the same part now. Items that fail do not raise: they
            are in the summary.
        BatchInterrupted: Ctrl-C or SIGTERM while items ran (after recording them, see there).
    """
    start = time.time()
    out = Path(out)
    plan = plan_batch(inputs, out, options, for_run=True)
    o = plan.options
    state = plan.state_dir
    state.mkdir(parents=True, exist_ok=True)
    with Signals() as signals:
        with _Lock(state / (plan.ledger_path.name + ".lock")), Ledger(plan.ledger_path) as ledger:
            ph = params_hash(plan.params)
            primary = [e for e in plan.entries if e.action != "skip" or not e.reason.startswith("duplicate")]
            for e in primary:
                ledger.upsert_pending(e.key, e.item.display, ph)
            if o.force:
                for e in primary:
                    ledger.reset(e.key)
            runnable = set(ledger.to_run(o.retries))
            rows = {r["key"]: r for r in ledger.rows()}
            if o.layout == "bids":
                layout_.write_dataset_description(out, plan.links)
            for e in primary:
                if e.action == "fail" and e.key in runnable:  # found before any work: recorded, not dispatched
                    ledger.claim(e.key)
                    ledger.failed(e.key, e.reason or "failed")
            todo = [e for e in primary if e.action == "run" and e.key in runnable]
            for e in todo:
                e.attempts = int(rows[e.key]["attempts"])
            finished, stopped = _dispatch(plan, todo, ledger, signals)
            summary = Summary.build(plan, ledger.rows(), finished, time.time() - start)
        summary.interrupted = stopped is not None
        write_summary(state, summary, entry_rows(summary))
    if stopped is not None:
        raise BatchInterrupted(summary, stopped)
    return summary


def _dispatch(plan: Plan, todo: list[PlanEntry], ledger: Ledger, signals: Signals) -> tuple[set[str], int | None]:
    """Run ``todo`` on the backend, recording each result.

    Returns:
        The keys done in this run, and the signal that interrupted it (None: it ran to the end).
        On Ctrl-C or SIGTERM the workers are stopped at once, the results they had finished are
        recorded, and every item left running is settled (:func:`mrisr.batch.interrupt.settle`).
    """
    if not todo:
        return set(), None
    from tqdm.auto import tqdm

    o = plan.options
    queue = deque(todo)
    by_key = {e.key: e for e in todo}
    tasks: dict[str, Task] = {}
    in_flight: set[str] = set()
    crash_retried: set[str] = set()
    done: set[str] = set()
    received: deque[Result] = deque()
    failed = 0
    bar = tqdm(total=len(todo), unit="item", desc="batch", disable=not o.progress, dynamic_ncols=True,
               mininterval=0.5, smoothing=0.1)

    def record(result: Result, retry: bool = True) -> None:
        nonlocal failed
        in_flight.discard(result.key)
        entry = by_key[result.key]
        if result.ok:
            ledger.done(result.key, relative_to_out(plan.out, result.outputs), result.seconds)
            done.add(result.key)
            bar.update(1)
            return
        ledger.failed(result.key, result.error or "failed", result.seconds)
        # A task lost with its worker gets one retry of its own; --retries counts the rest.
        spent = entry.attempts - (result.key in crash_retried)
        if retry and result.crashed and result.key not in crash_retried:
            crash_retried.add(result.key)
            queue.append(entry)  # again, after the others
        elif retry and spent <= o.retries:
            queue.append(entry)
        else:
            failed += 1
            bar.update(1)
            bar.set_postfix(failed=failed, refresh=False)

    backend = None
    stopped = None
    try:
        backend = _backend(o)
        while queue or in_flight:
            while queue and len(in_flight) < backend.capacity:
                entry = queue.popleft()
                task = tasks[entry.key] = _task(plan, entry)  # known before it is claimed: see settle
                ledger.claim(entry.key)
                backend.submit(task)
                entry.attempts += 1
                in_flight.add(entry.key)
            received.extend(backend.results())
            while received:
                record(received[0])
                received.popleft()
    except KeyboardInterrupt as exc:
        stopped = int(getattr(exc, "signum", signal.SIGINT))
        signals.hold()  # until the summary is written (run_batch)
        if backend is not None:
            received.extend(backend.interrupt())
        while received:
            record(received.popleft(), retry=False)
        settle(plan.out, ledger, tasks, done)
    finally:
        if backend is not None:
            backend.close()
        bar.close()
    return done, stopped
