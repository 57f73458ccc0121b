"""``mrisr batch``: its arguments (:func:`add_parser`) and what it runs (:func:`run_command`).

The CLI module only registers it (``add_parser(sub, common)``); everything else is here.
Errors are one line (``mrisr: error: ...``, exit 2), as for every mrisr command. A batch in
which some items failed also exits 2, after its summary line, naming the summary file. A
batch stopped by Ctrl-C (or SIGTERM) records where it stopped, writes its summary and exits
130 (143) with one line saying how to resume.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from ..errors import InputError, MrisrError
from .outputs import BIDS_ROOT, FORMATS, LAYOUTS

__all__ = ["add_parser", "run_command", "BatchFailures"]

_DESCRIPTION = """\
Super-resolve every scan found in folders, zip/tar archives and scan files: NIfTI, NRRD and
MetaImage files, and every DICOM series. The work is recorded in a ledger inside OUT, so a
rerun resumes: done items are skipped, failed ones retried up to --retries, interrupted ones
redone. Exact duplicates (the same bytes) are done once. Ctrl-C stops the workers at once,
keeps what they finished, and writes the summary: rerun the same command to resume.
"""

_EPILOG = """\
examples:
  mrisr batch /data/pacs -o /data/sr --model run/best --workers 2
  mrisr batch /data/bids -o /data/bids --layout bids --series-description 'T2'
  mrisr batch /data/pacs -o /data/sr --num-parts 10 --part-id $SLURM_ARRAY_TASK_ID
  mrisr batch /shared/pacs -o /shared/sr --ray-address auto
  mrisr batch /data/pacs -o /data/sr --dry-run --json
  mrisr batch --status /data/sr
"""


class BatchFailures(MrisrError):
    """Some items of a batch failed (their reasons are in the summary)."""


def add_parser(sub: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``batch`` to the ``mrisr`` subcommands ``sub``; ``common`` holds the shared ``--quiet``."""
    p = sub.add_parser("batch", help="super-resolve every scan in folders and archives, resumably",
                       description=_DESCRIPTION, epilog=_EPILOG, parents=[common],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", type=Path, metavar="INPUT", help="folders, zip/tar archives or scan files")
    p.add_argument("-o", "--output", type=Path, metavar="OUT",
                   help="the output folder; it holds the ledger and the summary too")
    p.add_argument("--model", help="a model card, checkpoint folder or shipped name "
                                   "(default: the shipped default for each scan's voxel spacing)")
    grid = p.add_mutually_exclusive_group()
    grid.add_argument("--spacing", type=float, nargs="+", metavar="MM", help="target spacing: one value or three")
    grid.add_argument("--scale", type=float, nargs="+", metavar="F", help="upsampling factor per voxel axis")
    p.add_argument("--layout", choices=LAYOUTS, default="mirror",
                   help="mirror: the input tree under OUT (default); bids: OUT/derivatives/mrisr")
    p.add_argument("--format", choices=sorted(FORMATS), default="nifti",
                   help="nifti (default), nrrd, or dicom: derived DICOM series for DICOM inputs (others NIfTI)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="worker processes, each holding the model (default: one per GPU, else 1; 0: in this "
                        "process); with --ray-address, Ray actors (default: one per GPU, else per CPU)")
    p.add_argument("--num-parts", type=int, default=1, metavar="K", help="split the work into K parts (job arrays)")
    p.add_argument("--part-id", type=int, default=0, metavar="I", help="the part this process runs, 0..K-1")
    p.add_argument("--ray-address", metavar="ADDR", help="run on Ray: auto, HOST:PORT, or local (needs mrisr[ray])")
    p.add_argument("--retries", type=int, default=0, metavar="N",
                   help="retry a failed item up to N times, in this run and in reruns (default 0)")
    p.add_argument("--force", action="store_true", help="redo items already done, replacing their outputs")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (each item's output path); write nothing (an OUT that cannot be "
                        "written is a warning, not an error)")
    p.add_argument("--json", action="store_true", help="print the plan, summary or status as JSON")
    p.add_argument("--status", type=Path, metavar="OUT", help="summarise the ledger(s) in OUT and stop")
    f = p.add_argument_group("filters")
    f.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="keep items with a file matching (relative to the input; repeatable)")
    f.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="drop items with a file matching")
    f.add_argument("--series-description", metavar="REGEX",
                   help="keep DICOM series whose description matches (volume files: their file name)")
    f.add_argument("--modality", help="keep DICOM series of this modality (MR)")
    f.add_argument("--min-slices", type=int, default=1, metavar="N", help="keep scans with at least N slices")
    f.add_argument("--min-through-plane", type=float, metavar="MM",
                   help="keep scans whose coarsest voxel size is at least MM (low resolution enough)")
    p.set_defaults(func=run_command)
    return p


