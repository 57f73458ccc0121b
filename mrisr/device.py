"""One rule for ``--device`` / ``device=``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

import torch

from .errors import InputError

__all__ = ["resolve_device"]


def resolve_device(spec: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``cpu`` and ``cuda[:N]`` checked to exist.

    Raises:
        InputError: an unknown device, or a CUDA device this machine does not have.
    """
    if isinstance(spec, str) and spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise InputError(f"unknown device {spec!r}", "--device", "use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise InputError(f"{spec}: this machine has {count} CUDA device(s)", "--device",
                             "use --device cpu (device='cpu') or auto")
    return device
