"""The DeepSpeed config of a job: a JSON file from infra/deepspeed/ (or the user's), its "auto" values filled in.

``train.deepspeed_config`` names a file explicitly; otherwise ``zero_stage`` and ``offload_optimizer`` pick
one of infra/deepspeed/zero{0,1,2,3}[-offload].json. Values the training loop depends on (batch sizes,
accumulation, clipping, precision) come from the settings: a file may leave them "auto" or repeat them, but
not contradict them.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from tasks.core.paths import DEEPSPEED_TEMPLATES
from tasks.train.trainer.job import TrainSettings

AUTO = "auto"


class DeepSpeedConfigError(ValueError):
    pass


def templates_dir() -> Path:
    """infra/deepspeed of this checkout, or the copy an installed wheel carries (tasks.core.paths)."""
    if DEEPSPEED_TEMPLATES.is_dir():
        return DEEPSPEED_TEMPLATES
    raise DeepSpeedConfigError(f"DeepSpeed templates not found ({DEEPSPEED_TEMPLATES}): "
                               "set train.deepspeed_config to a DeepSpeed JSON file")


def config_path(s: TrainSettings) -> Path:
    if s.deepspeed_config is not None:
        path = Path(s.deepspeed_config)
        if not path.is_file():
            raise DeepSpeedConfigError(f"train.deepspeed_config: no file at {path}")
        return path
    return templates_dir() / f"zero{s.zero_stage}{'-offload' if s.offload_optimizer else ''}.json"


def file_digest(s: TrainSettings) -> str:
    """Content hash of the config file the job uses (part of the training-reuse key)."""
    return hashlib.sha256(config_path(s).read_bytes()).hexdigest()


def read(s: TrainSettings) -> dict[str, Any]:
    path = config_path(s)
    try:
        config = json.loads(path.read_text())
    except ValueError as exc:
        raise DeepSpeedConfigError(f"train.deepspeed_config: {path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise DeepSpeedConfigError(f"train.deepspeed_config: {path} must hold a JSON object")
    for owned in ("optimizer", "scheduler"):
        if owned in config:
            raise DeepSpeedConfigError(f"{path}: remove the '{owned}' section: the trainer builds it from train.*")
    return config


def stage(config: dict[str, Any]) -> int:
    return int(config.get("zero_optimization", {}).get("stage", 0))


def offloads_optimizer(config: dict[str, Any]) -> bool:
    device = config.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none")
    return device not in (None, "none")


def fill(config: dict[str, Any], s: TrainSettings, world: int, device: str, ds_cpu_adam: bool,
         source: str = "deepspeed config") -> dict[str, Any]:
    """A copy of ``config`` with every "auto" replaced; values that contradict the settings are errors."""
    out = copy.deepcopy(config)
    # what the training loop depends on: set when missing, an error when different
    _setdefault(out, ("train_micro_batch_size_per_gpu",), s.micro_batch_size, source)
    _setdefault(out, ("gradient_accumulation_steps",), s.gradient_accumulation_steps, source)
    _setdefault(out, ("train_batch_size",), s.micro_batch_size * s.gradient_accumulation_steps * world, source)
    _setdefault(out, ("bf16", "enabled"), s.precision == "bf16", source)
    if out.get("fp16", {}).get("enabled") not in (None, False, AUTO):
        raise DeepSpeedConfigError(f"{source}: fp16 is not supported: use train.precision bf16")
    # the rest: filled only where the file says "auto"
    _fill_auto(out, ("fp16", "enabled"), False)
    _fill_auto(out, ("gradient_clipping",), s.max_grad_norm)
    _fill_auto(out, ("zero_optimization", "offload_optimizer", "pin_memory"), device == "cuda")
    _fill_auto(out, ("zero_optimization", "offload_param", "pin_memory"), device == "cuda")
    _fill_auto(out, ("zero_force_ds_cpu_optimizer",), ds_cpu_adam)
    left = list(_autos(out))
    if left:
        raise DeepSpeedConfigError(f"{source}: no value for \"auto\" at {', '.join(left)}")
    return out


def _parent(config: dict, keys: tuple[str, ...], create: bool) -> dict | None:
    node = config
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            if not create:
                return None
            node[k] = {}
        node = node[k]
    return node


def _setdefault(config: dict, keys: tuple[str, ...], value: Any, source: str) -> None:
    parent = _parent(config, keys, create=True)
    current = parent.get(keys[-1], AUTO)
    if current != AUTO and current != value:
        raise DeepSpeedConfigError(f"{source}: {'.'.join(keys)} is {current!r} but the train settings give "
                                   f"{value!r}: set it to \"auto\"")
    parent[keys[-1]] = value


def _fill_auto(config: dict, keys: tuple[str, ...], value: Any) -> None:
    parent = _parent(config, keys, create=False)
    if parent is not None and parent.get(keys[-1]) == AUTO:
        parent[keys[-1]] = value


def _autos(node: Any, prefix: str = ""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _autos(v, f"{prefix}{k}.")
    elif node == AUTO:
        yield prefix.rstrip(".")


def build(s: TrainSettings, world: int, device: str, ds_cpu_adam: bool) -> dict[str, Any]:
    return fill(read(s), s, world, device, ds_cpu_adam, source=str(config_path(s)))
