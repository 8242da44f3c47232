"""Train: launch the training program (tasks/trainer) as a subprocess and collect what it wrote.

One process runs directly with the single-process DeepSpeed environment; several run under torchrun.
A rerun of the same run (``tunegate run --resume``, or a Prefect retry of this task) finds the run's
checkpoints and continues from the newest whole one.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import deque
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from tasks.trainer.job import TrainJob, TrainSettings

__all__ = ["TrainSettings", "TrainResult", "run_training", "read_metrics"]


class TrainResult(BaseModel):
    adapter: str
    metrics: str
    steps: int
    final_loss: float
    first_loss: float
    mean_tokens_per_s: float
    resumed_from: int
    wall_s: float
    world_size: int
    device: str


class TrainingFailed(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(job_path: Path, settings: TrainSettings) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(settings.threads()))
    # bit-for-bit repeatable CPU math, so a resumed run logs the losses an uninterrupted one would: MKL
    # otherwise picks fewer threads under load (MKL_DYNAMIC) and kernels whose sums round differently
    env.setdefault("MKL_DYNAMIC", "FALSE")
    env.setdefault("MKL_CBWR", "AUTO,STRICT")
    port = str(free_port())
    if settings.num_processes == 1:
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        return [sys.executable, "-m", "tasks.trainer", str(job_path)], env
    return [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={settings.num_processes}",
        "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "tasks.trainer", str(job_path),
    ], env


def read_metrics(path: Path) -> list[dict]:
    rows = []
    if Path(path).exists():
        for line in Path(path).read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def run_training(job: TrainJob, extensions_dir: Path, echo=print) -> TrainResult:
    """Run the job to the end (resuming from its checkpoints) and summarise it."""
    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    job_path = out / "job.json"
    job_path.write_text(job.model_dump_json(indent=2))
    cmd, env = command(job_path, job.settings)
    env.setdefault("TORCH_EXTENSIONS_DIR", str(extensions_dir))  # DeepSpeed's compiled ops, built once
    tail: deque[str] = deque(maxlen=20)
    with open(out / "train.log", "a") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                cwd=os.getcwd())
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()
            tail.append(line.rstrip())
            if line.startswith(("step ", "resumed from", "warning:", "error:")):
                echo(line.rstrip())
        rc = proc.wait()
    if rc != 0:
        last = next((t for t in reversed(tail) if t.startswith("error:")), None) or "\n".join(list(tail)[-5:])
        raise TrainingFailed(f"training process exited {rc}: {last} (log: {out / 'train.log'})")
    return summarise(out)


def summarise(out: Path) -> TrainResult:
    metrics = read_metrics(out / "metrics.jsonl")
    summary = json.loads((out / "summary.json").read_text())
    speeds = [m["tokens_per_s"] for m in metrics[1:]] or [m["tokens_per_s"] for m in metrics]
    return TrainResult(
        adapter=str(out / "adapter"), metrics=str(out / "metrics.jsonl"), steps=len(metrics),
        final_loss=metrics[-1]["loss"], first_loss=metrics[0]["loss"],
        mean_tokens_per_s=round(sum(speeds) / len(speeds), 1), resumed_from=summary["resumed_from"],
        wall_s=summary["wall_s"], world_size=summary["world_size"], device=summary["device"],
    )


@task(name="train", cache_policy=NO_CACHE)
def train_task(job: TrainJob, extensions_dir: str) -> TrainResult:
    """Retries (train.retries) resume from the newest checkpoint: the run folder is the same."""
    logger = get_run_logger()
    return run_training(job, Path(extensions_dir), echo=logger.info)
