"""The run's usage meter (tasks/core/usage.py): CPU time and memory of child processes are counted in the stage
they ran in, and the cost estimate follows the configured rates."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tasks.core.usage import CostSettings, Meter, StageUsage, totals

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.5: pass\n"
HOLD = "import time\nblock = bytearray(300 * 2**20)\nfor i in range(0, len(block), 4096): block[i] = 1\ntime.sleep(1.5)\n"


def test_a_child_process_cpu_and_memory_count_in_the_stage_it_ran_in():
    meter = Meter(interval=0.2)
    try:
        subprocess.run([sys.executable, "-c", "import time; time.sleep(0.5)"], check=True)
        idle = meter.lap("idle")
        subprocess.run([sys.executable, "-c", BURN], check=True)
        busy = meter.lap("busy")
        subprocess.run([sys.executable, "-c", HOLD], check=True)
        held = meter.lap("memory")
    finally:
        meter.stop()
    assert idle.cpu_s < 0.5, idle
    assert busy.cpu_s >= 1.2 and busy.wall_s >= 1.5, busy  # the child's 1.5 s of CPU, sampled every 0.2 s
    assert held.peak_memory_mb - busy.peak_memory_mb >= 250, (held, busy)  # the child's 300 MiB, beside pytest's own
    assert list(meter.stages) == ["idle", "busy", "memory"]


def test_the_estimate_follows_the_rates():
    stages = {"train": StageUsage(wall_s=100, cpu_s=7200, gpu_s=1800, peak_memory_mb=900),
              "evaluate": StageUsage(wall_s=10, cpu_s=3600, gpu_s=0, peak_memory_mb=1200)}
    out = totals(stages, CostSettings(cpu_hour=0.5, gpu_hour=4.0, currency="EUR"), tokens=12345)
    assert out == {"cpu_seconds": 10800, "gpu_seconds": 1800, "peak_memory_mb": 1200, "wall_seconds": 110,
                   "tokens": 12345, "cost_estimate": pytest.approx(3 * 0.5 + 0.5 * 4.0), "currency": "EUR"}
