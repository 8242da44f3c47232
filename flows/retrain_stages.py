"""The retrain flow's stages beyond the data tasks, each a few task calls and what they add to the run's report:
the gateway's corrections as extra data (``data.corrections``), the dataset's history, the split (the dataset's
frozen evaluation set kept out of training), train (with the MLflow run following the steps), evaluate (base,
candidate and champion on the frozen set, and on the new data's own held-out part), gates, and register (then
promote when nothing blocked)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger

from flows.retrain_run import RetrainRun
from tasks.core import failpoints
from tasks.evaluate import frozen_set
from tasks.evaluate import gates as gates_mod
from tasks.evaluate.evaluate import EvalSettings, compare, evaluate_task
from tasks.evaluate.extraction import ExtractionSettings
from tasks.registry import mlflow_run
from tasks.registry.artifacts import champion_artifacts
from tasks.registry.lineage import file_fingerprint, flat_metrics, flat_params, lineage_tags
from tasks.registry.register import register_task
from tasks.registry.store import client
from tasks.registry.events import emit_promoted
from tasks.registry.versions import champion_version, describe, promote
from tasks.registry.version_lineage import lineage, to_markdown
from tasks.report import report
from tasks.report.run_report import evaluation_record
from tasks.serve.corrections import CORRECTIONS_FILE, export_corrections
from tasks.train.dataset import DatasetRef, dataset_task
from tasks.train.train import TrainJob, read_metrics, train_task


@dataclass
class Figures:
    """One evaluation set's results: each model's metrics, the candidate's differences, the set's name."""

    scores: dict[str, dict[str, float]]  # base / candidate / champion -> metrics
    deltas: dict
    label: str


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


def split(run: RetrainRun, curated, tok, cleaned, merged) -> tuple[DatasetRef, frozen_set.FrozenSet]:
    """Split and pack the curated snapshot, keeping the dataset's frozen evaluation set out of training; the
    dataset's first run freezes its own held-out split as that set (tasks/evaluate/frozen_set.py). When the
    champion's training data joined the new data (``merged`` is not ``cleaned``), only the new documents are
    split: the champion's are trained on, and the held-out side is the new data's own."""
    config, log = run.config, get_run_logger()
    dataset = config.data.dataset
    frozen = frozen_set.current(run.state, dataset)
    data = dataset_task(curated, tok.path, config.train.seq_len, config.split, str(run.dir / "data"),
                        config.canaries, config.train.completion_only, keep_out=frozen.path if frozen else None,
                        new_data=cleaned.path if merged.fingerprint != cleaned.fingerprint else None)
    froze = False
    if frozen is None:
        frozen, froze = frozen_set.freeze(run.state, dataset, data.eval_texts, f"run {run.run_id}")
    run.report.dataset = data.model_dump()
    run.report.eval_set = {**frozen.model_dump(), "label": frozen.label, "frozen_by_this_run": froze,
                           "kept_out_of_training": data.kept_out}
    if froze:
        log.info("dataset %s: froze its evaluation set %s from this run's held-out split (%d documents, %d "
                 "instruction records)", dataset, frozen.label, frozen.documents, frozen.instructions)
    else:
        log.info("dataset %s: evaluation set %s; %d of its documents kept out of training", dataset, frozen.label,
                 data.kept_out)
    return data, frozen


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


def new_data_settings(settings: EvalSettings) -> EvalSettings:
    """The evaluation of the new data's held-out part: perplexity and the task metrics only (the prompts file,
    the PII probe, the extraction probe and canaries do not depend on the set and are scored once, on the
    frozen set)."""
    return settings.model_copy(update={"prompts_file": None, "pii_probe_entities": [],
                                       "extraction": ExtractionSettings()})


def evaluate(run: RetrainRun, base, tok, trained, data, raw, frozen: frozen_set.FrozenSet,
             ) -> tuple[dict[str, Figures], dict | None]:
    """Score base, candidate and (when there is one) the champion on the dataset's frozen evaluation set (what
    the gates compare) and, apart, on the new data's own held-out part: one base in memory for all three, the
    adapters switched on it (bases told apart by fingerprint). Returns each set's figures ("frozen", and "new"
    when the new data has held-out documents outside the frozen set) and the champion's artifacts."""
    config, log = run.config, get_run_logger()
    models = {"base": {"base": base.path, "tokenizer": tok.path, "base_fingerprint": base.fingerprint},
              "candidate": {"base": base.path, "adapter": trained.adapter, "tokenizer": tok.path,
                            "base_fingerprint": base.fingerprint}}
    champion = champion_artifacts(run.tracking_uri, config.registry.model_name, run.dir / "champion")
    if champion:
        models["champion"] = champion
    evals = evaluate_task(models, frozen.path, config.evaluate, canaries=data.canaries, pii=config.pii,
                          raw_snapshot=raw.path, cache_dir=str(run.state.eval_cache))
    deltas = compare(evals, config.evaluate)
    figures = {"frozen": Figures({who: dict(e.metrics) for who, e in evals.items()}, deltas, frozen.label)}
    record = evaluation_record(evals, champion["version"] if champion else None, deltas)
    record["eval_set"] = frozen.label
    new_file = frozen_set.new_data_heldout(data.eval_texts, frozen, run.dir / "data" / "eval_new_data.jsonl")
    if new_file is None:
        why = ("the new data's held-out documents are the frozen set itself" if run.report.eval_set["frozen_by_this_run"]
               else "every held-out document of the new data is in the frozen set")
        record["new_data"] = {"evaluated": False, "why": why}
        if run.report.eval_set["frozen_by_this_run"]:  # the same documents: the same figures
            figures["new"] = Figures(figures["frozen"].scores, deltas, f"new data (= {frozen.label})")
    else:
        settings = new_data_settings(config.evaluate)
        new_evals = evaluate_task.with_options(name="evaluate-new-data")(
            models, str(new_file), settings, pii=config.pii, cache_dir=str(run.state.eval_cache))
        new_deltas = compare(new_evals, settings)
        rows = sum(1 for line in new_file.read_text().splitlines() if line.strip())
        figures["new"] = Figures({who: dict(e.metrics) for who, e in new_evals.items()}, new_deltas,
                                 f"new data held out ({rows})")
        record["new_data"] = {"evaluated": True, "file": str(new_file), "rows": rows,
                              "champion_version": record["champion_version"],
                              "scored_sets": next(iter(new_evals.values())).scored_sets,
                              **{who: {k: v for k, v in e.metrics.items() if k in gates_mod.NEW_DATA_METRICS}
                                 for who, e in new_evals.items()},
                              "deltas": {who: {m: d.model_dump() for m, d in ds.items()}
                                         for who, ds in new_deltas.items()}}
        log.info("new data: %d held-out rows outside the frozen set scored apart (%s)", rows, new_file)
    chart = report.metrics_chart(record, run.dir / "metrics_vs_champion.png")
    run.done("evaluate", evaluation={**record, "chart": str(chart) if chart else None})
    return figures, champion


