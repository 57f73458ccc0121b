"""Architecture benchmark (issue 14): every network family under one CPU budget, one data set, one protocol.

Each family's protocol (``protocols/<family>-thick-x4.yaml``: the same acquisition, the family's own
network and recipe) is trained with ``mrisr.train`` on the shipped models' training volumes
(``../shared/data``: pycortex, pydeface) for the same CPU time (``--budget-minutes``, CPU minutes of
the training process, all threads; ``--precision auto``: bfloat16 where the CPU has it), then
evaluated on the held-out MNI152 2009a T1w (which no training run sees) exactly as users run it:
the acquisition's nominal LR (``benchmarks/quality.py``'s simulation and scoring), ``upscale``
onto the reference grid, PSNR/SSIM in the foreground against tricubic (and, for in-plane k-space
loss, the scanner's zero-filled reconstruction). Per model: parameters, convolution FLOPs per output
voxel (multiply-adds x 2, counted by hooks during that very upscale: fused 2D plane families and
3D window overlap included), optimiser steps reached in the budget, inference Mvoxel/s (bfloat16
where auto picks it), and a PNG of quality against inference cost (the Pareto front).

Two input classes:

- ``thick-x4``: through-plane loss, rect slices exactly 4x the input spacing, no noise (every family);
- ``inplane-x2``: in-plane k-space truncation to 2 mm on the acquired grid, no slice loss: the
  post-upsampling families with scale [2, 2] (one plane of both in-plane axes). The pre-upsampling
  2D families are trained on planes that hold the slice axis, the layout ``upscale`` gives them, so
  they are not run on in-plane loss (``benchmarks/quality.py`` marks the same).

    python benchmarks/architectures.py --budget-minutes 8 --write
    python benchmarks/architectures.py --quick        # 0.5 CPU-minute per family, a 96^3 test block: a smoke run
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from common import machine_info
from quality import HELD_OUT, baseline_rows, load_test_volume, require_reference_grid, score

import mrisr
from mrisr.evaluate.metrics import resolve_mask
from mrisr.infer.predict import upscale
from mrisr.models.card import is_perceptual
from mrisr.models.loaded import load_model
from mrisr.nets import level_scales, upsampling
from mrisr.protocol import InPlaneBlock, Param, Protocol, SliceBlock, load_protocol
from mrisr.train.gan import sharpness

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "RESULTS.md"
FIGURE = HERE / "figures" / "architectures.png"
WORK = HERE / "out" / "architectures"
DATA = REPO.parent / "shared" / "data" / "volumes"
TRAIN_VOLUMES = ("pycortex_S1_T1w.nii.gz", "pydeface_mean_T1w.nii.gz")
#: srgan: srresnet's network with the adversarial stage (train.adversarial), flagged perceptual
FAMILIES = ("vdsr", "srcnn", "espcn", "lapsrn", "srresnet", "srgan", "rfdn")
CLASSES = ("thick-x4", "inplane-x2")
SECTION = "## Architectures: one CPU budget per network family (`benchmarks/architectures.py`)"


def bench_protocol(family: str, klass: str) -> Protocol:
    """The family's protocol for an input class (``inplane-x2``: the in-plane acquisition, scale [2, 2])."""
    proto = load_protocol(f"{family}-thick-x4")
    if klass == "thick-x4":
        return proto
    acquisition = dataclasses.replace(
        proto.acquisition, slice=SliceBlock(profile="rect", scale=Param(1.0, (1.0, 1.0))),
        in_plane=InPlaneBlock(spacing_mm=Param(2.0, (2.0, 2.0)), reconstruction="acquired"))
    network = dataclasses.replace(proto.network, scale=(2, 2))
    return dataclasses.replace(proto, name=f"{family}-inplane-x2", acquisition=acquisition, network=network)


def applies(family: str, klass: str) -> bool:
    """Whether the family is run on the class (pre-upsampling 2D families: thick slices only)."""
    if klass == "thick-x4":
        return True
    return family not in ("vdsr", "srcnn")


@contextmanager
def counted_flops(net: torch.nn.Module) -> Iterator[list[int]]:
    """Multiply-adds x 2 of every convolution ``net`` runs inside the block (forward hooks), in a 1-list."""
    total = [0]

    def hook(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        kernel = math.prod(module.kernel_size)
        if isinstance(module, (torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)):
            total[0] += 2 * inputs[0].numel() * kernel * module.out_channels // module.groups
        else:
            total[0] += 2 * output.numel() * kernel * module.in_channels // module.groups

    kinds = (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, kinds)]
    try:
        yield total
    finally:
        for h in handles:
            h.remove()


