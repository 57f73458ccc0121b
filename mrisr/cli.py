"""The ``mrisr`` command. Each subcommand parses its arguments, then calls the API.

Errors from bad input (:class:`~mrisr.errors.MrisrError`) print one line naming
the file, the problem and the fix, and exit with status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import InputError, MrisrError, OutputError
from .infer.precision import PRECISIONS
from .io import FORMATS, load, output_format, save
from .io.atomic import check_writable
from .io.formats import SCENE_ENDING
from .volume import Volume

__all__ = ["main", "info_summary"]

#: Exit status for bad input or arguments (argparse uses 2 as well).
EXIT_BAD_INPUT = 2
#: Exit status for an unexpected internal error (a bug: please report it).
EXIT_INTERNAL = 1


def info_summary(volume: Volume, series: list[dict[str, Any]]) -> dict[str, Any]:
    """The geometry summary that ``mrisr info --json`` prints.

    Keys: ``format``, ``shape`` (X, Y, Z), ``n_volumes``, ``spacing`` (mm per voxel
    axis), ``axcodes``, ``affine`` (4x4 RAS), ``corners`` (8 x 3, mm, RAS, outer
    voxel faces), ``range`` ([min, max]), ``series`` (DICOM series found), plus
    ``dtype`` and ``series_id`` (the DICOM series read, else null).
    """
    return {
        "format": volume.meta.get("source_format", "unknown"),
        "shape": list(volume.shape),
        "n_volumes": volume.n_channels,
        "spacing": [float(s) for s in volume.spacing],
        "axcodes": "".join(volume.axcodes),
        "affine": np.asarray(volume.affine).tolist(),
        "corners": volume.corners.tolist(),
        "range": [float(np.min(volume.array)), float(np.max(volume.array))],
        "dtype": volume.meta.get("dtype"),
        "series_id": volume.meta.get("series_id"),
        "series": series,
    }


def _format_info(path: str, summary: dict[str, Any]) -> str:
    def row(values: Sequence[float]) -> str:
        return "  ".join(f"{v:10.4f}" for v in values)

    lines = [
        f"path        {path}",
        f"format      {summary['format']}"
        + (f" (series {summary['series_id']})" if summary["series_id"] else ""),
        "shape       " + " x ".join(str(n) for n in summary["shape"])
        + (f"  ({summary['n_volumes']} volumes)" if summary["n_volumes"] > 1 else ""),
        "spacing     " + " x ".join(f"{s:.4f}" for s in summary["spacing"]) + " mm",
        f"axcodes     {summary['axcodes']}",
        f"range       {summary['range'][0]:g} .. {summary['range'][1]:g}  (values fit {summary['dtype']})",
        "affine      (voxel index -> RAS mm)",
        *(f"            {row(r)}" for r in summary["affine"][:3]),
        "corners     (field of view, RAS mm)",
        *(f"            {row(c)}" for c in summary["corners"]),
    ]
    if summary["series"]:
        lines.append(f"series      {len(summary['series'])} found")
        for s in summary["series"]:
            lines.append(f"            {s['summary']}")
    return "\n".join(lines)


def _series_rows(found: Sequence[Any]) -> list[dict[str, Any]]:
    """``info``'s listing of the series in an input: id, description, slices, orientation, spacing."""
    return [{**s.as_dict(), "summary": s.summary(), "plane": s.plane()} for s in found]


def _format_series_listing(path: str, rows: list[dict[str, Any]]) -> str:
    lines = [f"path        {path}",
             f"series      {len(rows)} found; `mrisr info PATH --series ID` shows one's geometry",
             f"  {'#':>4s}  {'description':24s} {'slices':>10s}  {'orientation':28s} {'axes':4s} "
             f"{'spacing (mm)':22s} id"]
    for r in rows:
        count = r["n_slices"] or r["n_images"]
        slices = f"{count}" + (f" x {r['n_volumes']}" if r["n_volumes"] and r["n_volumes"] > 1 else "")
        spacing = " x ".join(f"{v:.3g}" for v in r["spacing"]) if r["spacing"] else "-"
        number = "?" if r["number"] is None else str(r["number"])
        lines.append(f"  {number:>4s}  {r['description'][:24]:24s} {slices:>10s}  {r['plane'][:28]:28s} "
                     f"{r['axcodes']:4s} {spacing:22s} {r['id']}")
        if r["problem"]:
            lines.append(f"  {'':4s}  would not load: {r['problem']}")
    return "\n".join(lines)


