"""Base models: a local Hugging Face folder, a hub id, a GGUF file, or a tiny causal LM built from a config.

Whatever ``model.base_model`` names, :func:`resolve_base` turns it into a local Hugging Face folder
(model + tokenizer) that training, evaluation and the registry read as any other: a folder is used as
it is; a hub id is downloaded into the Hugging Face cache (or found there when the hub is offline); a
``.gguf`` file is dequantized once into the models store (tasks/train/gguf_model.py). The tokenizer stage
calls the same function, so both stages see the same folder.

The tiny model is initialised from a seed and saved under the state folder, keyed on its config and
tokenizer, so the same settings always give the same weights and an offline demo needs no download.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.core import snapshot
from tasks.core.hashing import folder_sha256

CODE_VERSION = "model-1"


class TinyModelSettings(BaseModel):
    """A small Llama-style causal LM for offline runs."""

    model_config = ConfigDict(extra="forbid")

    hidden_size: int = Field(256, ge=16)
    layers: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    intermediate_size: int = Field(688, ge=16)
    max_positions: int = Field(512, ge=16)
    seed: int = 0

    @model_validator(mode="after")
    def _heads_divide(self) -> "TinyModelSettings":
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by heads {self.heads}")
        return self


class ModelSettings(BaseModel):
    """Which model is fine-tuned."""

    model_config = ConfigDict(extra="forbid")

    base_model: str | None = Field(
        None, description="a local Hugging Face folder, a hub id (e.g. HuggingFaceTB/SmolLM2-135M-Instruct), or a "
        ".gguf file (dequantized once); none builds the tiny model",
    )
    tiny: TinyModelSettings = TinyModelSettings()


class BaseModelRef(BaseModel):
    path: str
    fingerprint: str
    description: str
    parameters: int


class BaseModelError(RuntimeError):
    """``model.base_model`` names nothing that can be loaded; the message says what to do."""


@dataclass(frozen=True)
class ResolvedBase:
    folder: Path  # a local Hugging Face folder: config, weights, tokenizer
    kind: str  # "folder" | "hub" | "gguf"
    description: str


_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
_HUB_SKIP = ["*.onnx", "onnx/*", "*.gguf", "*.h5", "*.msgpack", "*.ot", "*.tflite", "*.mlmodel", "coreml/*",
             "original/*", "*.pth", "*.pt"]


def looks_like_path(spec: str) -> bool:
    """True when ``spec`` can only be a file-system path (never a hub id)."""
    return (spec.startswith(("/", ".", "~")) or "\\" in spec or spec.lower().endswith(".gguf")
            or _HUB_ID.fullmatch(spec) is None)


def resolve_base(spec: str, models_store: Path) -> ResolvedBase:
    """The local Hugging Face folder for ``model.base_model`` = ``spec``; raises BaseModelError naming it."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return ResolvedBase(path.absolute(), "folder", str(path))
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise BaseModelError(f"model.base_model: {spec!r} is a file but not a .gguf model: name a Hugging Face "
                                 "model folder, a hub id or a .gguf file")
        from tasks.train import gguf_model

        return ResolvedBase(gguf_model.dequantized_folder(path.absolute(), Path(models_store)), "gguf",
                            f"{path.name} (dequantized)")
    if looks_like_path(spec):
        what = "GGUF file" if spec.lower().endswith(".gguf") else "model folder"
        raise BaseModelError(f"model.base_model: no {what} at {path.absolute()} (relative paths in a config file "
                             "are read from the file's folder)")
    folder = hub_snapshot(spec)
    return ResolvedBase(folder, "hub", f"{spec}@{folder.name[:12]}")


def hub_snapshot(repo_id: str) -> Path:
    """The hub model ``repo_id`` in the Hugging Face cache: downloaded when online, the cached copy offline."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline = constants.HF_HUB_OFFLINE
    try:
        folder = Path(snapshot_download(repo_id, ignore_patterns=_HUB_SKIP + ["*.bin"]))
        if not any(folder.glob("*.safetensors")):  # an older repository with PyTorch .bin weights only
            folder = Path(snapshot_download(repo_id, ignore_patterns=_HUB_SKIP))
    except GatedRepoError as exc:
        raise BaseModelError(f"model.base_model: hub model {repo_id!r} is gated: accept its terms on the hub and "
                             "set HF_TOKEN") from exc
    except RepositoryNotFoundError as exc:
        raise BaseModelError(f"model.base_model: {repo_id!r} is not a local folder and the Hugging Face hub has no "
                             "model of that name (a private one needs HF_TOKEN)") from exc
    except LocalEntryNotFoundError as exc:
        if offline:
            why, fix = "the Hugging Face hub is offline (HF_HUB_OFFLINE=1)", " (or run with HF_HUB_OFFLINE=0)"
        else:
            why, fix = "the Hugging Face hub cannot be reached", ""
        raise BaseModelError(
            f"model.base_model: {repo_id!r} is not a local folder and {why}, with no cached copy in "
            f"{constants.HF_HUB_CACHE}: download it on a machine with a network{fix} or point model.base_model at "
            "a local folder or .gguf file") from exc
    return folder


WEIGHT_FILES = {".safetensors", ".bin", ".json", ".gguf"}


def weights_fingerprint(folder: Path) -> str:
    """The model folder's content hash: its weights and configuration files (not its README or logs)."""
    return folder_sha256(folder, keep=lambda f: f.suffix in WEIGHT_FILES)


def build_tiny(tokenizer_path: str, settings: TinyModelSettings, out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=settings.hidden_size,
        intermediate_size=settings.intermediate_size,
        num_hidden_layers=settings.layers,
        num_attention_heads=settings.heads,
        num_key_value_heads=settings.heads,
        max_position_embeddings=settings.max_positions,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(settings.seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))


def prepare(settings: ModelSettings, tokenizer_path: str, tokenizer_hash: str, store: Path) -> BaseModelRef:
    """The base model folder for this run, built (and cached) when none is configured."""
    if settings.base_model:
        base = resolve_base(settings.base_model, Path(store))
        return BaseModelRef(path=str(base.folder), fingerprint=weights_fingerprint(base.folder),
                            description=base.description, parameters=_count(base.folder))
    key = snapshot.cache_key("tiny-model", tokenizer_hash, settings.tiny.model_dump(), CODE_VERSION)
    out = Path(store) / f"tiny-{key}"
    if not (out / "config.json").is_file():  # built once; two runs racing keep the first copy
        snapshot.publish(out, lambda tmp: build_tiny(tokenizer_path, settings.tiny, tmp))
    t = settings.tiny
    return BaseModelRef(
        path=str(out), fingerprint=weights_fingerprint(out), parameters=_count(out),
        description=f"tiny-llama h{t.hidden_size} l{t.layers} seed{t.seed}",
    )


def _count(folder: Path) -> int:
    from safetensors import safe_open

    total = 0
    for f in Path(folder).glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            for name in st.keys():
                total += _prod(st.get_slice(name).get_shape())
    return total


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@task(name="base-model", cache_policy=NO_CACHE)
def base_model_task(settings: ModelSettings, tokenizer_path: str, tokenizer_hash: str, store: str) -> BaseModelRef:
    return prepare(settings, tokenizer_path, tokenizer_hash, Path(store))
