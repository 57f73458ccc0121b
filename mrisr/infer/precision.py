"""The numeric precision a network runs in: float32, or bfloat16 autocast on CPUs that do it fast.

On a CPU with native bf16 (AVX512-BF16, or AMX tiles on recent Xeons), oneDNN's 3x3 convolutions
run 2-3x faster under ``torch.autocast("cpu", dtype=torch.bfloat16)`` with channels-last memory
(measured on the shipped models: benchmarks/RESULTS.md). Only the convolutions run in bf16: the
residual sum, pre-upsampling, normalisation and everything after the network stay float32.
CUDA keeps its own float16 AMP (``amp``) and ignores this.

``auto`` picks bfloat16 only where both hold: oneDNN reports bf16 support for this CPU, and a
short timing probe (:func:`bf16_is_faster`, once per process, about 0.3 s) finds bf16 at least
:data:`MIN_SPEEDUP` times faster than float32 on a VDSR-like convolution. The accuracy bound
(bf16 within 0.05 dB PSNR of float32 on the held-out sample) is checked by the test suite and
the inference benchmark, not at run time.
"""

from __future__ import annotations

import functools
import time

import torch

from ..errors import InputError

__all__ = ["PRECISIONS", "MIN_SPEEDUP", "resolve_precision", "bf16_is_faster", "channels_last"]

#: What ``precision`` may be.
PRECISIONS = ("auto", "float32", "bfloat16")
#: ``auto`` takes bf16 when the probe finds it at least this much faster than float32.
MIN_SPEEDUP = 1.3


def channels_last(ndim: int) -> torch.memory_format:
    """The channels-last memory format of a batch with ``ndim`` dimensions (4: 2D, 5: 3D)."""
    return torch.channels_last if ndim == 4 else torch.channels_last_3d


def _cpu_supports_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def _seconds(conv: torch.nn.Module, x: torch.Tensor, bf16: bool, repeats: int = 3) -> float:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        conv(x)  # warm-up: oneDNN picks its kernels
        start = time.perf_counter()
        for _ in range(repeats):
            conv(x)
    return (time.perf_counter() - start) / repeats


@functools.lru_cache(maxsize=1)
def bf16_is_faster() -> bool:
    """Whether this CPU runs a VDSR-like layer (3x3 convolution, 32 -> 32 channels, 8 x 64 x 64,
    channels-last) at least :data:`MIN_SPEEDUP` times faster under bf16 autocast than in float32.
    False without oneDNN bf16 support. Measured once per process."""
    if not _cpu_supports_bf16():
        return False
    generator = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(32, 32, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(8, 32, 64, 64, generator=generator).contiguous(memory_format=torch.channels_last)
    return _seconds(conv, x, bf16=False) >= MIN_SPEEDUP * _seconds(conv, x, bf16=True)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``float32`` or ``bfloat16``: what ``precision`` means on ``device`` (CUDA: always float32
    here, its float16 AMP being the ``amp`` switch).

    Raises:
        InputError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}", "precision",
                         "give auto, float32 or bfloat16")
    if device.type != "cpu":
        return "float32"
    if precision == "auto":
        return "bfloat16" if bf16_is_faster() else "float32"
    return precision
