"""Data contracts: a Great Expectations suite, stored as a file in data_contracts/, run on a snapshot.

Only counts and observed values go into results, never the offending text (it may hold PII).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from tasks.core import snapshot


class ContractSettings(BaseModel):
    """The suites each kind of snapshot must pass (GE suite files, JSON or YAML); none skips that check."""

    model_config = ConfigDict(extra="forbid")

    raw: Path | None = Field(Path("data_contracts/raw.json"), description="ingested documents")
    curated: Path | None = Field(Path("data_contracts/curated.json"), description="documents after dedup and PII")
    training: Path | None = Field(Path("data_contracts/training.json"), description="the training split")
    on_failure: Literal["stop", "continue"] = Field(
        "stop", description="stop: a failed contract ends the run before training (status blocked, report "
        "written, nothing registered); continue: train, evaluate and register the model as @challenger anyway")

    def suites(self) -> dict[str, Path]:
        return {k: v for k, v in (("raw", self.raw), ("curated", self.curated), ("training", self.training)) if v}


MAX_EXAMPLES = 5  # offending documents kept per failed expectation


class ExpectationOutcome(BaseModel):
    expectation: str
    column: str | None = None
    kwargs: dict[str, Any] = {}
    success: bool
    observed: Any = None
    unexpected_count: int | None = None
    # for a failed expectation: up to MAX_EXAMPLES offending documents, {source, doc_id, value} (a matched
    # span masked, or the offending value of a derived column)
    examples: list[dict[str, str]] = []

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items() if k not in {"column", "batch_id"})
        where = f" on '{self.column}'" if self.column else ""
        if self.observed is not None:
            what = f"observed {self.observed}"
        elif self.unexpected_count is None:
            what = "nothing to measure (no rows)"
        else:
            what = f"{self.unexpected_count} rows unexpected"
        shown = "; ".join(f"{e['source']} ({e['value']})" for e in self.examples[:2])
        more = f", e.g. {shown}" if shown else ""
        return f"{self.expectation}{where} ({args}): {what}{more}"


class ContractResult(BaseModel):
    kind: str = "curated"
    suite: str
    passed: bool
    rows: int
    expectations: list[ExpectationOutcome]

    @property
    def failures(self) -> list[str]:
        return [f"{self.kind} contract ({Path(self.suite).name}): {e.describe()}" for e in self.expectations
                if not e.success]


def load_suite(path: Path) -> dict[str, Any]:
    """The suite in ``path`` as a dict (checked by building a GE ExpectationSuite from it); a missing or
    malformed file names the path."""
    import great_expectations as gx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"contract suite not found: {path}")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        gx.ExpectationSuite(**data)
    except Exception as exc:
        raise ValueError(f"contract suite {path} is not a valid Great Expectations suite: {exc}") from exc
    return data


# Structured PII that must not survive scrubbing, counted per document as the `residual_pii` column
RESIDUAL_PII = re.compile(
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"  # e-mail
    r"|(?:\+\d{1,2}[ .-]?)?\(?\b\d{3}\)?[ .-]\d{3}[ .-]\d{4}\b"  # phone
    r"|\b(?:\d[ -]?){13,16}\b"  # card
    r"|\b\d{3}-\d{2}-\d{4}\b"  # SSN
    r"|\b(?:\d{1,3}\.){3}\d{1,3}\b"  # IPv4
)


def frame_for_contract(table, train_eval: tuple[set, set] | None = None):
    """The snapshot as a DataFrame with the derived columns suites can set expectations on:
    n_chars, n_words, text_key (normalised text hash, for duplicate ratios), residual_pii, and for the
    training set `in_eval` (the document is also in the held-out split)."""
    import hashlib

    df = table.select([c for c in ("doc_id", "source", "text") if c in table.column_names]).to_pandas()
    text = df["text"].fillna("")
    df["n_chars"] = text.str.len()
    df["n_words"] = text.str.split().str.len()
    df["text_key"] = [hashlib.sha1(" ".join(t.lower().split()).encode()).hexdigest() for t in text]
    df["residual_pii"] = [len(RESIDUAL_PII.findall(t)) for t in text]
    if train_eval is not None:
        train_ids, eval_ids = train_eval
        df = df[df["doc_id"].isin(train_ids)].reset_index(drop=True)
        df["in_eval"] = df["doc_id"].isin(eval_ids)
    return df


def _plain(value: Any) -> Any:
    """numpy scalars and arrays in GE results as plain Python values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def mask(span: str) -> str:
    """A matched value with its letters and digits starred but the first two and last two."""
    chars = [i for i, ch in enumerate(span) if ch.isalnum()]
    hidden = set(chars[2:-2]) if len(chars) > 6 else set(chars[1:])
    return "".join("*" if i in hidden else ch for i, ch in enumerate(span))


def _example(row, column: str | None, kwargs: dict[str, Any]) -> dict[str, str]:
    """An offending document: where it came from and what offended (a regex match masked, a value)."""
    text = row.get("text") if "text" in row else None
    value: Any = row.get(column) if column and column in row else None
    if column == "residual_pii" and isinstance(text, str):
        found = RESIDUAL_PII.search(text)
        value = f"{column}={row[column]}: {mask(found.group())}" if found else f"{column}={row[column]}"
    elif column == "text" and isinstance(text, str):
        found = re.search(kwargs["regex"], text) if kwargs.get("regex") else None
        value = f"matched {mask(found.group())!r}" if found else f"{len(text)} characters"
    elif column:
        value = f"{column}={str(value)[:60]}"
    return {"source": str(row.get("source", "?")), "doc_id": str(row.get("doc_id", "?")), "value": str(value or "")}


