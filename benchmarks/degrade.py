"""Degradation benchmark: one full clinical acquisition of a 256^3 volume.

The protocol is brain-t1-axial-5mm at its nominal setting, made harder on purpose so
every stage runs: rigid motion (8 segments, 1 mm / 1 deg), a Gaussian 5 mm slice profile
with a 1 mm gap, an in-plane k-space crop to 1.2 mm with zero-filled reconstruction, and
Rician noise at SNR 30. Input: the shared pycortex T1 (256^3, 1 mm) when
../shared/data is there, else a seeded 256^3 phantom. Median of --repeats runs on the
CPU (torch threads = the machine's cores) and on CUDA when available.
Goal (issue): under 2 s on 2 CPU cores, so training pairs can be made on the fly.

    python benchmarks/degrade.py            # print the table
    python benchmarks/degrade.py --write    # also append it to RESULTS.md
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from pathlib import Path

import numpy as np
import torch
from common import machine_info, time_runs

import mrisr
from mrisr.kspace import degrade
from mrisr.protocol import load_protocol

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
SHARED_T1 = HERE.parent.parent / "shared" / "data" / "volumes" / "pycortex_S1_T1w.nii.gz"
GOAL_S = 2.0


def input_volume() -> tuple[mrisr.Volume, str]:
    if SHARED_T1.exists():
        return mrisr.load(SHARED_T1), f"{SHARED_T1.name} (256^3, 1 mm)"
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 256)] * 3, indexing="ij"))
    data = ((grid**2).sum(0) < 0.7) * 600 + rng.normal(0, 30, (256, 256, 256))
    return mrisr.Volume(data[None].astype(np.float32), np.eye(4)), "seeded phantom (256^3, 1 mm)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="append the result to RESULTS.md")
    args = parser.parse_args(argv)

    volume, described = input_volume()
    params = dataclasses.replace(
        load_protocol("brain-t1-axial-5mm").acquisition.nominal(),
        in_plane_spacing_mm=1.2, snr=30.0, motion_translation_mm=1.0, motion_rotation_deg=1.0,
    )
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        def run(device: str = device) -> None:
            low = degrade(volume, params, torch.Generator().manual_seed(0), device=device)
            if device == "cuda":
                torch.cuda.synchronize()
            assert np.isfinite(np.asarray(low.array)).all()

        run()  # warm-up: allocator, FFT plans, CUDA context
        times = time_runs(run, args.repeats)
        rows.append((device, statistics.median(times), min(times)))
    low = degrade(volume, params, torch.Generator().manual_seed(0))
    title = (f"Degrade {described} -> {' x '.join(map(str, low.shape))} at "
             f"{' x '.join(f'{s:.2f}' for s in low.spacing)} mm (motion, slice profile, k-space crop, noise), "
             f"median of {args.repeats}")
    table = ["| device | median s | best s | goal < 2 s (CPU) |", "|---|---:|---:|---|"]
    for device, median, best in rows:
        verdict = ("met" if median < GOAL_S else "NOT met") if device == "cpu" else ""
        table.append(f"| {device} ({torch.get_num_threads()} threads) | {median:.3f} | {best:.3f} | {verdict} |"
                     if device == "cpu" else f"| {device} | {median:.3f} | {best:.3f} | |")
    table += ["", "Each shipped protocol on the same volume, CPU: nominal setting, and 8 training draws.", "",
              "| protocol | nominal s | draws: median s | draws: max s |", "|---|---:|---:|---:|"]
    for protocol in ("brain-t1-axial-5mm", "brain-t2-fse-axial-5mm", "knee-pd-sagittal-3mm",
                     "lowfield-fast-6mm", "thick-slice-x4"):
        acquisition = load_protocol(protocol).acquisition
        nominal = time_runs(lambda a=acquisition: degrade(volume, a.nominal(), torch.Generator().manual_seed(0)), 1)
        draws = []
        for seed in range(8):
            g = torch.Generator().manual_seed(seed)
            draws += time_runs(lambda a=acquisition, g=g: degrade(volume, a.sample(g), g), 1)
        table.append(f"| {protocol} | {nominal[0]:.3f} | {statistics.median(draws):.3f} | {max(draws):.3f} |")
    info = machine_info()
    print(title)
    print("\n".join(table))
    print("; ".join(f"{k}: {v}" for k, v in info.items()))
    if args.write:
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write(f"\n### {title}\n\n")
            f.write("\n".join(f"- {k}: {v}" for k, v in info.items()) + "\n\n")
            f.write("\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
