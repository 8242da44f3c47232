"""What the training program is told: the settings section of the pipeline config plus the run's paths."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.core.cpus import usable_cpus

Method = Literal["lora", "prefix", "full", "qlora"]


class TrainSettings(BaseModel):
    """Fine-tuning: PEFT (LoRA, prefix tuning, QLoRA) or all weights, under DeepSpeed ZeRO, with checkpoints."""

    model_config = ConfigDict(extra="forbid")

    method: Method = Field(
        "lora", description="lora | prefix (prefix tuning) | full (all weights) | qlora (4-bit base + LoRA; CUDA only)"
    )
    max_steps: int = Field(60, ge=1, description="optimizer steps")
    micro_batch_size: int = Field(8, ge=1, description="sequences per process per micro step")
    gradient_accumulation_steps: int = Field(1, ge=1)
    seq_len: int = Field(128, ge=8, le=32768, description="tokens per training sequence")
    learning_rate: float = Field(2e-3, gt=0.0, le=1.0)
    warmup_steps: int = Field(5, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="cosine decay floor, as a fraction of the peak")
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0.0)
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["auto", "all-linear"] = Field(
        "auto",
        description="LoRA targets: auto (per model architecture, else all-linear), all-linear, or module names",
    )
    completion_only: bool = Field(
        True, description="instruction records: the loss counts the response only (the prompt is context); "
        "documents always count every token")
    modules_to_save: list[str] = Field(
        default_factory=list, description="modules trained in full beside the adapter (e.g. embed_tokens, lm_head)"
    )
    num_virtual_tokens: int = Field(16, ge=1, le=4096, description="prefix length (method: prefix)")
    zero_stage: Literal[0, 1, 2, 3] = 2
    offload_optimizer: bool = Field(False, description="ZeRO-Offload: optimizer state and step on the CPU (stage 2/3)")
    deepspeed_config: Path | None = Field(
        None, description="a DeepSpeed JSON file; overrides zero_stage/offload_optimizer ('auto' values are filled in)"
    )
    num_processes: int = Field(1, ge=1, le=64, description="training processes (per node with a hostfile)")
    hostfile: Path | None = Field(
        None, description="DeepSpeed hostfile ('host slots=N' lines): multi-node launch with the deepspeed launcher"
    )
    checkpoint_every: int = Field(10, ge=1, description="steps between checkpoints")
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept")
    eval_every: int = Field(0, ge=0, description="steps between held-out loss evaluations (0: off); also at the end")
    eval_batches: int = Field(8, ge=1, description="most micro batches per process in one held-out evaluation")
    seed: int = 42
    precision: Literal["fp32", "bf16"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads_per_process: int | None = Field(None, ge=1, description="torch threads; default cores / processes")
    retries: int = Field(1, ge=0, description="Prefect retries of the training task; each resumes")
    reuse: bool = Field(False, description="copy an identical finished training (same base, data and settings) "
                        "from the state folder's train-cache instead of training again")

    @model_validator(mode="after")
    def _consistent(self) -> "TrainSettings":
        if self.warmup_steps >= self.max_steps and self.max_steps > 1:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below max_steps ({self.max_steps})")
        if self.offload_optimizer and self.deepspeed_config is None and self.zero_stage not in (2, 3):
            raise ValueError(f"offload_optimizer needs zero_stage 2 or 3 (got {self.zero_stage})")
        if self.method == "qlora" and self.zero_stage == 3 and self.deepspeed_config is None:
            raise ValueError("method qlora trains with zero_stage 0, 1 or 2 (4-bit weights cannot be partitioned)")
        if self.method in ("prefix", "full") and self.modules_to_save:
            raise ValueError(f"modules_to_save applies to methods lora and qlora, not {self.method}")
        return self

    def threads(self) -> int:
        return self.threads_per_process or max(1, usable_cpus() // self.num_processes)


class TrainJob(BaseModel):
    settings: TrainSettings
    base_model: str
    tokenizer: str
    train_blocks: str
    out_dir: str  # the run's train/ folder: metrics.jsonl, checkpoints/, adapter/
    eval_texts: str | None = None  # held-out .jsonl of {"doc_id", "text"} (tasks/train/dataset.py), for eval_every
    loss_mask: str | None = None  # .npy like train_blocks: 1 = the token's prediction counts (tasks/train/dataset.py)
    job_key: str | None = None  # reuse.key of this job, set by the launcher: checkpoint markers carry it
