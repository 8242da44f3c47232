"""One line per finished stage of the retrain flow, read from the run's report as it fills in: what a person
watching the run wants to know (counts, losses, scores), shown by the terminal view and logged to the run."""

from __future__ import annotations

from typing import Any

# the flow's stages in order (the names RetrainRun.done is given) and how the terminal calls them
STAGES: dict[str, str] = {
    "ingest": "ingest",
    "contract_raw": "raw contract",
    "clean": "clean",
    "dedup": "dedup",
    "pii": "scrub PII",
    "contract": "curated contract",
    "tokenizer_and_model": "tokenizer, model",
    "split": "split, pack",
    "train": "train",
    "evaluate": "evaluate",
    "register": "register",
}


def label(stage: str) -> str:
    return STAGES.get(stage, stage)


def next_stage(stage: str) -> str | None:
    names = list(STAGES)
    return names[names.index(stage) + 1] if stage in names and stage != names[-1] else None


def describe(stage: str, rep: dict[str, Any]) -> str:
    """What ``stage`` did, in a few words (empty when the report holds nothing about it yet)."""
    try:
        return _DESCRIBE[stage](rep) if stage in _DESCRIBE else ""
    except (KeyError, TypeError, IndexError, ValueError):  # a stage that ended early leaves parts of the report out
        return ""


def _n(value: Any) -> int:
    return int(value or 0)


def _ingest(rep: dict[str, Any]) -> str:
    c = rep["counts"]
    quarantined = f", {_n(c['quarantined'])} quarantined" if c.get("quarantined") else ""
    return f"{_n(c['documents'])} documents from {_n(c['files'])} files{quarantined}"


def _contract(rep: dict[str, Any]) -> str:
    last = rep["contracts"][-1]
    if last["passed"]:
        return f"passed: {len(last['expectations'])} expectations on {last['rows']} rows"
    return f"failed: {'; '.join(last['failures'])}"


def _clean(rep: dict[str, Any]) -> str:
    c = rep["counts"]
    dropped = _n(c["dropped_empty"]) + _n(c["dropped_too_short"]) + _n(c["dropped_quality"])
    return f"{rep['snapshots']['clean']['rows']} kept, {dropped} dropped"


def _dedup(rep: dict[str, Any]) -> str:
    c = rep["counts"]
    return f"{_n(c['exact_duplicates'])} exact and {_n(c['near_duplicates'])} near duplicates removed"


def _pii(rep: dict[str, Any]) -> str:
    c = rep["counts"]
    return f"{sum(c['pii_entities'].values())} entities replaced in {_n(c['curated_documents'])} documents"


def _model(rep: dict[str, Any]) -> str:
    return f"{rep['base_model']['description']}"


def _split(rep: dict[str, Any]) -> str:
    d = rep["dataset"]
    return f"{d['train_docs']} documents to train on ({d['blocks']} blocks), {d['eval_docs']} held out"


def _train(rep: dict[str, Any]) -> str:
    t = rep["training"]
    if t.get("reused"):
        return f"reused an identical finished training ({t['steps']} steps)"
    return (f"{t['steps']} steps, loss {t['first_loss']:.3f} -> {t['final_loss']:.3f}, "
            f"{t['mean_tokens_per_s']:.0f} tokens/s")


def _evaluate(rep: dict[str, Any]) -> str:
    ev = rep["evaluation"]
    metric = "rougeL" if ev["candidate"].get("rougeL") is not None else "bits_per_byte"
    scores = ", ".join(f"{who} {ev[who][metric]:.3g}" for who in ("base", "champion", "candidate")
                       if ev.get(who) and ev[who].get(metric) is not None)
    reused = f" (reused: {', '.join(ev['reused'])})" if ev.get("reused") else ""
    return f"{metric}: {scores}{reused}"


def _register(rep: dict[str, Any]) -> str:
    m = rep["model"]
    return f"{m['name']} v{m['version']}: {', '.join('@' + a for a in m['aliases'])}"


_DESCRIBE = {
    "ingest": _ingest, "contract_raw": _contract, "clean": _clean, "dedup": _dedup, "pii": _pii,
    "contract": _contract, "tokenizer_and_model": _model, "split": _split, "train": _train,
    "evaluate": _evaluate, "register": _register,
}
