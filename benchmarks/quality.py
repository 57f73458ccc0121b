"""Quality benchmark: PSNR and SSIM of super-resolution against interpolation, per protocol.

For each shipped protocol's nominal acquisition (simulated as validation simulates it:
``mrisr.kspace.degrade`` with the stream of ``mrisr.train.data.validation_pairs``) of each test
volume (default: the MNI152 2009a T1w, which no training run sees), PSNR (dB) and SSIM inside
the reference's foreground mask (``mrisr.evaluate.evaluate``) of:

- ``tricubic``: the LR put on the HR grid by ``mrisr.preprocess.cubic_baseline`` (Keys cubic, clipped at 0);
- for protocols with in-plane k-space loss (an ``in_plane`` block acquiring fewer samples than
  the input has voxels in-plane), the baseline to beat is
  ``zero-filled k-space``: the scanner's reconstruction, zero-filled in-plane (simulated exactly:
  the protocol with ``reconstruction: zerofilled``) and cubic through-plane; ``tricubic`` then
  starts from the acquired grid (the protocol with ``reconstruction: acquired``); both are reported;
- each model (``--model NAME|PATH``, default: every shipped model) through
  ``mrisr.infer.predict.upscale`` onto the HR grid (checked to be the reference's grid exactly),
  given the LR the protocol delivers; a model that does not apply (a 2D through-plane model on an
  in-plane loss) is run and marked;
- ECLARE (``run-eclare``, GPL-3, a self-supervised peer) as an external command only, when it is on
  PATH or given by ``--eclare``, within a wall-time budget (``--eclare-minutes``), on the protocols
  of ``--eclare-protocols``.

Goal (issue 6): the best model at least +3.0 dB PSNR over tricubic on the held-out volume at
``thick-slice-x4``, and ahead of ECLARE at an equal time budget.

    python benchmarks/quality.py --quick            # a central 64^3 block of each volume: a fast check
    python benchmarks/quality.py --write            # also append to RESULTS.md, with figures
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import machine_info

import mrisr
from mrisr.device import resolve_device
from mrisr.evaluate import evaluate
from mrisr.evaluate.metrics import GRID_ATOL_MM, resolve_mask
from mrisr.evaluate.report import _nearest_on_grid, view_figure, write_png
from mrisr.export import sha256_file
from mrisr.infer.predict import upscale
from mrisr.kspace import degrade
from mrisr.models import SHIPPED_MODELS
from mrisr.models.loaded import load_model
from mrisr.preprocess import cubic_baseline
from mrisr.protocol import AcquisitionParams, Protocol, list_protocols, load_protocol
from mrisr.train.data import stream_generator
from mrisr.volume import Volume, crop

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "RESULTS.md"
FIGURES = HERE / "figures" / "quality"
WORK = HERE / "out" / "quality"
HELD_OUT = REPO.parent / "shared" / "data" / "volumes" / "mni152_2009a_T1w.nii.gz"
GOAL_PROTOCOL, GOAL_DB = "thick-slice-x4", 3.0
FIGURE_PROTOCOLS = ("thick-slice-x4", "lowfield-fast-6mm")
SEED = 0  # validation's seed: the same LR as `mrisr train --val` logs for a volume at this index
SECTION = "## Quality: super-resolution vs interpolation per protocol (`benchmarks/quality.py`)"
TRICUBIC, ZERO_FILLED, ECLARE = "tricubic", "zero-filled k-space", "ECLARE"


@dataclasses.dataclass
class Row:
    """One method's result on one case. ``psnr_db`` is None when the method did not run (see ``note``)."""

    method: str
    psnr_db: float | None = None
    ssim: float | None = None
    seconds: float | None = None
    note: str = ""
    image: Volume | None = None
    label: str = ""  # the figure's column name (the figure font has few letters)


