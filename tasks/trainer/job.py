"""What the training program is told: the settings section of the pipeline config plus the run's paths."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrainSettings(BaseModel):
    """Fine-tuning: PEFT LoRA under DeepSpeed ZeRO, with checkpoints."""

    model_config = ConfigDict(extra="forbid")

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
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    modules_to_save: list[str] = Field(
        default_factory=list, description="modules trained in full beside the adapter (e.g. embed_tokens, lm_head)"
    )
    zero_stage: Literal[0, 1, 2, 3] = 2
    num_processes: int = Field(1, ge=1, le=64)
    checkpoint_every: int = Field(10, ge=1, description="steps between checkpoints")
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept")
    seed: int = 42
    precision: Literal["fp32", "bf16"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads_per_process: int | None = Field(None, ge=1, description="torch threads; default cores / processes")
    retries: int = Field(1, ge=0, description="Prefect retries of the training task; each resumes")

    @model_validator(mode="after")
    def _warmup_fits(self) -> "TrainSettings":
        if self.warmup_steps >= self.max_steps and self.max_steps > 1:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below max_steps ({self.max_steps})")
        return self

    def threads(self) -> int:
        return self.threads_per_process or max(1, (os.cpu_count() or 1) // self.num_processes)


class TrainJob(BaseModel):
    settings: TrainSettings
    base_model: str
    tokenizer: str
    train_blocks: str
    out_dir: str  # the run's train/ folder: metrics.jsonl, checkpoints/, adapter/
