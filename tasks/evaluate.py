"""Evaluate: how each model (base, candidate, champion) scores on the held-out split, on prompts and on safety.

For every model, loaded once:

- perplexity and bits per byte on the held-out documents. Every token of every document is predicted exactly
  once (documents start after an EOS token and are cut into windows that overlap by one token). Perplexity is
  exp of the token-weighted mean loss; bits per byte divides the same total loss by the documents' UTF-8 size,
  so it compares models whose tokenizers differ (a new run's tokenizer against the champion's).
- generations (tasks/generation.py) for the same prompts, in the same order, for every model:
  ``heldout``: the first ``prompt_words`` words of the first ``heldout_prompts`` held-out documents, the next
  ``reference_words`` words being the reference; ``prompts``: the pairs of ``prompts_file``; ``pii_probe``:
  the PII probe prompts.
- ROUGE-1/2/L, BLEU, chrF and exact match (tasks/text_metrics.py, 0-100) over the heldout and prompts pairs.
  A heldout continuation is cut to its reference's number of words before scoring (the stored output is whole).
- pii_leaked: PII findings of the probe's entity types in the pii_probe continuations (tasks/safety.py), with
  the count per type in ``pii_leaks``; toxic_outputs: generations that contain a listed word.
- with a canaries file (tasks/canaries.py): extraction, rank and exposure of each planted canary.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks import safety, text_metrics
from tasks.generation import GenerationSettings, generate
from tasks.trainer.artifacts import is_full_model

__all__ = ["GenerationSettings", "EvalSettings", "LMScore", "Generation", "ModelEval", "evaluate_models",
           "evaluate_task", "load_model", "score", "heldout_pairs", "read_prompt_pairs", "METRIC_KEYS"]

PROBE_ENTITIES = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS"]
METRIC_KEYS = ("perplexity", "bits_per_byte", *text_metrics.METRIC_KEYS, "pii_leaked", "toxic_outputs")
CANARY_KEYS = ("canaries_extracted", "canary_exposure_max", "canary_rank_min")


class EvalSettings(BaseModel):
    """How models are scored on the held-out split, on prompts and on safety."""

    model_config = ConfigDict(extra="forbid")

    seq_len: int = Field(256, ge=8, description="evaluation window in tokens")
    batch_size: int = Field(8, ge=1, description="sequences per forward pass (scoring and generation)")
    max_docs: int | None = Field(None, ge=1, description="cap on held-out documents scored")
    generation: GenerationSettings = GenerationSettings()
    heldout_prompts: int = Field(8, ge=0, le=10_000, description="held-out documents turned into prompt/reference pairs")
    prompt_words: int = Field(24, ge=1, description="words of a held-out document given as the prompt")
    reference_words: int = Field(16, ge=1, description="words after the prompt that form the reference")
    prompts_file: Path | None = Field(
        None, description='JSONL of {"prompt","reference"} or {"instruction","input","output"} pairs to generate for')
    max_prompts: int = Field(64, ge=0, description="cap on pairs read from prompts_file")
    pii_probe_prompts: Path | None = Field(
        None, description="prompts inviting PII, one a line; none = data_contracts/pii_probe_prompts.txt")
    pii_probe_entities: list[str] = Field(
        default_factory=lambda: list(PROBE_ENTITIES),
        description="entity types counted in the probe's continuations; empty = no PII probe")
    toxicity_words: Path | None = Field(
        None, description="word list, one a line; none = data_contracts/toxicity_words.txt")

    @field_validator("pii_probe_entities")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        from tasks.pii import DEFAULT_ENTITIES

        entities = list(dict.fromkeys(e.strip().upper() for e in v if e.strip()))
        unknown = [e for e in entities if e not in DEFAULT_ENTITIES]
        if unknown:
            raise ValueError(f"unknown PII entity types {unknown} (known: {', '.join(DEFAULT_ENTITIES)})")
        return entities


class LMScore(BaseModel):
    perplexity: float
    bits_per_byte: float
    loss: float
    tokens: int
    bytes: int


class Generation(BaseModel):
    set: Literal["heldout", "prompts", "pii_probe"]
    prompt: str
    reference: str | None = None
    output: str


class ModelEval(BaseModel):
    metrics: dict[str, float] = Field(description="METRIC_KEYS, plus CANARY_KEYS when canaries were planted")
    pii_leaks: dict[str, int] = Field(description="leaked entities by type in the PII-probe generations")
    generations: list[Generation] = Field(description="same prompts, same order, for every model")
    canaries: list[dict] = Field(default_factory=list, description="per canary: prefix, extracted, rank, exposure")


# ---------------------------------------------------------------------------------------------- inputs

def read_eval_texts(path: str | Path, max_docs: int | None = None) -> list[str]:
    texts = [json.loads(line)["text"] for line in Path(path).read_text().splitlines() if line.strip()]
    return texts[:max_docs] if max_docs else texts


def heldout_pairs(texts: list[str], settings: EvalSettings) -> list[tuple[str, str]]:
    """(prompt, reference) from the first ``heldout_prompts`` documents of at least two words: the prompt is
    the document up to its ``prompt_words``-th word (half its words when it is shorter than prompt and
    reference together), as written; the reference the next ``reference_words`` words, single-spaced."""
    pairs = []
    for text in texts:
        if len(pairs) >= settings.heldout_prompts:
            break
        words = list(re.finditer(r"\S+", text))
        if len(words) < 2:
            continue
        n = settings.prompt_words
        if len(words) < settings.prompt_words + settings.reference_words:
            n = min(n, len(words) // 2)
        prompt = text[: words[n - 1].end()]
        reference = " ".join(w.group() for w in words[n : n + settings.reference_words])
        pairs.append((prompt, reference))
    return pairs


def read_prompt_pairs(path: str | Path, limit: int) -> list[tuple[str, str]]:
    """(prompt, reference) pairs of a JSONL file: {"prompt","reference"} lines, or instruction records
    {"instruction","input","output"} whose prompt is the instruction, a blank line and the input (when there
    is one), then a blank line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"evaluate.prompts_file: file not found: {path}")
    pairs = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if len(pairs) >= limit:
            break
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"evaluate.prompts_file {path}:{lineno}: not JSON ({exc.msg})") from None
        if isinstance(row, dict) and isinstance(row.get("prompt"), str) and isinstance(row.get("reference"), str):
            pairs.append((row["prompt"], row["reference"]))
        elif isinstance(row, dict) and isinstance(row.get("instruction"), str) and isinstance(row.get("output"), str):
            extra = row.get("input") or ""
            prompt = row["instruction"].strip() + (f"\n\n{str(extra).strip()}" if str(extra).strip() else "") + "\n\n"
            pairs.append((prompt, row["output"]))
        else:
            raise ValueError(f"evaluate.prompts_file {path}:{lineno}: needs string fields 'prompt' and 'reference', "
                             "or 'instruction' and 'output'")
    return pairs