def _options(args: argparse.Namespace) -> Any:
    from .runner import BatchOptions

    if args.series_description is not None:
        try:
            re.compile(args.series_description)
        except re.error as exc:
            raise InputError(f"not a regular expression ({exc})", "--series-description",
                             "quote it, and escape special characters with a backslash") from None
    return BatchOptions(
        model=args.model, spacing=None if args.spacing is None else tuple(args.spacing),
        scale=None if args.scale is None else tuple(args.scale), layout=args.layout, fmt=args.format,
        device=args.device, workers=args.workers, num_parts=args.num_parts, part_id=args.part_id,
        ray_address=args.ray_address, retries=args.retries, force=args.force, include=tuple(args.include),
        exclude=tuple(args.exclude), series_description=args.series_description, modality=args.modality,
        min_slices=args.min_slices, min_through_plane_mm=args.min_through_plane, progress=not args.quiet,
    )


def _status(args: argparse.Namespace) -> int:
    from .report import ledger_status, status_text
    from .runner import ledger_files

    out = args.status
    # A BIDS dataset's own derivatives (-o DATASET --layout bids) keep their ledger in derivatives/mrisr.
    files = (ledger_files(out) or ledger_files(out / BIDS_ROOT)) if out.is_dir() else []
    if not files:
        raise InputError("holds no batch ledger", out, "give the OUT folder of an mrisr batch run")
    status = ledger_status(files)
    if args.json:
        print(json.dumps({"out": str(out), **status}, indent=2))
    else:
        print(status_text(status, out))
    return 0


def run_command(args: argparse.Namespace) -> int:
    """``mrisr batch``: ``--status``, ``--dry-run``, or the batch itself."""
    if args.status is not None:
        if args.inputs or args.output is not None:
            raise InputError("--status takes only the output folder", "--status", "drop INPUT and -o")
        return _status(args)
    if args.output is None:
        raise InputError("no output folder given", "-o", "add -o OUT (a folder for the results and the ledger)")
    options = _options(args)
    from .report import plan_dict, plan_table
    from .runner import BatchInterrupted, plan_batch, run_batch

    if args.dry_run:
        plan = plan_batch(args.inputs, args.output, options)
        print(json.dumps(plan_dict(plan), indent=2) if args.json else plan_table(plan))
        return 0
    try:
        summary = run_batch(args.inputs, args.output, options)
    except BatchInterrupted as stop:
        c = stop.summary.counts
        if args.json:
            print(json.dumps({**stop.summary.as_dict(), "summary_json": str(stop.summary.json_path),
                              "summary_csv": str(stop.summary.csv_path)}, indent=2))
        resume = ("Rerun the same command without --force to resume" if args.force
                  else "Rerun the same command to resume")
        print(f"mrisr: interrupted: {c['done']} done in this run, {c['pending']} pending of {c['total']} items "
              f"(summary: {stop.summary.csv_path}). {resume}: done items are kept, the pending ones are done.",
              file=sys.stderr)
        return 128 + stop.signum
    if args.json:
        print(json.dumps({**summary.as_dict(), "summary_json": str(summary.json_path),
                          "summary_csv": str(summary.csv_path)}, indent=2))
    elif not args.quiet:
        print(summary.line())
    failed = [i for i in summary.items if i["status"] == "failed"]
    if failed:
        if not args.quiet and not args.json:
            for item in failed[:10]:
                print(f"mrisr: failed: {item['item']}: {item['reason']}", file=sys.stderr)
            if len(failed) > 10:
                print(f"mrisr: ... and {len(failed) - 10} more", file=sys.stderr)
        raise BatchFailures(f"{len(failed)} of {summary.counts['total']} items failed (reasons in "
                            f"{summary.csv_path.name})", args.output,
                            "fix or exclude those inputs and rerun; --retries N retries failed items")
    return 0
