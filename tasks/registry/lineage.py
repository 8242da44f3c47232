"""What a registered version carries about where it came from: lineage tags (snapshot, tokenizer, base model,
contracts, gates, decision, held-out data), the run's flattened parameters and every evaluation metric."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tasks.core.hashing import file_sha256
from tasks.registry.versions import EVAL_DATA_TAG, TAG_METRICS

# the configuration sections logged as MLflow parameters (section.field)
PARAM_SECTIONS = ("train", "dedup", "tokenizer", "model", "clean")


def file_fingerprint(path: str | Path) -> str:
    return file_sha256(path)[:16]


def lineage_tags(fingerprint: str, tok, base, contracts: list[dict], gate_results, candidate: dict[str, Any],
                 status: str, blocked_by: list[str], eval_data: str | None = None,
                 corrections=None, history: dict[str, Any] | None = None,
                 eval_set: str | None = None) -> dict[str, str]:
    """The version's tags. ``eval_set``: the frozen evaluation set its figures come from (``corpus v1 (hash)``). ``corrections`` (with ``data.corrections``: the export of the gateway's corrections,
    tasks/serve/corrections.py) adds ``corrections`` (how many), ``corrections_sha256`` (the file's) and
    ``corrections_versions`` (the versions whose answers they correct). ``history`` (the run's dataset history,
    tasks/data/history.py) adds ``dataset`` and ``history_parents`` (the champions whose training data joined)."""
    tags = {
        "snapshot_fingerprint": fingerprint,
        "tokenizer_hash": tok.content_hash,
        "base_model": base.description,
        "base_model_fingerprint": base.fingerprint,
        "contracts": json.dumps({c["kind"]: c["passed"] for c in contracts}),
        "gates": json.dumps({g.name: g.status for g in gate_results}),
        "status": status,
        "blocked_by": "; ".join(blocked_by)[:4900] or "-",
    }
    if eval_data:
        tags[EVAL_DATA_TAG] = eval_data
    if eval_set:
        tags["eval_set"] = eval_set
    if history is not None:  # the dataset, and the champions whose training data this version's includes
        tags["dataset"] = history["dataset"]
        merged = [{k: p.get(k) for k in ("model", "version", "fingerprint")} for p in history.get("parents") or []
                  if history.get("merged")]
        tags["history_parents"] = json.dumps(merged)[:4900]
    if corrections is not None:
        tags["corrections"] = str(corrections.count)
        if corrections.sha256:
            tags["corrections_sha256"] = corrections.sha256
        if corrections.versions:
            tags["corrections_versions"] = ",".join(corrections.versions)[:4900]
    for key in TAG_METRICS:  # key evaluation metrics, for `tunegate models`
        if candidate.get(key) is not None:
            tags[key] = f"{float(candidate[key]):.6g}"
    return tags


def flat_params(config: BaseModel) -> dict[str, Any]:
    """The pipeline configuration's main sections as MLflow parameters (``train.lr``...)."""
    out: dict[str, Any] = {}
    for section in PARAM_SECTIONS:
        for k, v in getattr(config, section).model_dump(mode="json").items():
            out[f"{section}.{k}"] = v
    return out


def flat_metrics(scores: dict[str, dict], trained) -> dict[str, float]:
    """Every evaluation metric of every model, prefixed candidate_/base_/champion_, plus training figures."""
    out = {f"{who}_{k}": float(v) for who, s in scores.items() for k, v in s.items() if v is not None}
    out.update(final_loss=trained.final_loss, mean_tokens_per_s=trained.mean_tokens_per_s, train_wall_s=trained.wall_s)
    if trained.final_eval_loss is not None:
        out["final_eval_loss"] = trained.final_eval_loss
    return out
