"""Gates: the evaluation thresholds in data_contracts/gates.yaml, checked against a run's figures.

A gate compares one metric of the candidate model with a bound:

- absolute: ``threshold: 0`` — e.g. ``pii_leaked <= 0``;
- relative: ``baseline: base`` or ``baseline: champion`` — the bound is that model's value of the same
  metric, scored in the same run on the same data, loosened by a relative ``tolerance`` (a fraction of the
  baseline value) or an absolute ``margin`` (in metric points: rougeL ``>=`` champion − 1), or tightened by
  ``min_gain`` (the candidate must beat the baseline by that many points: rougeL ``>`` base + 5). With no
  champion yet, a champion gate compares with the base model.

For the task metrics scored answer by answer (ROUGE, chrF, exact match) a relative gate also reports the
paired bootstrap interval of candidate − baseline (tasks/evaluate/bootstrap.py); with ``significant: true`` it passes
only when the whole interval clears the bound, not just the mean.

Figures come from one of two evaluation sets, named by ``eval_set``: ``frozen`` (the default), the dataset's frozen
evaluation set (tasks/evaluate/frozen_set.py), on which base, candidate and champion are all scored; or ``new``,
the held-out part of this run's new data, scored apart (perplexity, bits per byte and the task metrics only).
Each result names the set, with its version and hash.

A gate on a metric that is measured only sometimes (canary metrics: canaries are off by default) is
declared ``optional: true``: when the metric is absent it is reported as "not measured" and does not block.
"""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from tasks.core.usage import USAGE_METRICS
from tasks.evaluate.bootstrap import Delta
from tasks.evaluate.evaluate import CANARY_KEYS, EXTRACTION_KEYS, METRIC_KEYS
from tasks.core.yaml_model import load_yaml_model

EVAL_SETS = ("frozen", "new")
NEW_DATA_METRICS = ("perplexity", "bits_per_byte", "rouge1", "rouge2", "rougeL", "bleu", "chrf", "exact_match")
OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
NO_CHAMPION = "champion, no champion yet → base"

# The metrics tasks/evaluate/evaluate.py reports (canary ones only when canaries are on); a gate on another name
# is a typo and fails when the gates file is loaded.
KNOWN_METRICS = (*METRIC_KEYS, *CANARY_KEYS, *EXTRACTION_KEYS, *USAGE_METRICS)  # usage: what the run cost so far


class GateSettings(BaseModel):
    """Where the gates are written down."""

    model_config = ConfigDict(extra="forbid")

    file: Path = Field(Path("data_contracts/gates.yaml"), description="gates file (data_contracts/gates.yaml)")


