"""The retrain flow: raw documents to a gated model in the MLflow registry.

Reads like the pipeline: (gates file read) → ingest → clean → dedup → scrub PII → contract → tokenizer →
base model → split and pack (canaries join the training stream) → train → evaluate → gates → register →
promote → report (to disk, the Prefect run and the MLflow run). Stages pass snapshot references
(paths and fingerprints), never the data itself; each data stage reuses its snapshot when its inputs,
parameters and code are unchanged, so a rerun (``tunegate run --resume RUN_ID``) recomputes nothing
it already has and training continues from its newest checkpoint.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows import stage_summaries
from flows.config import PipelineConfig
from tasks.evaluate import gates as gates_mod
from tasks.registry import mlflow_run, registry
from tasks.core import progress
from tasks.report import report
from tasks.data.clean import clean_task
from tasks.data.contracts import contract_task
from tasks.train.dataset import dataset_task, split_sets
from tasks.data.dedup import dedup_task
from tasks.evaluate.evaluate import compare, evaluate_task
from tasks.core.executor import close_clients
from tasks.data.ingest.ingest import ingest_task
from tasks.train.model import base_model_task
from tasks.data.pii.scrub import scrub_task
from tasks.registry.registry import register_task
from tasks.core.state import StatePaths, new_run_id
from tasks.train.tokenizer import tokenizer_task
from tasks.train.train import TrainJob, read_metrics, train_task


class ContractStop(Exception):
    """A data contract failed and ``contract.on_failure`` is ``stop``: the run ends before training."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"the {kind} contract failed")
        self.kind = kind


class StageClock:
    """Wall seconds per stage, for the report; each stage's end (with what it did, read from the report) and the
    next stage's start are told to the progress view."""

    def __init__(self, rep: dict[str, Any]) -> None:
        self.seconds: dict[str, float] = {}
        self._rep = rep
        self._t = time.perf_counter()
        self.current: str | None = next(iter(stage_summaries.STAGES))
        progress.begin(self.current)

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(now - self._t, 2)
        self._t = now
        progress.end(stage, stage_summaries.describe(stage, self._rep), self.seconds[stage])
        self.current = stage_summaries.next_stage(stage)
        if self.current:
            progress.begin(self.current)

    def stop(self, why: str) -> None:
        """The running stage ended the run (a failed contract, an error)."""
        if self.current:
            progress.end(self.current, why, round(time.perf_counter() - self._t, 2), ok=False)
            self.current = None


def flow_run_name() -> str:
    """The flow run is named by the tunegate run id (the one given, or a new one the flow then adopts)."""
    from prefect.runtime import flow_run

    return flow_run.parameters.get("run_id") or new_run_id()


