"""Inference speed, precision and memory of the shipped models (issue 13's benchmark).

    python benchmarks/inference.py                  # print the table
    python benchmarks/inference.py --write          # also append it to RESULTS.md
    python benchmarks/inference.py --rss            # also the two large cases' peak RSS (slow on a CPU)

For each shipped model and each precision this CPU offers (float32; bfloat16 where oneDNN has it):

- the held-out sample (the bundled MNI152 2009a T1w, never trained on) at its protocol class's
  nominal acquisition (``thick-slice-x4`` for 2D models, ``vdsr3d``'s nominal for 3D ones) is
  upscaled back to 1 mm by ``mrisr.infer.upscale``: wall time, output Mvoxel/s, foreground PSNR
  against the 1 mm original (and the bf16 - float32 difference);
- the network's work is counted while it runs (a forward hook adds up the voxels each call
  sees, times the FLOPs per voxel of its convolutions: 2 x k^d x c_in x c_out), so GFLOP/s is
  what the network achieved, fused plane families and window overlaps included;
- the conv peak is measured in the same run on the same layer shape: one features -> features
  3x3 convolution over a batch shaped like the model's own (2D: 16 sample planes; 3D: 4 windows
  of its training size), in the same precision and memory layout; the fraction is the model's
  GFLOP/s over that peak (the goal: at least 50 %).

``--rss`` runs 256x256x64 at 1 x 1 x 4 mm -> 256^3 and 512x512x100 at 1 x 1 x 5 mm -> 512x512x500
(random magnitude data) in a child process each and reports its peak resident memory (goal
<= 4 GiB).

``--threads`` times the 2D model's forward pass over batches of sample-sized planes (1, 4, 16
and 64 planes, the runner's largest batch) with 1 .. nproc torch threads, in each precision:
planes/s and the speed-up over one thread (is torch's default of one thread per core right
for plane batches, and does batching help?).
Speeds are ratios within one run on one machine: the CPU model and flags are recorded.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import machine_info

import mrisr
from mrisr.demo import SAMPLE
from mrisr.evaluate import evaluate
from mrisr.infer import upscale
from mrisr.infer.precision import channels_last, cpu_has_native_bf16
from mrisr.kspace import degrade
from mrisr.models import shipped_models
from mrisr.models.loaded import load_model
from mrisr.protocol import load_protocol

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
#: The acquisition each model class is benchmarked at (nominal setting).
PROTOCOL = {2: "thick-slice-x4", 3: "vdsr3d"}


def flops_per_voxel(net: torch.nn.Module) -> int:
    """FLOPs per voxel of one forward pass of a same-resolution conv net: 2 k^d c_in c_out / groups."""
    total = 0
    for m in net.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)):
            total += 2 * math.prod(m.kernel_size) * m.in_channels * m.out_channels // m.groups
    return total


class VoxelCounter:
    """A forward hook adding up the spatial voxels of every batch the network sees."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.voxels = 0
        self.handle = net.register_forward_hook(self)

    def __call__(self, module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0]
        self.voxels += int(x.shape[0]) * math.prod(int(n) for n in x.shape[2:])

    def close(self) -> None:
        self.handle.remove()


def conv_peak(features: int, dims: int, shape: tuple[int, ...], bf16: bool, seconds: float = 3.0) -> float:
    """GFLOP/s of one features -> features 3x3 convolution over a batch of ``shape`` (N, spatial...),
    channels-last, under bf16 autocast or in float32, as inference runs it."""
    conv_type = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
    conv = conv_type(features, features, 3, padding=1).eval()
    x = torch.randn(shape[0], features, *shape[1:])
    conv = conv.to(memory_format=channels_last(x.ndim))
    x = x.contiguous(memory_format=channels_last(x.ndim))
    flops = 2 * 3**dims * features * features * math.prod(shape[1:]) * shape[0]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        conv(x)
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < seconds or n < 2:
            conv(x)
            n += 1
    return flops * n / (time.perf_counter() - start) / 1e9


def peak_shape(dims: int, loaded: object, hr_shape: tuple[int, int, int]) -> tuple[int, ...]:
    if dims == 2:
        return (16, hr_shape[0], hr_shape[2])  # 16 planes (partner x coarse axis) of the sample
    window = loaded.patch_size(3) or (64, 64, 64)  # type: ignore[attr-defined]
    return (4, *window)


