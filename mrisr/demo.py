"""The demo (``mrisr demo``, what ``make demo`` runs): the product's main job on the bundled sample.

1. Load the sample brain (:data:`SAMPLE`: the MNI152 2009a T1w template, 197 x 233 x 189 voxels
   of 1 mm, held out of model training; licence in ``NOTICE`` and ``mrisr/data/README.md``).
2. Simulate a clinical thick-slice acquisition of it exactly as ``mrisr simulate --protocol
   thick-slice-x4 --nominal --seed 0`` does (:func:`mrisr.kspace.degrade` with the protocol's
   nominal setting): 4 mm axial slices (4x the sample's 1 mm spacing), rectangular profile,
   no gap, no noise. Why this protocol and not ``brain-t1-axial-5mm``: it is the benchmark
   setting (``benchmarks/RESULTS.md`` reports the shipped models against tricubic there, and the
   demo's numbers can be read against that table); it is noise-free, so the numbers are the
   same on every machine; and its 4 mm slices lie inside the default 2D model's training range
   (2-6 mm), whereas the 5 mm protocol adds a 1 mm gap, SNR-40 noise and a k-space in-plane
   step that mix through-plane recovery with denoising.
3. Upscale the thick-slice scan back to the sample's 1 mm grid with the **default model**
   (:func:`mrisr.infer.upscale` with ``model=None``: the shipped model that fits the input's
   anisotropy), and interpolate it tricubically (:func:`mrisr.preprocess.cubic_baseline`) as the
   baseline; both are clamped to non-negative values for a non-negative (magnitude) input, as the
   cubic kernel overshoots below zero at edges.
4. Score both against the 1 mm original with :func:`mrisr.evaluate.evaluate` (PSNR, SSIM, NRMSE
   in the brain mask) and draw the comparison with :func:`mrisr.evaluate.write_report`.

Everything lands in one new folder (default ``demo-output/``), written under a temporary name
and renamed when complete, so the folder is either the whole result or absent. An existing
folder is replaced only with ``force`` and only when an earlier demo wrote it (its
``demo.json`` says so). See :data:`OUTPUTS` for what the folder holds.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .errors import OutputError
from .evaluate import evaluate, write_report
from .export.sidecar import json_ready, sha256_file
from .infer import upscale
from .infer.grid import coarse_axis
from .io import load, save
from .io.atomic import _check_not_a_protected_folder, _check_sources, _remove, _sibling, check_writable, replace_folder
from .kspace import degrade
from .models import default_model_name
from .preprocess import cubic_baseline
from .protocol import load_protocol
from .volume import Volume

__all__ = ["SAMPLE", "PROTOCOL", "SEED", "DEFAULT_OUT", "OUTPUTS", "DemoResult", "run_demo"]

#: The bundled sample: MNI152 2009a T1w, 1 mm isotropic, not used to train any shipped model.
SAMPLE = Path(__file__).resolve().parent / "data" / "sample_t1_mni152.nii.gz"
#: The simulated acquisition (its nominal setting; see the module docstring for why this one).
PROTOCOL = "thick-slice-x4"
#: Seed of the simulation's random stream (the nominal thick-slice-x4 setting draws nothing).
SEED = 0
#: Where ``mrisr demo`` writes unless told otherwise (relative to the working folder).
DEFAULT_OUT = Path("demo-output")
#: The files of a demo folder: name -> what it is. ``report/`` is :func:`mrisr.evaluate.write_report`'s folder.
OUTPUTS: dict[str, str] = {
    "lr_thick_slices.nii.gz": "the simulated thick-slice scan (the input)",
    "sr_mrisr.nii.gz": "the mrisr result on the 1 mm grid",
    "sr_mrisr_dicom": "the same, as a derived DICOM series",
    "tricubic.nii.gz": "the tricubic-interpolation baseline",
    "report": "comparison figures (LR, tricubic, SR, HR; zoomed insets, error maps)",
    "metrics.json": "PSNR, SSIM, NRMSE and per-slice PSNR of SR and tricubic",
    "demo.json": "what ran: sample, protocol, model, versions, timings",
}
#: Marks a folder that :func:`run_demo` wrote (``demo.json``'s ``generator``).
_GENERATOR = "mrisr demo"

Log = Callable[[str], None]


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` made.

    Attributes:
        out: the output folder.
        files: :data:`OUTPUTS`' names -> their paths (the report as its ``index.html``).
        metrics: :func:`mrisr.evaluate.evaluate` of SR against the sample, with the tricubic
            baseline's under ``"cubic"`` (what ``metrics.json`` holds).
        seconds: wall time per step (``load``, ``simulate``, ``upscale``, ``tricubic``, ``evaluate``, ``write``
            (the volumes), ``report`` (figures and ``metrics.json``), ``total``).
    """

    out: Path
    files: dict[str, Path]
    metrics: dict[str, Any]
    seconds: dict[str, float]


