"""How many CPUs this process may use: its affinity mask (taskset, a container's cpuset), not the machine's count."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no affinity API (macOS)
        return os.cpu_count() or 1
