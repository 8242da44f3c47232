"""Training reuse: a finished training, stored under a key of everything that determines its result.

The key is the sha256 of the base model's weights fingerprint, the training blocks, the tokenizer, the
held-out texts (when evaluated), the DeepSpeed config file and the settings — less the ones that cannot
change the result (retries, threads, reuse). A stored entry holds the adapter (or full model) folder,
metrics.jsonl and summary.json; a later identical job copies them into its own run folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path

from tasks.core.hashing import file_sha256, folder_sha256
from tasks.train.trainer import ds_config
from tasks.train.trainer.job import TrainJob

CODE_VERSION = "trainer-3"
_NOT_IN_KEY = {"retries", "threads_per_process", "reuse"}
OUTPUTS = ("adapter", "metrics.jsonl", "summary.json")


def key(job: TrainJob) -> str:
    from tasks.train.model import weights_fingerprint

    s = job.settings
    settings = s.model_dump(mode="json", exclude=_NOT_IN_KEY)
    settings.pop("deepspeed_config")
    settings["hostfile"] = Path(s.hostfile).read_text() if s.hostfile else None
    parts = {
        "code": CODE_VERSION,
        "base_model": weights_fingerprint(Path(job.base_model)) if Path(job.base_model).is_dir() else job.base_model,
        "train_blocks": file_sha256(job.train_blocks),
        "loss_mask": file_sha256(job.loss_mask) if job.loss_mask else None,
        "tokenizer": folder_sha256(job.tokenizer, recursive=True),
        "eval_texts": file_sha256(job.eval_texts) if (s.eval_every and job.eval_texts) else None,
        "deepspeed_config": ds_config.file_digest(s),
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def entry(cache_dir: Path, job_key: str) -> Path:
    return Path(cache_dir) / job_key[:32]


def restore(cache_dir: Path, job_key: str, out: Path) -> bool:
    """Copy a stored training into ``out``; False when there is none."""
    src = entry(cache_dir, job_key)
    if not all((src / name).exists() for name in OUTPUTS):
        return False
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "adapter", ignore_errors=True)
    shutil.copytree(src / "adapter", out / "adapter")
    for name in ("metrics.jsonl", "summary.json"):
        shutil.copy2(src / name, out / name)
    return True


def store(cache_dir: Path, job_key: str, out: Path) -> None:
    """Keep a finished training (written to a temporary folder, then renamed: readers never see half)."""
    dest = entry(cache_dir, job_key)
    if dest.exists():
        return
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    shutil.copytree(out / "adapter", tmp / "adapter")
    for name in ("metrics.jsonl", "summary.json"):
        shutil.copy2(out / name, tmp / name)
    try:
        tmp.rename(dest)
    except OSError:  # another run stored the same training meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
