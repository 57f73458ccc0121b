"""The trained model as one object: :class:`LoadedModel` (network + model card), and where a model
spec points (:func:`checkpoint_location`) and how it is loaded (:func:`load_model`).

Every entry point (``mrisr.infer.upscale``, the CLI, batch workers, the demo, ONNX export,
training's ``--init``) resolves a model through these two functions, so a shipped name, a run
folder, a checkpoint folder, a card and a weights file mean the same everywhere, and the card
travels with the network: what it says the model expects (its training patch size, spatial
dims) is what inference uses.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import InputError
from .registry import SHIPPED_MODELS

__all__ = ["LoadedModel", "checkpoint_location", "load_model"]


@dataclass(frozen=True)
class LoadedModel:
    """A network ready to run (eval mode, on ``device``) with its model card.

    Attributes:
        net: the ``torch.nn.Module``.
        card: the model card (``{}`` for a network passed in directly).
        spec: what was loaded: a checkpoint path or a shipped model's name, as text.
        device: the device the network is on (``cpu``, ``cuda:0``...).
    """

    net: Any
    card: dict[str, Any]
    spec: str
    device: str

    @property
    def config(self) -> dict[str, Any]:
        """The network's arguments: the card's ``architecture.config``, else the network's ``.config``."""
        arch = self.card.get("architecture") if isinstance(self.card, dict) else None
        if isinstance(arch, dict) and isinstance(arch.get("config"), dict):
            return arch["config"]
        from ..nets import unwrap

        config = getattr(unwrap(self.net), "config", None)
        return config if isinstance(config, dict) else {}

    def patch_size(self, dims: int) -> tuple[int, ...] | None:
        """The training patch size the card records (``protocol.train.patch_size``,
        ``train.patch_size`` or ``patch_size``) when it has ``dims`` positive integers, else None."""
        card = self.card
        candidates = [card.get("patch_size")]
        for key in ("protocol", "train"):
            block = card.get(key)
            if isinstance(block, dict):
                candidates.append(block.get("patch_size"))
                if isinstance(block.get("train"), dict):
                    candidates.append(block["train"].get("patch_size"))
        for value in candidates:
            if isinstance(value, (list, tuple)) and len(value) == dims and all(
                    isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
                return tuple(int(v) for v in value)
        return None


def checkpoint_location(model: str | os.PathLike[str]) -> Path:
    """Where the checkpoint that ``model`` names lies: every form ``upscale --model`` takes.

    Args:
        model: a checkpoint's ``.json`` card, its ``.safetensors`` weights, its folder, a
            training run's folder (its ``best/``), or a shipped model's name (:data:`SHIPPED_MODELS`).

    Returns:
        The path to give :func:`mrisr.models.card.load_checkpoint` (card, weights or folder).

    Raises:
        InputError: no such file nor shipped model (a close name suggested).
    """
    text = os.fspath(model)
    path = Path(text)
    if path.exists():
        if path.is_dir() and not (path / "model.json").exists() and (path / "best" / "model.json").exists():
            return path / "best"  # a run directory stands for its best checkpoint
        return path
    if text in SHIPPED_MODELS:
        return Path(SHIPPED_MODELS[text])
    if "/" in text or os.sep in text or path.suffix in (".json", ".safetensors"):
        raise InputError("checkpoint not found", path, "give the path of a model card, weights or run folder")
    close = difflib.get_close_matches(text, list(SHIPPED_MODELS), n=1)
    hint = f"did you mean {close[0]!r}?" if close else (
        f"known: {', '.join(sorted(SHIPPED_MODELS))}" if SHIPPED_MODELS else "none ship yet")
    raise InputError(f"no shipped model named {text!r} ({hint})", "model",
                     "give a shipped model's name (mrisr models) or the path of a checkpoint (.json card, "
                     ".safetensors or its folder)")


def load_model(model: LoadedModel | nn.Module | str | os.PathLike[str], device: Any = "cpu") -> LoadedModel:
    """The model ``model`` names, in eval mode on ``device``, with its card.

    Args:
        model: a :class:`LoadedModel` (moved to ``device`` if elsewhere), a network (card ``{}``),
            or any form of :func:`checkpoint_location`: a card, weights, checkpoint or run
            folder, a shipped name.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or a ``torch.device``.

    Raises:
        InputError: no such file nor shipped model (a close name suggested), an unreadable
            checkpoint (see :func:`mrisr.models.card.load_checkpoint`), a bad device.
    """
    from ..device import resolve_device

    dev = resolve_device(device)
    if isinstance(model, LoadedModel):
        if model.device == str(dev):
            return model
        return LoadedModel(model.net.to(dev).eval(), model.card, model.spec, str(dev))
    if isinstance(model, nn.Module):
        return LoadedModel(model.to(dev).eval(), {}, type(model).__name__, str(dev))
    if not isinstance(model, (str, os.PathLike)):
        raise InputError(f"model must be a network, a checkpoint path or a model name, got {type(model).__name__}",
                         "model", "give a .json model card, a checkpoint folder or a shipped model's name")
    from .card import load_checkpoint

    net, card = load_checkpoint(checkpoint_location(model), dev)
    return LoadedModel(net, card, os.fspath(model), str(dev))