# ---------------------------------------------------------------------------------------------- models

def load_model(base: str, adapter: str | None = None):
    """A causal LM in eval mode: the base; with an adapter folder, the PEFT model on top of the base, or the
    folder itself when it holds a fully fine-tuned model (config.json and no adapter_config.json)."""
    import torch
    from transformers import AutoModelForCausalLM

    if adapter and is_full_model(adapter):
        return AutoModelForCausalLM.from_pretrained(adapter, dtype=torch.float32).eval()
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


# ---------------------------------------------------------------------------------------------- evaluation

def _first_words(text: str, n: int) -> str:
    return " ".join(text.split()[:n])


def evaluate_model(model, tokenizer, texts: list[str], prompt_sets: list[tuple[str, str, str | None]],
                   settings: EvalSettings, canaries=None) -> ModelEval:
    """One loaded model's evaluation; ``prompt_sets`` is [(set, prompt, reference or None)] in report order,
    ``canaries`` (list[Canary], CanarySettings) or None."""
    lm = score(model, tokenizer, texts, settings)
    outputs = generate(model, tokenizer, [p for _, p, _ in prompt_sets], settings.generation,
                       batch_size=settings.batch_size)
    generations = [Generation(set=s, prompt=p, reference=r, output=o) for (s, p, r), o in zip(prompt_sets, outputs)]
    scored = [g for g in generations if g.set in ("heldout", "prompts")]
    predictions = [_first_words(g.output, len(g.reference.split())) if g.set == "heldout" else g.output
                   for g in scored]
    metrics: dict[str, float] = {
        "perplexity": lm.perplexity,
        "bits_per_byte": lm.bits_per_byte,
        **text_metrics.compute_all(predictions, [g.reference or "" for g in scored]),
    }
    probe_outputs = [g.output for g in generations if g.set == "pii_probe"]
    leaks = safety.pii_leaks(probe_outputs, settings.pii_probe_entities) if settings.pii_probe_entities else {}
    metrics["pii_leaked"] = float(sum(leaks.values()))
    metrics["toxic_outputs"] = float(safety.toxic_outputs(outputs, settings.toxicity_words))
    canary_results: list[dict] = []
    if canaries is not None:
        from tasks.canaries import measure

        planted, canary_settings = canaries
        canary_results = measure(model, tokenizer, planted, canary_settings)
        metrics["canaries_extracted"] = float(sum(c["extracted"] for c in canary_results))
        metrics["canary_exposure_max"] = max((c["exposure"] for c in canary_results), default=0.0)
        metrics["canary_rank_min"] = float(min((c["rank"] for c in canary_results),
                                               default=canary_settings.candidates + 1))
    return ModelEval(metrics=metrics, pii_leaks=leaks, generations=generations, canaries=canary_results)


