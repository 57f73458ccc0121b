"""Training throughput: patches/s and voxels/s of 2D and 3D VDSR (20 layers, 64 features).

Times optimiser steps on random patches (forward, MSE loss, backward, adjustable gradient
clipping, SGD step) after a warm-up, on the CPU (torch threads = the machine's cores) in
float32 and, where the CPU has native bf16, under bfloat16 autocast with channels-last (as
``mrisr train --precision bfloat16`` runs, :mod:`mrisr.train.precision`), and, when
available, on CUDA with AMP and channels-last. The data pipeline is timed separately
(pairs/s from PatchPairs on a 128^3 phantom), since on a GPU CPU workers prepare pairs
while the GPU trains.

``--convergence STEPS`` also trains the shipped 2D protocol (``vdsr2d-thick``) for STEPS
optimiser steps once per precision with ``mrisr.train`` (same seed, same patches), on the
training volumes of ``../shared/data`` and validated on the one held out of training, and
reports the validation PSNR/SSIM and the wall time of each: does bf16 train as well?

    python benchmarks/train.py [--steps 5] [--convergence 300] [--write]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import machine_info

import mrisr
from mrisr.infer.precision import channels_last, cpu_has_native_bf16
from mrisr.nets import VDSR
from mrisr.protocol import load_protocol
from mrisr.train.data import PatchPairs
from mrisr.volume import Volume

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
CASES = [(2, (16, 1, 64, 64)), (3, (2, 1, 32, 32, 32))]  # (spatial_dims, batch shape)
DATA = HERE.parents[1] / "shared" / "data" / "volumes"
#: The training volumes of the shipped models, and the one held out for validation.
TRAIN_VOLUMES = ("pycortex_S1_T1w.nii.gz", "pydeface_mean_T1w.nii.gz")
VAL_VOLUME = "robex_atlas_T1w.nii.gz"


def step_rate(spatial_dims: int, shape: tuple[int, ...], device: str, steps: int,
              precision: str = "float32") -> tuple[float, float]:
    torch.manual_seed(0)
    model = VDSR(spatial_dims).to(device)
    amp = device == "cuda"
    bf16 = device == "cpu" and precision == "bfloat16"
    x = torch.randn(shape, device=device)
    if amp or bf16:
        model = model.to(memory_format=channels_last(len(shape)))
        x = x.contiguous(memory_format=channels_last(len(shape)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    y = x + 0.1 * torch.randn(shape, device=device)

    def one() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, enabled=amp or bf16, dtype=torch.bfloat16 if bf16 else None):
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        bound = 0.01 / optimizer.param_groups[0]["lr"]
        for p in model.parameters():
            p.grad.clamp_(-bound, bound)
        scaler.step(optimizer)
        scaler.update()

    one()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        one()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    patches = shape[0]
    return patches / seconds, patches * int(np.prod(shape[2:])) / seconds


def pair_rate(count: int = 256) -> float:
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 128)] * 3, indexing="ij"))
    data = ((grid**2).sum(0) < 0.7) * 600 + rng.normal(0, 30, (128,) * 3)
    volume = Volume(data[None].astype(np.float32), np.eye(4))
    pairs = PatchPairs([volume], load_protocol("brain-t1-axial-5mm"), pairs_per_volume=32, seed=0)
    stream = iter(pairs)
    next(stream)
    start = time.perf_counter()
    for _ in range(count):
        next(stream)
    return count / (time.perf_counter() - start)


def convergence(steps: int, precisions: list[str]) -> list[str]:
    """Markdown rows: the shipped 2D protocol trained ``steps`` steps per precision, validated."""
    train = [DATA / name for name in TRAIN_VOLUMES]
    rows = ["| protocol | precision | steps | wall time (s) | s/step | val PSNR (dB) | val SSIM |",
            "|---|---|---:|---:|---:|---:|---:|"]
    proto = load_protocol("vdsr2d-thick")
    epochs = max(1, -(-steps // proto.train.steps_per_epoch))
    # the cosine schedule spans these epochs; validated once, at the end
    proto = dataclasses.replace(proto, train=dataclasses.replace(proto.train, val_interval=epochs))
    with tempfile.TemporaryDirectory() as tmp:
        for precision in precisions:
            start = time.perf_counter()
            run = mrisr.train(proto, train, Path(tmp) / precision, val=[DATA / VAL_VOLUME],
                              epochs=epochs, max_steps=steps, device="cpu", progress=False, precision=precision)
            seconds = time.perf_counter() - start
            last = list(csv.DictReader(open(run / "metrics.csv")))[-1]
            rows.append(f"| vdsr2d-thick | {precision} | {steps} | {seconds:.0f} | {seconds / steps:.2f} | "
                        f"{float(last['val_psnr']):.2f} | {float(last['val_ssim']):.4f} |")
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--convergence", type=int, metavar="STEPS",
                        help="also train vdsr2d-thick this many steps per precision and validate")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    precisions = ["float32", "bfloat16"] if cpu_has_native_bf16() else ["float32"]
    devices = [("cpu", p) for p in precisions] + ([("cuda", "amp")] if torch.cuda.is_available() else [])
    table = ["| network | device | precision | batch | patches/s | voxels/s |", "|---|---|---|---|---:|---:|"]
    for dims, shape in CASES:
        for device, precision in devices:
            patches, voxels = step_rate(dims, shape, device, args.steps, precision)
            label = f"{device} ({torch.get_num_threads()} threads)" if device == "cpu" else device
            table.append(f"| VDSR {dims}D 20x64 | {label} | {precision} | {' x '.join(map(str, shape))} | "
                         f"{patches:.1f} | {voxels:.3g} |")
            print(table[-1], flush=True)
    if args.convergence:
        if not (DATA / VAL_VOLUME).exists():
            parser.error(f"--convergence needs the volumes of {DATA}")
        table += ["", *convergence(args.convergence, precisions)]
    table += ["", f"Data pipeline (PatchPairs, brain-t1-axial-5mm, 64x64 2D pairs from a 128^3 volume, "
              f"32 pairs per simulated acquisition): {pair_rate():.0f} pairs/s on the CPU, one process."]
    info = machine_info()
    title = (f"Training throughput, VDSR 2D and 3D, float32 and bfloat16 (mean over {args.steps} optimiser "
             f"steps after a warm-up)")
    print(title)
    print("\n".join(table))
    print("; ".join(f"{k}: {v}" for k, v in info.items()))
    if args.write:
        with open(RESULTS, "a", encoding="utf-8") as f:
            info["command"] = "python benchmarks/train.py " + " ".join(argv if argv is not None else sys.argv[1:])
            f.write(f"\n### {title}\n\n" + "\n".join(f"- {k}: {v}" for k, v in info.items()) + "\n\n")
            f.write("\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
