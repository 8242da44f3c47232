"""Drift tests that know their sample size: permutation tests of a drop against its reference.

A statistic alone cannot say whether a drop differs from the reference: twelve documents of the very same kind
give a length PSI of 2 as easily as a different corpus does. Each test here asks instead how often a drop of the
same size, drawn from the same documents, would lie at least as far from the rest: the reference's and the
drop's sampled documents are pooled, ``resamples`` times a random ``n`` of them play the drop and the others the
reference, and the p-value is ``(1 + #{resampled statistic >= observed}) / (resamples + 1)``. Under "the drop is
the same kind of text" that p-value is uniform whatever the sizes, so the false-alarm rate is what the
thresholds say: a test fires when its p-value is at most ``false_alarm_rate`` split over the tests that ran
(Bonferroni: the whole drop is a false alarm at most that often), and when its effect size is above a floor (a
very large drop can be significantly different and still not matter). Below a test's minimum drop size it
decides nothing ("too little data"). Plain numpy/scipy over per-document measurements; no Prefect.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from scipy import sparse

_CHUNK = 64  # resamples per block for the token statistic (a block is chunk x vocabulary floats)


class TestResult(NamedTuple):
    name: str
    statistic: float  # the observed statistic
    p_value: float
    critical: float | None  # the statistic's (1 - alpha) quantile over the resamples (None: stopped early)
    effect: float  # the effect size the floor applies to
    null_median: float


def resampled_groups(pool: int, n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``resamples`` x ``pool`` booleans, each row marking ``n`` random members as the drop."""
    order = np.argsort(rng.random((resamples, pool)), axis=1)[:, :n]
    marks = np.zeros((resamples, pool), dtype=bool)
    np.put_along_axis(marks, order, True, axis=1)
    return marks


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov D."""
    a, b = np.sort(a), np.sort(b)
    values = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, values, side="right") / a.size
                               - np.searchsorted(b, values, side="right") / b.size)))


def _resampled(name: str, statistic: Callable[[np.ndarray], np.ndarray], pool: int, n: int, resamples: int,
               alpha: float, rng: np.random.Generator, centred: bool) -> TestResult:
    """The permutation test of ``statistic`` (rows of drop marks -> one value each; the real drop is the pool's last
    ``n`` members): its p-value from up to ``resamples`` same-size drops drawn in blocks; the effect is the
    statistic itself, or (``centred``) how far it lies above the resampled drops' median.
    It stops as soon as more resampled drops reached the observed statistic than a significant result allows (the
    decision is then certain, so it is the full run's; the p-value reported is the estimate so far and
    ``critical`` is None)."""
    actual = np.zeros((1, pool), dtype=bool)
    actual[0, -n:] = True
    observed = float(statistic(actual)[0])
    allowed = alpha * (resamples + 1) - 1  # exceedances a significant result may have
    blocks, done, exceeded = [], 0, 0
    while done < resamples:
        values = statistic(resampled_groups(pool, n, min(_CHUNK, resamples - done), rng))
        blocks.append(values)
        done += values.size
        exceeded += int(np.count_nonzero(values >= observed - 1e-12))
        if exceeded > allowed:
            break
    null = np.concatenate(blocks)
    median = float(np.median(null))
    critical = float(np.quantile(null, 1 - alpha)) if done == resamples else None
    return TestResult(name=name, statistic=observed, p_value=(1 + exceeded) / (done + 1), critical=critical,
                      effect=observed - median if centred else observed, null_median=median)


def length_test(reference: Sequence[float], new: Sequence[float], resamples: int, alpha: float,
                rng: np.random.Generator) -> TestResult:
    """KS D of the document lengths; the effect is D itself."""
    pool = np.asarray([*reference, *new], dtype=float)
    return _resampled("length", lambda marks: np.array([ks_statistic(pool[~m], pool[m]) for m in marks]),
                      pool.size, len(new), resamples, alpha, rng, centred=False)


def _js_rows(drop: np.ndarray, total: np.ndarray) -> np.ndarray:
    """JS divergence (base 2) between each row of ``drop`` counts and ``total - drop``."""
    rest = total[None, :] - drop
    p = drop / np.maximum(drop.sum(axis=1, keepdims=True), 1e-12)
    q = rest / np.maximum(rest.sum(axis=1, keepdims=True), 1e-12)
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum(axis=1)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum(axis=1)
    return np.clip(0.5 * kl_p + 0.5 * kl_q, 0.0, 1.0)


def token_test(reference: Sequence[dict], new: Sequence[dict], resamples: int, alpha: float,
               rng: np.random.Generator) -> TestResult:
    """JS divergence of the token frequencies; the effect is how far it lies above the resamples' median (two
    samples of one kind of text differ by a JS that shrinks as they grow)."""
    docs = [*reference, *new]
    matrix = _counts_matrix(docs)
    total = np.asarray(matrix.sum(axis=0)).ravel()
    return _resampled("tokens",
                      lambda marks: _js_rows(np.asarray((sparse.csr_matrix(marks.astype(float)) @ matrix).todense()),
                                             total),
                      len(docs), len(new), resamples, alpha, rng, centred=True)


def ratio_test(name: str, reference: Sequence[tuple[float, float]], new: Sequence[tuple[float, float]],
               resamples: int, alpha: float, rng: np.random.Generator, two_sided: bool) -> TestResult:
    """The drop's ratio of sums (numerator, denominator per document: words not one token / words, entities / 1)
    minus the reference's; one-sided (an increase) or two-sided. The effect is that difference."""
    pool = np.asarray([*reference, *new], dtype=float).reshape(-1, 2)

    def diffs(marks: np.ndarray) -> np.ndarray:
        marks = marks.astype(float)
        num_new, den_new = marks @ pool[:, 0], marks @ pool[:, 1]
        num_ref, den_ref = pool[:, 0].sum() - num_new, pool[:, 1].sum() - den_new
        d = num_new / np.maximum(den_new, 1e-12) - num_ref / np.maximum(den_ref, 1e-12)
        return np.abs(d) if two_sided else d

    return _resampled(name, diffs, len(pool), len(new), resamples, alpha, rng, centred=False)