def run_model(name: str, hr: mrisr.Volume, precisions: list[str]) -> list[dict]:
    loaded = load_model(name, "cpu")
    dims = int(loaded.config["spatial_dims"])
    features = int(loaded.config.get("features", 64))
    protocol = load_protocol(PROTOCOL[dims])
    lr = degrade(hr, protocol.acquisition.nominal(), torch.Generator().manual_seed(0))
    per_voxel = flops_per_voxel(loaded.net)
    rows = []
    for precision in precisions:
        counter = VoxelCounter(loaded.net)
        start = time.perf_counter()
        sr = upscale(lr, loaded, spacing=list(hr.spacing), device="cpu", precision=precision)
        seconds = time.perf_counter() - start
        counter.close()
        metrics = evaluate(hr, sr, "auto", axis=2)
        achieved = per_voxel * counter.voxels / seconds / 1e9
        peak = conv_peak(features, dims, peak_shape(dims, loaded, sr.shape), bf16=precision == "bfloat16")
        rows.append({"model": name, "dims": dims, "protocol": protocol.name, "precision": precision,
                     "input": list(lr.shape), "output": list(sr.shape), "seconds": round(seconds, 2),
                     "mvoxel_per_s": round(math.prod(sr.shape) / seconds / 1e6, 3),
                     "gflop_per_s": round(achieved, 1), "conv_peak_gflop_per_s": round(peak, 1),
                     "fraction_of_peak": round(achieved / peak, 3), "psnr_db": round(float(metrics["psnr_db"]), 4),
                     "ssim": round(float(metrics["ssim"]), 5)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


#: The two large cases: (input shape, slice spacing mm); the output is 1 mm isotropic.
RSS_CASES = (((256, 256, 64), 4.0), ((512, 512, 100), 5.0))


def rss_case(name: str, lr_shape: tuple[int, int, int], slice_mm: float, precision: str) -> dict:
    """Peak RSS (GiB) of a child process that upscales random 1 x 1 x ``slice_mm`` mm magnitude data."""
    code = (
        "import numpy as np, resource, time, mrisr\n"
        "from mrisr.infer import upscale\n"
        f"lr = mrisr.Volume(np.random.default_rng(0).uniform(0, 1000, (1, *{lr_shape!r})).astype(np.float32),"
        f" np.diag([1.0, 1.0, {slice_mm!r}, 1.0]), {{}})\n"
        "t = time.perf_counter()\n"
        f"sr = upscale(lr, {name!r}, spacing=1.0, device='cpu', precision={precision!r})\n"
        "print(sr.shape, round(time.perf_counter() - t, 1), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    shape, seconds, kib = done.stdout.strip().rsplit(" ", 2)
    return {"model": name, "precision": precision, "input": list(lr_shape), "output": shape,
            "seconds": float(seconds), "peak_rss_gib": round(int(kib) / 2**20, 2)}


def thread_scaling(name: str, hr_shape: tuple[int, int, int], precisions: list[str],
                   seconds: float = 2.0) -> list[dict]:
    """Planes/s of a 2D model's forward pass per (precision, batch, threads), as the runner calls it."""
    loaded = load_model(name, "cpu")
    before = torch.get_num_threads()
    rows = []
    for precision in precisions:
        bf16 = precision == "bfloat16"
        net = loaded.net.to(memory_format=channels_last(4) if bf16 else torch.contiguous_format)
        for batch in (1, 4, 16, 64):
            x = torch.rand(batch, 1, hr_shape[0], hr_shape[2])
            x = x.contiguous(memory_format=channels_last(4)) if bf16 else x
            base = None
            for threads in range(1, before + 1):
                torch.set_num_threads(threads)
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    net(x)
                    start, n = time.perf_counter(), 0
                    while time.perf_counter() - start < seconds or n < 2:
                        net(x)
                        n += 1
                rate = batch * n / (time.perf_counter() - start)
                base = base or rate
                rows.append({"model": name, "precision": precision, "batch": batch, "threads": threads,
                             "planes_per_s": round(rate, 2), "speedup": round(rate / base, 2)})
                print(json.dumps(rows[-1]), flush=True)
    torch.set_num_threads(before)
    return rows


def markdown(rows: list[dict], rss: list[dict], info: dict[str, str], command: str,
             threads: list[dict] | None = None) -> str:
    parts = (["peak memory of the large cases"] if rss else []) + (["2D plane batches by threads"] if threads else [])
    title = ("Inference: shipped models on the held-out sample, float32 and bfloat16, on the CPU" if rows else
             f"Inference: {' and '.join(parts) or 'nothing measured'}, on the CPU")
    lines = ["", f"### {title}", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += [f"- command: `{command}`", ""]
    if rows:
        lines += ["| model | protocol | precision | output | s | Mvoxel/s | GFLOP/s | conv peak GFLOP/s | of peak "
                  "| PSNR dB | SSIM |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['protocol']} | {r['precision']} | {'x'.join(map(str, r['output']))} | "
                     f"{r['seconds']} | {r['mvoxel_per_s']} | {r['gflop_per_s']} | {r['conv_peak_gflop_per_s']} | "
                     f"{100 * r['fraction_of_peak']:.0f} % | {r['psnr_db']} | {r['ssim']} |")
    by_model: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_model.setdefault(r["model"], {})[r["precision"]] = r
    lines.append("")
    for name, pair in by_model.items():
        if "bfloat16" in pair and "float32" in pair:
            f32, b16 = pair["float32"], pair["bfloat16"]
            lines.append(f"- {name}: bfloat16 {f32['seconds'] / b16['seconds']:.2f}x the speed of float32, "
                         f"PSNR {b16['psnr_db'] - f32['psnr_db']:+.4f} dB (goal: within 0.05 dB)")
    lines += [f"- peak RSS {r['model']} {r['precision']} {'x'.join(map(str, r['input']))} -> {r['output']}: "
              f"{r['peak_rss_gib']} GiB in {r['seconds']} s (goal <= 4 GiB)" for r in rss]
    if threads:
        plane = "x".join(map(str, threads[0].get("plane", [])))
        lines += ["", f"2D plane batches{f' ({plane} planes)' if plane else ''}: planes/s by torch threads "
                  "(speed-up over one thread)", "",
                  "| model | precision | batch | threads | planes/s | speed-up |", "|---|---|---:|---:|---:|---:|"]
        lines += [f"| {r['model']} | {r['precision']} | {r['batch']} | {r['threads']} | {r['planes_per_s']} | "
                  f"{r['speedup']:.2f}x |" for r in threads]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", help="shipped model names (default: all)")
    parser.add_argument("--rss", action="store_true", help="also the two large cases' peak RSS")
    parser.add_argument("--threads", action="store_true", help="also 2D plane batches by torch threads")
    parser.add_argument("--no-models", action="store_true", help="skip the whole-sample rows (with --rss/--threads)")
    parser.add_argument("--write", action="store_true", help="append the results to RESULTS.md")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    names = args.models or sorted(shipped_models())
    precisions = ["float32", "bfloat16"] if torch.ops.mkldnn._is_mkldnn_bf16_supported() else ["float32"]
    info_auto = "bfloat16" if cpu_has_native_bf16() else "float32"
    hr = mrisr.load(SAMPLE)
    rows = [] if args.no_models else [row for name in names for row in run_model(name, hr, precisions)]
    threads = []
    if args.threads:
        for name in names:
            if int(load_model(name, "cpu").config["spatial_dims"]) == 2:
                threads += [{**r, "plane": [hr.shape[0], hr.shape[2]]}
                            for r in thread_scaling(name, hr.shape, precisions)]
    rss = []
    if args.rss:
        best = "bfloat16" if "bfloat16" in precisions else "float32"
        for name in names:
            for shape, slice_mm in RSS_CASES:
                rss.append(rss_case(name, shape, slice_mm, best))
                print(json.dumps(rss[-1]), flush=True)
    info = {**machine_info(), "torch threads": str(torch.get_num_threads()),
            "precision auto picks": info_auto,
            "own peak RSS": f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"}
    command = "python benchmarks/inference.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = markdown(rows, rss, info, command.strip(), threads)
    print(text)
    if args.write:
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write(text)
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
