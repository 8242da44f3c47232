"""Drift statistics: plain functions over plain inputs (lengths, token counts, key sets), no Prefect.

A new data drop is compared with a reference (the current @champion's training snapshot, or a path):

  * document length (characters): Population Stability Index over the reference's quantile bins, and the
    two-sample Kolmogorov–Smirnov statistic D with its asymptotic p-value;
  * token distribution: Jensen–Shannon divergence (base 2, so 0 = same, 1 = disjoint) of token
    frequencies, and the out-of-vocabulary rate: the share of word occurrences the tokenizer cannot
    hold as one token (for a byte-level BPE nothing is ever unknown, so "not one token" is the useful
    reading); the check is the new drop's rate minus the reference's, under the same tokenizer;
  * PII: entities per document; the check fires on a change larger than an absolute bound and than a
    share of the reference's rate (named-entity counts move with layout and wording);
  * duplicates: the share of new documents already in the reference (exact keys). A drop made (almost)
    only of documents the model was trained on brings nothing new: no drift, whatever the rest says.

Thresholds live in ``data_contracts/drift.yaml`` (``DriftThresholds``); a threshold set to null turns
its check off.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tasks.core.paths import DATA_CONTRACTS
from tasks.core.yaml_model import load_yaml_model

DEFAULT_THRESHOLDS = DATA_CONTRACTS / "drift.yaml"


class DriftThresholds(BaseModel):
    """When a new data drop counts as drifted (``data_contracts/drift.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    sample_size: int = Field(2000, ge=10, description="documents sampled from each side for the statistics")
    pii_sample_size: int = Field(200, ge=1, description="documents per side analysed for PII")
    min_documents: int = Field(5, ge=1, description="fewer new documents than this: no decision")
    seed: int = 0
    length_bins: int = Field(10, ge=2, le=100, description="PSI bins: quantiles of the reference lengths")
    length_psi: float | None = Field(0.25, gt=0, description="drift when the length PSI is above this")
    length_ks: float | None = Field(0.3, gt=0, le=1, description="drift when KS D is above this ...")
    length_ks_pvalue: float = Field(0.01, gt=0, le=1, description="... and its p-value below this")
    token_js: float | None = Field(0.3, gt=0, le=1, description="drift when the token JS divergence is above this")
    oov_rate_increase: float | None = Field(0.1, gt=0, le=1, description="drift when the OOV rate rises by more")
    pii_rate_change: float | None = Field(0.5, gt=0, description="drift when entities/document change by more ...")
    pii_rate_relative: float | None = Field(
        0.5, gt=0, description="... and by more than this share of the reference's rate (NER counts are noisy)"
    )
    nothing_new_duplicate_rate: float | None = Field(
        0.95, gt=0, le=1, description="a drop with at least this share of reference documents brings nothing new"
    )


def load_thresholds(path: str | Path | None = None) -> DriftThresholds:
    """The thresholds in ``path`` (default data_contracts/drift.yaml); ValueError naming the file and field."""
    return load_yaml_model(Path(path) if path else DEFAULT_THRESHOLDS, DriftThresholds, "drift thresholds")


# ------------------------------------------------------------------------------------------ statistics


def psi(reference: Iterable[float], new: Iterable[float], bins: int = 10, eps: float = 1e-4) -> float:
    """Population Stability Index of ``new`` against ``reference``, over the reference's quantile bins.

    0 means the same shape; 0.1-0.25 a moderate shift; above 0.25 a large one. Empty bins are smoothed
    with ``eps`` so a bin that only one side fills gives a large but finite value.
    """
    ref = np.asarray(list(reference), dtype=float)
    cur = np.asarray(list(new), dtype=float)
    if ref.size == 0 or cur.size == 0:
        return 0.0
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_frac = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1) / ref.size
    cur_frac = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=edges.size + 1) / cur.size
    ref_frac = np.clip(ref_frac, eps, None)
    cur_frac = np.clip(cur_frac, eps, None)
    return float(np.sum((cur_frac - ref_frac) * np.log(cur_frac / ref_frac)))


def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution (the limit law of sqrt(n) * D)."""
    if x <= 0:
        return 1.0
    if x < 0.2:  # the alternating series converges slowly here and the value is 1 to double precision
        return 1.0
    total = 0.0
    for k in range(1, 101):
        term = (-1) ** (k - 1) * math.exp(-2.0 * k * k * x * x)
        total += term
        if abs(term) < 1e-12:
            break
    return float(min(1.0, max(0.0, 2.0 * total)))


def ks_2samp(reference: Iterable[float], new: Iterable[float]) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov: (D, asymptotic two-sided p-value, Stephens' small-sample correction)."""
    a = np.sort(np.asarray(list(reference), dtype=float))
    b = np.sort(np.asarray(list(new), dtype=float))
    if a.size == 0 or b.size == 0:
        return 0.0, 1.0
    values = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, values, side="right") / a.size
    cdf_b = np.searchsorted(b, values, side="right") / b.size
    d = float(np.max(np.abs(cdf_a - cdf_b)))
    en = math.sqrt(a.size * b.size / (a.size + b.size))
    return d, kolmogorov_sf((en + 0.12 + 0.11 / en) * d)


def js_divergence(p: Mapping[Hashable, float], q: Mapping[Hashable, float]) -> float:
    """Jensen–Shannon divergence (base 2, in [0, 1]) of two frequency tables (counts or probabilities)."""
    keys = list(set(p) | set(q))
    if not keys:
        return 0.0
    pv = np.array([float(p.get(k, 0.0)) for k in keys])
    qv = np.array([float(q.get(k, 0.0)) for k in keys])
    if pv.sum() <= 0 or qv.sum() <= 0:
        return 0.0 if pv.sum() == qv.sum() else 1.0
    pv, qv = pv / pv.sum(), qv / qv.sum()
    m = 0.5 * (pv + qv)

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return float(min(1.0, max(0.0, 0.5 * kl(pv) + 0.5 * kl(qv))))