def _is_demo_folder(folder: Path) -> bool:
    """An earlier demo's folder: a real folder whose ``demo.json`` names the demo, holding only demo outputs."""
    if not folder.is_dir() or folder.is_symlink():
        return False
    try:
        record = json.loads((folder / "demo.json").read_text(encoding="utf-8"))
        names = {entry.name for entry in os.scandir(folder)}
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("generator") == _GENERATOR and names <= set(OUTPUTS)


def _check_output(out: Path, force: bool, sources: list[Path]) -> None:
    """Refuse, before any work, an output folder that may not be (re)written."""
    _check_not_a_protected_folder(out)
    _check_sources(out, sources)
    if os.path.lexists(out):
        if not force:
            raise OutputError("output already exists", out,
                              "pass --force to replace an earlier demo's folder, or choose another with --out")
        if not _is_demo_folder(out):
            raise OutputError("exists and is not a folder that mrisr demo wrote; refusing to replace it", out,
                              "choose another folder with --out")


def _commit(tmp: Path, out: Path, force: bool, sources: list[Path]) -> None:
    """Rename the finished folder ``tmp`` onto ``out``, moving an earlier demo's folder aside first."""
    _check_output(out, force, sources)  # again: it may have changed while the demo ran
    replace_folder(tmp, out)


def _mm(values: Any) -> str:
    return " x ".join(f"{float(v):.3g}" for v in values)


def _shape(volume: Volume) -> str:
    return " x ".join(map(str, volume.shape))


def _model_text(record: dict[str, Any], name: str) -> str:
    """How the summary names the model: its name, architecture and weights hash."""
    config = record.get("config") or {}
    arch = f"{record.get('name')} {config.get('spatial_dims', '?')}D"
    if "features" in config and "depth" in config:
        arch += f", {config['features']} features x {config['depth']} layers"
    sha = record.get("sha256")
    return f"{name} ({arch}{f', sha256 {sha[:12]}' if sha else ''})"