def _cmd_info(args: argparse.Namespace) -> int:
    from .errors import SeveralSeriesError

    try:
        volume = load(args.path, series=args.series)
    except SeveralSeriesError as exc:  # a folder of several series: list them, that is the information asked for
        rows = _series_rows(exc.series)
        if args.json:
            print(json.dumps({"path": str(args.path), "format": "dicom", "series_id": None, "series": rows},
                             indent=2))
        else:
            print(_format_series_listing(str(args.path), rows))
        return 0
    series = [dict(s.as_dict(), summary=s.summary()) for s in volume.meta.get("series_found", [])]
    summary = info_summary(volume, series)
    if args.json:
        print(json.dumps({"path": str(args.path), **summary}, indent=2))
    else:
        print(_format_info(str(args.path), summary))
    return 0


def _output_kind(path: Path, fmt: str | None) -> str:
    """What ``save`` makes at ``path``: a DICOM series folder (``"series"``) or a file (``check_writable``'s kind)."""
    return "series" if output_format(Path(path), fmt) == "dicom" else "file"


def _cmd_convert(args: argparse.Namespace) -> int:
    check_writable(args.output, args.force, [args.input], kind=_output_kind(args.output, args.format))  # before reading
    volume = load(args.input, series=args.series)
    out = save(volume, args.output, format=args.format, force=args.force)
    if not args.quiet:
        print(f"wrote {out} ({args.format or 'by extension'}; shape {' x '.join(map(str, volume.shape))})")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2), like every other mrisr error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"mrisr: error: {self.prog}: {message}. Fix: see `{self.prog} --help`.", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def _device(spec: str) -> str:
    """The device a command runs on (see :func:`mrisr.device.resolve_device`), as text."""
    from .device import resolve_device

    return str(resolve_device(spec))


