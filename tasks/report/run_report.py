"""The retrain run's report as a typed record: what the flow fills in stage by stage, written at the end as
report.json (for machines) and report.md (for the reviewer, tasks/report/report.py).

A field appears in report.json once the run has set it (a run stopped by a contract has no ``training``),
so a reader tells "not reached" from "reached and empty". The nested sections stay plain JSON objects: they
are the stages' own records (``SnapshotRef``, ``TrainResult``...) dumped as they are.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.serve.corrections import CorrectionsExport

# the quality filters' counts are listed one by one; these three are the length checks, counted apart
_LENGTH_DROPS = {"dropped_empty", "dropped_too_short", "dropped_too_long"}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunReport(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    run_id: str
    status: Literal["failed", "blocked", "promoted"] = "failed"
    blocked_by: list[str] = Field(default_factory=list, description="every failed contract and gate, in order")
    config: str = Field(description="the run's configuration, as it ran (runs/<id>/config.yaml)")
    started_at: str
    finished_at: str | None = None
    gates_file: str | None = None
    mlflow_run_id: str | None = None
    corrections: CorrectionsExport | None = Field(
        None, description="with data.corrections: the gateway's corrections added to the data (count, file, sha256, "
                          "the answers and versions they correct)")
    history: dict[str, Any] | None = Field(
        None, description="the dataset's history: whether the champion's training data joined the new data, its "
                          "parent snapshots and what the retention window kept (tasks/data/history.py)")
    eval_set: dict[str, Any] | None = Field(
        None, description="the dataset's frozen evaluation set the gates compared on: version, content hash, size, "
                          "whether this run froze it, documents kept out of training (tasks/evaluate/frozen_set.py)")
    snapshots: dict[str, dict[str, Any]] = Field(default_factory=dict)
    counts: dict[str, Any] = Field(default_factory=dict)
    contracts: list[dict[str, Any]] = Field(default_factory=list)
    tokenizer: dict[str, Any] | None = None
    base_model: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    loss_curve: str | None = None
    evaluation: dict[str, Any] | None = None
    gates: list[dict[str, Any]] | None = None
    model: dict[str, Any] | None = None
    stopped_at: str | None = Field(None, description="the contract that ended the run before training")
    error: str | None = None
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    lineage: str | None = Field(None, description="the registered version's lineage, Markdown (`tunegate lineage`)")
    usage: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="per stage: wall, CPU and GPU seconds, peak memory (tasks/core/usage.py)")
    cost: dict[str, Any] | None = Field(None, description="the run's usage summed, tokens and the estimated cost")

    @classmethod
    def begin(cls, run_id: str, config_file: str) -> RunReport:
        return cls(run_id=run_id, status="failed", blocked_by=[], config=config_file, contracts=[], started_at=now())

    def block(self, reasons: list[str]) -> None:
        self.blocked_by = [*self.blocked_by, *reasons]

    def as_dict(self) -> dict[str, Any]:
        """report.json's content: the fields set so far."""
        return self.model_dump(mode="json", exclude_unset=True)

    def record_snapshots(self, snaps: dict) -> None:
        """The data stages' snapshots so far (name -> SnapshotRef) and their document counts."""
        manifests = {k: v.manifest() for k, v in snaps.items()}
        self.snapshots = {k: {**v.model_dump(mode="json"), "seconds": manifests[k].get("seconds")}
                          for k, v in snaps.items()}
        self.counts = stage_counts(manifests, snaps["pii"].rows if "pii" in snaps else None)


def stage_counts(manifests: dict[str, dict], curated_rows: int | None) -> dict[str, Any]:
    """Document counts of the stages run so far (a stage not run yet counts nothing)."""
    m = {k: manifests[k]["stats"] if k in manifests else {} for k in ("ingest", "clean", "dedup", "pii")}
    quality = {k: v for k, v in m["clean"].items() if k.startswith(("dropped_", "flagged_")) and k not in _LENGTH_DROPS}
    return {
        "files": m["ingest"].get("inputs"),
        "documents": m["ingest"].get("documents"),
        "quarantined": m["ingest"].get("quarantined"),
        "dropped_empty": m["clean"].get("dropped_empty"),
        "dropped_too_short": m["clean"].get("dropped_too_short"),
        "dropped_quality": sum(v for k, v in quality.items() if k.startswith("dropped_")),
        "quality_filters": quality,
        "exact_duplicates": m["dedup"].get("exact_duplicates"),
        "near_duplicates": m["dedup"].get("near_duplicates"),
        "instruction_records": m["clean"].get("instructions"),
        "curated_documents": curated_rows,
        "pii_entities": m["pii"].get("pii_entities", {}),
    }


def evaluation_record(evals: dict[str, Any], champion_version: str | None, deltas: dict) -> dict[str, Any]:
    """The report's evaluation: each model's metrics under its name (base, candidate, champion), then the
    details (differences with intervals, answers, PII, extraction and canary probes, what was reused)."""
    record: dict[str, Any] = {who: dict(e.metrics) for who, e in evals.items()}
    record["champion_version"] = champion_version
    record["scored_sets"] = next(iter(evals.values())).scored_sets if evals else []
    record["reused"] = [who for who, e in evals.items() if e.reused]  # read from the evaluation cache
    record["seconds"] = {who: e.seconds for who, e in evals.items()}
    record["saved_seconds"] = {who: e.saved_seconds for who, e in evals.items() if e.reused}
    record["deltas"] = {who: {m: d.model_dump() for m, d in ds.items() if d is not None} for who, ds in deltas.items()}
    record["pii_leaks"] = {who: dict(e.pii_leaks) for who, e in evals.items()}
    record["extraction"] = {who: {"by_type": e.extraction_by_type, "secrets": e.extraction} for who, e in evals.items()
                            if e.extraction}
    record["canaries"] = {who: list(e.canaries) for who, e in evals.items()}
    record["generations"] = {who: [g.model_dump() for g in e.generations] for who, e in evals.items()}
    return record