class Gate(BaseModel):
    """One line of the gates file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="shown in the report and in blocked_by")
    metric: str = Field(min_length=1, description="an evaluation metric (tasks/evaluate/evaluate.py)")
    op: Literal["<", "<=", ">", ">="] = Field(description="candidate value OP bound")
    threshold: float | None = Field(None, description="absolute bound (no baseline)")
    baseline: Literal["base", "champion"] | None = Field(None, description="relative bound: this model's value")
    tolerance: float | None = Field(None, ge=0.0, description="relative slack: a fraction of the baseline value")
    margin: float | None = Field(None, ge=0.0, description="absolute slack in metric points")
    min_gain: float | None = Field(None, ge=0.0, description="the candidate must beat the baseline by this many "
                                   "metric points")
    significant: bool = Field(False, description="with a bootstrap interval: the whole interval of candidate − "
                              "baseline must clear the bound, not only its mean")
    optional: bool = Field(False, description="not measured ⇒ reported, not blocking")
    eval_set: Literal["frozen", "new"] = Field(
        "frozen", description="where the figures come from: frozen = the dataset's frozen evaluation set (every "
                              "model scored on it); new = the held-out part of this run's new data")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str, info: ValidationInfo) -> str:
        if metric not in KNOWN_METRICS:
            raise ValueError(f"gate '{info.data.get('name', '?')}' is on unknown metric '{metric}' "
                             f"(known: {', '.join(KNOWN_METRICS)})")
        return metric

    @model_validator(mode="after")
    def _one_bound(self) -> "Gate":
        if (self.threshold is None) == (self.baseline is None):
            raise ValueError("give either threshold (absolute) or baseline (base or champion), not both or neither")
        relative = [k for k in ("tolerance", "margin", "min_gain") if getattr(self, k) is not None]
        if self.threshold is not None and (relative or self.significant):
            raise ValueError(f"{', '.join(relative) or 'significant'} applies to a baseline, not to an absolute "
                             "threshold")
        if self.eval_set == "new" and self.metric not in NEW_DATA_METRICS:
            raise ValueError(f"eval_set: new measures {', '.join(NEW_DATA_METRICS)}; {self.metric} is measured on "
                             "the frozen set only")
        if len(relative) > 1:
            raise ValueError(f"give one of tolerance (a fraction), margin (points of slack) or min_gain (points to "
                             f"gain), not {' and '.join(relative)}")
        return self

    def slack(self, value: float) -> float:
        """How far the bound may sit beyond the baseline value, in the direction that loosens the gate
        (negative: it tightens it, for min_gain)."""
        if self.min_gain is not None:
            return -self.min_gain
        if self.margin is not None:
            return self.margin
        return abs(value) * (self.tolerance or 0.0)


class GatesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gates: list[Gate] = Field(min_length=1, description="every gate must pass for @champion to move")

    @model_validator(mode="after")
    def _unique(self) -> "GatesFile":
        seen: set[str] = set()
        for i, g in enumerate(self.gates):
            if g.name in seen:
                raise ValueError(f"gates[{i}].name: gate name '{g.name}' is used twice")
            seen.add(g.name)
        return self


class GateResult(BaseModel):
    name: str
    metric: str
    op: str
    value: float | None  # None: not measured
    threshold: float | None
    baseline: str  # "absolute", "base", "champion" or NO_CHAMPION
    baseline_value: float | None = None
    passed: bool
    measured: bool = True
    optional: bool = False
    delta: Delta | None = None  # candidate − baseline, per answer, with its bootstrap interval
    significant: bool = False
    eval_set: str = "frozen"  # frozen or new
    eval_set_label: str | None = None  # the set's name in the report: "corpus v1 (3f2a9c1e0b7d)"

    @property
    def status(self) -> str:
        if not self.measured:
            return "not measured" if self.passed else "FAIL (not measured)"
        return "pass" if self.passed else "FAIL"

    def describe(self) -> str:
        on = f" on {self.eval_set_label or self.eval_set}"
        if not self.measured:
            why = "optional, does not block" if self.passed else "the gate is not optional"
            return f"gate {self.name}: {self.metric} not measured{on} ({why})"
        verdict = "passed" if self.passed else "failed"
        base = self.baseline if self.baseline_value is None else f"{self.baseline} {self.baseline_value:.4g}"
        interval = f"; difference {self.delta.describe()}" if self.delta is not None else ""
        # a failed gate states the condition that did not hold, not a comparison that reads as true
        condition = (f"{self.value:.4g} {self.op} {self.threshold:.4g}" if self.passed
                     else f"{self.value:.4g}, required {self.op} {self.threshold:.4g}")
        return f"gate {self.name} {verdict}: {self.metric} {condition}{on} ({base}{interval})"


def load_gates(path: str | Path) -> list[Gate]:
    """The gates in ``path``; FileNotFoundError / ValueError naming the file and the field at fault."""
    return load_yaml_model(path, GatesFile, "gates file").gates


def threshold(gate: Gate, baselines: dict[str, dict[str, float]]) -> tuple[float | None, str, float | None]:
    """(bound, baseline label, baseline value); bound None when the baseline did not measure the metric."""
    if gate.threshold is not None:
        return float(gate.threshold), "absolute", None
    which = gate.baseline if gate.baseline in baselines else "base"
    label = which if which == gate.baseline else NO_CHAMPION
    value = baselines.get(which, {}).get(gate.metric)
    if value is None:
        return None, label, None
    slack = gate.slack(value)
    bound = value + slack if gate.op in {"<", "<="} else value - slack
    return bound, label, float(value)


def _passes(gate: Gate, value: float, bound: float, delta: Delta | None, base_value: float | None) -> bool:
    if not OPS[gate.op](value, bound):
        return False
    if not (gate.significant and delta is not None and base_value is not None):
        return True
    # the whole interval of (candidate − baseline) must clear (bound − baseline)
    edge = delta.low if gate.op in (">", ">=") else delta.high
    return bool(OPS[gate.op](base_value + edge, bound))


def check(gates: list[Gate], candidate: dict[str, float], baselines: dict[str, dict[str, float]],
          source: str | Path = "gates file", deltas: dict[str, dict[str, Delta]] | None = None,
          eval_set: str = "frozen", label: str | None = None) -> list[GateResult]:
    """Each gate's value, threshold and verdict, for the gates on ``eval_set`` (whose figures these are; ``label``
    names the set in the results); ``baselines`` maps 'base'/'champion' to their metrics; ``deltas``
    (tasks.evaluate.evaluate.compare) the bootstrap intervals of candidate − baseline per metric."""
    results = []
    where = {"eval_set": eval_set, "eval_set_label": label}
    for gate in (g for g in gates if g.eval_set == eval_set):
        if gate.metric not in KNOWN_METRICS and gate.metric not in candidate:
            raise ValueError(f"gates file {source}: gate '{gate.name}' is on unknown metric '{gate.metric}' "
                             f"(measured: {', '.join(sorted(candidate))})")
        value = candidate.get(gate.metric)
        bound, label, base_value = threshold(gate, baselines)
        if value is None or bound is None:
            results.append(GateResult(name=gate.name, metric=gate.metric, op=gate.op, value=value, threshold=bound,
                                      baseline=label, baseline_value=base_value, passed=gate.optional,
                                      measured=False, optional=gate.optional, **where))
            continue
        compared = "base" if label == NO_CHAMPION else label
        delta = (deltas or {}).get(compared, {}).get(gate.metric) if gate.threshold is None else None
        results.append(GateResult(name=gate.name, metric=gate.metric, op=gate.op, value=float(value), threshold=bound,
                                  baseline=label, baseline_value=base_value,
                                  passed=_passes(gate, float(value), bound, delta, base_value),
                                  optional=gate.optional, delta=delta, significant=gate.significant, **where))
    return results
