"""Reference-based text metrics, offline: ROUGE-1/2/L, BLEU, chrF and exact match, on a 0-100 scale.

``evaluate.load("rouge")`` fetches its metric script from the hub and fails offline, so the packages it wraps
are called directly: ``rouge_score`` (Google's reimplementation of ROUGE) and ``sacrebleu`` (the reference
BLEU / chrF). ``load(name).compute(predictions=..., references=...)`` keeps evaluate's call shape.

- ROUGE: the mean over pairs of each pair's F-measure (rouge_score's default tokenizer: lower-cased
  ASCII letters and digits, everything else a separator; no stemming), times 100. evaluate averages with a
  bootstrap by default; the plain mean is deterministic and what that bootstrap estimates.
- BLEU: sacrebleu's corpus BLEU (13a tokenizer, 4-grams, exponential smoothing, brevity penalty).
- chrF: sacrebleu's corpus chrF (character 6-grams, beta 2).
- exact match: the share of pairs whose texts are equal after SQuAD's normalisation (lower case, punctuation
  removed, the articles a/an/the removed, whitespace collapsed), times 100.

Every function takes parallel lists of predictions and references (one reference per prediction) and
returns 0.0 for empty lists.
"""

from __future__ import annotations

import re
import string
from typing import Callable

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
METRIC_KEYS = (*ROUGE_TYPES, "bleu", "chrf", "exact_match")
_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _check(predictions: list[str], references: list[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(predictions: list[str], references: list[str]) -> float:
    _check(predictions, references)
    if not predictions:
        return 0.0
    hits = sum(normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references))
    return 100.0 * hits / len(predictions)


def _rouge_fmeasures(predictions: list[str], references: list[str]) -> dict[str, list[float]]:
    """Each pair's F-measure (0-1) of ROUGE-1, ROUGE-2 and ROUGE-L, in order."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False)
    out: dict[str, list[float]] = {k: [] for k in ROUGE_TYPES}
    for p, r in zip(predictions, references):
        scores = scorer.score(r, p)  # score(target, prediction)
        for k in ROUGE_TYPES:
            out[k].append(scores[k].fmeasure)
    return out


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean F-measure of ROUGE-1, ROUGE-2 and ROUGE-L (longest common subsequence), 0-100."""
    _check(predictions, references)
    if not predictions:
        return {k: 0.0 for k in ROUGE_TYPES}
    return {k: 100.0 * sum(v) / len(predictions) for k, v in _rouge_fmeasures(predictions, references).items()}


def bleu(predictions: list[str], references: list[str]) -> float:
    """sacrebleu corpus BLEU, 0-100."""
    import sacrebleu

    _check(predictions, references)
    if not predictions:
        return 0.0
    return float(sacrebleu.corpus_bleu(predictions, [references]).score)


def chrf(predictions: list[str], references: list[str]) -> float:
    """sacrebleu corpus chrF, 0-100."""
    import sacrebleu

    _check(predictions, references)
    if not predictions:
        return 0.0
    return float(sacrebleu.corpus_chrf(predictions, [references]).score)


def per_example(predictions: list[str], references: list[str]) -> dict[str, list[float]]:
    """Each pair's ROUGE-1/2/L F-measure, sentence chrF and exact match (0-100), for paired bootstrap intervals
    (tasks/evaluate/bootstrap.py); the means of the ROUGE and exact-match lists are the corpus figures above."""
    import sacrebleu

    _check(predictions, references)
    out: dict[str, list[float]] = {k: [100.0 * f for f in v]
                                   for k, v in _rouge_fmeasures(predictions, references).items()}
    out["chrf"] = [float(sacrebleu.sentence_chrf(p, [r]).score) for p, r in zip(predictions, references)]
    out["exact_match"] = [100.0 * (normalize_answer(p) == normalize_answer(r)) for p, r in zip(predictions, references)]
    return out


def compute_all(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Every metric of METRIC_KEYS for the pairs."""
    return {
        **rouge(predictions, references),
        "bleu": bleu(predictions, references),
        "chrf": chrf(predictions, references),
        "exact_match": exact_match(predictions, references),
    }


class Metric:
    """evaluate's call shape: ``load("bleu").compute(predictions=[...], references=[...])``."""

    def __init__(self, name: str, fn: Callable[[list[str], list[str]], dict[str, float]]):
        self.name, self._fn = name, fn

    def compute(self, *, predictions: list[str], references: list[str]) -> dict[str, float]:
        return self._fn(list(predictions), list(references))


_METRICS: dict[str, Callable[[list[str], list[str]], dict[str, float]]] = {
    "rouge": rouge,
    "bleu": lambda p, r: {"bleu": bleu(p, r)},
    "chrf": lambda p, r: {"chrf": chrf(p, r)},
    "exact_match": lambda p, r: {"exact_match": exact_match(p, r)},
    "all": compute_all,
}


def load(name: str) -> Metric:
    if name not in _METRICS:
        raise ValueError(f"unknown metric {name!r} (have {sorted(_METRICS)})")
    return Metric(name, _METRICS[name])