def _cmd_simulate(args: argparse.Namespace) -> int:
    import secrets
    import time

    from .export.sidecar import sha256_file, sidecar_path, write_sidecar

    sidecar = sidecar_path(args.output)
    # before any work or heavy import
    check_writable(args.output, args.force, [args.input], kind=_output_kind(args.output, args.format))
    check_writable(sidecar, args.force, [args.input], kind="file")

    import torch

    from .kspace.degrade import degrade
    from .protocol import load_protocol

    protocol = load_protocol(args.protocol)
    if args.seed is not None and not 0 <= args.seed < 2**63:
        raise InputError(f"seed {args.seed} is outside [0, 2**63)", "--seed", "give a smaller non-negative integer")
    device = _device(args.device)
    volume = load(args.input)
    seed = args.seed if args.seed is not None else secrets.randbits(62)
    generator = torch.Generator().manual_seed(seed)
    acquisition = protocol.acquisition
    params = acquisition.sample(generator) if args.random else acquisition.nominal()
    start = time.perf_counter()
    low = degrade(volume, params, generator, device=device)
    seconds = time.perf_counter() - start
    out = save(low, args.output, format=args.format, force=args.force)
    record = {
        "mrisr_version": __version__,
        "command": "simulate",
        "protocol": {"name": protocol.name, "path": protocol.source, "sha256": sha256_file(protocol.source)},
        "seed": seed,
        "nominal": not args.random,
        "drawn_from_training_ranges": bool(args.random),
        "parameters": low.meta["degradation"],
        "input": {"path": str(args.input), "sha256": sha256_file(args.input),
                  "shape": list(volume.shape), "spacing_mm": [float(x) for x in volume.spacing],
                  **({"slice_grid": volume.meta["slice_grid"]} if volume.meta.get("slice_grid") else {})},
        "output": {"path": str(out), "shape": list(low.shape), "spacing_mm": [float(x) for x in low.spacing]},
        "device": device,
        "torch_version": torch.__version__,  # the random stream depends on it
        "seconds": round(seconds, 3),
    }
    write_sidecar(out, record, force=args.force)
    if not args.quiet:
        print(f"wrote {out} ({' x '.join(map(str, low.shape))} at "
              f"{' x '.join(f'{x:.3g}' for x in low.spacing)} mm) and {sidecar}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    # before the training stack is imported (seconds); train() checks again
    check_writable(args.out, sources=[*args.data, *(args.val or [])], folder=True)
    from .train.engine import train

    run = train(
        args.protocol, args.data, args.out, val=args.val, epochs=args.epochs, max_steps=args.max_steps,
        max_seconds=None if args.max_minutes is None else 60.0 * args.max_minutes,
        device=args.device, resume=args.resume, seed=args.seed, num_workers=args.workers,
        command=["mrisr", *sys.argv[1:]] if sys.argv and sys.argv[0].endswith("mrisr") else None,
        progress=not args.quiet, init=args.init, precision=args.precision,
    )
    if not args.quiet:
        print(f"run directory: {run} (best model: {run / 'best' / 'model.safetensors'})")
    return 0


def _cmd_upscale(args: argparse.Namespace) -> int:
    from .export import sidecar_path
    from .infer.job import check_outputs, upscale_file

    check_outputs(args.input, args.output, fmt=args.format, force=args.force)  # before torch is imported

    summary = upscale_file(args.input, args.output, model=args.model, spacing=args.spacing, scale=args.scale,
                           fmt=args.format, device=args.device, force=args.force, series=args.series,
                           progress=not args.quiet, precision=args.precision)
    if args.json:
        print(json.dumps(summary, indent=2))
    elif not args.quiet:
        out = summary["output"]
        print(f"wrote {out['path']} ({' x '.join(map(str, out['shape']))} at "
              f"{' x '.join(f'{x:.3g}' for x in out['spacing_mm'])} mm) and {sidecar_path(args.output)}")
    if summary["model"].get("perceptual"):
        print(f"warning: {summary['model']['name']} is a perceptual model: {summary['upscale']['perceptual_note']}",
              file=sys.stderr)
    return 0


def _cmd_export_slicer(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.suffix.lower() != SCENE_ENDING:
        raise OutputError(f"a Slicer scene bundle must end in .mrb, got {out.name!r}", out, "name it <scene>.mrb")
    check_writable(out, args.force, args.inputs, kind="file")  # before any loading: exists, an input, read-only...
    from .export import write_mrb
    from .infer.job import volume_name

    if args.names is not None and len(args.names) != len(args.inputs):
        raise InputError(f"{len(args.names)} names for {len(args.inputs)} inputs", "--names",
                         "give one name per input")
    names = list(args.names) if args.names is not None else []
    if not names:
        for path in args.inputs:
            name, n = volume_name(path), 1
            while (f"{name}_{n}" if n > 1 else name) in names:
                n += 1
            names.append(f"{name}_{n}" if n > 1 else name)
    volumes = [load(path) for path in args.inputs]
    written = write_mrb(out, volumes, names=names, difference=args.difference, force=args.force)
    if not args.quiet:
        print(f"wrote {written} ({len(volumes)} volumes{' and their difference' if args.difference else ''}: "
              f"{', '.join(names)})")
    return 0


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    check_writable(args.output, args.force, kind="file")  # before torch is imported; export_onnx checks again
    from .infer.onnx import export_onnx

    path = export_onnx(args.model, args.output, opset=args.opset, force=args.force)
    if not args.quiet:
        print(f"wrote {path} (checked against torch with onnxruntime)")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    if args.report is not None:  # before any work
        check_writable(args.report, args.force, [args.reference, args.prediction])
        if Path(args.report).is_dir() and not Path(args.report).is_symlink():
            from .evaluate.report import check_replaceable_report

            check_replaceable_report(Path(args.report))
    from .evaluate import evaluate
    from .export.sidecar import json_ready
    from .infer.grid import coarse_axis
    from .preprocess import cubic_baseline

    reference = load(args.reference)
    prediction = load(args.prediction)
    names = (str(args.reference), str(args.prediction))
    mask: Any = "auto" if args.mask == "auto" else load(args.mask)
    low = cubic = None
    if args.low_resolution is not None:
        low = load(args.low_resolution)
        try:
            cubic = cubic_baseline(low, reference, meta={"source_paths": [f"cubic({args.low_resolution})"]})
        except MrisrError as exc:
            raise InputError(f"is not a thick-slice version of the reference's field of view ({exc.problem})",
                             args.low_resolution, "give the low-resolution scan the prediction was made from") from exc
    axis = args.axis if args.axis is not None else (
        coarse_axis(low.affine, low.shape, reference.affine, reference.shape) if low is not None else 2)
    metrics = {"reference": str(args.reference), "prediction": str(args.prediction),
               "mask": "auto" if args.mask == "auto" else str(args.mask),
               **evaluate(reference, prediction, mask, axis=axis, names=names)}
    if cubic is not None:
        metrics["low_resolution"] = str(args.low_resolution)
        metrics["cubic"] = evaluate(reference, cubic, mask, axis=axis, names=(names[0], "the cubic baseline"))
    if args.report is not None:
        from .evaluate.report import write_report

        metrics["report"] = str(write_report(args.report, reference, prediction, low_resolution=low, cubic=cubic,
                                             metrics=metrics, mask=mask, force=args.force))
    if args.json:
        print(json.dumps(json_ready(metrics, nan=None), indent=2))
    elif not args.quiet:
        rows = [("prediction", metrics)] + ([("cubic", metrics["cubic"])] if cubic is not None else [])
        print(f"{'':12s} {'PSNR dB':>9s} {'SSIM':>8s} {'NRMSE':>8s}")
        for label, m in rows:
            print(f"{label:12s} {m['psnr_db']:9.3f} {m['ssim']:8.4f} {m['nrmse']:8.4f}")
        if cubic is not None:
            print(f"{'gain':12s} {metrics['psnr_db'] - metrics['cubic']['psnr_db']:+9.3f} "
                  f"{metrics['ssim'] - metrics['cubic']['ssim']:+8.4f}")
        print(f"mask: {metrics['mask']} ({metrics['mask_voxels']} voxels, {100 * metrics['mask_fraction']:.1f} %); "
              f"per-slice PSNR along voxel axis {axis}")
        if args.report is not None:
            print(f"report: {metrics['report']}/index.html")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, model=args.model, device=args.device, force=args.force, log=None if args.quiet else print)
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import ANISOTROPIC, THICK_SLICE, model_summary, shipped_models

    rows = [model_summary(path) for path in shipped_models().values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no models ship with this installation; give upscale --model a checkpoint (mrisr train writes them)")
        return 0
    defaults = {THICK_SLICE: "through-plane loss", ANISOTROPIC: "other 3D inputs"}
    print(f"{'name':16s} {'dims':>4s} {'params':>8s} {'size':>9s} {'weights':>7s} {'val PSNR':>9s} {'gain':>7s}  "
          "protocol / intended input")
    for row in rows:
        if "error" in row:
            print(f"{row['name']:16s} unreadable: {row['error']}")
            continue
        val = row.get("validation") or {}
        psnr, gain = val.get("psnr_db"), val.get("gain_db")
        size = row.get("weights_bytes")
        print(f"{row['name']:16s} {str(row.get('spatial_dims')) + 'D':>4s} {row.get('parameters') or 0:8d} "
              f"{(size or 0) / 1e6:7.2f}MB {str(row.get('weights_dtype'))[-7:]:>7s} "
              f"{f'{psnr:.2f}dB' if isinstance(psnr, (int, float)) else '-':>9s} "
              f"{f'{gain:+.2f}' if isinstance(gain, (int, float)) else '-':>7s}  {row.get('protocol') or '-'}")
        intended = row.get("intended_input") or {}
        text = intended.get("summary") if isinstance(intended, dict) else intended
        if text:
            print(f"{'':16s} for: {text}")
        if row["name"] in defaults:
            print(f"{'':16s} default for {defaults[row['name']]} (upscale without --model)")
    return 0


def _cmd_protocols(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .protocol import list_protocols, load_protocol

    if args.name is None:
        for protocol in list_protocols():
            print(f"{protocol.name:28s} {protocol.description}")
        return 0
    protocol = load_protocol(args.name)  # an unknown name names the close matches
    nominal = asdict(protocol.acquisition.nominal())
    if args.json:
        print(json.dumps({"name": protocol.name, "description": protocol.description, "path": protocol.source,
                          "nominal": nominal}, indent=2, default=str))
        return 0
    print(f"{protocol.name}: {protocol.description}\nfile        {protocol.source}\nnominal acquisition "
          "(mrisr simulate without --random):")
    for key, value in nominal.items():
        if value is not None:
            print(f"  {key:22s} {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    # --quiet goes before or after the subcommand; the subcommands' copy (default SUPPRESS)
    # must not reset it. Parents share action objects, hence one parent per default.
    def quiet(default: object) -> argparse.ArgumentParser:
        parent = argparse.ArgumentParser(add_help=False)
        parent.add_argument("--quiet", action="store_true", default=default, help="print only errors")
        return parent

    common = quiet(argparse.SUPPRESS)
    parser = _Parser(prog="mrisr", description="MRI super-resolution with exact geometry.", parents=[quiet(False)])
    parser.add_argument("--version", action="version", version=f"mrisr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    info = sub.add_parser("info", help="print a scan's geometry summary", parents=[common])
    info.add_argument("path", type=Path, help="NIfTI, NRRD, MHA file; DICOM file, folder or archive")
    info.add_argument("--series", help="DICOM series id (see the series list) when the input holds several")
    info.add_argument("--json", action="store_true", help="print JSON for machines")
    info.set_defaults(func=_cmd_info)

    convert = sub.add_parser("convert", help="convert between NIfTI, NRRD, MHA and DICOM", parents=[common])
    convert.add_argument("input", type=Path, help="NIfTI, NRRD, MHA file; DICOM file, folder or archive")
    convert.add_argument("output", type=Path, help="output file, or folder for --format dicom")
    convert.add_argument("--format", choices=sorted(FORMATS), help="default: from the extension")
    convert.add_argument("--series", help="DICOM series id when the input holds several")
    convert.add_argument("--force", action="store_true", help="replace an existing output")
    convert.set_defaults(func=_cmd_convert)

    simulate = sub.add_parser(
        "simulate", help="simulate a low-resolution acquisition of a high-resolution scan", parents=[common]
    )
    simulate.add_argument("input", type=Path, help="the high-resolution scan")
    simulate.add_argument("-o", "--output", type=Path, required=True, help="the low-resolution output")
    simulate.add_argument("--protocol", required=True, help="a shipped protocol name (mrisr protocols) or a .yaml")
    simulate.add_argument("--seed", type=int, help="random seed of the noise and of --random's draw "
                                                   "(default: drawn, and recorded in the sidecar)")
    setting = simulate.add_mutually_exclusive_group()
    setting.add_argument("--nominal", action="store_true",
                         help="the protocol's nominal acquisition, what its name says (the default)")
    setting.add_argument("--random", action="store_true",
                         help="draw the acquisition from the protocol's training ranges instead (seeded)")
    simulate.add_argument("--format", choices=sorted(FORMATS), help="default: from the extension")
    simulate.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    simulate.add_argument("--force", action="store_true", help="replace existing outputs")
    simulate.set_defaults(func=_cmd_simulate)

    train = sub.add_parser("train", help="train the protocol's network on simulated pairs", parents=[common])
    train.add_argument("protocol", help="a shipped protocol name (mrisr protocols) or a .yaml")
    train.add_argument("--data", nargs="+", required=True, type=Path, help="high-resolution training volumes")
    train.add_argument("--val", nargs="+", type=Path, help="validation volumes (nominal setting, whole volumes)")
    train.add_argument("--out", required=True, type=Path, help="the run directory")
    train.add_argument("--epochs", type=int, help="default: the protocol's train.epochs")
    train.add_argument("--max-steps", type=int, help="stop after this many iterations")
    train.add_argument("--max-minutes", type=float, help="stop after this much wall time")
    train.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--init", metavar="CHECKPOINT",
                       help="start from these weights (a shipped model's name, card, weights or run folder; "
                            "same network as the protocol's): fine-tuning")
    train.add_argument("--seed", type=int, default=0, help="seed of the patch and degradation draws (default 0)")
    train.add_argument("--workers", type=int, default=0, help="DataLoader workers preparing pairs")
    train.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="CPU network precision: auto (bfloat16 where the CPU has native bf16, else float32)")
    train.set_defaults(func=_cmd_train)

    up = sub.add_parser("upscale", help="super-resolve a scan with a trained model", parents=[common])
    up.add_argument("input", type=Path, help="the low-resolution scan (any format mrisr reads)")
    up.add_argument("-o", "--output", type=Path, required=True, help="output file, or folder for a DICOM series")
    up.add_argument("--model", default=None,
                    help="a shipped model's name (mrisr models), a model card (.json), weights (.safetensors) or run "
                         "directory (default: the shipped default for the input's voxel spacing: vdsr2d-thick for "
                         "thick slices over a fine in-plane grid, else vdsr3d)")
    grid = up.add_mutually_exclusive_group()
    grid.add_argument("--spacing", type=float, nargs="+", metavar="MM", help="target spacing: one value or three")
    grid.add_argument("--scale", type=float, nargs="+", metavar="F", help="upsampling factor per voxel axis")
    up.add_argument("--format", choices=[*sorted(FORMATS), "mrb"],
                    help="default: DICOM for DICOM input, else the extension; mrb: a 3D Slicer scene with the "
                         "input and the result")
    up.add_argument("--series", help="DICOM series id when the input holds several")
    up.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    up.add_argument("--precision", choices=PRECISIONS, default="auto",
                    help="CPU network precision: auto (bfloat16 where the CPU has native bf16, else float32)")
    up.add_argument("--force", action="store_true", help="replace existing outputs")
    up.add_argument("--json", action="store_true", help="print the summary (the sidecar's content) as JSON")
    up.set_defaults(func=_cmd_upscale)

    onnx = sub.add_parser("export-onnx", help="export a model to ONNX (checked with onnxruntime)", parents=[common])
    onnx.add_argument("model", help="what upscale --model takes: a shipped model's name (mrisr models), a training "
                                    "run folder, a checkpoint folder, its .json card or .safetensors weights")
    onnx.add_argument("-o", "--output", type=Path, required=True, help="the .onnx file to write")
    onnx.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 to 20 (default 17)")
    onnx.add_argument("--force", action="store_true", help="replace an existing output")
    onnx.set_defaults(func=_cmd_export_onnx)

    slicer = sub.add_parser("export-slicer", help="bundle volumes as a 3D Slicer scene (.mrb)", parents=[common])
    slicer.add_argument("inputs", nargs="+", type=Path, metavar="IN",
                        help="volumes (any format mrisr reads); the first is the background, the last the foreground")
    slicer.add_argument("-o", "--output", type=Path, required=True, help="the scene bundle, ending in .mrb")
    slicer.add_argument("--names", nargs="+", metavar="NAME", help="node names, one per input (default: file names)")
    slicer.add_argument("--difference", action="store_true",
                        help="add last minus first (both on the same grid) with a diverging colour table")
    slicer.add_argument("--force", action="store_true", help="replace an existing output")
    slicer.set_defaults(func=_cmd_export_slicer)

    ev = sub.add_parser("evaluate", help="PSNR, SSIM and NRMSE of a result against a reference", parents=[common])
    ev.add_argument("--reference", type=Path, required=True, help="the high-resolution ground truth (HR)")
    ev.add_argument("--prediction", type=Path, required=True, help="the result to judge (SR), on the HR grid")
    ev.add_argument("--mask", default="auto",
                    help="auto (HR above 10%% of its 99th percentile) or a mask volume on the HR grid")
    ev.add_argument("--low-resolution", type=Path, metavar="LR",
                    help="the thick-slice input: adds the tricubic baseline and the LR panels to the report")
    ev.add_argument("--axis", type=int, choices=(0, 1, 2),
                    help="voxel axis of the per-slice curve (default: LR's coarse axis, else 2)")
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")
    ev.add_argument("--report", type=Path, metavar="DIR", help="write PNG figures and index.html into this new folder")
    ev.add_argument("--force", action="store_true", help="replace an existing report folder")
    ev.set_defaults(func=_cmd_evaluate)

    demo = sub.add_parser("demo", help="simulate thick slices of the sample brain, upscale, score and draw them "
                                       "(what make demo runs)", parents=[common])
    demo.add_argument("--out", type=Path, default=Path("demo-output"), help="the new output folder")
    demo.add_argument("--model", help="a model card, checkpoint folder or shipped name (default: the default model)")
    demo.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    demo.add_argument("--force", action="store_true", help="replace the folder an earlier demo wrote")
    demo.set_defaults(func=_cmd_demo)

    models = sub.add_parser("models", help="list the shipped models (upscale --model NAME)", parents=[common])
    models.add_argument("--json", action="store_true", help="print JSON for machines")
    models.set_defaults(func=_cmd_models)

    from .batch.command import add_parser as add_batch_parser

    add_batch_parser(sub, common)

    protocols = sub.add_parser("protocols", help="list the shipped acquisition protocols, or show one",
                               parents=[common])
    protocols.add_argument("name", nargs="?", help="show this protocol's nominal acquisition (a name or a .yaml)")
    protocols.add_argument("--json", action="store_true", help="print the protocol shown as JSON")
    protocols.set_defaults(func=_cmd_protocols)
    return parser


def _one_line_warnings(quiet: bool) -> None:
    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if not quiet:
            text = " ".join(str(message).split())
            print(f"mrisr: warning: {text}", file=sys.stderr)

    warnings.showwarning = show


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mrisr`` command; returns the exit status (0 ok, 2 bad input, 1 bug)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        # pydicom's value-validation chatter (over-long strings scanners write) changes nothing here
        warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
        _one_line_warnings(args.quiet)
        try:
            return int(args.func(args))
        except MrisrError as exc:
            print(f"mrisr: error: {exc.one_line()}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except BrokenPipeError:  # output piped into `head`, say
            return 0
        except KeyboardInterrupt:
            print("mrisr: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:  # a bug: one line, no traceback, ask for a report
            text = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            print(f"mrisr: internal error: {text} (please report it)", file=sys.stderr)
            return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
