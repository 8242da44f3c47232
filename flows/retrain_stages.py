"""The retrain flow's stages beyond the data tasks, each a few task calls and what they add to the run's report:
the gateway's corrections as extra data (``data.corrections``), train (with the MLflow run following the
steps), evaluate (base, candidate and champion on the held-out data), gates, and register (then promote when
nothing blocked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger

from flows.retrain_run import RetrainRun
from tasks.evaluate import gates as gates_mod
from tasks.evaluate.evaluate import compare, evaluate_task
from tasks.registry import mlflow_run
from tasks.registry.artifacts import champion_artifacts
from tasks.registry.lineage import file_fingerprint, flat_metrics, flat_params, lineage_tags
from tasks.registry.register import register_task
from tasks.registry.store import client
from tasks.registry.events import emit_promoted
from tasks.registry.versions import champion_version, describe, promote
from tasks.report import report
from tasks.report.run_report import evaluation_record
from tasks.serve.corrections import CORRECTIONS_FILE, export_corrections
from tasks.train.train import TrainJob, read_metrics, train_task


def corrections(run: RetrainRun) -> list[str]:
    """With ``data.corrections``: the accepted corrections of the registry model's traffic store, written into
    the run's folder (corrections/gateway-corrections.jsonl) as instruction records for ingest to read beside
    the data paths; returns that file as an extra data path (none when the setting is off or there is nothing
    to add). The export joins the report either way once the setting is on."""
    settings = run.config.data
    if not settings.corrections:
        return []
    log, folder = get_run_logger(), run.state.traffic / run.config.registry.model_name
    export = export_corrections(folder, run.dir / "corrections" / CORRECTIONS_FILE, settings.corrections_min_rating)
    run.report.corrections = export
    if not export.file:
        log.info("data.corrections: no accepted corrections in %s (min rating %g): none added", folder,
                 settings.corrections_min_rating)
        return []
    log.info("data.corrections: %d corrections of version(s) %s from %s join the data (%s)", export.count,
             ", ".join(export.versions) or "-", folder, export.file)
    return [export.file]


def history(run: RetrainRun, cleaned):
    """With ``data.history: cumulative`` and a @champion of this dataset: its training data plus the new cleaned
    documents, as one snapshot for dedup (tasks/data/history.py); otherwise the cleaned snapshot. The lineage (the
    parent snapshots and what was kept) joins the report either way."""
    from tasks.data.history import with_history
    from tasks.drift.reference import champion_training

    settings = run.config.data
    parent = champion_training(run.config.registry, run.state) if settings.history == "cumulative" else None
    merged, record = with_history(cleaned, parent, settings, run.state.snapshots)
    run.report.history = record
    get_run_logger().info("dataset %s: %s", settings.dataset, record["why"])
    if record.get("merged"):  # reported with the snapshots; its seconds count into the dedup stage's
        run.snapshots["history"] = merged
        run.report.record_snapshots(run.snapshots)
    return merged


def train(run: RetrainRun, base, tok, data):
    """Fine-tune on the packed blocks; an identical finished training (same base, data and settings;
    ``train.reuse``) is copied, not redone. The loss curve joins the report."""
    settings = run.config.train
    job = TrainJob(settings=settings, base_model=base.path, tokenizer=tok.path, train_blocks=data.train_blocks,
                   loss_mask=data.loss_mask, eval_texts=data.eval_texts, out_dir=str(run.dir / "train"))
    with mlflow_run.follow_steps(run.tracking_uri, run.report.mlflow_run_id, Path(job.out_dir) / "metrics.jsonl"):
        trained = train_task.with_options(retries=settings.retries)(job, str(run.state.torch_extensions),
                                                                    cache_dir=str(run.state.train_cache))
    curve = report.loss_curve(read_metrics(Path(trained.metrics)), run.dir / "loss_curve.png")
    run.done("train", training=trained.model_dump(), loss_curve=str(curve))
    return trained


def evaluate(run: RetrainRun, base, tok, trained, data, raw) -> tuple[dict[str, dict], dict, dict | None]:
    """Score base, candidate and (when there is one) the champion on the same held-out data: one base in
    memory for all three, the adapters switched on it (bases told apart by fingerprint). Returns each model's
    metrics, the candidate's differences with their intervals, and the champion's artifacts."""
    config = run.config
    models = {"base": {"base": base.path, "tokenizer": tok.path, "base_fingerprint": base.fingerprint},
              "candidate": {"base": base.path, "adapter": trained.adapter, "tokenizer": tok.path,
                            "base_fingerprint": base.fingerprint}}
    champion = champion_artifacts(run.tracking_uri, config.registry.model_name, run.dir / "champion")
    if champion:
        models["champion"] = champion
    evals = evaluate_task(models, data.eval_texts, config.evaluate, canaries=data.canaries, pii=config.pii,
                          raw_snapshot=raw.path, cache_dir=str(run.state.eval_cache))
    deltas = compare(evals, config.evaluate)
    record = evaluation_record(evals, champion["version"] if champion else None, deltas)
    chart = report.metrics_chart(record, run.dir / "metrics_vs_champion.png")
    run.done("evaluate", evaluation={**record, "chart": str(chart) if chart else None})
    return {who: dict(e.metrics) for who, e in evals.items()}, deltas, champion


def judge(run: RetrainRun, gates: list, scores: dict[str, dict], deltas: dict) -> list:
    """Every gate on the candidate's scores against base and champion; failures join blocked_by."""
    results = gates_mod.check(gates, scores["candidate"], {k: v for k, v in scores.items() if k != "candidate"},
                              source=run.config.gates.file, deltas=deltas)
    run.report.gates = [{**g.model_dump(mode="json"), "status": g.status} for g in results]
    run.report.block([g.describe() for g in results if not g.passed])
    return results