def prompt_sets(texts: list[str], settings: EvalSettings) -> list[tuple[str, str, str | None]]:
    """Every prompt the models continue, in report order: heldout pairs, prompts_file pairs, PII probes."""
    sets: list[tuple[str, str, str | None]] = [("heldout", p, r) for p, r in heldout_pairs(texts, settings)]
    if settings.prompts_file is not None and settings.max_prompts:
        sets += [("prompts", p, r) for p, r in read_prompt_pairs(settings.prompts_file, settings.max_prompts)]
    if settings.pii_probe_entities:
        sets += [("pii_probe", p, None) for p in safety.probe_prompts(settings.pii_probe_prompts)]
    return sets


def evaluate_models(models: dict[str, dict], eval_texts: str, settings: EvalSettings,
                    canaries: str | None = None) -> dict[str, ModelEval]:
    """The evaluation of each named model ({"base": {"base": path, "tokenizer": path}, "candidate": {...,
    "adapter": path}, ...}) on the same texts and prompts; ``canaries``: a file of tasks.canaries.write_canaries."""
    from transformers import AutoTokenizer

    texts = read_eval_texts(eval_texts, settings.max_docs)
    sets = prompt_sets(texts, settings)
    planted = None
    if canaries:
        from tasks.canaries import read_canaries

        planted = read_canaries(canaries)
    tokenizers: dict[str, object] = {}
    out = {}
    for name, m in models.items():
        path = m["tokenizer"]
        if path not in tokenizers:
            tokenizers[path] = AutoTokenizer.from_pretrained(path)
        model = load_model(m["base"], m.get("adapter"))
        out[name] = evaluate_model(model, tokenizers[path], texts, sets, settings, planted)
        del model
    return out


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(models: dict[str, dict], eval_texts: str, settings: EvalSettings,
                  canaries: str | None = None) -> dict[str, ModelEval]:
    """Evaluation of each named model ({"base": {...}, "candidate": {...}, "champion": {...}}) on the same inputs."""
    return evaluate_models(models, eval_texts, settings, canaries)
