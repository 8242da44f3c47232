"""Paired bootstrap confidence intervals for the difference between two models scored on the same examples.

Both models answer the same held-out prompts, so the comparison is paired: each example contributes the
difference of its two scores, and resampling the examples (with replacement, ``samples`` times, from a fixed
seed) gives the distribution of the mean difference (Koehn 2004, "Statistical significance tests for machine
translation evaluation"). The interval is the percentile interval at ``confidence``; ``p_better`` is the share
of resamples in which the first model's mean was higher.
"""

from __future__ import annotations

from pydantic import BaseModel


class Delta(BaseModel):
    """Mean per-example difference (first model minus second) with its bootstrap interval."""

    mean: float
    low: float
    high: float
    confidence: float
    p_better: float  # share of resamples where the first model scores higher
    n: int

    def describe(self, unit: str = "") -> str:
        pct = round(self.confidence * 100)
        return f"{self.mean:+.2f}{unit} [{pct}% CI {self.low:+.2f}, {self.high:+.2f}; n={self.n}]"


def paired_bootstrap(first: list[float], second: list[float], samples: int = 2000, confidence: float = 0.95,
                     seed: int = 0) -> Delta | None:
    """The mean of first − second over paired examples and its percentile interval; None without examples."""
    import numpy as np

    if len(first) != len(second):
        raise ValueError(f"paired scores differ in length: {len(first)} and {len(second)}")
    if not first:
        return None
    diff = np.asarray(first, dtype=np.float64) - np.asarray(second, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(samples, len(diff)))].mean(axis=1)
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Delta(mean=float(diff.mean()), low=float(low), high=float(high), confidence=confidence,
                 p_better=float((means > 0).mean()), n=len(diff))
