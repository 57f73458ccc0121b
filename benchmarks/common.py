"""Shared by the benchmark scripts: timing and a description of the machine."""

from __future__ import annotations

import datetime as dt
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["time_runs", "machine_info", "cpu_flags"]


def time_runs(fn: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def cpu_flags() -> str:
    """The CPU flags that decide the fast paths (AVX2, AVX-512, its BF16, AMX)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next(line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return " ".join(f for f in wanted if f in flags) or "none of avx2/avx512/amx"


PACKAGES = ("torch", "numpy", "pydicom", "SimpleITK", "monai", "mrisr")


def machine_info(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Date, CPU count and model, RAM, GPU (if any), Python and package versions."""
    info = {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds")}
    info["cpus (nproc)"] = str(len(os.sched_getaffinity(0)))
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown"
    info["cpu"] = model
    info["cpu flags"] = cpu_flags()
    try:
        kib = next(
            int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        )
        info["ram"] = f"{kib / 2**20:.1f} GiB"
    except (OSError, StopIteration):
        info["ram"] = "unknown"
    try:
        import torch

        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except ImportError:
        info["gpu"] = "unknown"
    info["python"] = platform.python_version()
    for name in packages:
        try:
            mod = __import__(name)
            info[name] = str(getattr(mod, "__version__", None) or mod.Version_VersionString())
        except Exception:  # report, never fail on a missing package
            info[name] = "not installed"
    return info