def _counts_matrix(docs: Sequence[dict]) -> sparse.csr_matrix:
    vocab: dict = {}
    rows, cols, vals = [], [], []
    for i, counts in enumerate(docs):
        for key, c in counts.items():
            rows.append(i)
            cols.append(vocab.setdefault(key, len(vocab)))
            vals.append(c)
    return sparse.csr_matrix((np.asarray(vals, dtype=float), (rows, cols)), shape=(len(docs), max(1, len(vocab))))


def unseen_word_test(reference: Sequence[dict], new: Sequence[dict], resamples: int, alpha: float,
                     rng: np.random.Generator) -> TestResult:
    """The share of the drop's word occurrences that the reference never uses; the effect is how far it lies above
    the resampled drops' median (a same-size drop of the same kind brings new words too: names, numbers, rare
    words). Tokenizer-free, so a tokenizer trained on the reference does not make its own words look familiar."""
    counts = _counts_matrix([*reference, *new])
    n = len(new)
    totals = np.asarray(counts.sum(axis=1)).ravel()  # word occurrences per document
    # a word in more documents than the drop holds is always seen by the rest: only the others can be unseen
    df = np.asarray((counts > 0).sum(axis=0)).ravel()
    columns = np.flatnonzero(df <= n)
    rare = counts[:, columns].tocsr()
    present, rare_df = (rare > 0).astype(float).tocsr(), df[columns]

    def rates(marks: np.ndarray) -> np.ndarray:
        picked = sparse.csr_matrix(marks.astype(float))
        unseen = np.asarray((picked @ present).todense()) == rare_df  # every document using it is in the drop
        drop = np.asarray((picked @ rare).todense())
        return (drop * unseen).sum(axis=1) / np.maximum(marks.astype(float) @ totals, 1e-12)

    return _resampled("unseen_words", rates, counts.shape[0], n, resamples, alpha, rng, centred=True)