def train_family(proto: Protocol, out: Path, budget_s: float, quick: bool) -> dict:
    """Train ``proto`` for ``budget_s`` CPU seconds; the run folder, steps, wall and CPU seconds."""
    data = [DATA / name for name in TRAIN_VOLUMES]
    start = time.perf_counter()
    run = mrisr.train(proto, data, out, device="cpu", progress=False, max_cpu_seconds=budget_s, seed=0,
                      command=["benchmarks/architectures.py", proto.name])
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    card = json.loads((run / "best" / "model.json").read_text())
    return {"run": run, "steps": int(rows[-1]["iteration"]), "wall_s": time.perf_counter() - start,
            "cpu_s": float(card.get("cpu_time_s", float("nan"))), "precision": card["hardware"]["precision"]}


def evaluate_model(run: Path, lr: mrisr.Volume, hr: mrisr.Volume, mask: np.ndarray, axis: int) -> dict:
    """The model's upscale of ``lr`` onto ``hr``'s grid: PSNR, SSIM, seconds, Mvoxel/s, FLOPs per voxel."""
    loaded = load_model(run, "cpu")
    params = sum(p.numel() for p in loaded.net.parameters())
    with counted_flops(loaded.net) as flops:
        start = time.perf_counter()
        sr = upscale(lr, loaded, spacing=[float(s) for s in hr.spacing], device="cpu")
        seconds = time.perf_counter() - start
    require_reference_grid(sr, hr, f"{run}'s output")
    psnr, ssim = score(hr, sr, mask, axis, str(run))
    voxels = int(np.prod(hr.shape))
    return {"psnr": psnr, "ssim": ssim, "sharpness": sharpness(sr.array[0]), "perceptual": is_perceptual(loaded.card),
            "seconds": seconds, "mvoxel_per_s": voxels / seconds / 1e6,
            "flops_per_voxel": flops[0] / voxels, "params": params, "upsampling": upsampling(loaded.net),
            "factors": level_scales(loaded.net)[-1] if level_scales(loaded.net) else None,
            "precision": sr.meta["upscale"]["precision"]}


