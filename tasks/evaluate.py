"""Evaluate: perplexity and bits per byte of a model on the held-out documents.

Every token of every document is predicted exactly once (documents start after an EOS token and are
cut into windows that overlap by one token). Perplexity is exp of the token-weighted mean loss; bits per
byte divides the same total loss by the documents' UTF-8 size, so it compares models whose tokenizers
differ (a new run's tokenizer against the champion's).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field


class EvalSettings(BaseModel):
    """How models are scored on the held-out split."""

    model_config = ConfigDict(extra="forbid")

    seq_len: int = Field(256, ge=8, description="evaluation window in tokens")
    batch_size: int = Field(8, ge=1)
    max_docs: int | None = Field(None, ge=1, description="cap on held-out documents scored")


class LMScore(BaseModel):
    perplexity: float
    bits_per_byte: float
    loss: float
    tokens: int
    bytes: int


def read_eval_texts(path: str | Path, max_docs: int | None = None) -> list[str]:
    texts = [json.loads(line)["text"] for line in Path(path).read_text().splitlines() if line.strip()]
    return texts[:max_docs] if max_docs else texts


def load_model(base: str, adapter: str | None = None):
    """A causal LM in eval mode; with an adapter, the PEFT model on top of the base."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return model.eval()


def windows(ids: list[int], seq_len: int) -> list[list[int]]:
    """Windows of at most seq_len + 1 tokens overlapping by one, so each token after the first is predicted once."""
    return [ids[i : i + seq_len + 1] for i in range(0, max(1, len(ids) - 1), seq_len)]


def score(model, tokenizer, texts: list[str], settings: EvalSettings) -> LMScore:
    import torch

    pieces: list[list[int]] = []
    n_bytes = 0
    for text in texts:
        ids = [tokenizer.eos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
        pieces.extend(w for w in windows(ids, settings.seq_len) if len(w) > 1)
        n_bytes += len(text.encode("utf-8"))
    total_loss, total_tokens = 0.0, 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.no_grad():
        for start in range(0, len(pieces), settings.batch_size):
            chunk = pieces[start : start + settings.batch_size]
            width = max(len(p) for p in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, p in enumerate(chunk):
                ids[row, : len(p)] = torch.tensor(p)
                mask[row, : len(p)] = 1
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            targets, valid = ids[:, 1:], mask[:, 1:].bool()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
            total_loss += float(nll[valid].sum())
            total_tokens += int(valid.sum())
    mean = total_loss / max(total_tokens, 1)
    return LMScore(
        perplexity=math.exp(mean), bits_per_byte=total_loss / math.log(2) / max(n_bytes, 1),
        loss=mean, tokens=total_tokens, bytes=n_bytes,
    )


def score_model(base: str, adapter: str | None, tokenizer_path: str, texts: list[str], settings: EvalSettings) -> LMScore:
    from transformers import AutoTokenizer

    return score(load_model(base, adapter), AutoTokenizer.from_pretrained(tokenizer_path), texts, settings)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(models: dict[str, dict], eval_texts: str, settings: EvalSettings) -> dict[str, LMScore]:
    """Scores for each named model ({"base": {...}, "candidate": {...}, "champion": {...}}) on the same texts."""
    texts = read_eval_texts(eval_texts, settings.max_docs)
    return {name: score_model(m["base"], m.get("adapter"), m["tokenizer"], texts, settings) for name, m in models.items()}