def _examples(df, column: str | None, kwargs: dict[str, Any], index: list[dict]) -> list[dict[str, str]]:
    """The offending rows GE reported (by doc_id), as examples."""
    ids = [str(i.get("doc_id")) for i in index[:MAX_EXAMPLES] if isinstance(i, dict) and "doc_id" in i]
    if not ids or "doc_id" not in df.columns:
        return []
    rows = df[df["doc_id"].astype(str).isin(ids)].head(MAX_EXAMPLES)
    return [_example(row, column, kwargs) for row in rows.to_dict("records")]


def run_suite(df, suite: dict[str, Any]) -> list[ExpectationOutcome]:
    """Validate a pandas DataFrame against a suite (as a dict) with Great Expectations; a failed row-level
    expectation names its first offending documents (GE reports them by doc_id)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("tunegate").add_dataframe_asset("snapshot")
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": df})
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES}
    if "doc_id" in df.columns:
        result_format["unexpected_index_column_names"] = ["doc_id"]
    outcomes = []
    for r in batch.validate(gx.ExpectationSuite(**suite), result_format=result_format).results:
        kwargs = {k: v for k, v in dict(r.expectation_config.kwargs).items() if k not in {"batch_id", "result_format"}}
        res = r.result or {}
        outcomes.append(
            ExpectationOutcome(
                expectation=r.expectation_config.type,
                column=kwargs.get("column"),
                kwargs=_plain(kwargs),
                success=bool(r.success),
                observed=_plain(res.get("observed_value")),
                unexpected_count=_plain(res.get("unexpected_count")),
                examples=[] if r.success else _examples(df, kwargs.get("column"), kwargs,
                                                        res.get("partial_unexpected_index_list") or []),
            )
        )
    return outcomes


def validate_frame(df, suite_path: Path, kind: str = "curated") -> ContractResult:
    """Validate a whole DataFrame (derived columns included) against the suite file."""
    outcomes = run_suite(df, load_suite(suite_path))
    return ContractResult(kind=kind, suite=str(suite_path), passed=all(o.success for o in outcomes), rows=len(df),
                          expectations=outcomes)


def _merge(into: dict[str, ExpectationOutcome], outcomes: list[ExpectationOutcome]) -> None:
    """Fold one shard's row-level outcomes into the running ones: all must succeed, counts add up."""
    for o in outcomes:
        key = o.expectation + json.dumps(o.kwargs, sort_keys=True, default=str)
        seen = into.get(key)
        if seen is None:
            into[key] = o
        else:
            seen.success = seen.success and o.success
            if seen.unexpected_count is not None or o.unexpected_count is not None:
                seen.unexpected_count = (seen.unexpected_count or 0) + (o.unexpected_count or 0)
            seen.examples = (seen.examples + o.examples)[:MAX_EXAMPLES]


def validate_snapshot(ref: snapshot.SnapshotRef, suite_path: Path, kind: str,
                      train_eval: tuple[set, set] | None = None) -> ContractResult:
    """Validate a snapshot shard by shard, so memory is bounded by shard size.

    Expectations on the ``text`` column are row-level: they run on each shard and their results are
    folded together. All others (row counts, uniqueness, statistics) run once on the derived columns of
    the whole snapshot, which leave the text out.
    """
    import pandas as pd

    suite = load_suite(suite_path)
    on_text = [e for e in suite.get("expectations", []) if (e.get("kwargs") or {}).get("column") == "text"]
    on_table = [e for e in suite.get("expectations", []) if e not in on_text]
    row_level: dict[str, ExpectationOutcome] = {}
    light, residual = [], []
    for table in snapshot.iter_tables(ref):
        df = frame_for_contract(table, train_eval)
        if on_text and (len(df) or not row_level):
            _merge(row_level, run_suite(df, {**suite, "expectations": on_text}))
        if len(residual) < MAX_EXAMPLES:  # the documents behind a failed residual_pii statistic
            hits = df[df["residual_pii"] > 0].head(MAX_EXAMPLES - len(residual))
            residual += [_example(row, "residual_pii", {}) for row in hits.to_dict("records")]
        light.append(df.drop(columns=["text"]))
    whole = pd.concat(light, ignore_index=True) if light else pd.DataFrame()
    outcomes = list(row_level.values()) + (run_suite(whole, {**suite, "expectations": on_table}) if on_table else [])
    for o in outcomes:
        if not o.success and o.column == "residual_pii" and not o.examples:
            o.examples = residual
    return ContractResult(kind=kind, suite=str(suite_path), passed=all(o.success for o in outcomes), rows=len(whole),
                          expectations=outcomes)


@task(name="contract", cache_policy=NO_CACHE, task_run_name="contract-{kind}")
def contract_task(ref: snapshot.SnapshotRef, suite: Path, kind: str,
                  train_eval: tuple[set, set] | None = None) -> ContractResult:
    return validate_snapshot(ref, suite, kind, train_eval)