def register(run: RetrainRun, curated, tok, base, trained, data, gate_results: list, scores: dict[str, dict],
             champion: dict | None) -> None:
    """Register the candidate with its lineage; promote it to @champion when nothing blocked, else it stays
    @challenger. One registration at a time per state folder: two runs finishing together must not both
    compare against a champion one of them is about to replace (a file lock; on a Prefect server the
    deployment's concurrency limit serialises runs across machines)."""
    log, rep, name = get_run_logger(), run.report, run.config.registry.model_name
    with run.state.lock("registry"):
        seen = champion["version"] if champion else None
        now = champion_version(client(run.tracking_uri), name)
        if now != seen:
            rep.block([f"@champion changed during the run (v{seen or '-'} -> v{now}): rerun to compare against "
                       "the new champion"])
        status = "blocked" if rep.blocked_by else "promoted"
        version = register_task(
            tracking_uri=run.tracking_uri, artifact_location=run.artifacts, mlflow_run_id=rep.mlflow_run_id,
            name=name, run_id=run.run_id, base=base.path, adapter=trained.adapter, tokenizer=tok.path,
            tags=lineage_tags(curated.fingerprint, tok, base, rep.contracts, gate_results, scores["candidate"],
                              status, rep.blocked_by, eval_data=file_fingerprint(data.eval_texts),
                              corrections=rep.corrections, history=rep.history),
            params=flat_params(run.config), metrics=flat_metrics(scores, trained),
            step_metrics=read_metrics(Path(trained.metrics)),
        )
        run.mlflow_run_id = version.mlflow_run_id
        if status == "promoted":
            previous, _ = promote(run.tracking_uri, version.name, version.version)
            emit_promoted(version.name, version.version, previous, run.run_id)
            log.info("promoted %s v%s to @champion (was %s)", version.name, version.version, previous or "none")
        else:
            log.warning("blocked: v%s stays @challenger; @champion unchanged", version.version)
        final = describe(client(run.tracking_uri), version)
        model: dict[str, Any] = {"name": final.name, "version": final.version, "aliases": final.aliases,
                                 "mlflow_run_id": final.mlflow_run_id}
        run.done("register", model=model)
    rep.status = status
