"""Evaluate: how each model (base, candidate, champion) scores on the held-out split, on the task and on safety.

Every model answers the same prompts (tasks/evaluate/eval_sets.py) in the same order, and the base weights are loaded
once: the candidate's and the champion's LoRA adapters are switched on the one base (tasks/evaluate/model_pool.py).
For each model:

- perplexity and bits per byte on the held-out documents (tasks/evaluate/lm_scoring.py; instruction records are
  judged by their answers instead);
- the task metrics: ROUGE-1/2/L, BLEU, chrF and exact match (tasks/evaluate/text_metrics.py, 0-100) of its answers to
  the held-out instruction records and the prompts file (or, without either, of held-out continuations, cut to
  the reference's number of words), with each answer's own scores kept for paired bootstrap intervals of the
  differences between models (``compare``);
- pii_leaked: PII found by the run's own detector (the config's ``pii`` section) in its continuations of the
  PII probe prompts, by type; toxic_outputs: answers containing a listed word (tasks/evaluate/safety.py);
- the answers themselves, kept for the report only after the run's PII scrubber (``shown_outputs``);
- planted_pii_extracted: known secrets of the raw data that it reproduces from their raw context
  (tasks/evaluate/extraction.py), when ``evaluate.extraction.planted_file`` lists them;
- with canaries planted (tasks/train/canaries.py): extraction, rank and exposure of each.

With a ``cache_dir``, a model already evaluated on exactly these inputs is not evaluated again: the key is the
model (base fingerprint, adapter and tokenizer content), every input (documents, the prompts as rendered for
its tokenizer, probes, canaries, word lists), the settings and the code version. The base model, and the
champion (scored as the candidate of the run that made it), are then read back instead of recomputed when
the held-out data has not changed; ``ModelEval.reused`` says so.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.evaluate import eval_sets, extraction, safety, text_metrics
from tasks.core import failpoints, progress
from tasks.evaluate.bootstrap import Delta, paired_bootstrap
from tasks.evaluate.eval_sets import EvalPrompt, heldout_pairs, read_prompt_file
from tasks.evaluate.extraction import ExtractionSettings
from tasks.evaluate.generation import GenerationSettings, generate
from tasks.evaluate.lm_scoring import LMScore, score
from tasks.evaluate.model_pool import ModelPool, load_model

__all__ = ["GenerationSettings", "EvalSettings", "LMScore", "Generation", "ModelEval", "evaluate_models",
           "evaluate_task", "load_model", "score", "heldout_pairs", "read_prompt_file", "METRIC_KEYS", "compare"]

PROBE_ENTITIES = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS"]
METRIC_KEYS = ("perplexity", "bits_per_byte", *text_metrics.METRIC_KEYS, "pii_leaked", "toxic_outputs")
CANARY_KEYS = ("canaries_extracted", "canary_exposure_max", "canary_rank_min")
EXTRACTION_KEYS = ("planted_pii_extracted",)
COMPARED = ("rougeL", "rouge1", "chrf", "exact_match")  # per-answer metrics with bootstrap intervals
EVAL_CODE_VERSION = "evaluate-3"  # part of the evaluation cache key: bump when scores would change


class EvalSettings(BaseModel):
    """How models are scored on the held-out split, on the task and on safety."""

    model_config = ConfigDict(extra="forbid")

    seq_len: int = Field(256, ge=8, description="evaluation window in tokens")
    batch_size: int = Field(8, ge=1, description="sequences per forward pass (scoring and generation)")
    max_docs: int | None = Field(None, ge=1, description="cap on held-out documents scored for perplexity")
    generation: GenerationSettings = GenerationSettings()
    max_task_prompts: int = Field(64, ge=0, le=10_000, description="held-out instruction records answered at most")
    heldout_prompts: int = Field(8, ge=0, le=10_000,
                                 description="without instruction records: held-out documents turned into "
                                 "prompt/continuation pairs")
    prompt_words: int = Field(24, ge=1, description="words of a held-out document given as the prompt")
    reference_words: int = Field(16, ge=1, description="words after the prompt that form the reference")
    prompts_file: Path | None = Field(
        None, description='JSONL of {"prompt","reference"} or {"instruction","input","output"} pairs to generate for')
    max_prompts: int = Field(64, ge=0, description="cap on pairs read from prompts_file")
    pii_probe_prompts: Path | None = Field(
        None, description="prompts inviting PII, one a line; none = data_contracts/pii_probe_prompts.txt")
    pii_probe_max_new_tokens: int = Field(24, ge=1, le=1024,
                                          description="tokens generated per PII probe prompt (a leak shows early)")
    pii_probe_entities: list[str] = Field(
        default_factory=lambda: list(PROBE_ENTITIES),
        description="entity types counted in the probe's continuations; empty = no PII probe")
    toxicity_words: Path | None = Field(
        None, description="word list, one a line; none = data_contracts/toxicity_words.txt")
    extraction: ExtractionSettings = ExtractionSettings()
    bootstrap_samples: int = Field(2000, ge=100, le=100_000, description="resamples of the paired bootstrap")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="level of the reported confidence intervals")

    @field_validator("pii_probe_entities")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        from tasks.data.pii.settings import DEFAULT_ENTITIES

        entities = list(dict.fromkeys(e.strip().upper() for e in v if e.strip()))
        unknown = [e for e in entities if e not in DEFAULT_ENTITIES]
        if unknown:
            raise ValueError(f"unknown PII entity types {unknown} (known: {', '.join(DEFAULT_ENTITIES)})")
        return entities


class Generation(BaseModel):
    set: eval_sets.SetName
    prompt: str
    reference: str | None = None
    output: str


class ModelEval(BaseModel):
    metrics: dict[str, float] = Field(description="METRIC_KEYS, plus CANARY_KEYS / EXTRACTION_KEYS when measured")
    pii_leaks: dict[str, int] = Field(description="leaked entities by type in the PII-probe generations")
    generations: list[Generation] = Field(description="same prompts, same order, for every model")
    per_example: dict[str, list[float]] = Field(default_factory=dict,
                                                description="task metrics of each scored answer, in order")
    canaries: list[dict] = Field(default_factory=list, description="per canary: prefix, extracted, rank, exposure")
    extraction: list[dict] = Field(default_factory=list, description="per known secret: type, masked value, extracted")
    extraction_by_type: dict[str, dict[str, int]] = Field(default_factory=dict)
    scored_sets: list[str] = Field(default_factory=list, description="the sets the task metrics are computed on")
    reused: bool = Field(False, description="read from the evaluation cache (same model, inputs and settings)")
    seconds: float = Field(0.0, description="wall time of this model's evaluation (0 when reused)")
    saved_seconds: float = Field(0.0, description="when reused: the wall time of the evaluation it replaces")


def read_eval_texts(path: str | Path) -> list[str]:
    return [json.loads(line)["text"] for line in Path(path).read_text().splitlines() if line.strip()]


def _first_words(text: str, n: int) -> str:
    return " ".join(text.split()[:n])


def shown_outputs(outputs: list[str], pii) -> list[str]:
    """The generations as the report, the Prefect artifact, MLflow and the evaluation cache keep them: through the
    run's PII scrubber (``pii``: its PiiSettings), whether or not the data was scrubbed, since a report leaves the
    machine. Metrics and leak counts are computed on the raw outputs first."""
    if pii is None or not outputs:
        return list(outputs)
    from tasks.data.pii.scrub import scrub_texts

    return [text for text, _ in scrub_texts(list(outputs), pii)]


def evaluate_model(model, tokenizer, docs: list[str], prompts: list[EvalPrompt], settings: EvalSettings,
                   canaries=None, probes: list[extraction.Probe] = (), pii=None, name: str = "") -> ModelEval:
    """One loaded model's evaluation; ``canaries`` = (list[Canary], CanarySettings) or None; ``probes`` the
    extraction prompts; ``pii`` the run's PiiSettings (the detector of the PII probe)."""
    who = f"{name}: " if name else ""
    progress.update(0, None, f"{who}perplexity of {len(docs)} documents")
    lm = score(model, tokenizer, docs, settings.seq_len, settings.batch_size)
    probe_settings = settings.generation.model_copy(update={"max_new_tokens": settings.pii_probe_max_new_tokens})
    outputs = [""] * len(prompts)
    for probe, how in ((False, settings.generation), (True, probe_settings)):
        chosen = [i for i, p in enumerate(prompts) if (p.set == "pii_probe") == probe]
        progress.update(0, len(chosen), f"{who}{'PII probe' if probe else 'answers'}")
        for i, out in zip(chosen, generate(model, tokenizer, [prompts[i].render(tokenizer) for i in chosen], how,
                                           batch_size=settings.batch_size)):
            outputs[i] = out
    generations = [Generation(set=p.set, prompt=p.prompt, reference=p.reference, output=o)
                   for p, o in zip(prompts, outputs)]
    scored = [generations[i] for i in eval_sets.scored(prompts)]
    predictions = [_first_words(g.output, len(g.reference.split())) if g.set == "heldout" else g.output.strip()
                   for g in scored]
    references = [g.reference or "" for g in scored]
    metrics: dict[str, float] = {
        "perplexity": lm.perplexity,
        "bits_per_byte": lm.bits_per_byte,
        **text_metrics.compute_all(predictions, references),
    }
    probe_outputs = [g.output for g in generations if g.set == "pii_probe"]
    leaks = safety.pii_leaks(probe_outputs, settings.pii_probe_entities, pii) if settings.pii_probe_entities else {}
    metrics["pii_leaked"] = float(sum(leaks.values()))
    metrics["toxic_outputs"] = float(safety.toxic_outputs(outputs, settings.toxicity_words))
    found, by_type, canary_results = [], {}, []
    if probes:
        greedy = GenerationSettings(max_new_tokens=settings.extraction.max_new_tokens, temperature=0.0)
        progress.update(0, len(probes), f"{who}extraction probes")
        continuations = generate(model, tokenizer, [p.prompt for p in probes], greedy, batch_size=settings.batch_size)
        found, by_type = extraction.summarise(probes, continuations)
        metrics["planted_pii_extracted"] = float(sum(r["extracted"] for r in found))
    if canaries is not None:
        from tasks.evaluate.canary_exposure import measure

        planted, canary_settings = canaries
        progress.update(0, None, f"{who}canaries")
        canary_results = measure(model, tokenizer, planted, canary_settings)
        metrics["canaries_extracted"] = float(sum(c["extracted"] for c in canary_results))
        metrics["canary_exposure_max"] = max((c["exposure"] for c in canary_results), default=0.0)
        metrics["canary_rank_min"] = float(min((c["rank"] for c in canary_results),
                                               default=canary_settings.candidates + 1))
    shown = [g.model_copy(update={"output": o}) for g, o in zip(generations, shown_outputs(outputs, pii))]
    return ModelEval(metrics=metrics, pii_leaks=leaks, generations=shown,
                     per_example=text_metrics.per_example(predictions, references),
                     scored_sets=list(dict.fromkeys(g.set for g in scored)), canaries=canary_results,
                     extraction=found, extraction_by_type=by_type)


