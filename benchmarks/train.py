"""Training throughput: patches/s and voxels/s of 2D and 3D VDSR (20 layers, 64 features).

Times optimiser steps on random patches (forward, MSE loss, backward, adjustable gradient
clipping, SGD step) after a warm-up, on the CPU (torch threads = the machine's cores) and,
when available, on CUDA with AMP and channels-last. The data pipeline is timed separately
(pairs/s from PatchPairs on a 128^3 phantom), since on a GPU CPU workers prepare pairs
while the GPU trains.

    python benchmarks/train.py [--steps 5] [--write]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from common import machine_info

from mrisr.nets import VDSR
from mrisr.protocol import load_protocol
from mrisr.train.data import PatchPairs
from mrisr.volume import Volume

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
CASES = [(2, (16, 1, 64, 64)), (3, (2, 1, 32, 32, 32))]  # (spatial_dims, batch shape)


def step_rate(spatial_dims: int, shape: tuple[int, ...], device: str, steps: int) -> tuple[float, float]:
    torch.manual_seed(0)
    model = VDSR(spatial_dims).to(device)
    amp = device == "cuda"
    if amp:
        model = model.to(memory_format=torch.channels_last if spatial_dims == 2 else torch.channels_last_3d)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    x = torch.randn(shape, device=device)
    y = x + 0.1 * torch.randn(shape, device=device)

    def one() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, enabled=amp):
            loss = torch.nn.functional.mse_loss(model(x), y)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    table = ["| network | device | batch | patches/s | voxels/s |", "|---|---|---|---:|---:|"]
    for device in devices:
        for dims, shape in CASES:
            patches, voxels = step_rate(dims, shape, device, args.steps)
            label = f"{device} ({torch.get_num_threads()} threads)" if device == "cpu" else f"{device} (AMP)"
            table.append(f"| VDSR {dims}D 20x64 | {label} | {' x '.join(map(str, shape))} | "
                         f"{patches:.1f} | {voxels:.3g} |")
    table += ["", f"Data pipeline (PatchPairs, brain-t1-axial-5mm, 64x64 2D pairs from a 128^3 volume, "
              f"32 pairs per simulated acquisition): {pair_rate():.0f} pairs/s on the CPU, one process."]
    info = machine_info()
    title = f"Training throughput, VDSR 2D and 3D (mean over {args.steps} optimiser steps after a warm-up)"
    print(title)
    print("\n".join(table))
    print("; ".join(f"{k}: {v}" for k, v in info.items()))
    if args.write:
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write(f"\n### {title}\n\n" + "\n".join(f"- {k}: {v}" for k, v in info.items()) + "\n\n")
            f.write("\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
