"""The numeric precision a network runs in: float32, or bfloat16 autocast on CPUs with native bf16.

On a CPU with native bf16 instructions (AVX512-BF16, or AMX tiles on recent Xeons), oneDNN's 3x3
convolutions run 2-3x faster under ``torch.autocast("cpu", dtype=torch.bfloat16)`` with
channels-last memory (measured on the shipped models: benchmarks/RESULTS.md, 3.0x and 3.2x on
an AVX512-BF16 EPYC, within 0.005 dB PSNR). Only the convolutions run in bf16: the residual sum,
pre-upsampling, normalisation and everything after the network stay float32. CUDA keeps its own
float16 AMP (``amp``) and ignores this.

``auto`` picks bfloat16 exactly where the CPU reports native bf16 (:func:`cpu_has_native_bf16`:
the ``avx512_bf16`` or ``amx_bf16`` flag, and oneDNN's bf16 support), else float32: oneDNN also
"supports" bf16 on other AVX-512 CPUs by emulation, which is slower. The rule is a property of
the machine, not a timing taken per process: every worker of a batch on one machine makes the
same choice, so the same input gives the same output whichever worker ran it. The accuracy
bound (bf16 within 0.05 dB PSNR of float32 on the held-out sample) is checked by the test suite
and the inference benchmark, not at run time.
torch is imported inside the functions: the command line reads :data:`PRECISIONS` cheaply.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = ["PRECISIONS", "NATIVE_BF16_FLAGS", "resolve_precision", "cpu_has_native_bf16", "channels_last"]

#: What ``precision`` may be.
PRECISIONS = ("auto", "float32", "bfloat16")
#: CPU flags (Linux ``/proc/cpuinfo``) of native bf16 arithmetic.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def channels_last(ndim: int) -> torch.memory_format:
    """The channels-last memory format of a batch with ``ndim`` dimensions (4: 2D, 5: 3D)."""
    import torch

    return torch.channels_last if ndim == 4 else torch.channels_last_3d


def _cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux); empty where ``/proc/cpuinfo`` cannot tell."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")), set())


def _onednn_supports_bf16() -> bool:
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively (:data:`NATIVE_BF16_FLAGS`) and oneDNN uses it."""
    return bool(_cpu_flags() & set(NATIVE_BF16_FLAGS)) and _onednn_supports_bf16()


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
        return "bfloat16" if cpu_has_native_bf16() else "float32"
    return precision