@flow(name="retrain", log_prints=True, flow_run_name=flow_run_name)
def retrain(config: PipelineConfig, run_id: str | None = None, home: str | None = None) -> dict[str, Any]:
    """Run the whole pipeline once; returns the report (also written to runs/<run_id>/report.json)."""
    from prefect.runtime import flow_run

    log = get_run_logger()
    state = StatePaths.from_env(home)
    run_id = run_id or flow_run.name or new_run_id()
    run_dir = state.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    tracking_uri = config.registry.tracking_uri or state.mlflow_uri()
    rep: dict[str, Any] = {"run_id": run_id, "status": "failed", "blocked_by": [], "config": str(run_dir / "config.yaml"),
                           "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    clock = StageClock(rep)
    version = None
    try:
        # the gates file is read first: a missing or malformed one fails the run before any data work
        gates = gates_mod.load_gates(config.gates.file)
        rep["gates_file"] = str(config.gates.file)
        # a local store keeps artifacts in the state folder; a tracking server decides (--serve-artifacts)
        artifacts = state.mlflow_artifacts() if tracking_uri.startswith("sqlite:") else None
        with state.lock("registry"):  # a new SQLite store is created once, not by two runs at the same time
            registry.ensure_store(tracking_uri)
            rep["mlflow_run_id"] = open_mlflow_run(tracking_uri, run_id, artifacts, config)
        store = str(state.snapshots)
        raw = ingest_task([str(p) for p in config.data.paths], config.ingest, config.dask, store)
        (run_dir / "quarantine").mkdir(exist_ok=True)
        shutil.copyfile(Path(raw.path) / "quarantine.jsonl", run_dir / "quarantine" / "quarantine.jsonl")
        snaps = record_snapshots(rep, {"ingest": raw})
        clock.lap("ingest")
        check_contract(rep, raw, config.contract.raw, "raw", stop=config.contract.on_failure == "stop")
        clock.lap("contract_raw")
        cleaned = clean_task(raw, config.clean, config.dask, store)
        snaps = record_snapshots(rep, {**snaps, "clean": cleaned})
        clock.lap("clean")
        deduped = dedup_task(cleaned, config.dedup, store)
        snaps = record_snapshots(rep, {**snaps, "dedup": deduped})
        clock.lap("dedup")
        curated = scrub_task(deduped, config.pii, config.dask, store)
        record_snapshots(rep, {**snaps, "pii": curated})
        clock.lap("pii")
        check_contract(rep, curated, config.contract.curated, "curated", stop=config.contract.on_failure == "stop")
        close_clients()  # the data stages are done: local Dask workers give their memory and cores to training
        clock.lap("contract")

        tok = tokenizer_task(curated, config.tokenizer, config.model.base_model, str(state.tokenizers),
                             str(state.models))
        base = base_model_task(config.model, tok.path, tok.content_hash, str(state.models))
        rep["tokenizer"], rep["base_model"] = tok.model_dump(), base.model_dump()
        clock.lap("tokenizer_and_model")
        # canaries (when on) join the training token stream here, after the contracts' snapshots
        data = dataset_task(curated, tok.path, config.train.seq_len, config.split, str(run_dir / "data"),
                            config.canaries, config.train.completion_only)
        rep["dataset"] = data.model_dump()
        check_contract(rep, curated, config.contract.training, "training", split_sets(data),
                       stop=config.contract.on_failure == "stop")
        clock.lap("split")

        job = TrainJob(settings=config.train, base_model=base.path, tokenizer=tok.path, train_blocks=data.train_blocks,
                       loss_mask=data.loss_mask, eval_texts=data.eval_texts, out_dir=str(run_dir / "train"))
        # an identical finished training (same base, data and settings; train.reuse) is copied, not redone
        with mlflow_run.follow_steps(tracking_uri, rep["mlflow_run_id"], Path(job.out_dir) / "metrics.jsonl"):
            trained = train_task.with_options(retries=config.train.retries)(job, str(state.torch_extensions),
                                                                            cache_dir=str(state.train_cache))
        rep["training"] = trained.model_dump()
        clock.lap("train")
        step_metrics = read_metrics(Path(trained.metrics))
        rep["loss_curve"] = str(report.loss_curve(step_metrics, run_dir / "loss_curve.png"))

        # one base in memory for all three: the adapters are switched on it (bases told apart by fingerprint)
        models = {"base": {"base": base.path, "tokenizer": tok.path, "base_fingerprint": base.fingerprint},
                  "candidate": {"base": base.path, "adapter": trained.adapter, "tokenizer": tok.path,
                                "base_fingerprint": base.fingerprint}}
        champion = registry.champion_artifacts(tracking_uri, config.registry.model_name, run_dir / "champion")
        if champion:
            models["champion"] = champion
        evals = evaluate_task(models, data.eval_texts, config.evaluate, canaries=data.canaries, pii=config.pii,
                              raw_snapshot=raw.path, cache_dir=str(state.eval_cache))
        scores = {who: dict(e.metrics) for who, e in evals.items()}
        deltas = compare(evals, config.evaluate)
        rep["evaluation"] = evaluation_record(evals, champion["version"] if champion else None, deltas)
        chart = report.metrics_chart(rep["evaluation"], run_dir / "metrics_vs_champion.png")
        rep["evaluation"]["chart"] = str(chart) if chart else None
        clock.lap("evaluate")

        gate_results = gates_mod.check(gates, scores["candidate"], {k: v for k, v in scores.items() if k != "candidate"},
                                       source=config.gates.file, deltas=deltas)
        rep["gates"] = [{**g.model_dump(mode="json"), "status": g.status} for g in gate_results]
        rep["blocked_by"] += [g.describe() for g in gate_results if not g.passed]
        # one registration at a time per state folder: two runs finishing together must not both compare
        # against a champion that one of them is about to replace (a file lock; on a Prefect server the
        # deployment's concurrency limit serialises runs across machines)
        with state.lock("registry"):
            seen = champion["version"] if champion else None
            now = registry.champion_version(registry.client(tracking_uri), config.registry.model_name)
            if now != seen:
                rep["blocked_by"].append(f"@champion changed during the run (v{seen or '-'} -> v{now}): rerun to "
                                         "compare against the new champion")
            status = "blocked" if rep["blocked_by"] else "promoted"
            version = register_task(
                tracking_uri=tracking_uri, artifact_location=artifacts, mlflow_run_id=rep["mlflow_run_id"],
                name=config.registry.model_name, run_id=run_id,
                base=base.path, adapter=trained.adapter, tokenizer=tok.path,
                tags=lineage_tags(curated.fingerprint, tok, base, rep["contracts"], gate_results, scores["candidate"],
                                  status, rep["blocked_by"], eval_data=file_fingerprint(data.eval_texts)),
                params=flat_params(config), metrics=flat_metrics(scores, trained), step_metrics=step_metrics,
            )
            if status == "promoted":
                previous, _ = registry.promote(tracking_uri, version.name, version.version)
                log.info("promoted %s v%s to @champion (was %s)", version.name, version.version, previous or "none")
            else:
                log.warning("blocked: v%s stays @challenger; @champion unchanged", version.version)
            final = registry.describe(registry.client(tracking_uri), version)
            rep["model"] = {"name": final.name, "version": final.version, "aliases": final.aliases,
                            "mlflow_run_id": final.mlflow_run_id}
            clock.lap("register")
        rep["status"] = status
    except ContractStop as stop:  # nothing trained, nothing registered; the report says which contract and why
        rep["status"] = "blocked"
        rep["stopped_at"] = f"contract_{stop.kind}"
        clock.stop("; ".join(rep["blocked_by"]))
        log.warning("blocked before training: %s; nothing registered (contract.on_failure: stop)",
                    "; ".join(rep["blocked_by"]))
    except Exception as exc:  # the report says what failed; the CLI turns it into one line and exit 1
        rep["status"] = "failed"
        rep["error"] = f"{type(exc).__name__}: {exc}"
        clock.stop(f"failed: {rep['error']}")
        log.error("run %s failed: %s", run_id, rep["error"])
    finally:
        rep["stage_seconds"] = clock.seconds
        rep["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        report.write(rep, run_dir)
        mlflow_run_id = version.mlflow_run_id if version is not None else rep.get("mlflow_run_id")
        if mlflow_run_id:
            end_mlflow_run(rep, tracking_uri, mlflow_run_id, run_dir)
        publish(rep, run_dir)
    return rep


def evaluation_record(evals: dict[str, Any], champion_version: str | None, deltas: dict) -> dict[str, Any]:
    """rep["evaluation"]: each model's metrics under its name (base, candidate, champion), then the details."""
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


def open_mlflow_run(tracking_uri: str, run_id: str, artifacts: str | None, config: PipelineConfig) -> str | None:
    """The MLflow run, open from the flow's start to its end (duration, parameters and steps live); None when
    the tracking server is not up yet (the run is then logged at registration)."""
    try:
        return mlflow_run.open_run(tracking_uri, run_id, artifacts, flat_params(config))
    except registry.RegistryUnreachable as exc:
        get_run_logger().warning("MLflow run not opened at the start: %s", exc)
        return None


def end_mlflow_run(rep: dict[str, Any], tracking_uri: str, mlflow_run_id: str, run_dir: Path) -> None:
    """The final report (report.md, report.json, PNGs) onto the run's MLflow run, which then ends."""
    try:
        registry.log_report(tracking_uri, mlflow_run_id, report.files(run_dir))
        mlflow_run.finish_run(tracking_uri, mlflow_run_id, rep["status"])
    except Exception as exc:  # the report on disk is what counts; the model is registered already
        get_run_logger().warning("could not log the report to MLflow run %s: %s", mlflow_run_id, exc)


def record_snapshots(rep: dict[str, Any], snaps: dict) -> dict:
    """The data stages' snapshots so far, and their counts, into the report; returns ``snaps``."""
    manifests = {k: v.manifest() for k, v in snaps.items()}
    rep["snapshots"] = {k: {**v.model_dump(), "seconds": manifests[k].get("seconds")} for k, v in snaps.items()}
    rep["counts"] = stage_counts(manifests, snaps["pii"].rows if "pii" in snaps else None)
    return snaps


def stage_counts(manifests: dict[str, dict], curated_rows: int | None) -> dict[str, Any]:
    """Document counts of the stages run so far (a stage not run yet counts nothing)."""
    m = {k: manifests[k]["stats"] if k in manifests else {} for k in ("ingest", "clean", "dedup", "pii")}
    return {
        "files": m["ingest"].get("inputs"),
        "documents": m["ingest"].get("documents"),
        "quarantined": m["ingest"].get("quarantined"),
        "dropped_empty": m["clean"].get("dropped_empty"),
        "dropped_too_short": m["clean"].get("dropped_too_short"),
        "dropped_quality": sum(v for k, v in m["clean"].items() if k.startswith("dropped_") and k not in
                               {"dropped_empty", "dropped_too_short", "dropped_too_long"}),
        "quality_filters": {k: v for k, v in m["clean"].items() if k.startswith(("dropped_", "flagged_")) and k not in
                            {"dropped_empty", "dropped_too_short", "dropped_too_long"}},
        "exact_duplicates": m["dedup"].get("exact_duplicates"),
        "near_duplicates": m["dedup"].get("near_duplicates"),
        "instruction_records": m["clean"].get("instructions"),
        "curated_documents": curated_rows,
        "pii_entities": m["pii"].get("pii_entities", {}),
    }


def check_contract(rep: dict[str, Any], ref, suite: Path | None, kind: str, train_eval=None, stop: bool = True) -> None:
    """Validate one snapshot kind against its suite; failures join the run's blocked_by, and with ``stop``
    end the run here (ContractStop)."""
    if suite is None:
        return
    result = contract_task(ref, suite, kind, train_eval)
    rep.setdefault("contracts", []).append({**result.model_dump(mode="json"), "failures": result.failures})
    rep["blocked_by"] += result.failures
    if result.failures:
        get_run_logger().warning("%s contract failed: %s", kind, "; ".join(result.failures))
        if stop:
            raise ContractStop(kind)


def file_fingerprint(path: str | Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def lineage_tags(fingerprint, tok, base, contracts, gate_results, candidate, status, blocked_by,
                 eval_data: str | None = None) -> dict[str, str]:
    tags = {
        "snapshot_fingerprint": fingerprint,
        "tokenizer_hash": tok.content_hash,
        "base_model": base.description,
        "base_model_fingerprint": base.fingerprint,
        "contracts": json.dumps({c["kind"]: c["passed"] for c in contracts}),
        "gates": json.dumps({g.name: g.status for g in gate_results}),
        "status": status,
        "blocked_by": "; ".join(blocked_by)[:4900] or "-",
    }
    if eval_data:
        tags[registry.EVAL_DATA_TAG] = eval_data
    for key in registry.TAG_METRICS:  # key evaluation metrics, for `tunegate models`
        if candidate.get(key) is not None:
            tags[key] = f"{float(candidate[key]):.6g}"
    return tags


def flat_params(config: PipelineConfig) -> dict[str, Any]:
    keep = ("train", "dedup", "tokenizer", "model", "clean")
    out: dict[str, Any] = {}
    for section in keep:
        for k, v in getattr(config, section).model_dump(mode="json").items():
            out[f"{section}.{k}"] = v
    return out


def flat_metrics(scores: dict[str, dict], trained) -> dict[str, float]:
    """Every evaluation metric of every model, prefixed candidate_/base_/champion_, plus training figures."""
    out = {f"{who}_{k}": float(v) for who, s in scores.items() for k, v in s.items() if v is not None}
    out.update(final_loss=trained.final_loss, mean_tokens_per_s=trained.mean_tokens_per_s, train_wall_s=trained.wall_s)
    if trained.final_eval_loss is not None:
        out["final_eval_loss"] = trained.final_eval_loss
    return out


def publish(rep: dict[str, Any], run_dir: Path) -> None:
    """Attach report.md to the Prefect flow run as a Markdown artifact, its plots embedded."""
    try:
        create_markdown_artifact(markdown=report.with_inline_images(report.markdown(rep), run_dir), key="tunegate-report",
                                 description=f"tunegate run {rep['run_id']}: {rep['status']}")
    except Exception as exc:  # the report on disk is what counts; never fail a run on its artifact
        get_run_logger().warning("could not attach the report artifact: %s", exc)