def judge(run: RetrainRun, gates: list, figures: dict[str, Figures]) -> list:
    """Every gate on the candidate's scores against base and champion, on the set it names; failures join
    blocked_by."""
    spent = {k: v for k, v in run.cost().items() if k in gates_mod.USAGE_METRICS}  # what the run used so far
    results = []
    for name in gates_mod.EVAL_SETS:
        fig = figures.get(name) or Figures({}, {}, "new data: none held out")
        results += gates_mod.check(gates, {**fig.scores.get("candidate", {}), **spent},
                                   {k: v for k, v in fig.scores.items() if k != "candidate"},
                                   source=run.config.gates.file, deltas=fig.deltas, eval_set=name, label=fig.label)
    order = {g.name: i for i, g in enumerate(gates)}
    results.sort(key=lambda r: order[r.name])
    run.report.gates = [{**g.model_dump(mode="json"), "status": g.status} for g in results]
    run.report.block([g.describe() for g in results if not g.passed])
    return results


def register(run: RetrainRun, curated, tok, base, trained, frozen: frozen_set.FrozenSet, gate_results: list,
             scores: dict[str, dict], champion: dict | None) -> None:
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
                              status, rep.blocked_by, eval_data=file_fingerprint(frozen.path),
                              corrections=rep.corrections, history=rep.history, eval_set=frozen.label)
            | {"cost": json.dumps(run.cost())},
            params=flat_params(run.config), metrics=flat_metrics(scores, trained),
            step_metrics=read_metrics(Path(trained.metrics)),
        )
        run.mlflow_run_id = version.mlflow_run_id
        failpoints.reached("register:promote")
        if status == "promoted":
            previous, _ = promote(run.tracking_uri, version.name, version.version, via=f"tunegate run {run.run_id}",
                                  reason="passed every data contract and evaluation gate")
            emit_promoted(version.name, version.version, previous, run.run_id)
            log.info("promoted %s v%s to @champion (was %s)", version.name, version.version, previous or "none")
        else:
            log.warning("blocked: v%s stays @challenger; @champion unchanged", version.version)
        final = describe(client(run.tracking_uri), version)
        rep.lineage = lineage_markdown(run, final.name, final.version)
        model: dict[str, Any] = {"name": final.name, "version": final.version, "aliases": final.aliases,
                                 "mlflow_run_id": final.mlflow_run_id}
        run.done("register", model=model)
    rep.status = status


def lineage_markdown(run: RetrainRun, name: str, version: str) -> str:
    """The registered version's lineage for the report (its contracts and gates are in the report already)."""
    from tasks.registry.store import bounded_http

    try:
        with bounded_http():
            return to_markdown(lineage(client(run.tracking_uri), run.state, name, version), checks=False)
    except Exception as exc:  # a report section: reading it must not fail a run whose model is registered
        get_run_logger().warning("lineage of %s v%s not written into the report: %s", name, version, exc)
        return f"## Lineage\n\nNot available: {type(exc).__name__}: {exc}. Run `tunegate lineage {name}/{version}`.\n"
