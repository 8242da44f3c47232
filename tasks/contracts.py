"""Data contracts: a Great Expectations suite, stored as a file in data_contracts/, run on a snapshot.

Only counts and observed values go into results, never the offending text (it may hold PII).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from tasks import snapshot


class ContractSettings(BaseModel):
    """The suite a curated snapshot must pass."""

    model_config = ConfigDict(extra="forbid")

    suite: Path = Field(Path("data_contracts/curated.json"), description="GE suite file (JSON or YAML)")


class ExpectationOutcome(BaseModel):
    expectation: str
    column: str | None = None
    kwargs: dict[str, Any] = {}
    success: bool
    observed: Any = None
    unexpected_count: int | None = None

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items() if k not in {"column", "batch_id"})
        where = f" on '{self.column}'" if self.column else ""
        what = f"observed {self.observed}" if self.observed is not None else f"{self.unexpected_count} rows unexpected"
        return f"{self.expectation}{where} ({args}): {what}"


class ContractResult(BaseModel):
    suite: str
    passed: bool
    rows: int
    expectations: list[ExpectationOutcome]

    @property
    def failures(self) -> list[str]:
        return [f"contract {self.suite}: {e.describe()}" for e in self.expectations if not e.success]


def load_suite(path: Path):
    """The suite in ``path`` as a GE ExpectationSuite; a missing or malformed file names the path."""
    import great_expectations as gx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"contract suite not found: {path}")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        return gx.ExpectationSuite(**data)
    except Exception as exc:
        raise ValueError(f"contract suite {path} is not a valid Great Expectations suite: {exc}") from exc


def validate_frame(df, suite_path: Path) -> ContractResult:
    """Validate a pandas DataFrame against the suite file."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    suite = load_suite(suite_path)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("tunegate").add_dataframe_asset("snapshot")
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": df})
    result = batch.validate(suite)
    outcomes = []
    for r in result.results:
        kwargs = {k: v for k, v in dict(r.expectation_config.kwargs).items() if k != "batch_id"}
        res = r.result or {}
        outcomes.append(
            ExpectationOutcome(
                expectation=r.expectation_config.type,
                column=kwargs.get("column"),
                kwargs=kwargs,
                success=bool(r.success),
                observed=res.get("observed_value"),
                unexpected_count=res.get("unexpected_count"),
            )
        )
    return ContractResult(suite=str(suite_path), passed=bool(result.success), rows=len(df), expectations=outcomes)


def validate_snapshot(ref: snapshot.SnapshotRef, suite_path: Path) -> ContractResult:
    return validate_frame(snapshot.read_table(ref).to_pandas(), suite_path)


@task(name="contract", cache_policy=NO_CACHE)
def contract_task(ref: snapshot.SnapshotRef, suite: Path) -> ContractResult:
    return validate_snapshot(ref, suite)