def oov_rate(word_counts: Mapping[str, int], known: Callable[[str], bool] | set[str] | frozenset[str]) -> float:
    """Share of word occurrences that are not ``known`` (a vocabulary set, or a predicate)."""
    total = sum(word_counts.values())
    if total == 0:
        return 0.0
    is_known = known.__contains__ if isinstance(known, set | frozenset) else known
    unknown = sum(n for w, n in word_counts.items() if not is_known(w))
    return unknown / total


def duplicate_rate(new_keys: Iterable[str], reference_keys: set[str] | frozenset[str]) -> float:
    """Share of the new documents (by exact key) already in the reference."""
    keys = list(new_keys)
    if not keys:
        return 0.0
    return sum(k in reference_keys for k in keys) / len(keys)


def per_document_rate(counts: Iterable[int | float]) -> float:
    """Mean of a per-document count (PII entities per document)."""
    values = list(counts)
    return float(sum(values) / len(values)) if values else 0.0


# ------------------------------------------------------------------------------------------ the decision


class Side(BaseModel):
    """What is measured on one side (reference or new drop), all plain data."""

    documents: int
    lengths: list[int]
    token_counts: dict[Any, int] = {}
    oov_rate: float | None = None
    pii_per_document: float | None = None


class Check(BaseModel):
    name: str
    value: float | None
    threshold: float | None
    drifted: bool
    detail: str = ""

    def describe(self) -> str:
        if self.threshold is None:
            return f"{self.name}: {_num(self.value)} (check off)"
        return f"{self.name} {_num(self.value)} {'>' if self.drifted else '<='} {_num(self.threshold)}"


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


class Comparison(BaseModel):
    """Statistics and checks of one new drop against one reference."""

    statistics: dict[str, float | None]
    checks: list[Check]
    drift: bool
    decision: str  # "drift", "no drift", "nothing new", "too little data"


def compare(reference: Side, new: Side, t: DriftThresholds, duplicate: float | None = None) -> Comparison:
    """Every statistic and check of ``new`` against ``reference``; drift when any enabled check fires."""
    psi_value = psi(reference.lengths, new.lengths, t.length_bins)
    d, p = ks_2samp(reference.lengths, new.lengths)
    js = js_divergence(reference.token_counts, new.token_counts) if reference.token_counts or new.token_counts else None
    oov_delta = (new.oov_rate - reference.oov_rate
                 if new.oov_rate is not None and reference.oov_rate is not None else None)
    pii_delta = (abs(new.pii_per_document - reference.pii_per_document)
                 if new.pii_per_document is not None and reference.pii_per_document is not None else None)
    stats = {
        "length_psi": psi_value,
        "length_ks": d,
        "length_ks_pvalue": p,
        "token_js": js,
        "oov_rate_reference": reference.oov_rate,
        "oov_rate_new": new.oov_rate,
        "oov_rate_increase": oov_delta,
        "pii_per_document_reference": reference.pii_per_document,
        "pii_per_document_new": new.pii_per_document,
        "pii_rate_change": pii_delta,
        "duplicate_rate": duplicate,
        "mean_length_reference": float(np.mean(reference.lengths)) if reference.lengths else None,
        "mean_length_new": float(np.mean(new.lengths)) if new.lengths else None,
        "documents_reference": float(reference.documents),
        "documents_new": float(new.documents),
    }

    def above(name: str, value: float | None, threshold: float | None, extra: bool = True, detail: str = "") -> Check:
        fired = threshold is not None and value is not None and value > threshold and extra
        return Check(name=name, value=value, threshold=threshold, drifted=bool(fired), detail=detail)

    checks = [
        above("length_psi", psi_value, t.length_psi),
        above("length_ks", d, t.length_ks, p < t.length_ks_pvalue, detail=f"p-value {p:.3g} (needs < {t.length_ks_pvalue:g})"),
        above("token_js", js, t.token_js),
        above("oov_rate_increase", oov_delta, t.oov_rate_increase,
              detail=f"reference {_num(reference.oov_rate)}, new {_num(new.oov_rate)}"),
        above("pii_rate_change", pii_delta, pii_bound(reference.pii_per_document, t),
              detail=f"entities/document: reference {_num(reference.pii_per_document)}, new {_num(new.pii_per_document)}"),
    ]
    if new.documents < t.min_documents:  # the numbers are shown, but they decide nothing
        checks = [c.model_copy(update={"drifted": False, "detail": (c.detail + "; " if c.detail else "") + "no decision"})
                  for c in checks]
        return Comparison(statistics=stats, checks=checks, drift=False, decision="too little data")
    if (duplicate is not None and t.nothing_new_duplicate_rate is not None
            and duplicate >= t.nothing_new_duplicate_rate):
        return Comparison(statistics=stats, checks=checks, drift=False, decision="nothing new")
    drift = any(c.drifted for c in checks)
    return Comparison(statistics=stats, checks=checks, drift=drift, decision="drift" if drift else "no drift")


def pii_bound(reference_rate: float | None, t: DriftThresholds) -> float | None:
    """The PII check's bound: the absolute change, or the relative share of the reference's rate if larger."""
    if t.pii_rate_change is None:
        return None
    relative = t.pii_rate_relative * reference_rate if t.pii_rate_relative and reference_rate else 0.0
    return max(t.pii_rate_change, relative)


def token_counts(sequences: Iterable[Iterable[Hashable]]) -> Counter:
    """Frequencies over token sequences (token ids, or words)."""
    counts: Counter = Counter()
    for seq in sequences:
        counts.update(seq)
    return counts
