"""The machine a benchmark ran on, said the same way by every script in bench/: platform, CPU model, CPUs (and
this process's affinity), memory, load average, Python, and the versions of the packages that matter."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("MemTotal")) / 1024 / 1024
    except (OSError, StopIteration):
        return None


def describe(*distributions: str) -> str:
    """One line: platform; CPU; CPUs (affinity); RAM; load average; Python; each distribution's version."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = memory_gib()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    parts = [platform.platform(), cpu_model(), f"{os.cpu_count()} CPUs (affinity {affinity})"]
    parts += [f"{mem:.0f} GiB RAM"] if mem else []
    parts += [f"load avg {load:.2f}", f"Python {platform.python_version()}"]
    libs = []
    for dist in distributions:
        try:
            libs.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            libs.append(f"{dist} (not installed)")
    return "; ".join(parts + ([", ".join(libs)] if libs else []))
