"""Drift statistics and the drift decision: plain functions over plain inputs, no Prefect.

A new data drop is compared with a reference (the current @champion's training snapshot, or a path). Each side
is measured per document on a seeded sample (tasks/drift/measure.py), and five tests decide, each a permutation
test that knows its sample size (tasks/data/drift_tests.py: the drop's statistic against the same statistic for
random drops of the same size drawn from the pooled documents):

  * ``length_ks``: document length in characters, two-sample Kolmogorov–Smirnov D (the effect size);
  * ``token_js``: Jensen–Shannon divergence (base 2) of token frequencies under the champion's tokenizer; the
    effect is how far it lies above what drops of the same kind give;
  * ``unseen_words``: the share of the drop's word occurrences the reference never uses, above what drops of the
    same kind bring (tokenizer-free: a tokenizer trained on the reference holds the reference's own words as
    single tokens, so its out-of-vocabulary rate rises for any new document, drifted or not; that rate is
    reported beside it);
  * ``pii_structured_change`` and ``pii_named_change``: the change in entities per document, counted apart for
    structured values (e-mail, phone, card, ...) and for names and places (noisier: they move with wording);
  * and before them, duplicates: a drop made (almost) only of documents the model was trained on brings nothing
    new, whatever the rest says.

A test fires when its p-value is at most ``false_alarm_rate`` divided by the number of tests that ran (so a drop
of the same kind is called drifted at most that often) and its effect is above the test's floor; below its
minimum drop size it decides nothing. The length PSI, KS p-value and the rates on both sides are reported as
effect sizes. Thresholds live in ``data_contracts/drift.yaml`` (``DriftThresholds``); a floor set to null turns
its test off.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.core.paths import DATA_CONTRACTS
from tasks.core.yaml_model import load_yaml_model

DEFAULT_THRESHOLDS = DATA_CONTRACTS / "drift.yaml"


class DriftThresholds(BaseModel):
    """When a new data drop counts as drifted (``data_contracts/drift.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    sample_size: int = Field(2000, ge=10, description="documents sampled from each side for the tests")
    pii_sample_size: int = Field(200, ge=1, description="documents per side analysed for PII")
    min_documents: int = Field(10, ge=2, description="fewer new documents than this: too little data, no decision")
    pii_min_documents: int = Field(20, ge=2, description="fewer PII-analysed documents on a side: no PII test")
    seed: int = 0
    false_alarm_rate: float = Field(
        0.02, gt=0, lt=0.5, description="how often a drop of the same kind of text may be called drifted (all tests "
        "together: each test gets this share divided by the number of tests that ran)")
    resamples: int = Field(999, ge=99, le=99_999, description="random same-size drops per test (the null distribution)")
    length_bins: int = Field(10, ge=2, le=100, description="PSI bins (reported): quantiles of the reference lengths")
    length_ks: float | None = Field(0.1, gt=0, le=1, description="length test: least KS D that counts as drift")
    token_js: float | None = Field(
        0.01, gt=0, le=1, description="token test: least JS divergence above the resampled drops' median")
    unseen_words: float | None = Field(
        0.03, gt=0, le=1, description="vocabulary test: least share of unseen word occurrences above the resampled "
        "drops' median")
    pii_structured_change: float | None = Field(
        0.05, gt=0, description="PII test, structured values: least change in entities per document")
    pii_named_change: float | None = Field(
        0.25, gt=0, description="PII test, names and places: least change in entities per document")
    nothing_new_duplicate_rate: float | None = Field(
        0.95, gt=0, le=1, description="a drop with at least this share of reference documents brings nothing new"
    )

    @model_validator(mode="after")
    def _resolution(self) -> "DriftThresholds":
        if 1 / (self.resamples + 1) > self.false_alarm_rate / len(TESTS):
            raise ValueError(f"resamples: {self.resamples} cannot give a p-value as small as false_alarm_rate / "
                             f"{len(TESTS)} = {self.false_alarm_rate / len(TESTS):.3g}; use at least "
                             f"{int(len(TESTS) / self.false_alarm_rate)}")
        return self


METHOD = "permutation-1"  # recorded with each check: results of another method are not repeated as this one's
TESTS = ("length_ks", "token_js", "unseen_words", "pii_structured_change", "pii_named_change")
# entities that come from the NER (names and places): their counts move with wording, so they are tested apart
NAMED_ENTITIES = frozenset({"PERSON", "LOCATION", "NRP", "ORGANIZATION", "DATE_TIME"})


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


def duplicate_rate(new_keys: Iterable[str], reference_keys: set[str] | frozenset[str]) -> float:
    """Share of the new documents (by exact key) already in the reference."""
    keys = list(new_keys)
    if not keys:
        return 0.0
    return sum(k in reference_keys for k in keys) / len(keys)


# ------------------------------------------------------------------------------------------ the decision


class Side(BaseModel):
    """What is measured on one side (reference or new drop), all plain data. The per-document lists are over
    the side's seeded sample, in one order; ``pii`` over its first ``pii_sample_size`` documents."""

    documents: int  # documents on this side (all, not only the sample)
    lengths: list[int]  # every document's length (PSI and means, reported)
    sample_lengths: list[int] = []  # the sampled documents' lengths (the length test)
    tokens: list[dict[Any, int]] = []  # token counts per sampled document
    words: list[dict[str, int]] = []  # word counts per sampled document
    oov: list[tuple[int, int]] | None = None  # (words not one token, words) per sampled document
    pii: list[tuple[int, int]] | None = None  # (structured entities, names and places) per PII-analysed document

    def token_counts(self) -> Counter:
        total: Counter = Counter()
        for counts in self.tokens:
            total.update(counts)
        return total

    def oov_rate(self) -> float | None:
        if self.oov is None:
            return None
        words = sum(w for _, w in self.oov)
        return sum(u for u, _ in self.oov) / words if words else 0.0

    def pii_rates(self) -> tuple[float | None, float | None]:
        if not self.pii:
            return None, None
        return (float(np.mean([s for s, _ in self.pii])), float(np.mean([n for _, n in self.pii])))


def split_entities(counts: Mapping[str, int]) -> tuple[int, int]:
    """(structured entities, names and places) of one document's counts by entity type."""
    named = sum(n for e, n in counts.items() if e in NAMED_ENTITIES)
    return sum(counts.values()) - named, named


class Check(BaseModel):
    name: str
    value: float | None  # the effect size
    threshold: float | None  # its floor; None: the test is off
    drifted: bool
    detail: str = ""
    p_value: float | None = None
    alpha: float | None = None  # the p-value this test had to reach
    critical: float | None = None  # the statistic a drop of this size had to pass at that p-value
    decided: bool = True  # False: too little data for this test

    def describe(self) -> str:
        if self.threshold is None:
            return f"{self.name}: off"
        if not self.decided:
            return f"{self.name}: no decision ({self.detail})"
        verdict = "DRIFT" if self.drifted else "ok"
        return (f"{self.name} {_num(self.value)} (floor {_num(self.threshold)}), p {_num(self.p_value)} "
                f"(needs <= {_num(self.alpha)}): {verdict}")


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


class Comparison(BaseModel):
    """Statistics and checks of one new drop against one reference."""

    statistics: dict[str, float | None]
    checks: list[Check]
    drift: bool
    decision: str  # "drift", "no drift", "nothing new", "too little data"


def compare(reference: Side, new: Side, t: DriftThresholds, duplicate: float | None = None) -> Comparison:
    """Every statistic of ``new`` against ``reference`` and the five tests; drift when any enabled test fires."""
    from tasks.data import drift_tests

    d, p = ks_2samp(reference.lengths, new.lengths)
    ref_tokens, new_tokens = reference.token_counts(), new.token_counts()
    oov_ref, oov_new = reference.oov_rate(), new.oov_rate()
    (sref, nref), (snew, nnew) = reference.pii_rates(), new.pii_rates()
    stats = {
        "length_psi": psi(reference.lengths, new.lengths, t.length_bins),
        "length_ks": d,
        "length_ks_pvalue": p,
        "token_js": js_divergence(ref_tokens, new_tokens) if ref_tokens or new_tokens else None,
        "oov_rate_reference": oov_ref,
        "oov_rate_new": oov_new,
        "oov_rate_increase": oov_new - oov_ref if oov_new is not None and oov_ref is not None else None,
        "pii_structured_reference": sref,
        "pii_structured_new": snew,
        "pii_named_reference": nref,
        "pii_named_new": nnew,
        "duplicate_rate": duplicate,
        "mean_length_reference": float(np.mean(reference.lengths)) if reference.lengths else None,
        "mean_length_new": float(np.mean(new.lengths)) if new.lengths else None,
        "documents_reference": float(reference.documents),
        "documents_new": float(new.documents),
    }
    if new.documents < t.min_documents:
        checks = [Check(name=n, value=None, threshold=getattr(t, n), drifted=False, decided=False,
                        detail=f"{new.documents} new documents, fewer than {t.min_documents}") for n in TESTS]
        return Comparison(statistics=stats, checks=checks, drift=False, decision="too little data")
    if (duplicate is not None and t.nothing_new_duplicate_rate is not None
            and duplicate >= t.nothing_new_duplicate_rate):
        return Comparison(statistics=stats, checks=[], drift=False, decision="nothing new")

    sizes = {"length_ks": (len(reference.sample_lengths), len(new.sample_lengths), t.min_documents),
             "token_js": (len(reference.tokens), len(new.tokens), t.min_documents),
             "unseen_words": (len(reference.words), len(new.words), t.min_documents),
             "pii_structured_change": (len(reference.pii or []), len(new.pii or []), t.pii_min_documents),
             "pii_named_change": (len(reference.pii or []), len(new.pii or []), t.pii_min_documents)}
    runs, checks = [], {}
    for name in TESTS:
        n_ref, n_new, least = sizes[name]
        if getattr(t, name) is None:
            checks[name] = Check(name=name, value=None, threshold=None, drifted=False, decided=False, detail="off")
        elif n_ref < least or n_new < least:
            why = "not measured" if n_ref == 0 or n_new == 0 else f"needs {least} documents a side"
            checks[name] = Check(name=name, value=None, threshold=getattr(t, name), drifted=False, decided=False,
                                 detail=f"too little data: {n_ref} reference, {n_new} new; {why}")
        else:
            runs.append(name)
    rng = np.random.default_rng(t.seed)
    alpha = t.false_alarm_rate / max(1, len(runs))
    for name in runs:
        if name == "length_ks":
            r = drift_tests.length_test(reference.sample_lengths, new.sample_lengths, t.resamples, alpha, rng)
        elif name == "token_js":
            r = drift_tests.token_test(reference.tokens, new.tokens, t.resamples, alpha, rng)
        elif name == "unseen_words":
            r = drift_tests.unseen_word_test(reference.words, new.words, t.resamples, alpha, rng)
        else:
            column = 0 if name == "pii_structured_change" else 1
            r = drift_tests.ratio_test(name, [(x[column], 1) for x in reference.pii],
                                       [(x[column], 1) for x in new.pii], t.resamples, alpha, rng, two_sided=True)
        floor = getattr(t, name)
        fired = r.p_value <= alpha and r.effect > floor
        checks[name] = Check(name=name, value=r.effect, threshold=floor, drifted=fired, p_value=r.p_value, alpha=alpha,
                             critical=r.critical,
                             detail=f"statistic {_num(r.statistic)}; same-size drops of the same text: median "
                                    f"{_num(r.null_median)}" + (f", {_num(r.critical)} at p {_num(alpha)}"
                                                                 if r.critical is not None else ""))
    ordered = [checks[n] for n in TESTS]
    if not runs:
        return Comparison(statistics=stats, checks=ordered, drift=False, decision="too little data")
    drift = any(c.drifted for c in ordered)
    return Comparison(statistics=stats, checks=ordered, drift=drift, decision="drift" if drift else "no drift")

