"""Batch benchmark: items/hour of ``mrisr batch`` with 1 and 2 local worker processes on the CPU,
and the per-item overhead beyond the model's own time.

The items are I/O-heavy: ``--items`` DICOM series (default 40 of 192x192x20, int16, 1x1 mm pixels,
3 mm slices, one file per slice, each series different) upscaled to 1 mm by a tiny untrained
2D VDSR (4 features, 3 layers), so reading, resampling, writing (gzip NIfTI) and the batch
machinery dominate, not the network. The series and the model are written once into
``benchmarks/out/batch_<COLS>x<ROWS>x<SLICES>_<N>/`` (gitignored) and reused; each run writes
into a fresh output folder there. Goal (issue 8): per-item overhead under 0.5 s, and at least
1.7x the 1-worker throughput with 2 workers.

    python benchmarks/batch.py                        # print the table
    python benchmarks/batch.py --items 6 --size 64 64 8   # a quick check
    python benchmarks/batch.py --write                # also append the result to RESULTS.md

Run it on an otherwise idle machine: the workers share its cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from common import machine_info

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
RESULTS = HERE / "RESULTS.md"
GOAL_OVERHEAD_S = 0.5
GOAL_SPEEDUP = 1.7


def generate_series(folder: Path, index: int, cols: int, rows: int, n_slices: int) -> None:
    """One axial MR series, ``n_slices`` files of ``rows x cols`` int16, its values shifted by ``index``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.Modality = MRImageStorage, "MR"
    ds.PatientName, ds.PatientID = "Bench^Batch", f"bench-{index}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.SeriesNumber, ds.SeriesDescription = 1, f"T2 AX bench {index}"
    ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 3.0
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    y, x = np.mgrid[-1 : 1 : rows * 1j, -1 : 1 : cols * 1j]
    rng = np.random.default_rng(index)
    for k in range(n_slices):
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-cols / 2, -rows / 2, 3.0 * k]
        img = np.where(x**2 + y**2 < 0.7, 900 + 10 * index, 40) + rng.normal(0, 20, (rows, cols))
        ds.PixelData = img.astype(np.int16).tobytes()
        ds.save_as(folder / f"IM{k + 1:04d}.dcm", enforce_file_format=True)


def prepare(folder: Path, n_items: int, cols: int, rows: int, n_slices: int) -> tuple[Path, Path]:
    """(input root, model card), generated once."""
    root, model = folder / "input", folder / "model"
    if not (folder / "ready").exists():
        shutil.rmtree(folder, ignore_errors=True)
        print(f"generating {n_items} series of {cols}x{rows}x{n_slices} in {root} ...", flush=True)
        for i in range(n_items):
            generate_series(root / f"study{i:04d}" / "t2", i, cols, rows, n_slices)
        import torch

        from mrisr.models.card import save_checkpoint
        from mrisr.nets import VDSR

        torch.manual_seed(0)
        save_checkpoint(VDSR(2, features=4, depth=3), model, {"note": "untrained, for benchmarks/batch.py"})
        (folder / "ready").touch()
    return root, model / "model.json"


def run(root: Path, card: Path, out: Path, workers: int) -> dict[str, float]:
    """One batch into a fresh ``out``: wall time, steady throughput and mean job timings."""
    from mrisr.batch import BatchOptions, Ledger, run_batch

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    summary = run_batch([root], out, BatchOptions(model=str(card), workers=workers, device="cpu", spacing=(1.0,)))
    wall = time.perf_counter() - start
    if summary.counts["done"] != summary.counts["total"]:
        raise SystemExit(f"batch failed: {summary.counts} (see {summary.csv_path})")
    with Ledger(out, readonly=True) as ledger:
        rows = ledger.rows()
    n = len(rows)
    # Steady state: from the moment every worker finished its first item (start-up: spawning,
    # importing torch, loading the model, is over) to the last item; timings of those items only.
    finished = sorted(r["finished"] for r in rows)
    steady = (n - workers) / (finished[-1] - finished[workers - 1])
    rows = [r for r in rows if r["finished"] > finished[workers - 1]]
    timings = [json.loads((out / r["outputs"][1]).read_text())["seconds"] for r in rows]
    return {
        "items": n, "wall_s": wall,
        "items_per_hour_wall": 3600 * n / wall, "items_per_hour": 3600 * steady,
        "per_item_s": workers / steady,
        "worker_s": statistics.mean(r["seconds"] for r in rows),
        "model_s": statistics.mean(t["upscale"] for t in timings),
        "job_s": statistics.mean(t["load"] + t["upscale"] + t["write"] for t in timings),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=40, help="series (at least 4: the first per worker is start-up)")
    parser.add_argument("--size", nargs=3, type=int, default=[192, 192, 20], metavar=("COLS", "ROWS", "SLICES"))
    parser.add_argument("--write", action="store_true", help="append the result to RESULTS.md")
    args = parser.parse_args(argv)
    if args.items < 4 or min(args.size) < 2:
        parser.error("--items must be at least 4 and --size at least 2")
    cols, rows, n_slices = args.size
    folder = OUT / f"batch_{cols}x{rows}x{n_slices}_{args.items}"
    root, card = prepare(folder, args.items, cols, rows, n_slices)
    results = {w: run(root, card, folder / f"run-w{w}", w) for w in (1, 2)}

    table = ["| workers | items/h (steady) | items/h (wall, with start-up) | s per item per worker | "
             "in the worker s | load+model+write s | model s |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for w, r in results.items():
        table.append(f"| {w} | {r['items_per_hour']:.0f} | {r['items_per_hour_wall']:.0f} | {r['per_item_s']:.3f} | "
                     f"{r['worker_s']:.3f} | {r['job_s']:.3f} | {r['model_s']:.3f} |")
    one, two = results[1], results[2]
    speedup = two["items_per_hour"] / one["items_per_hour"]
    beyond_model = one["per_item_s"] - one["model_s"]
    machinery = one["per_item_s"] - one["job_s"]
    lines = [
        f"2 workers / 1 worker throughput: {speedup:.2f}x "
        f"(goal >= {GOAL_SPEEDUP}x: {'met' if speedup >= GOAL_SPEEDUP else 'NOT met'})",
        f"per-item time beyond the model's own, 1 worker: {beyond_model:.3f} s (reading, resampling, writing "
        f"gzip NIfTI and sidecar, batch machinery); of which the batch machinery beyond the job itself "
        f"(dispatch, ledger, result recording): {machinery:.3f} s "
        f"(goal < {GOAL_OVERHEAD_S} s: {'met' if machinery < GOAL_OVERHEAD_S else 'NOT met'})",
    ]
    info = machine_info()
    size_mb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6
    title = (f"Batch throughput: {args.items} DICOM series of {cols}x{rows}x{n_slices} ({size_mb:.0f} MB) "
             f"to 1 mm, tiny VDSR 2D, local workers on the CPU")
    print(title)
    print("\n".join(table))
    print("\n".join(lines))
    print("; ".join(f"{k}: {v}" for k, v in info.items()))
    if args.write:
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write(f"\n### {title}\n\n" + "\n".join(f"- {k}: {v}" for k, v in info.items()) + "\n\n")
            f.write("\n".join(table) + "\n\n" + "\n".join(f"- {line}" for line in lines) + "\n")
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