def run_class(klass: str, families: list[str], hr: mrisr.Volume, budget_s: float, quick: bool) -> dict:
    """Baselines and every applicable family's row for one input class."""
    protocol = bench_protocol("espcn", klass)  # the acquisition is the same for every family
    mask = resolve_mask(hr, "auto")
    lr, rows = baseline_rows(protocol, hr, 0, mask)
    axis = int(lr.meta["degradation"]["slice_axis"])
    baselines = {r.method: (r.psnr_db, r.ssim) for r in rows}
    sharp = {"reference": sharpness(hr.array[0]), **{r.method: sharpness(r.image.array[0]) for r in rows}}
    results = []
    for family in families:
        if not applies(family, klass):
            continue
        proto = bench_protocol(family, klass)
        out = WORK / klass / family
        if out.exists():
            shutil.rmtree(out)
        trained = train_family(proto, out, budget_s, quick)
        scored = evaluate_model(trained["run"], lr, hr, mask, axis)
        results.append({"family": family, "protocol": proto.name, **trained, **scored})
        print(json.dumps({k: v for k, v in results[-1].items() if k != "run"}, default=str), flush=True)
    return {"class": klass, "lr_shape": list(lr.shape), "lr_spacing": [float(s) for s in lr.spacing],
            "baselines": baselines, "sharpness": sharp, "results": results}


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both (lower cost, higher quality)."""
    front = []
    for i, (c, q) in enumerate(points):
        if not any((c2 <= c and q2 >= q) and (c2 < c or q2 > q) for c2, q2 in points):
            front.append(i)
    return front


def write_figure(classes: list[dict], path: Path) -> Path:
    """Quality gain over tricubic against inference FLOPs per output voxel, one panel per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(classes), figsize=(6 * len(classes), 4.5), squeeze=False)
    for ax, entry in zip(axes[0], classes, strict=True):
        base = entry["baselines"]["tricubic"][0]
        pts = [(r["flops_per_voxel"], r["psnr"] - base) for r in entry["results"]]
        front = pareto(pts)
        for i, (r, (c, q)) in enumerate(zip(entry["results"], pts, strict=True)):
            ax.scatter(c, q, s=60, color="tab:red" if i in front else "tab:blue",
                       marker="o" if r["upsampling"] == "post" else "s")
            ax.annotate(r["family"], (c, q), textcoords="offset points", xytext=(5, 4), fontsize=9)
        order = sorted(front, key=lambda i: pts[i][0])
        ax.plot([pts[i][0] for i in order], [pts[i][1] for i in order], color="tab:red", lw=1, alpha=0.6)
        for name, (psnr, _) in entry["baselines"].items():
            ax.axhline(psnr - base, color="grey", lw=0.8, ls="--")
            ax.annotate(name, (ax.get_xlim()[0], psnr - base), fontsize=8, color="grey")
        ax.set_xscale("log")
        ax.set_xlabel("inference FLOPs per output voxel (log)")
        ax.set_ylabel("PSNR gain over tricubic (dB)")
        ax.set_title(f"{entry['class']}: held-out MNI152 (squares: pre-, circles: post-upsampling)", fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown(classes: list[dict], info: dict[str, str], command: str, budget_min: float, figure: Path | None) -> str:
    lines = ["", "### Network families at one CPU budget: held-out MNI152, thick slices x4 and in-plane x2", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += [f"- training budget: {budget_min:g} CPU minutes per family (training process, all threads), "
              "seed 0, on pycortex + pydeface; no validation during training", f"- command: `{command}`", ""]
    for entry in classes:
        shape = " x ".join(map(str, entry["lr_shape"]))
        sp = " x ".join(f"{s:.3g}" for s in entry["lr_spacing"])
        lines += [f"#### {entry['class']} (LR {shape} at {sp} mm)", ""]
        lines += ["| method | upsampling | params | FLOPs/voxel | steps | train precision | PSNR dB | gain dB | SSIM "
                  "| sharpness | inference s | Mvoxel/s |",
                  "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
        base = entry["baselines"]["tricubic"][0]
        sharp = entry["sharpness"]
        lines.append(f"| reference (HR) | - | - | - | - | - | - | - | - | {sharp['reference']:.4f} | - | - |")
        for name, (psnr, ssim) in entry["baselines"].items():
            lines.append(f"| {name} | - | - | - | - | - | {psnr:.2f} | {psnr - base:+.2f} | {ssim:.4f} | "
                         f"{sharp[name]:.4f} | - | - |")
        for r in entry["results"]:
            name = f"{r['family']} (perceptual)" if r["perceptual"] else r["family"]
            lines.append(f"| {name} | {r['upsampling']} | {r['params']:,} | {r['flops_per_voxel']:,.0f} | "
                         f"{r['steps']} | {r['precision']} | {r['psnr']:.2f} | {r['psnr'] - base:+.2f} | "
                         f"{r['ssim']:.4f} | {r['sharpness']:.4f} | {r['seconds']:.1f} | {r['mvoxel_per_s']:.3f} |")
        lines += ["", "Sharpness: RMS Sobel gradient over mean intensity in the dilated foreground "
                  "(`mrisr.train.gan.sharpness`); above the reference's with a lower PSNR flags invented detail or "
                  "noise, well below it over-smoothing.", ""]
    if figure is not None:
        lines += [f"![quality vs inference cost]({figure.relative_to(HERE).as_posix()})", "",
                  "Figure: PSNR gain over tricubic against convolution FLOPs per output voxel; red: the Pareto "
                  "front (no other family is both cheaper and better).", ""]
    return "\n".join(lines)


def command_line(argv: list[str]) -> str:
    exe = Path(sys.executable)
    python = os.path.relpath(exe, REPO) if exe.is_relative_to(REPO) else str(exe)
    return shlex.join([python, os.path.relpath(Path(__file__).resolve(), REPO), *argv])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-minutes", type=float, default=8.0, help="CPU minutes of training per family")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--classes", nargs="+", default=list(CLASSES), choices=CLASSES)
    parser.add_argument("--quick", action="store_true", help="0.5 CPU-minute budgets and a 96^3 test block")
    parser.add_argument("--write", action="store_true", help="append to RESULTS.md and write the figure")
    args = parser.parse_args(argv)
    if not HELD_OUT.exists() or not all((DATA / n).exists() for n in TRAIN_VOLUMES):
        print(f"needs {DATA} (../shared/data); not found", file=sys.stderr)
        return 2
    budget_min = 0.5 if args.quick else args.budget_minutes
    hr = load_test_volume(HELD_OUT, 96 if args.quick else None)
    classes = [run_class(k, args.families, hr, budget_min * 60.0, args.quick) for k in args.classes]
    figure = write_figure(classes, FIGURE if args.write else WORK / "architectures.png")
    text = markdown(classes, machine_info(), command_line(argv), budget_min, figure if args.write else None)
    print(text)
    if args.write:
        existing = RESULTS.read_text(encoding="utf-8")
        with open(RESULTS, "a", encoding="utf-8") as f:
            if SECTION not in existing:
                f.write(f"\n{SECTION}\n\nEach network family trained for the same CPU time on the same data and "
                        "acquisition, evaluated on the held-out volume as `upscale` runs it.\n")
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