def extraction_probes(settings: EvalSettings, raw_snapshot: str | None) -> list[extraction.Probe]:
    """The extraction prompts from the raw snapshot's texts, when a secrets file is configured."""
    if settings.extraction.planted_file is None or raw_snapshot is None:
        return []
    from tasks.core import snapshot

    secrets = extraction.read_secrets(settings.extraction.planted_file)
    texts = (t for shard in snapshot.iter_tables(raw_snapshot) for t in shard.column("text").to_pylist())
    return extraction.build_probes(texts, secrets, settings.extraction)


def cache_key(model: dict, base_fingerprint: str, tokenizer, docs: list[str], prompts: list[EvalPrompt],
              probes: list[extraction.Probe], settings: EvalSettings, canaries: str | None, pii) -> str:
    """What an evaluation's result depends on, hashed (see the module's docstring)."""
    from tasks.core import snapshot
    from tasks.train.model import weights_fingerprint

    def content(path) -> str | None:
        return weights_fingerprint(Path(path)) if path else None

    def file_text(path) -> str | None:
        return Path(path).read_text(encoding="utf-8") if path and Path(path).is_file() else None

    return snapshot.stable_hash(
        EVAL_CODE_VERSION, base_fingerprint, content(model.get("adapter")),
        content(model["tokenizer"]), docs, [(p.set, p.render(tokenizer), p.reference) for p in prompts],
        [(p.secret.type, p.secret.value, p.prompt) for p in probes], file_text(canaries),
        settings.model_dump(mode="json", exclude={"prompts_file", "pii_probe_prompts", "toxicity_words"}),
        file_text(settings.toxicity_words or safety.DEFAULT_TOXICITY_WORDS), pii.model_dump(mode="json") if pii else None,
    )


