"""Argument and input checks shared by every network in :mod:`mrisr.nets` (one wording of each error)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InputError

__all__ = ["check_int", "int_list", "check_input"]


def check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{name} must be an integer, got {value!r}", name, f"give an integer >= {minimum}")
    if value < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {value}", name, f"give an integer >= {minimum}")
    return value


def int_list(name: str, value: object, minimum: int, odd: bool = False) -> list[int]:
    """A non-empty sequence of integers >= minimum (odd ones if asked), as a list."""
    fix = f"give a list of {'odd ' if odd else ''}integers >= {minimum}, e.g. [9, 1, 5]"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise InputError(f"{name} must be a non-empty list of integers, got {value!r}", name, fix)
    items = [check_int(name, v, minimum) for v in value]
    if odd and any(v % 2 == 0 for v in items):
        raise InputError(f"{name} must be odd (same padding keeps the size), got {list(value)}", name, fix)
    return items


def check_input(net: nn.Module, x: torch.Tensor) -> None:
    """InputError unless ``x`` is ``(N, in_channels, *spatial)`` with the network's dimension
    (skipped while exporting to ONNX, where the sizes are traced symbols)."""
    if torch.onnx.is_in_onnx_export():
        return
    if x.ndim != net.spatial_dims + 2 or x.shape[1] != net.in_channels:
        layout = "(N, C, H, W)" if net.spatial_dims == 2 else "(N, C, D, H, W)"
        raise InputError(
            f"a {net.spatial_dims}D {type(net).__name__} with {net.in_channels} input channel(s) takes {layout} "
            f"with C={net.in_channels}, got shape {tuple(x.shape)}",
            "input",
            f"give {net.spatial_dims}D patches, or a network with spatial_dims={x.ndim - 2}"
            if x.ndim != net.spatial_dims + 2
            else f"give {net.in_channels} channel(s)",
        )
