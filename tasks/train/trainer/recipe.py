"""Fine-tune a causal LM under DeepSpeed: one process of a (possibly multi-process, multi-node) job.

Read top to bottom: set up the process group, build the model (LoRA, prefix tuning, QLoRA or all weights:
peft_methods.py), hand it to DeepSpeed with the job's ZeRO config (ds_config.py), resume from the newest
whole checkpoint, then train step by step, scoring the held-out texts every ``eval_every`` steps
(evaluation.py), and save the adapter or model with its tokenizer (artifacts.py). Every step's batch and
dropout seed are functions of the step number alone, so a run resumed from a checkpoint repeats, bit for
bit, the losses an uninterrupted run would have logged.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from tasks.core import failpoints
from tasks.train.trainer import artifacts, checkpoints, ds_config, evaluation
from tasks.train.trainer.job import TrainJob, TrainSettings
from tasks.train.trainer.peft_methods import build_model


class NonFiniteLoss(RuntimeError):
    pass


def pick_device(settings: TrainSettings) -> str:
    import torch

    if settings.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return settings.device


def lr_lambda(s: TrainSettings):
    def factor(step: int) -> float:  # step = optimizer steps taken so far
        if s.warmup_steps and step < s.warmup_steps:
            return (step + 1) / s.warmup_steps
        span = max(1, s.max_steps - s.warmup_steps)
        progress = min(1.0, (step - s.warmup_steps) / span)
        return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def batch_indices(step: int, micro: int, rank: int, s: TrainSettings, world: int, n_blocks: int) -> np.ndarray:
    """Which blocks this process trains on at (step, micro): a seeded permutation per epoch."""
    per_micro = s.micro_batch_size * world
    first = ((step - 1) * s.gradient_accumulation_steps + micro) * per_micro + rank * s.micro_batch_size
    out = np.empty(s.micro_batch_size, dtype=np.int64)
    cache: dict[int, np.ndarray] = {}
    for j in range(s.micro_batch_size):
        sample = first + j
        epoch = sample // n_blocks
        if epoch not in cache:
            cache[epoch] = np.random.default_rng(s.seed + epoch).permutation(n_blocks)
        out[j] = cache[epoch][sample % n_blocks]
    return out


def make_optimizer(model, s: TrainSettings, raw_config: dict, device: str):
    """AdamW over the trainable weights, and whether it is DeepSpeed's fused CPU Adam.

    With ZeRO-Offload the optimizer step runs on the CPU: DeepSpeedCPUAdam (a C++ op JIT-built once into
    TORCH_EXTENSIONS_DIR, ~1 min) where the config's zero_force_ds_cpu_optimizer is true, or "auto" on a
    GPU; torch's AdamW otherwise ("auto" on a CPU-only machine, where the build buys little).
    """
    import torch

    trainable = [p for p in model.parameters() if p.requires_grad]
    force = raw_config.get("zero_force_ds_cpu_optimizer", True)  # DeepSpeed's own default is true
    if ds_config.offloads_optimizer(raw_config) and (force is True or (force == "auto" and device == "cuda")):
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(trainable, lr=s.learning_rate, weight_decay=s.weight_decay, adamw_mode=True), True
    return torch.optim.AdamW(trainable, lr=s.learning_rate, weight_decay=s.weight_decay), False


def trim_metrics(path: Path, last_step: int) -> None:
    """Keep the metrics lines up to ``last_step`` (the resumed checkpoint); drop later and torn lines."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line)
        except (ValueError, KeyError):
            continue
    path.write_text("".join(k + "\n" for k in kept))


