"""What a run costs, per stage: CPU-seconds, GPU-seconds, peak memory, and an estimate from the rates in config.

A daemon thread samples the process tree (this process and every process under it: Dask workers, the DeepSpeed
trainer, Presidio's workers) every ``interval`` seconds with psutil: CPU time summed over every process seen
(each at its last sample, so a process that ends between samples loses at most one interval), resident memory
summed over the tree (its peak per stage). GPU-seconds are the stage's wall time times the CUDA devices visible
to the run (what a rented GPU machine bills, busy or not; 0 without one). ``lap(stage)`` closes a stage; ``totals``
sums them, with ``cost_estimate``: cpu_s / 3600 x cpu_hour + gpu_s / 3600 x gpu_hour.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import psutil
from pydantic import BaseModel, ConfigDict, Field

USAGE_METRICS = ("cost_estimate", "cpu_seconds", "gpu_seconds", "peak_memory_mb")  # what gates may read


class CostSettings(BaseModel):
    """Rates that turn a run's CPU- and GPU-seconds into money (the config's ``cost`` section)."""

    model_config = ConfigDict(extra="forbid")

    cpu_hour: float = Field(0.05, ge=0, description="price of one CPU core for an hour (a cloud vCPU: about 0.03-0.05)")
    gpu_hour: float = Field(3.0, ge=0, description="price of one GPU for an hour (an H100/H200 on demand: about 2-4)")
    currency: str = Field("USD", min_length=1, max_length=8)


class StageUsage(BaseModel):
    wall_s: float = 0.0
    cpu_s: float = 0.0
    gpu_s: float = 0.0
    peak_memory_mb: float = 0.0


def _cuda_devices() -> int:
    """CUDA devices this process sees, when torch is loaded already (never imported for this)."""
    torch = sys.modules.get("torch")
    try:
        return torch.cuda.device_count() if torch is not None and torch.cuda.is_available() else 0
    except Exception:  # a broken driver: no GPU to count
        return 0


class Meter:
    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.root = psutil.Process(os.getpid())
        self._cpu: dict[int, float] = {}  # pid -> CPU seconds at its last sample
        self._peak_rss = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._lap_at, self._lap_cpu = time.perf_counter(), self._sample()
        self.stages: dict[str, StageUsage] = {}
        self._thread = threading.Thread(target=self._run, name="tunegate-usage", daemon=True)
        self._thread.start()

    def _sample(self) -> float:
        """Sample the tree once; the CPU seconds of every process seen so far."""
        rss = 0
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            procs = [self.root]
        seen: dict[int, float] = {}
        for p in procs:
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    seen[p.pid] = t.user + t.system
                    rss += p.memory_info().rss
            except psutil.Error:  # ended meanwhile: its last sample stands
                continue
        with self._lock:
            self._cpu.update(seen)
            self._peak_rss = max(self._peak_rss, rss)
            return sum(self._cpu.values())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def lap(self, stage: str) -> StageUsage:
        """Close ``stage``: its wall and CPU seconds, GPU-seconds, peak memory since the previous lap."""
        cpu, now = self._sample(), time.perf_counter()
        with self._lock:
            peak, self._peak_rss = self._peak_rss, 0
        wall = now - self._lap_at
        usage = StageUsage(wall_s=round(wall, 2), cpu_s=round(max(0.0, cpu - self._lap_cpu), 2),
                           gpu_s=round(wall * _cuda_devices(), 2), peak_memory_mb=round(peak / 2**20, 1))
        self._lap_at, self._lap_cpu = now, cpu
        self.stages[stage] = usage
        return usage

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def totals(stages: dict[str, StageUsage], rates: CostSettings, tokens: int = 0) -> dict[str, float | str]:
    """The run's usage summed over its stages, with its estimated cost (what the report, the version's tags and the
    gates read)."""
    cpu = sum(s.cpu_s for s in stages.values())
    gpu = sum(s.gpu_s for s in stages.values())
    return {"cpu_seconds": round(cpu, 1), "gpu_seconds": round(gpu, 1),
            "peak_memory_mb": max((s.peak_memory_mb for s in stages.values()), default=0.0),
            "wall_seconds": round(sum(s.wall_s for s in stages.values()), 1), "tokens": int(tokens),
            "cost_estimate": round(cpu / 3600 * rates.cpu_hour + gpu / 3600 * rates.gpu_hour, 4),
            "currency": rates.currency}
