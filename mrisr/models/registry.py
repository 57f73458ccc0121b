"""The shipped models: ``<name>.safetensors`` + ``<name>.json`` (model card) in this package folder.

A model is *shipped* when its card ``<MODELS_DIR>/<name>.json`` exists; the card names its
weights file (``weights.file``, beside it) and their sha256, which
:func:`mrisr.models.card.load_checkpoint` checks before reading them with safetensors.
The registry is read from the folder on every access (a handful of files), so a model
written by :mod:`mrisr.models.ship` is found at once, and tests can point
:data:`MODELS_DIR` at a folder of their own (``monkeypatch.setattr(registry, "MODELS_DIR", ...)``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["MODELS_DIR", "NAME_PATTERN", "SHIPPED_MODELS", "models_dir", "shipped_models", "model_summary"]

#: The folder the shipped models live in (this package's folder).
MODELS_DIR: Path = Path(__file__).resolve().parent
#: What a shipped model's name looks like (also its files' stem).
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def models_dir() -> Path:
    """The folder the shipped models are read from (:data:`MODELS_DIR`, looked up on each call)."""
    return MODELS_DIR


def shipped_models() -> dict[str, Path]:
    """Shipped model name -> path of its card (``<name>.json``), sorted by name."""
    folder = models_dir()
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.json")) if NAME_PATTERN.match(p.stem) and p.is_file()}


class _Registry(Mapping[str, Path]):
    """A live, read-only view of :func:`shipped_models` (the folder is read on each access)."""

    def __getitem__(self, name: str) -> Path:
        return shipped_models()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(shipped_models())

    def __len__(self) -> int:
        return len(shipped_models())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in shipped_models()

    def __repr__(self) -> str:
        return f"SHIPPED_MODELS({dict(shipped_models())!r})"


#: Shipped model name -> card path, read live from :data:`MODELS_DIR`.
SHIPPED_MODELS: Mapping[str, Path] = _Registry()


def _parameters(card: dict[str, Any]) -> int | None:
    """The card's ``parameters``, else counted on the network rebuilt from its architecture (no weights read)."""
    count = card.get("parameters")
    if isinstance(count, int) and not isinstance(count, bool):
        return count
    from ..errors import MrisrError
    from ..nets import build_network

    try:
        net = build_network(card["architecture"]["name"], **card["architecture"]["config"])
    except (MrisrError, TypeError):
        return None
    return int(sum(p.numel() for p in net.parameters()))


def model_summary(card_path: Path) -> dict[str, Any]:
    """What ``mrisr models`` shows of one shipped model, from its card only (no weights read).

    Keys: ``name``, ``description``, ``architecture``, ``spatial_dims``, ``parameters``,
    ``weights_bytes``, ``weights_dtype``, ``sha256``, ``protocol``, ``intended_input``,
    ``validation`` (the card's best validation metrics: ``psnr_db``, ``ssim``, ...), ``card``
    (the path). A card that cannot be read gives ``error`` (one line) instead.
    """
    from ..errors import MrisrError
    from .card import read_card

    try:
        card = read_card(card_path)
    except MrisrError as exc:
        return {"name": card_path.stem, "card": str(card_path), "error": exc.one_line()}
    arch = card["architecture"]
    protocol = card.get("protocol")
    protocol_name = protocol.get("name") if isinstance(protocol, dict) else protocol
    return {
        "name": card.get("name", card_path.stem),
        "description": card.get("description"),
        "architecture": arch["name"],
        "spatial_dims": arch["config"].get("spatial_dims"),
        "parameters": _parameters(card),
        "weights_bytes": card["weights"].get("bytes"),
        "weights_dtype": card.get("weights_dtype", "float32"),
        "sha256": card["weights"]["sha256"],
        "protocol": protocol_name,
        "intended_input": card.get("intended_input"),
        "validation": card.get("validation"),
        "card": str(card_path),
    }
