"""Checkpoints: weights as safetensors and a JSON model card beside them. No pickle.

A checkpoint is two files in one folder::

    model.safetensors   the state dict (safetensors: a JSON header, then raw tensor bytes)
    model.json          the model card

The card says what the weights are and how they were made::

    {"format": "mrisr-model", "format_version": 1,
     "architecture": {"name": "vdsr", "config": {"spatial_dims": 3, ...}},
     "mrisr_version": "0.1.0",
     "weights": {"file": "model.safetensors", "sha256": "...", "bytes": 123},
     ...whatever the caller adds: protocol, training data with sha256, metrics,
        hardware, wall time, the exact command}

Loading never unpickles anything (``torch.load`` is never called): the card is JSON, the
architecture is rebuilt from :data:`mrisr.nets.NETWORKS` by name, and the weights are read
with ``safetensors`` after their sha256 matched the card's, so a changed or corrupt weights
file is refused before it is read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .. import __version__
from ..errors import InputError
from ..export.sidecar import json_ready, sha256_file
from ..io.atomic import atomic_output
from ..nets import build_network, network_name, unwrap

__all__ = ["FORMAT", "FORMAT_VERSION", "PERCEPTUAL_NOTE", "card_path", "is_perceptual", "load_checkpoint",
           "read_card", "save_checkpoint"]

#: The card's ``format`` field.
FORMAT = "mrisr-model"
#: The card's ``format_version`` this mrisr writes and reads.
FORMAT_VERSION = 1
#: What the card of a perceptual (adversarially trained, ``"perceptual": true``) model and every sidecar of
#: its outputs say.
PERCEPTUAL_NOTE = ("trained with perceptual and adversarial losses: the output may contain plausible detail that is "
                   "not in the acquisition; compare PSNR/SSIM and sharpness with a pixel-loss model before "
                   "reading fine structure")


def is_perceptual(card: dict[str, Any] | None) -> bool:
    """Whether a model card flags its model as perceptual (``"perceptual": true``: SRGAN-style training,
    may invent detail)."""
    return isinstance(card, dict) and card.get("perceptual") is True


#: Card fields that :func:`save_checkpoint` sets itself (a caller's values for them are replaced).
RESERVED = ("format", "format_version", "architecture", "mrisr_version", "weights")


def card_path(path: str | os.PathLike[str], name: str = "model") -> Path:
    """The card of a checkpoint given as its ``.json`` card, its ``.safetensors`` weights or its
    folder (``<folder>/<name>.json``)."""
    path = Path(path)
    if path.is_dir():
        return path / f"{name}.json"
    if path.suffix == ".safetensors":
        return path.with_suffix(".json")
    if path.suffix == ".json":
        return path
    raise InputError(
        "is not a checkpoint: give its .json model card, its .safetensors weights or its folder",
        path,
        "point at the checkpoint's folder or model card",
    )


def save_checkpoint(
    model: nn.Module,
    directory: str | os.PathLike[str],
    card: dict[str, Any],
    *,
    name: str = "model",
    force: bool = False,
) -> Path:
    """Write ``<directory>/<name>.safetensors`` and its model card ``<directory>/<name>.json``.

    Both files are written to temporary names first and renamed only once both are complete,
    weights first, so a reader never finds a half-written file.

    Args:
        model: a network from :data:`mrisr.nets.NETWORKS` (DDP and ``torch.compile``
            wrappers are looked through); its ``config`` goes into the card.
        directory: the checkpoint's folder (created if missing).
        card: the caller's fields (protocol, training data with sha256, metrics, hardware,
            wall time, command...); kept as given, except the fields in :data:`RESERVED`,
            which this function sets. Paths become text, numpy/torch scalars numbers and
            non-finite floats the strings ``'nan'``/``'inf'``.
        name: the files' stem.
        force: replace an existing checkpoint of that name.

    Returns:
        The path of the card (what :func:`load_checkpoint` takes).

    Raises:
        InputError: the model is not a registered network, or the card cannot be JSON.
        OutputError: a file exists and ``force`` is false, or a file cannot be written.
    """
    if not name or Path(name).name != name or name in (".", ".."):
        raise InputError(f"checkpoint name {name!r} must be a plain file stem", "name", "give e.g. 'model'")
    net = unwrap(model)
    arch = network_name(net)
    config = getattr(net, "config", None)
    if not isinstance(config, dict):
        raise InputError(f"{type(net).__name__} has no .config dict", "model", "keep the constructor arguments")
    directory = Path(directory)
    weights_path = directory / f"{name}.safetensors"
    json_path = directory / f"{name}.json"

    try:
        extra = json.loads(json.dumps(json_ready(dict(card)), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InputError(f"model card is not JSON: {exc}", "card", "give plain numbers, text, lists and dicts") from exc
    architecture = {"name": arch, "config": json_ready(config)}
    state = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}

    # Card outer, weights inner: the weights are renamed first, then the card; both are complete
    # before either is renamed, and both temporary files go if anything fails.
    with atomic_output(json_path, force) as tmp_card:
        with atomic_output(weights_path, force) as tmp_weights:
            save_file(state, tmp_weights, metadata={"format": FORMAT, "architecture": json.dumps(architecture)})
            weights = {
                "file": weights_path.name,
                "sha256": sha256_file(tmp_weights),
                "bytes": tmp_weights.stat().st_size,
            }
            full = {
                **extra,
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "architecture": architecture,
                "mrisr_version": __version__,
                "weights": weights,
            }
            tmp_card.write_text(json.dumps(full, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return json_path


def read_card(path: str | os.PathLike[str], *, name: str = "model") -> dict[str, Any]:
    """The model card of a checkpoint (its ``.json``, its ``.safetensors`` or its folder), validated.

    Raises:
        InputError: the card is missing, not JSON, of another or a missing format, of a newer
            format version, or lacks the architecture or weights fields (naming the file).
    """
    path = card_path(path, name)
    fix = "give a checkpoint written by mrisr (save_checkpoint / mrisr train)"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputError("model card not found", path, fix) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the model card: {exc}", path, fix) from exc
    try:
        card = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"model card is not valid JSON ({exc})", path, fix) from exc
    if not isinstance(card, dict):
        raise InputError("model card is not a JSON object", path, fix)
    if "format" not in card:
        raise InputError(f"model card has no 'format' field (expected {FORMAT!r})", path, fix)
    if card["format"] != FORMAT:
        raise InputError(f"unknown model card format {card['format']!r} (expected {FORMAT!r})", path, fix)
    version = card.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise InputError(f"model card format_version {version!r} is not an integer", path, fix)
    if version > FORMAT_VERSION:
        raise InputError(
            f"model card format_version {version} is newer than this mrisr reads ({FORMAT_VERSION})",
            path,
            "upgrade mrisr",
        )
    if version < 1:
        raise InputError(f"model card format_version {version} is unknown", path, fix)
    arch = card.get("architecture")
    if not (isinstance(arch, dict) and isinstance(arch.get("name"), str) and isinstance(arch.get("config"), dict)):
        raise InputError("model card lacks architecture.name (text) and architecture.config (object)", path, fix)
    weights = card.get("weights")
    if not (isinstance(weights, dict) and all(isinstance(weights.get(k), str) for k in ("file", "sha256"))):
        raise InputError("model card lacks weights.file and weights.sha256 (text)", path, fix)
    file = weights["file"]
    if Path(file).name != file or file in ("", ".", "..") or "\\" in file:
        raise InputError(
            f"model card's weights.file {file!r} must be a file name beside the card, not a path", path, fix
        )
    return card


def load_checkpoint(
    path: str | os.PathLike[str], device: str | torch.device = "cpu", *, name: str = "model"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a network from its checkpoint: ``(model in eval mode on device, card)``.

    Args:
        path: the card (``.json``), the weights (``.safetensors``, card beside it) or the
            checkpoint's folder (with ``name``).
        device: where the model goes.
        name: the files' stem when ``path`` is a folder.

    Raises:
        InputError: an invalid card (see :func:`read_card`); missing weights; weights whose
            sha256 differs from the card's (changed or corrupt); an unknown architecture or
            arguments; weights that do not fit the architecture (missing, unexpected or
            mis-shaped tensors).
    """
    json_path = card_path(path, name)
    card = read_card(json_path)
    weights_path = json_path.parent / card["weights"]["file"]
    if not weights_path.is_file():
        raise InputError(f"weights file named by the model card {json_path} not found", weights_path,
                         "keep the .safetensors file beside its .json card")
    actual = sha256_file(weights_path)
    expected = card["weights"]["sha256"].lower()
    if actual != expected:
        raise InputError(
            f"sha256 {actual} does not match the model card's {expected}: the weights file changed or is corrupt",
            weights_path,
            "restore the original file or retrain",
        )
    arch = card["architecture"]
    try:
        model = build_network(arch["name"], **arch["config"])
    except InputError as exc:
        raise InputError(f"architecture {arch['name']!r}: {exc.one_line().rstrip('.')}", json_path,
                         "use a checkpoint written by this mrisr version, or one that knows this network") from exc

    try:
        state = load_file(weights_path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"not a readable safetensors file: {exc}", weights_path, "restore the original file") from exc
    expected_state = model.state_dict()
    missing = sorted(set(expected_state) - set(state))
    unexpected = sorted(set(state) - set(expected_state))
    mis_shaped = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected_state.items()
        if k in state and state[k].shape != v.shape
    )
    if missing or unexpected or mis_shaped:
        parts = [f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mis_shaped))
                 if keys]
        raise InputError(
            f"weights do not fit {arch['name']} {arch['config']} ({'; '.join(parts)})",
            weights_path,
            "keep the weights with the card they were saved with",
        )
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), card
