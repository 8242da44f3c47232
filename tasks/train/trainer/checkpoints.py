"""Checkpoints that a crash cannot spoil: each is complete only once its marker (with file hashes) exists.

DeepSpeed writes the checkpoint folder; the marker is written after it, so a folder without one — or
whose files no longer match their hashes — is skipped for the previous checkpoint, with a warning. The marker
also names the training job that wrote it (the key of tasks/train/trainer/reuse.py: base weights, data blocks,
tokenizer, settings): a checkpoint of another job is never resumed from. Its files are read with
``torch.load(weights_only=True)``: tensors, plain containers and the few DeepSpeed classes it pickles, never code.
"""

from __future__ import annotations

import json
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

from tasks.core.hashing import file_digests, file_sha256

MARKER = "COMPLETE.json"
PREFIX = "checkpoint-"


def tag(step: int) -> str:
    return f"{PREFIX}{step:06d}"


def mark_complete(folder: Path, step: int, job: str | None = None) -> None:
    files = file_digests(folder, keep=lambda p: p.name != MARKER)
    tmp = folder / f".{MARKER}.tmp"
    tmp.write_text(json.dumps({"step": step, "job": job, "files": files}, indent=1))
    tmp.rename(folder / MARKER)


class ForeignCheckpoint(RuntimeError):
    """A whole checkpoint that another training job wrote (resuming from it would train a different model)."""


def foreign(folder: Path, job: str | None) -> str | None:
    """Why the (whole) checkpoint in ``folder`` belongs to another training job than ``job``, or None."""
    written_by = json.loads((folder / MARKER).read_text()).get("job")
    if job is None or written_by is None or written_by == job:  # None: a marker from before jobs were named
        return None
    return (f"checkpoint {folder} was written by another training job ({str(written_by)[:12]}, this one is "
            f"{job[:12]}): its base model, data or settings differ. Start a new run, or delete {folder.parent} to "
            "train this run from the start")


def problem(folder: Path) -> str | None:
    """Why the checkpoint in ``folder`` cannot be used, or None when it is whole."""
    marker = folder / MARKER
    if not marker.is_file():
        return "no completion marker (partial write)"
    try:
        files = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError) as exc:
        return f"unreadable marker: {exc}"
    for name, digest in files.items():
        path = folder / name
        if not path.is_file():
            return f"missing file {name}"
        if file_sha256(path) != digest:
            return f"file {name} does not match its hash"
    return None


def candidates(root: Path) -> list[tuple[int, Path]]:
    """Checkpoint folders under ``root``, newest first."""
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit():
            found.append((int(p.name[len(PREFIX):]), p))
    return sorted(found, reverse=True)


def newest_whole(root: Path) -> list[tuple[int, Path]]:
    """Whole checkpoints, newest first; broken ones are reported on stderr and left out."""
    whole = []
    for step, folder in candidates(root):
        why = problem(folder)
        if why:
            print(f"warning: skipping checkpoint {folder.name}: {why}", file=sys.stderr, flush=True)
        else:
            whole.append((step, folder))
    return whole


def prune(root: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest whole checkpoints (and any broken ones older than them)."""
    whole = [f for _, f in newest_whole(root)]
    keepers = set(whole[:keep])
    oldest_kept = min((int(f.name[len(PREFIX):]) for f in keepers), default=None)
    for step, folder in candidates(root):
        if folder not in keepers and (oldest_kept is None or step < oldest_kept):
            shutil.rmtree(folder, ignore_errors=True)


def _deepspeed_globals() -> list:
    """The classes DeepSpeed pickles into its checkpoints besides tensors and plain containers: the first three are
    what torch.serialization.get_unsafe_globals_in_checkpoint lists on ZeRO-2 and ZeRO-3 CPU checkpoints;
    DynamicLossScaler is fp16's loss scaler (not inspected; ZeRO 0/1 and GPU checkpoints were not either)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [ZeroStageEnum, LossScaler, DynamicLossScaler, fragment_address]


@contextmanager
def weights_only(engine):
    """While inside, ``engine`` (a DeepSpeedEngine) reads checkpoint files with torch.load(weights_only=True)
    and only DeepSpeed's own classes allowed: a file carrying any other global (code to run) fails to load."""
    import torch

    reader = engine.checkpoint_engine

    def load(path, map_location=None):
        return torch.load(path, map_location=map_location, weights_only=True)

    reader.load = load  # DeepSpeed's TorchCheckpointEngine.load passes weights_only=False
    try:
        with torch.serialization.safe_globals(_deepspeed_globals()):
            yield
    finally:
        del reader.load
