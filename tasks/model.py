"""Base models: a local Hugging Face folder (or hub id), or a tiny causal LM built from a config.

The tiny model is initialised from a seed and saved under the state folder, keyed on its config and
tokenizer, so the same settings always give the same weights and an offline demo needs no download.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks import snapshot

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

    base_model: str | None = Field(None, description="local Hugging Face folder or hub id; none builds the tiny model")
    tiny: TinyModelSettings = TinyModelSettings()


class BaseModelRef(BaseModel):
    path: str
    fingerprint: str
    description: str
    parameters: int


def weights_fingerprint(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(Path(folder).glob("*")):
        if f.suffix in {".safetensors", ".bin", ".json", ".gguf"} and f.is_file():
            h.update(f.name.encode() + b"\x00")
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


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
        path = Path(settings.base_model)
        if not path.is_dir():
            raise FileNotFoundError(f"model.base_model: no local model folder at {path}")
        return BaseModelRef(path=str(path), fingerprint=weights_fingerprint(path),
                            description=str(path), parameters=_count(path))
    key = snapshot.cache_key("tiny-model", tokenizer_hash, settings.tiny.model_dump(), CODE_VERSION)
    out = Path(store) / f"tiny-{key}"
    if not (out / "config.json").is_file():
        tmp = out.with_name(f".{out.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        build_tiny(tokenizer_path, settings.tiny, tmp)
        tmp.rename(out)
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