def run_demo(
    out: str | os.PathLike[str] = DEFAULT_OUT,
    *,
    sample: str | os.PathLike[str] = SAMPLE,
    model: torch.nn.Module | str | os.PathLike[str] | None = None,
    protocol: str = PROTOCOL,
    device: str = "auto",
    force: bool = False,
    log: Log | None = print,
) -> DemoResult:
    """Simulate, upscale and evaluate ``sample``; write everything into the new folder ``out``.

    Args:
        out: the output folder (created; see :data:`OUTPUTS`).
        sample: the high-resolution reference (default the bundled sample brain, 1 mm).
        model: ``None`` for the default model (what :func:`mrisr.infer.upscale` picks for the
            thick-slice input), else a network, checkpoint path or shipped model name.
        protocol: the simulated acquisition (a shipped name or a .yaml), at its nominal setting.
        device: ``auto`` (CUDA when there is one), ``cpu`` or ``cuda[:N]``; simulation and upscaling.
        force: replace ``out`` when an earlier demo wrote it (never another folder).
        log: prints the progress and the summary, one line per call: each step as it starts
            (``simulating``, ``upscaling``, ``interpolating``, ``scoring``, ``writing``, ``drawing``)
            and with its time (s) when done; also turns on upscaling's progress bar (planes or
            windows, with ETA, on stderr). ``None``: silent.

    Returns:
        A :class:`DemoResult`: the folder, its files, the metrics and the timings (s).

    Raises:
        OutputError: ``out`` exists (without ``force``, or not a demo's folder), is protected (the
            working folder, home, root) or cannot be written (a read-only or unwritable folder:
            :func:`mrisr.io.atomic.check_writable`); checked in milliseconds, before any work.
        InputError: an unreadable sample, protocol or model (e.g. no default model shipped).
    """
    say: Log = log if log is not None else (lambda _line: None)
    out, sample = Path(out), Path(sample)
    _check_output(out, force, [sample])
    # the folder is made beside ``out`` and renamed onto it, so the probe is in out's parent (folder=False)
    check_writable(out, force, [sample])
    from .device import resolve_device

    dev = resolve_device(device)
    seconds: dict[str, float] = {}
    start = clock = time.perf_counter()

    def lap(step: str) -> float:
        nonlocal clock
        now = time.perf_counter()
        seconds[step] = round(now - clock, 3)
        clock = now
        return seconds[step]

    hr = load(sample)
    lap("load")
    say(f"sample     {sample} ({_shape(hr)} voxels of {_mm(hr.spacing)} mm; {seconds['load']:.1f} s)")

    proto = load_protocol(protocol)
    say(f"simulating {proto.name} (nominal) from the sample on {dev} ...")
    lr = degrade(hr, proto.acquisition.nominal(), torch.Generator().manual_seed(SEED), device=dev)
    lap("simulate")
    say(f"simulated  {_shape(lr)} voxels of {_mm(lr.spacing)} mm ({seconds['simulate']:.1f} s)")

    requested = "default" if model is None else (type(model).__name__ if isinstance(model, torch.nn.Module)
                                                 else str(model))
    model_name = f"the default model {default_model_name(lr.spacing, lr.shape)}" if model is None else requested
    say(f"upscaling  to {_mm(hr.spacing)} mm with {model_name} on {dev}"
        f"{' (a few minutes on 2 CPU cores; progress in planes or windows on stderr)' if dev.type == 'cpu' else ''}"
        " ...")
    sr = upscale(lr, model, spacing=[float(s) for s in hr.spacing], device=dev, progress=log is not None)
    sr = sr.replace(meta={**sr.meta, "derivation": "mrisr super-resolution"})
    lap("upscale")
    say(f"upscaled   with {_model_text(sr.meta['upscale']['model'], model_name)}: {_shape(sr)} voxels "
        f"({seconds['upscale']:.1f} s)")

    say(f"interpolating tricubically onto the {_mm(hr.spacing)} mm grid (the baseline) ...")
    cubic = cubic_baseline(lr, hr)
    lap("tricubic")
    say(f"interpolated {_shape(cubic)} voxels ({seconds['tricubic']:.1f} s)")

    axis = coarse_axis(lr.affine, lr.shape, hr.affine, hr.shape)
    names = {name: out / name for name in OUTPUTS}
    say("scoring    SR and tricubic against the sample: PSNR, SSIM, NRMSE in the brain mask ...")
    metrics: dict[str, Any] = {
        "reference": str(sample), "prediction": str(names["sr_mrisr.nii.gz"]), "mask": "auto",
        **evaluate(hr, sr, "auto", axis=axis, names=(str(sample), "the mrisr result")),
        "low_resolution": str(names["lr_thick_slices.nii.gz"]),
        "cubic": evaluate(hr, cubic, "auto", axis=axis, names=(str(sample), "the tricubic baseline")),
    }
    lap("evaluate")
    say(f"scored     SR {metrics['psnr_db']:.2f} dB, tricubic {metrics['cubic']['psnr_db']:.2f} dB "
        f"({seconds['evaluate']:.1f} s)")

    tmp = _sibling(out, "tmp")
    try:
        tmp.mkdir(parents=True)
        say("writing    the thick-slice scan, the SR result (NIfTI and a DICOM series) and the tricubic baseline ...")
        save(lr, tmp / "lr_thick_slices.nii.gz")
        save(sr, tmp / "sr_mrisr.nii.gz")
        save(sr, tmp / "sr_mrisr_dicom", format="dicom")
        save(cubic, tmp / "tricubic.nii.gz")
        lap("write")
        say(f"wrote      4 volumes ({seconds['write']:.1f} s)")
        say("drawing    the report: LR, tricubic, SR and HR in three planes, zoomed insets, error maps, "
            "PSNR per slice ...")
        report_names = {"reference": str(sample), "low_resolution": str(names["lr_thick_slices.nii.gz"]),
                        "cubic": str(names["tricubic.nii.gz"]), "prediction": str(names["sr_mrisr.nii.gz"])}
        write_report(tmp / "report", hr, sr, low_resolution=lr, cubic=cubic, metrics=metrics, mask="auto",
                     names=report_names)
        (tmp / "metrics.json").write_text(json.dumps(json_ready(metrics, nan=None), indent=2) + "\n",
                                          encoding="utf-8")
        lap("report")
        say(f"drew       report/index.html ({seconds['report']:.1f} s)")
        seconds["total"] = round(time.perf_counter() - start, 3)
        record = {
            "generator": _GENERATOR,
            "mrisr_version": __version__,
            "torch_version": torch.__version__,
            "device": str(dev),
            "sample": {"path": str(sample), "sha256": sha256_file(sample), "shape": list(hr.shape),
                       "spacing_mm": [float(s) for s in hr.spacing]},
            "protocol": {"name": proto.name, "path": proto.source, "nominal": True, "seed": SEED,
                         "parameters": lr.meta["degradation"]},
            "model": {"requested": requested,
                      "default": default_model_name(lr.spacing, lr.shape), **sr.meta["upscale"]["model"]},
            "upscale": sr.meta["upscale"],
            "metrics": {"sr": {k: metrics[k] for k in ("psnr_db", "ssim", "nrmse")},
                        "tricubic": {k: metrics["cubic"][k] for k in ("psnr_db", "ssim", "nrmse")}},
            "files": dict(OUTPUTS),
            "seconds": seconds,
        }
        (tmp / "demo.json").write_text(json.dumps(json_ready(record, nan=None), indent=2) + "\n", encoding="utf-8")
        _commit(tmp, out, force, [sample])
    except BaseException:
        _remove(tmp)
        raise

    files = {name: (path / "index.html" if name == "report" else path) for name, path in names.items()}
    _summary(say, out, metrics, seconds)
    return DemoResult(out=out, files=files, metrics=metrics, seconds=seconds)


def _summary(say: Log, out: Path, metrics: dict[str, Any], seconds: dict[str, float]) -> None:
    """The closing lines: the scores against the 1 mm original and where everything is."""
    cubic = metrics["cubic"]
    say("")
    say(f"against the 1 mm original, in the brain   {'PSNR dB':>8s} {'SSIM':>8s}")
    say(f"  tricubic interpolation                  {cubic['psnr_db']:8.2f} {cubic['ssim']:8.4f}")
    say(f"  mrisr super-resolution                  {metrics['psnr_db']:8.2f} {metrics['ssim']:8.4f}")
    say(f"  gain                                    {metrics['psnr_db'] - cubic['psnr_db']:+8.2f} "
        f"{metrics['ssim'] - cubic['ssim']:+8.4f}")
    say("")
    say(f"wrote {out}/")
    for name, what in OUTPUTS.items():
        shown = f"{name}/index.html" if name == "report" else (f"{name}/" if "." not in name else name)
        say(f"  {shown:24s} {what}")
    say(f"done in {seconds['total']:.0f} s")