def evaluate_models(models: dict[str, dict], eval_texts: str, settings: EvalSettings, canaries: str | None = None,
                    pii=None, raw_snapshot: str | None = None, cache_dir: str | Path | None = None,
                    ) -> dict[str, ModelEval]:
    """The evaluation of each named model ({"base": {"base": path, "tokenizer": path}, "candidate": {...,
    "adapter": path}, ...}, optionally with "base_fingerprint") on the same texts and prompts; ``canaries``: a
    file of tasks.train.canaries.write_canaries; ``raw_snapshot``: the raw snapshot folder the extraction probe's
    prompts come from."""
    from transformers import AutoTokenizer

    texts = read_eval_texts(eval_texts)
    docs, _ = eval_sets.split_texts(texts)
    docs = (docs or texts)[: settings.max_docs] if settings.max_docs else (docs or texts)
    prompts = eval_sets.build(texts, settings)
    probes = extraction_probes(settings, raw_snapshot)
    planted = None
    if canaries:
        from tasks.train.canaries import read_canaries

        planted = read_canaries(canaries)
    tokenizers: dict[str, object] = {}
    pool = ModelPool()
    out = {}
    for name, m in models.items():
        path = m["tokenizer"]
        if path not in tokenizers:
            tokenizers[path] = AutoTokenizer.from_pretrained(path)
        cached = None
        if cache_dir is not None:
            key = cache_key(m, pool.fingerprint(m["base"], m.get("base_fingerprint")), tokenizers[path], docs, prompts,
                            probes, settings, canaries, pii)
            cached = Path(cache_dir) / f"{key}.json"
            if cached.is_file():
                stored = ModelEval.model_validate_json(cached.read_text())
                out[name] = stored.model_copy(update={"reused": True, "seconds": 0.0, "saved_seconds": stored.seconds})
                continue
        started = time.perf_counter()
        with pool.use(name, m["base"], m.get("adapter"), m.get("base_fingerprint")) as model:
            out[name] = evaluate_model(model, tokenizers[path], docs, prompts, settings, planted, probes, pii, name)
        out[name].seconds = round(time.perf_counter() - started, 2)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(out[name].model_dump_json())
            tmp.replace(cached)
        failpoints.reached(f"evaluate:{name}")
    return out


def compare(evals: dict[str, ModelEval], settings: EvalSettings, against: tuple[str, ...] = ("base", "champion"),
            ) -> dict[str, dict[str, Delta]]:
    """Candidate minus each other model on the per-answer task metrics, with paired bootstrap intervals."""
    cand = evals.get("candidate")
    out: dict[str, dict[str, Delta]] = {}
    if cand is None:
        return out
    for who in against:
        other = evals.get(who)
        if other is None:
            continue
        deltas = {}
        for metric in COMPARED:
            a, b = cand.per_example.get(metric, []), other.per_example.get(metric, [])
            if a and len(a) == len(b):
                deltas[metric] = paired_bootstrap(a, b, settings.bootstrap_samples, settings.confidence)
        out[who] = deltas
    return out


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(models: dict[str, dict], eval_texts: str, settings: EvalSettings, canaries: str | None = None,
                  pii=None, raw_snapshot: str | None = None, cache_dir: str | None = None) -> dict[str, ModelEval]:
    """Evaluation of each named model ({"base": {...}, "candidate": {...}, "champion": {...}}) on the same inputs."""
    return evaluate_models(models, eval_texts, settings, canaries, pii, raw_snapshot, cache_dir)
