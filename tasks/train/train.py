"""Train: launch the training program (tasks/train/trainer/) as a subprocess and collect what it wrote.

One process runs directly with the single-process DeepSpeed environment; several run under torchrun;
with ``train.hostfile`` the deepspeed launcher starts them on every host it lists. A rerun of the same run
(``tunegate run --resume``, or a Prefect retry of this task) finds the run's checkpoints and continues from
the newest whole one. With a ``cache_dir``, a job identical to one already trained to the end (same base
model, data, tokenizer and settings) reuses that training instead of repeating it (tasks/train/trainer/reuse.py).
"""

from __future__ import annotations

import json
import os
import socket
import re
import subprocess
import sys
from collections import deque
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from tasks.core import progress
from tasks.train.trainer import ds_config, reuse
from tasks.train.trainer.job import TrainJob, TrainSettings

__all__ = ["TrainSettings", "TrainJob", "TrainResult", "run_training", "read_metrics", "TrainingFailed",
           "TrainingUnavailable"]

DEEPSPEED_MASTER_PORT = 29500  # multi-node: a fixed port on the first host of the hostfile


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
    method: str = "lora"
    final_eval_loss: float | None = None
    tokens: int = 0  # tokens trained on, in all
    reused: bool = False  # copied from an identical finished training (cache_dir)


class TrainingFailed(RuntimeError):
    pass


class TrainingUnavailable(ValueError):
    """The settings ask for something this machine cannot do (found before anything is launched)."""


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
    if settings.hostfile is not None:  # several nodes: the deepspeed launcher (pdsh/ssh) starts them all
        return [
            sys.executable, "-m", "deepspeed.launcher.runner", "--hostfile", str(settings.hostfile),
            f"--num_gpus={settings.num_processes}", f"--master_port={DEEPSPEED_MASTER_PORT}",
            "--module", "tasks.train.trainer", str(job_path),
        ], env
    port = str(free_port())
    if settings.num_processes == 1:
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        return [sys.executable, "-m", "tasks.train.trainer", str(job_path)], env
    return [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={settings.num_processes}",
        "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "tasks.train.trainer", str(job_path),
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


def check_runnable(settings: TrainSettings) -> None:
    """Refuse, in one line, what cannot run here before any process is started."""
    if settings.method == "qlora":
        if settings.device == "cpu":
            why = "train.device is cpu"
        else:
            from tasks.train.trainer.peft_methods import qlora_unavailable

            why = qlora_unavailable()
        if why:
            raise TrainingUnavailable(f"train.method=qlora needs a CUDA GPU and bitsandbytes ({why}): use method lora")
    if settings.deepspeed_config is not None and not Path(settings.deepspeed_config).is_file():
        raise TrainingUnavailable(f"train.deepspeed_config: no file at {settings.deepspeed_config}")
    if settings.hostfile is not None and not Path(settings.hostfile).is_file():
        raise TrainingUnavailable(f"train.hostfile: no file at {settings.hostfile}")
    raw = ds_config.read(settings)  # a bad DeepSpeed file fails here, in one line, not in every process
    if settings.hostfile is None:
        ds_config.fill(raw, settings, settings.num_processes, "cpu", False, source=str(ds_config.config_path(settings)))


STEP_LINE = re.compile(r"step (\d+)/(\d+) (.*)")


def run_training(job: TrainJob, extensions_dir: Path, echo=print, cache_dir: Path | None = None) -> TrainResult:
    """Run the job to the end (resuming from its checkpoints) and summarise it.

    With ``cache_dir`` (and ``train.reuse``), an identical job trained to the end before is copied from
    there instead of trained again, and a job trained here is stored there.
    """
    check_runnable(job.settings)
    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    job_key = reuse.key(job)  # also in every checkpoint marker: another job's checkpoints are never resumed
    job = job.model_copy(update={"job_key": job_key})
    if cache_dir is not None and job.settings.reuse and reuse.restore(Path(cache_dir), job_key, out):
        echo(f"training reused: identical job already trained ({reuse.entry(Path(cache_dir), job_key)})")
        return summarise(out, reused=True)
    job_path = out / "job.json"
    job_path.write_text(job.model_dump_json(indent=2))
    cmd, env = command(job_path, job.settings)
    env.setdefault("TORCH_EXTENSIONS_DIR", str(extensions_dir))  # DeepSpeed's compiled ops, built once
    tail: deque[str] = deque(maxlen=20)
    progress.update(0, job.settings.max_steps, "starting the training processes")
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
            if step := STEP_LINE.match(line):  # "step 3/16 loss 2.3141 113 tokens/s"
                progress.update(int(step[1]), int(step[2]), step[3].strip())
        rc = proc.wait()
    if rc != 0:
        last = next((t for t in reversed(tail) if t.startswith("error:")), None) or "\n".join(list(tail)[-5:])
        raise TrainingFailed(f"training process exited {rc}: {last} (log: {out / 'train.log'})")
    if cache_dir is not None and job.settings.reuse:
        reuse.store(Path(cache_dir), job_key, out)
    return summarise(out)


def summarise(out: Path, reused: bool = False) -> TrainResult:
    metrics = read_metrics(out / "metrics.jsonl")
    summary = json.loads((out / "summary.json").read_text())
    speeds = [m["tokens_per_s"] for m in metrics[1:]] or [m["tokens_per_s"] for m in metrics]
    evals = [m["eval_loss"] for m in metrics if "eval_loss" in m]
    return TrainResult(
        adapter=str(out / "adapter"), metrics=str(out / "metrics.jsonl"), steps=len(metrics),
        final_loss=metrics[-1]["loss"], first_loss=metrics[0]["loss"],
        mean_tokens_per_s=round(sum(speeds) / len(speeds), 1), resumed_from=summary["resumed_from"],
        wall_s=summary["wall_s"], world_size=summary["world_size"], device=summary["device"],
        method=summary.get("method", "lora"), final_eval_loss=evals[-1] if evals else None,
        tokens=metrics[-1].get("tokens", 0), reused=reused,
    )


@task(name="train", cache_policy=NO_CACHE)
def train_task(job: TrainJob, extensions_dir: str, cache_dir: str | None = None) -> TrainResult:
    """Retries (train.retries) resume from the newest checkpoint: the run folder is the same."""
    logger = get_run_logger()
    return run_training(job, Path(extensions_dir), echo=logger.info,
                        cache_dir=Path(cache_dir) if cache_dir else None)
