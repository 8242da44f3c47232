"""One retrain run's bookkeeping, so the flow body is only the sequence of stages: the run folder and the
config it ran with, the typed report filled stage by stage, each stage's wall time told to the progress view,
the snapshot and contract records, the MLflow run from start to end, and the report written at the end (to
disk, the MLflow run and the Prefect run)."""

from __future__ import annotations

import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml
from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows import stage_summaries
from flows.config import PipelineConfig
from tasks.core import failpoints, progress, usage
from tasks.core.state import IN_USE_LOCK, StatePaths
from tasks.data.contracts import contract_task
from tasks.registry import mlflow_run
from tasks.registry.lineage import flat_params
from tasks.registry.register import log_report
from tasks.registry.store import RegistryUnreachable, ensure_store
from tasks.report import report
from tasks.report.run_report import RunReport, now


class ContractStop(Exception):
    """A data contract failed and ``contract.on_failure`` is ``stop``: the run ends before training."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"the {kind} contract failed")
        self.kind = kind


class RetrainRun:
    """The state of one run of the retrain flow; stages report to it with ``snapshot``, ``contract`` and
    ``done``, each of which ends that stage on the clock."""

    def __init__(self, config: PipelineConfig, run_id: str, state: StatePaths) -> None:
        self.config, self.run_id, self.state = config, run_id, state
        self._in_use = ExitStack()  # the state folder is in use until finish(): `tunegate gc` waits
        self._in_use.enter_context(state.lock(IN_USE_LOCK, shared=True))
        self.dir = state.run_dir(run_id)
        self.dir.mkdir(parents=True, exist_ok=True)
        config_file = self.dir / "config.yaml"
        config_file.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        self.report = RunReport.begin(run_id, str(config_file))
        self.tracking_uri = config.registry.tracking_uri or state.mlflow_uri()
        # a local store keeps artifacts in the state folder; a tracking server decides (--serve-artifacts)
        self.artifacts = state.mlflow_artifacts() if self.tracking_uri.startswith("sqlite:") else None
        self.snapshots: dict[str, Any] = {}
        self.mlflow_run_id: str | None = None  # the registered version's run once there is one
        self._started = time.perf_counter()
        self.meter = usage.Meter()  # CPU, GPU and memory per stage, over the run's process tree
        self.current: str | None = next(iter(stage_summaries.STAGES))
        progress.begin(self.current)

    # ------------------------------------------------------------------------------------------- stages

    def done(self, stage: str, **fields: Any) -> None:
        """``stage`` ended: its report fields are set, its seconds recorded, the next stage begins."""
        for name, value in fields.items():
            setattr(self.report, name, value)
        now = time.perf_counter()
        seconds = round(now - self._started, 2)
        self.report.stage_seconds = {**self.report.stage_seconds, stage: seconds}
        self.report.usage = {**self.report.usage, stage: self.meter.lap(stage).model_dump()}
        self._started = now
        progress.end(stage, stage_summaries.describe(stage, self.report.as_dict()), seconds)
        self.current = stage_summaries.next_stage(stage)
        if self.current:
            progress.begin(self.current)
        failpoints.reached(f"after:{stage}")

    def snapshot(self, stage: str, ref):
        """A data stage's snapshot joins the report (with the counts so far); returns it."""
        self.snapshots[stage] = ref
        self.report.record_snapshots(self.snapshots)
        self.done(stage)
        return ref

    def contract(self, stage: str, kind: str, ref, suite: Path | None, train_eval=None) -> None:
        """Validate a snapshot against its suite; failures join blocked_by, and with ``contract.on_failure:
        stop`` end the run here (ContractStop)."""
        if suite is not None:
            result = contract_task(ref, suite, kind, train_eval)
            self.report.contracts = [*self.report.contracts,
                                     {**result.model_dump(mode="json"), "failures": result.failures}]
            self.report.block(result.failures)
            if result.failures:
                get_run_logger().warning("%s contract failed: %s", kind, "; ".join(result.failures))
                if self.config.contract.on_failure == "stop":
                    raise ContractStop(kind)
        self.done(stage)

    def keep_quarantine(self, raw) -> None:
        """The files ingest set aside, beside the report (runs/<id>/quarantine/quarantine.jsonl)."""
        (self.dir / "quarantine").mkdir(exist_ok=True)
        shutil.copyfile(Path(raw.path) / "quarantine.jsonl", self.dir / "quarantine" / "quarantine.jsonl")

    # ------------------------------------------------------------------------------------------ the ends

    def open_tracking(self) -> None:
        """The MLflow store (created once, under the registry lock) and the run's MLflow run, open from the
        start to the end; none when the tracking server is not up yet (the run is then logged at registration)."""
        with self.state.lock("registry"):
            ensure_store(self.tracking_uri)
            try:
                self.report.mlflow_run_id = mlflow_run.open_run(self.tracking_uri, self.run_id, self.artifacts,
                                                                flat_params(self.config))
            except RegistryUnreachable as exc:
                get_run_logger().warning("MLflow run not opened at the start: %s", exc)
                self.report.mlflow_run_id = None

    def stopped(self, stop: ContractStop) -> None:
        """A contract ended the run: nothing trained, nothing registered; the report says which and why."""
        why = "; ".join(self.report.blocked_by)
        self.report.status, self.report.stopped_at = "blocked", f"contract_{stop.kind}"
        self._interrupted(why)
        get_run_logger().warning("blocked before training: %s; nothing registered (contract.on_failure: stop)", why)

    def failed(self, exc: Exception) -> None:
        """An error ended the run: the report says what failed; the CLI turns it into one line and exit 1."""
        self.report.status, self.report.error = "failed", f"{type(exc).__name__}: {exc}"
        self._interrupted(f"failed: {self.report.error}")
        get_run_logger().error("run %s failed: %s", self.run_id, self.report.error)

    def cost(self) -> dict[str, Any]:
        """The usage of the stages so far, summed, with the tokens trained on and the estimated cost."""
        tokens = (self.report.training or {}).get("tokens", 0)
        return usage.totals(self.meter.stages, self.config.cost, tokens)

    def _interrupted(self, why: str) -> None:
        if self.current:
            self.report.usage = {**self.report.usage, self.current: self.meter.lap(self.current).model_dump()}
            progress.end(self.current, why, round(time.perf_counter() - self._started, 2), ok=False)
            self.current = None

    def finish(self) -> dict[str, Any]:
        """Write the report (report.json, report.md), log it onto the MLflow run, which then ends, and attach it
        to the Prefect run; returns its content."""
        self.report.finished_at = now()
        self.meter.stop()
        self.report.cost = self.cost()
        rep = self.report.as_dict()
        report.write(rep, self.dir)
        self._in_use.close()
        mlflow_run_id = self.mlflow_run_id or self.report.mlflow_run_id
        if mlflow_run_id:
            try:
                log_report(self.tracking_uri, mlflow_run_id, report.files(self.dir))
                mlflow_run.finish_run(self.tracking_uri, mlflow_run_id, rep["status"])
            except Exception as exc:  # the report on disk is what counts; the model is registered already
                get_run_logger().warning("could not log the report to MLflow run %s: %s", mlflow_run_id, exc)
        try:
            create_markdown_artifact(markdown=report.with_inline_images(report.markdown(rep), self.dir),
                                     key="tunegate-report", description=f"tunegate run {self.run_id}: {rep['status']}")
        except Exception as exc:  # never fail a run on its artifact
            get_run_logger().warning("could not attach the report artifact: %s", exc)
        return rep

