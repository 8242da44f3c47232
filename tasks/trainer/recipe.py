"""Fine-tune a causal LM with PEFT under DeepSpeed: one process of a (possibly multi-process) job.

Read top to bottom: set up the process group, build the PEFT model, hand it to DeepSpeed, resume from
the newest whole checkpoint, then train step by step. Every step's batch and dropout seed are functions
of the step number alone, so a run resumed from a checkpoint repeats, bit for bit, the losses an
uninterrupted run would have logged.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from tasks.trainer import checkpoints
from tasks.trainer.job import TrainJob, TrainSettings


class NonFiniteLoss(RuntimeError):
    pass


def pick_device(settings: TrainSettings) -> str:
    import torch

    if settings.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return settings.device


def deepspeed_config(s: TrainSettings, device: str) -> dict:
    config: dict = {
        "train_micro_batch_size_per_gpu": s.micro_batch_size,
        "gradient_accumulation_steps": s.gradient_accumulation_steps,
        "gradient_clipping": s.max_grad_norm,
        "zero_optimization": {"stage": s.zero_stage},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if s.zero_stage == 3:
        config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
    if s.precision == "bf16":
        config["bf16"] = {"enabled": True}
    return config


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


def build_model(job: TrainJob, device: str):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    s = job.settings
    torch.manual_seed(s.seed)
    model = AutoModelForCausalLM.from_pretrained(job.base_model, dtype=torch.float32)
    model.config.use_cache = False
    lora = LoraConfig(
        r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout,
        target_modules=s.target_modules, modules_to_save=s.modules_to_save or None, task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


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


def resume(engine, root: Path) -> int:
    """Load the newest whole checkpoint; the step it was taken at (0 when there is none)."""
    for step, folder in checkpoints.newest_whole(root):
        try:
            path, _client = engine.load_checkpoint(str(root), tag=folder.name, load_module_strict=False)
        except Exception as exc:  # a checkpoint that passed its hashes but still fails to load
            print(f"warning: skipping checkpoint {folder.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        if path is not None:
            print(f"resumed from {folder.name} (step {step})", flush=True)
            return step
    return 0


def train(job: TrainJob) -> dict:
    import deepspeed
    import torch
    import torch.distributed as dist

    s = job.settings
    device = pick_device(s)
    torch.set_num_threads(s.threads())
    deepspeed.init_distributed(dist_backend="nccl" if device == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    out = Path(job.out_dir)
    ckpt_root, metrics_path = out / "checkpoints", out / "metrics.jsonl"

    model = build_model(job, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=s.learning_rate, weight_decay=s.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(s))
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(s, device)
    )
    blocks = np.load(job.train_blocks, mmap_mode="r")
    start = resume(engine, ckpt_root)
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
                loss = engine(input_ids=batch, labels=batch).loss
                engine.backward(loss)
                engine.step()
                loss_sum += loss.detach().double().cpu()
            step_loss = loss_sum / s.gradient_accumulation_steps
            if world > 1:
                dist.all_reduce(step_loss)
                step_loss /= world
            step_loss = float(step_loss)
            if not math.isfinite(step_loss):
                raise NonFiniteLoss(f"training loss became {step_loss} at step {step}: lower train.learning_rate")
            dt = time.perf_counter() - t0
            record = {
                "step": step,
                "loss": step_loss,
                "lr": lr,
                "tokens_per_s": round(tokens_per_step / dt, 1),
                "step_time_s": round(dt, 4),
            }
            log.write(json.dumps(record) + "\n")
            log.flush()
            if rank == 0 and (step == start + 1 or step % s.checkpoint_every == 0 or step == s.max_steps):
                print(f"step {step}/{s.max_steps} loss {step_loss:.4f} {record['tokens_per_s']:.0f} tokens/s", flush=True)
            if step % s.checkpoint_every == 0 or step == s.max_steps:
                folder = ckpt_root / checkpoints.tag(step)
                engine.save_checkpoint(str(ckpt_root), tag=folder.name, client_state={"step": step},
                                       exclude_frozen_parameters=True)
                dist.barrier()
                if rank == 0:
                    checkpoints.mark_complete(folder, step)
                    checkpoints.prune(ckpt_root, s.keep_checkpoints)
                dist.barrier()
    summary = {"steps": s.max_steps, "resumed_from": start, "world_size": world, "device": device,
               "wall_s": round(time.perf_counter() - t_run, 2), "tokens_per_step": tokens_per_step}
    save_adapter(engine, job, out / "adapter", rank)
    if rank == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    dist.barrier()
    return summary


def save_adapter(engine, job: TrainJob, folder: Path, rank: int) -> None:
    """The trained adapter (and tokenizer) as a PEFT folder; ZeRO-3 gathers the partitioned weights."""
    import deepspeed
    from transformers import AutoTokenizer

    model = engine.module
    if job.settings.zero_stage == 3:
        params = [p for n, p in model.named_parameters() if p.requires_grad]
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            if rank == 0:
                model.save_pretrained(str(folder))
    elif rank == 0:
        model.save_pretrained(str(folder))
    if rank == 0:
        AutoTokenizer.from_pretrained(job.tokenizer).save_pretrained(str(folder))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m tasks.trainer JOB.json", file=sys.stderr)
        return 2
    job = TrainJob.model_validate_json(Path(argv[0]).read_text())
    try:
        train(job)
    except NonFiniteLoss as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    return 0