def resume(engine, root: Path, job: str | None = None) -> int:
    """Load the newest whole checkpoint; the step it was taken at (0 when there is none). A checkpoint written by
    another training job (``job``: its key) is refused (ForeignCheckpoint), before anything is loaded."""
    for step, folder in checkpoints.newest_whole(root):
        other = checkpoints.foreign(folder, job)
        if other:
            raise checkpoints.ForeignCheckpoint(other)
        try:
            with checkpoints.weights_only(engine):
                path, _client = engine.load_checkpoint(str(root), tag=folder.name, load_module_strict=False)
        except Exception as exc:  # passed its hashes but fails to load (or carries code: weights_only refuses it)
            print(f"warning: skipping checkpoint {folder.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        if path is not None:
            print(f"resumed from {folder.name} (step {step})", flush=True)
            return step
    return 0


def labels_for(batch, loss_mask, idx):
    """The labels of a batch: its tokens, with -100 (not predicted) where the loss mask is 0 (the prompt of an
    instruction record, tasks/train/dataset.py)."""
    if loss_mask is None:
        return batch
    import torch

    keep = torch.from_numpy(np.asarray(loss_mask[idx], dtype=np.bool_)).to(batch.device)
    return batch.masked_fill(~keep, -100)


def all_mean(value: "torch.Tensor", world: int, device) -> float:
    import torch.distributed as dist

    if world > 1:
        value = value.to(device)  # NCCL reduces GPU tensors only
        dist.all_reduce(value)
        value = value.cpu() / world
    return float(value)


def skip_shm_comm_build(device: str) -> None:
    """One CPU process has nothing to all-reduce with: keep DeepSpeed from JIT-compiling its shared-memory
    communication op (a C++ build of a minute or more on a cold machine) for nothing. Several processes
    build it once into TORCH_EXTENSIONS_DIR and use it."""
    if device != "cpu" or int(os.environ.get("WORLD_SIZE", "1")) != 1:
        return
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False  # read by deepspeed.comm's build_shm_op


def train(job: TrainJob) -> dict:
    import deepspeed
    import torch
    import torch.distributed as dist

    s = job.settings
    device = pick_device(s)
    torch.set_num_threads(s.threads())
    skip_shm_comm_build(device)
    deepspeed.init_distributed(dist_backend="nccl" if device == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    out = Path(job.out_dir)
    ckpt_root, metrics_path = out / "checkpoints", out / "metrics.jsonl"

    model = build_model(job, device)
    optimizer, cpu_adam = make_optimizer(model, s, ds_config.read(s), device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(s))
    config = ds_config.build(s, world, device, cpu_adam)
    if rank == 0:
        (out / "deepspeed_config.json").write_text(json.dumps(config, indent=2))
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config
    )
    blocks = np.load(job.train_blocks, mmap_mode="r")
    loss_mask = np.load(job.loss_mask, mmap_mode="r") if job.loss_mask else None
    eval_blocks = None
    if s.eval_every and job.eval_texts:
        eval_blocks = evaluation.pack_eval_texts(job.eval_texts, job.tokenizer, blocks.shape[1] - 1)
    start = resume(engine, ckpt_root, job.job_key)
    if rank == 0:
        trim_metrics(metrics_path, start)
    dist.barrier()

    tokens_per_step = s.micro_batch_size * s.gradient_accumulation_steps * world * (blocks.shape[1] - 1)
    t_run = time.perf_counter()
    with open(metrics_path, "a") if rank == 0 else open(os.devnull, "w") as log:
        for step in range(start + 1, s.max_steps + 1):
            t0 = time.perf_counter()
            lr = scheduler.get_last_lr()[0]
            engine.train()
            loss_sum = torch.zeros((), dtype=torch.float64)
            for micro in range(s.gradient_accumulation_steps):
                torch.manual_seed(s.seed * 1_000_003 + step * 1_009 + micro * 31 + rank)  # dropout, resumable
                idx = np.sort(batch_indices(step, micro, rank, s, world, blocks.shape[0]))
                batch = torch.from_numpy(np.asarray(blocks[idx], dtype=np.int64)).to(engine.device)
                loss = engine(input_ids=batch, labels=labels_for(batch, loss_mask, idx)).loss
                engine.backward(loss)
                engine.step()
                loss_sum += loss.detach().double().cpu()
            step_loss = all_mean(loss_sum / s.gradient_accumulation_steps, world, engine.device)
            if not math.isfinite(step_loss):
                raise NonFiniteLoss(f"training loss became {step_loss} at step {step}: lower train.learning_rate")
            dt = time.perf_counter() - t0
            record = {
                "step": step,
                "loss": step_loss,
                "lr": lr,
                "tokens_per_s": round(tokens_per_step / dt, 1),
                "step_time_s": round(dt, 4),
                "tokens": step * tokens_per_step,
            }
            if eval_blocks is not None and (step % s.eval_every == 0 or step == s.max_steps):
                record["eval_loss"] = evaluation.eval_loss(engine, eval_blocks, s.micro_batch_size, s.eval_batches,
                                                           rank, world)
            log.write(json.dumps(record) + "\n")
            log.flush()
            if rank == 0 and (step == start + 1 or step % s.checkpoint_every == 0 or step == s.max_steps):
                extra = f" eval_loss {record['eval_loss']:.4f}" if "eval_loss" in record else ""
                print(f"step {step}/{s.max_steps} loss {step_loss:.4f}{extra} {record['tokens_per_s']:.0f} tokens/s",
                      flush=True)
            if step % s.checkpoint_every == 0 or step == s.max_steps:
                folder = ckpt_root / checkpoints.tag(step)
                engine.save_checkpoint(str(ckpt_root), tag=folder.name, client_state={"step": step},
                                       exclude_frozen_parameters=True)
                dist.barrier()
                if rank == 0:
                    checkpoints.mark_complete(folder, step, job.job_key)
                    checkpoints.prune(ckpt_root, s.keep_checkpoints)
                    failpoints.reached("train:checkpoint")
                dist.barrier()
    summary = {"steps": s.max_steps, "resumed_from": start, "world_size": world, "device": device,
               "method": s.method, "zero_stage": engine.zero_optimization_stage(),
               "wall_s": round(time.perf_counter() - t_run, 2), "tokens_per_step": tokens_per_step}
    artifacts.save_trained(engine, job.tokenizer, out / "adapter", rank)
    if rank == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    dist.barrier()
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m tasks.train.trainer JOB.json", file=sys.stderr)
        return 2
    job = TrainJob.model_validate_json(Path(argv[0]).read_text())
    try:
        train(job)
    except NonFiniteLoss as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    except checkpoints.ForeignCheckpoint as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 5
    except ds_config.DeepSpeedConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
