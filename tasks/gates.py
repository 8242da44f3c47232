"""Gates: the evaluation thresholds in data_contracts/gates.yaml, checked against a run's figures."""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


class GateSettings(BaseModel):
    """Where the gates are written down."""

    model_config = ConfigDict(extra="forbid")

    file: Path = Field(Path("data_contracts/gates.yaml"), description="gates file")


class Gate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    metric: str
    op: Literal["<", "<=", ">", ">="]
    baseline: Literal["base", "champion"] | float
    tolerance: float = Field(0.0, ge=0.0)


class GateResult(BaseModel):
    name: str
    metric: str
    op: str
    value: float
    threshold: float
    baseline: str
    passed: bool

    def describe(self) -> str:
        verdict = "passed" if self.passed else "failed"
        return (f"gate {self.name} {verdict}: {self.metric} {self.value:.4g} {self.op} {self.threshold:.4g} "
                f"({self.baseline})")


def load_gates(path: Path) -> list[Gate]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"gates file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return [Gate(**g) for g in data.get("gates", [])]
    except (yaml.YAMLError, ValidationError, TypeError) as exc:
        raise ValueError(f"gates file {path} is invalid: {exc}") from exc


def threshold(gate: Gate, baselines: dict[str, dict[str, float]]) -> tuple[float, str]:
    if isinstance(gate.baseline, float | int):
        return float(gate.baseline), "absolute"
    which = gate.baseline if gate.baseline in baselines else "base"
    value = baselines[which][gate.metric]
    slack = value * gate.tolerance
    bound = value + slack if gate.op in {"<", "<="} else value - slack
    label = which if which == gate.baseline else f"{which}, no champion yet"
    return bound, label


def check(gates: list[Gate], candidate: dict[str, float], baselines: dict[str, dict[str, float]]) -> list[GateResult]:
    """Each gate's value, threshold and verdict; ``baselines`` maps 'base'/'champion' to their metrics."""
    results = []
    for gate in gates:
        if gate.metric not in candidate:
            raise ValueError(f"gate {gate.name}: unknown metric '{gate.metric}' (have {sorted(candidate)})")
        bound, label = threshold(gate, baselines)
        value = candidate[gate.metric]
        results.append(GateResult(name=gate.name, metric=gate.metric, op=gate.op, value=value, threshold=bound,
                                  baseline=label, passed=bool(OPS[gate.op](value, bound))))
    return results