@dataclasses.dataclass
class Case:
    """One protocol on one test volume: the LR given to the models, the HR reference and the rows."""

    protocol: Protocol
    volume: str
    hr: Volume
    lr: Volume
    baseline: str
    rows: list[Row]
    figures: list[Path] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model to benchmark: how it was named, and what its card says."""

    arg: str
    spatial_dims: int
    protocol: str
    wall_time_s: float | None
    trained_on: frozenset[str]  # sha256 of the training (and validation) volumes


@dataclasses.dataclass(frozen=True)
class Eclare:
    """How to run ECLARE: the command (None: not installed), budget per run (min), patches, protocols."""

    command: tuple[str, ...] | None
    minutes: float | None
    patches: int | None
    protocols: frozenset[str]


# --------------------------------------------------------------------------- inputs


def central_block(volume: Volume, size: int) -> Volume:
    """The central ``size``^3 voxels of ``volume`` (fewer along shorter axes), geometry kept."""
    start = [max(0, (n - size) // 2) for n in volume.shape]
    return crop(volume, start, [min(n, s + size) for n, s in zip(volume.shape, start, strict=True)])


def load_test_volume(path: Path, quick: int | None) -> Volume:
    """The first channel of the volume at ``path`` as float32, cropped to ``quick``^3 when given."""
    volume = mrisr.load(path)
    volume = volume.replace(array=np.ascontiguousarray(np.asarray(volume.array, dtype=np.float32)[:1]))
    return central_block(volume, quick) if quick else volume


def in_plane_loss(lr: Volume, hr: Volume) -> bool:
    """Whether the acquisition kept fewer in-plane k-space samples than ``hr`` has voxels (a protocol's
    ``in_plane`` spacing no coarser than the input's acquires the whole matrix: only its window acts)."""
    record = lr.meta["degradation"]
    return any(m < hr.shape[a] for m, a in zip(record["acquired_matrix"], record["in_plane_axes"], strict=True))


def simulate(hr: Volume, params: AcquisitionParams, index: int) -> Volume:
    """The nominal LR of test volume ``index``, with the noise stream validation uses for it."""
    return degrade(hr, params, stream_generator(SEED, 2**32 - 1, index))


def interpolate(lr: Volume, hr: Volume) -> tuple[Volume, float]:
    """``lr`` on ``hr``'s grid by ``cubic_baseline`` (cubic along each resized axis, magnitude clipped at 0 as
    upscale clips), and the seconds."""
    start = time.perf_counter()
    return cubic_baseline(lr, hr, meta={}), time.perf_counter() - start


def require_reference_grid(image: Volume, hr: Volume, what: str, atol_mm: float = 1e-6) -> None:
    """Raise unless ``image`` is on ``hr``'s grid: the same shape and affine (to ``atol_mm``)."""
    if tuple(image.shape) != tuple(hr.shape) or not np.allclose(image.affine, hr.affine, rtol=0.0, atol=atol_mm):
        raise RuntimeError(f"{what} is not on the reference grid: shape {list(image.shape)} vs {list(hr.shape)}, "
                           f"affine\n{np.asarray(image.affine)}\nvs\n{np.asarray(hr.affine)}")


def score(hr: Volume, image: Volume, mask: np.ndarray, axis: int, name: str) -> tuple[float, float]:
    """``(PSNR dB, SSIM)`` of ``image`` against ``hr`` inside ``mask`` (``mrisr.evaluate.evaluate``)."""
    metrics = evaluate(hr, image, mask, axis=axis, names=("the reference", name))
    return float(metrics["psnr_db"]), float(metrics["ssim"])


# --------------------------------------------------------------------------- models


def describe_model(arg: str) -> ModelSpec:
    """Read a model's card (a shipped name or a checkpoint path) without running it."""
    loaded = load_model(arg, "cpu")
    net, card = loaded.net, loaded.card
    config = (card.get("architecture") or {}).get("config") or getattr(net, "config", {})
    data = [*card.get("training_data", []), *card.get("validation_data", [])]
    return ModelSpec(arg=arg, spatial_dims=int(config.get("spatial_dims", 2)),
                     protocol=str((card.get("protocol") or {}).get("name", "?")),
                     wall_time_s=card.get("wall_time_s"),
                     trained_on=frozenset(str(d.get("sha256")) for d in data if isinstance(d, dict)))


def applicability(spec: ModelSpec, lr: Volume, hr: Volume, volume_sha256: str | None) -> str:
    """Why the model's result is not a fair one on this case ("" when it is)."""
    notes = []
    if spec.spatial_dims == 2 and in_plane_loss(lr, hr):
        notes.append("does not apply: 2D through-plane model, in-plane k-space loss not modelled")
    if volume_sha256 is not None and volume_sha256 in spec.trained_on:
        notes.append("TRAINED ON THIS VOLUME")
    return "; ".join(notes)


def run_model(spec: ModelSpec, lr: Volume, hr: Volume, device: torch.device) -> tuple[Volume, float]:
    """The model's SR of ``lr`` on ``hr``'s grid and the seconds it took (model loading included)."""
    start = time.perf_counter()
    sr = upscale(lr, spec.arg, spacing=[float(s) for s in hr.spacing], device=device)
    seconds = time.perf_counter() - start
    require_reference_grid(sr, hr, f"model {spec.arg}'s output")
    return sr, seconds


# --------------------------------------------------------------------------- ECLARE


def find_eclare(command: str | None) -> tuple[str, ...] | None:
    """ECLARE's command: ``command`` split as a shell would, else ``run-eclare`` on PATH, else None."""
    if command:
        return tuple(shlex.split(command))
    exe = shutil.which("run-eclare")
    return (exe,) if exe else None


def eclare_arguments(lr: Volume, params: AcquisitionParams, hr: Volume, device: torch.device,
                     patches: int | None) -> list[str]:
    """ECLARE's options: the true slice profile when it knows its shape (rect, gaussian; thickness as
    a multiple of the in-plane spacing, its unit), else its own estimate (ESPRESO); the GPU when we use one."""
    slice_axis = int(lr.meta["degradation"]["slice_axis"])
    in_plane = min(float(s) for a, s in enumerate(lr.spacing) if a != slice_axis)
    thickness = params.thickness_mm or float(params.slice_scale or 1.0) * float(hr.spacing[slice_axis])
    args = ["--gpu-id", str(device.index or 0) if device.type == "cuda" else "-1"]
    if params.profile in ("rect", "gaussian"):
        args += ["--relative-slice-thickness", f"{thickness / in_plane:.4f}",
                 "--relative-slice-profile-type", params.profile]
    return args + (["--n-patches", str(patches)] if patches else [])


def run_command(command: list[str], seconds: float, log: Path) -> int | None:
    """Run ``command`` with its output in ``log``; kill its process group after ``seconds``.
    Returns the exit status, None when it ran out of time."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own group: ECLARE's DataLoader workers go too
            proc.wait()
            return None


def run_eclare(eclare: Eclare, lr: Volume, hr: Volume, params: AcquisitionParams, device: torch.device,
               workdir: Path) -> tuple[Volume | None, float, str]:
    """ECLARE on ``lr`` within the budget: ``(SR on hr's grid or None, seconds, note)``."""
    assert eclare.command is not None and eclare.minutes is not None
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    source = mrisr.save(lr.replace(meta={}), workdir / "lr.nii.gz")
    command = [*eclare.command, "--in-fpath", str(source), "--out-dir", str(workdir / "out"),
               *eclare_arguments(lr, params, hr, device, eclare.patches)]
    start = time.perf_counter()
    status = run_command(command, 60.0 * eclare.minutes, workdir / "eclare.log")
    seconds = time.perf_counter() - start
    options = shlex.join(command[len(eclare.command) + 4:])
    if status is None:
        return None, seconds, f"did not finish within the budget ({eclare.minutes:g} min; {options})"
    result = workdir / "out" / "lr_eclare.nii.gz"
    if status != 0 or not result.exists():
        return None, seconds, f"failed (exit {status}; see {workdir / 'eclare.log'})"
    sr = mrisr.load(result)
    try:
        require_reference_grid(sr, hr, "ECLARE's output", GRID_ATOL_MM)  # through NIfTI's float32 sform
    except RuntimeError:
        return None, seconds, f"output grid {list(sr.shape)} differs from the reference's {list(hr.shape)}"
    sr = sr.replace(array=np.asarray(sr.array, dtype=np.float32))
    return sr, seconds, f"budget {eclare.minutes:g} min; {options}"


def eclare_budget(minutes: float | None, specs: list[ModelSpec]) -> float:
    """ECLARE's minutes per run: as given, else the longest training wall time among the models
    (an equal time budget), else 15."""
    if minutes is not None:
        return minutes
    times = [s.wall_time_s for s in specs if isinstance(s.wall_time_s, (int, float))]
    return math.ceil(max(times) / 60.0) if times else 15.0


# --------------------------------------------------------------------------- one case


def baseline_rows(protocol: Protocol, hr: Volume, index: int, mask: np.ndarray) -> tuple[Volume, list[Row]]:
    """The LR the protocol delivers (what models get) and the interpolation rows, baseline first."""
    nominal = protocol.acquisition.nominal()
    lr = simulate(hr, nominal, index)
    axis = int(lr.meta["degradation"]["slice_axis"])
    rows = []
    if in_plane_loss(lr, hr):
        for reconstruction, method, label in (("zerofilled", ZERO_FILLED, "PADDED"), ("acquired", TRICUBIC, "CUBIC")):
            low = simulate(hr, dataclasses.replace(nominal, reconstruction=reconstruction), index)
            image, seconds = interpolate(low, hr)
            note = ("in-plane zero-filled by the scanner (simulated), cubic through-plane" if method == ZERO_FILLED
                    else f"from the acquired grid {' x '.join(map(str, low.shape))}")
            rows.append(Row(method, *score(hr, image, mask, axis, method), seconds, note, image, label))
    else:
        image, seconds = interpolate(lr, hr)
        rows.append(Row(TRICUBIC, *score(hr, image, mask, axis, TRICUBIC), seconds, "", image, "CUBIC"))
    return lr, rows


def model_row(spec: ModelSpec, number: int, case: Case, mask: np.ndarray, device: torch.device,
              volume_sha256: str | None) -> Row:
    """One model's row (its figure column is ``SR<number>``)."""
    axis = int(case.lr.meta["degradation"]["slice_axis"])
    sr, seconds = run_model(spec, case.lr, case.hr, device)
    return Row(spec.arg, *score(case.hr, sr, mask, axis, spec.arg), seconds,
               applicability(spec, case.lr, case.hr, volume_sha256), sr, f"SR{number}")


def eclare_row(eclare: Eclare, case: Case, mask: np.ndarray, device: torch.device) -> Row:
    """ECLARE's row: measured, or why not."""
    if eclare.command is None:
        return Row(ECLARE, note="not installed")
    if case.protocol.name not in eclare.protocols:
        return Row(ECLARE, note="not run on this protocol (--eclare-protocols)")
    params = case.protocol.acquisition.nominal()
    workdir = WORK / "eclare" / f"{case.protocol.name}_{case.volume}"
    sr, seconds, note = run_eclare(eclare, case.lr, case.hr, params, device, workdir)
    if in_plane_loss(case.lr, case.hr):
        note = f"through-plane only; {note}"
    if sr is None:
        return Row(ECLARE, seconds=seconds, note=note)
    axis = int(case.lr.meta["degradation"]["slice_axis"])
    return Row(ECLARE, *score(case.hr, sr, mask, axis, ECLARE), seconds, note, sr, "ECLARE")


def run_case(protocol: Protocol, hr: Volume, volume: str, index: int, specs: list[ModelSpec], eclare: Eclare,
             device: torch.device, volume_sha256: str | None) -> Case:
    """Every method on one protocol and test volume."""
    mask = resolve_mask(hr, "auto")
    lr, rows = baseline_rows(protocol, hr, index, mask)
    case = Case(protocol, volume, hr, lr, rows[0].method, rows)
    for number, spec in enumerate(specs, start=1):
        print(f"  {protocol.name}: {spec.arg} ...", flush=True)
        case.rows.append(model_row(spec, number, case, mask, device, volume_sha256))
    case.rows.append(eclare_row(eclare, case, mask, device))
    return case


# --------------------------------------------------------------------------- output


def volume_stem(path: Path) -> str:
    """A volume's file name without its extensions (``mni152_2009a_T1w``)."""
    return path.name.split(".")[0]


def find_row(case: Case, method: str) -> Row:
    return next(r for r in case.rows if r.method == method)


def _number(value: float | None, digits: int, sign: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def case_title(case: Case) -> str:
    """``protocol on volume (LR shape at spacing; baseline)``."""
    lr = case.lr
    whole = case.protocol.acquisition.in_plane is not None and not in_plane_loss(lr, case.hr)
    window = "; in-plane k-space matrix not reduced at this input's spacing" if whole else ""
    return (f"{case.protocol.name} on {case.volume} (LR {' x '.join(map(str, lr.shape))} at "
            f"{' x '.join(f'{s:.3g}' for s in lr.spacing)} mm{window}; baseline: {case.baseline})")


def markdown_table(case: Case) -> str:
    """Rows = methods; PSNR (dB), SSIM, PSNR gain over the baseline (dB), seconds, note."""
    base = find_row(case, case.baseline).psnr_db
    lines = [f"| method | PSNR (dB) | SSIM | dPSNR vs {case.baseline} (dB) | seconds | note |",
             "|---|---:|---:|---:|---:|---|"]
    for r in case.rows:
        gain = None if r.psnr_db is None or base is None else r.psnr_db - base
        lines.append(f"| {r.method} | {_number(r.psnr_db, 2)} | {_number(r.ssim, 4)} | {_number(gain, 2, True)} "
                     f"| {_number(r.seconds, 1)} | {r.note} |")
    return "\n".join(lines)


def goal_verdict(cases: list[Case], held_out: str, quick: bool) -> str:
    """The issue's goal on the held-out volume at thick-slice-x4: met, or short by how much; and ECLARE."""
    head = f"Goal: the best model at least +{GOAL_DB:.1f} dB PSNR over tricubic on {held_out} at {GOAL_PROTOCOL}"
    case = next((c for c in cases if c.protocol.name == GOAL_PROTOCOL and c.volume == held_out), None)
    if case is None:
        return f"{head}: not measured (this run did not include that case)."
    models = [r for r in case.rows if r.label.startswith("SR") and r.psnr_db is not None and "TRAINED" not in r.note]
    if not models:
        return f"{head}: not measured (no model was given and none ships)."
    best = max(models, key=lambda r: r.psnr_db or -math.inf)
    gain = (best.psnr_db or 0.0) - (find_row(case, TRICUBIC).psnr_db or 0.0)
    verdict = "met" if gain >= GOAL_DB else f"not met (short by {GOAL_DB - gain:.2f} dB)"
    text = f"{head}: **{verdict}**; best model `{best.method}`: {gain:+.2f} dB."
    eclare = find_row(case, ECLARE)
    if eclare.psnr_db is not None:
        lead = (best.psnr_db or 0.0) - eclare.psnr_db
        text += f" Ahead of ECLARE at an equal time budget: {'yes' if lead > 0 else 'no'} ({lead:+.2f} dB)."
    else:
        text += f" Ahead of ECLARE at an equal time budget: not measured (ECLARE {eclare.note})."
    return text + (" (--quick crop: indicative only, not the goal's measurement.)" if quick else "")


def figure_panels(case: Case) -> tuple[list[tuple[str, np.ndarray, str]], tuple[float, float], float, np.ndarray]:
    """What the figures show, cropped to the mask's bounding box (4 voxels of margin): ``(name, volume,
    kind)`` for LR, each interpolation, each SR, HR, then the baseline's and each SR's |error|; the
    intensity window (HR's 0.5-99.5 percentiles in the mask); the error maps' maximum (99.5th
    percentile of the errors in the mask); the voxel the views go through (the mask's centre)."""
    mask = resolve_mask(case.hr, "auto")
    found = np.argwhere(mask)
    lo = np.maximum(found.min(0) - 4, 0)
    hi = np.minimum(found.max(0) + 5, case.hr.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    hr = np.asarray(case.hr.array)[0]
    shown = [r for r in case.rows if r.image is not None]
    images = [("LR", _nearest_on_grid(case.lr, case.hr.shape))] + [(r.label, np.asarray(r.image.array)[0])
                                                                  for r in shown] + [("HR", hr)]
    errors = [(f"|{r.label}-HR|", np.abs(np.asarray(r.image.array)[0] - hr)) for r in shown
              if r.method == case.baseline or r.label.startswith("SR") or r.method == ECLARE]
    inside = hr[mask]
    window = (float(np.percentile(inside, 0.5)), float(np.percentile(inside, 99.5)))
    err_max = max(float(np.percentile(np.concatenate([e[mask] for _, e in errors]), 99.5)), 1e-6)
    panels = [(name, a[box], kind) for kind, group in (("image", images), ("error", errors)) for name, a in group]
    return panels, window, err_max, np.round(found.mean(0)).astype(int) - lo


def write_figures(case: Case, folder: Path, suffix: str = "") -> list[Path]:
    """One PNG per view, ``folder/<protocol>_<volume><suffix>_view<axis>.png``: the plane through the
    mask's centre perpendicular to voxel axis 0, 1, 2, drawn by mrisr.evaluate.report's figure code
    (a 3x zoomed inset of the centre below each panel). One PNG per view keeps each under 300 KB."""
    folder.mkdir(parents=True, exist_ok=True)
    panels, window, err_max, centre = figure_panels(case)
    case.figures = []
    for view in range(3):  # the crop keeps the axis directions: the HR affine orients every view
        image, _ = view_figure(panels, case.hr.affine, view, int(centre[view]), window, err_max)
        path = folder / f"{case.protocol.name}_{case.volume}{suffix}_view{view}.png"
        case.figures.append(write_png(path, image))
        if path.stat().st_size > 300_000:
            print(f"warning: {path} is {path.stat().st_size / 1e3:.0f} KB", flush=True)
    return case.figures


def figure_caption(case: Case) -> str:
    """What the figure's columns are (its font has no lowercase and few letters)."""
    names = ", ".join(f"{r.label} = {r.method}" for r in case.rows if r.image is not None)
    return (f"planes through the mask's centre perpendicular to voxel axes 0, 1, 2; columns LR (nearest "
            f"neighbour), {names}, HR, then absolute errors; second row: 3x zoom of the yellow box")


def results_entry(cases: list[Case], title: str, info: dict[str, str], notes: list[str], goal: str) -> str:
    """The markdown appended to RESULTS.md."""
    parts = [f"\n### {title}\n", "\n".join(f"- {k}: {v}" for k, v in info.items()), "", "\n".join(notes), "",
             goal, ""]
    for case in cases:
        parts += [f"#### {case_title(case)}\n", markdown_table(case), ""]
        if case.figures:
            links = " ".join(f"![{case.protocol.name}, view {i}]({p.relative_to(HERE).as_posix()})"
                             for i, p in enumerate(case.figures))
            parts += [links + "\n", f"Figures: {figure_caption(case)}.", ""]
    return "\n".join(parts)


def append_results(text: str) -> None:
    """Append ``text`` to RESULTS.md, under this benchmark's section (added once)."""
    existing = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
    with open(RESULTS, "a", encoding="utf-8") as f:
        if SECTION not in existing:
            f.write(f"\n{SECTION}\n\nPSNR and SSIM inside the reference's foreground mask at each protocol's nominal "
                    "setting; see benchmarks/README.md for what each row is.\n")
        f.write(text)


# --------------------------------------------------------------------------- main


def command_line(argv: list[str]) -> str:
    """The command as typed from the repository root."""
    exe = Path(sys.executable)
    python = os.path.relpath(exe, REPO) if exe.is_relative_to(REPO) else str(exe)
    return shlex.join([python, os.path.relpath(Path(__file__).resolve(), REPO), *argv])


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", nargs="+", type=Path, default=[HELD_OUT], help="HR test volumes (held out)")
    parser.add_argument("--protocols", nargs="+", help="default: every shipped protocol (mrisr protocols)")
    parser.add_argument("--model", action="append", help="NAME or PATH, repeatable (default: every shipped model)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (models and ECLARE)")
    parser.add_argument("--eclare", metavar="CMD", help="ECLARE's command (default: run-eclare on PATH)")
    parser.add_argument("--eclare-minutes", type=float,
                        help="wall-time budget per ECLARE run (default: the models' longest training wall time)")
    parser.add_argument("--eclare-patches", type=int, help="ECLARE's --n-patches (default: its own, 1,000,000)")
    parser.add_argument("--eclare-protocols", nargs="+", default=[GOAL_PROTOCOL], help="where ECLARE runs")
    parser.add_argument("--quick", nargs="?", type=int, const=64, metavar="N", help="crop volumes to N^3 (64)")
    parser.add_argument("--figures", nargs="*", default=list(FIGURE_PROTOCOLS), help="protocols with a figure")
    parser.add_argument("--write", action="store_true", help="append to RESULTS.md and write the figures")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    device = resolve_device(args.device)
    protocols = [load_protocol(p) for p in args.protocols] if args.protocols else list_protocols()
    specs = [describe_model(m) for m in (args.model or list(SHIPPED_MODELS))]
    eclare = Eclare(find_eclare(args.eclare), eclare_budget(args.eclare_minutes, specs), args.eclare_patches,
                    frozenset(args.eclare_protocols))
    cases = []
    for index, path in enumerate(args.volumes):
        hr = load_test_volume(path, args.quick)
        digest = sha256_file(path)
        for protocol in protocols:
            case = run_case(protocol, hr, volume_stem(path), index, specs, eclare, device, digest)
            if args.write and protocol.name in args.figures:
                write_figures(case, FIGURES, "_quick" if args.quick else "")
            print(f"\n{case_title(case)}\n{markdown_table(case)}\n", flush=True)
            cases.append(case)
    goal = goal_verdict(cases, volume_stem(HELD_OUT), bool(args.quick))
    print(goal)
    if args.write:
        threads = f" ({torch.get_num_threads()} torch threads)" if device.type == "cpu" else ""
        info = {**machine_info(), "device": f"{device}{threads}", "command": f"`{command_line(argv)}`"}
        notes = [f"- model `{s.arg}`: {s.spatial_dims}D, protocol {s.protocol}, trained for "
                 f"{_number(s.wall_time_s and s.wall_time_s / 60.0, 1)} min" for s in specs]
        notes.append(f"- ECLARE: {shlex.join(eclare.command)}, budget {eclare.minutes:g} min per run, "
                     f"--n-patches {eclare.patches or 'default'}" if eclare.command else "- ECLARE: not installed")
        crop_note = f", central {args.quick}^3 crop" if args.quick else ""
        volumes = ", ".join(p.name for p in args.volumes)
        title = f"Quality at each protocol's nominal setting: {volumes}{crop_note}, seed {SEED}"
        append_results(results_entry(cases, title, info, notes, goal))
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
