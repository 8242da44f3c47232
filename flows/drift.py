"""The drift monitor: compare a new data drop with what the @champion was trained on; on drift, emit an event.

``drift_monitor(dataset, new_data)`` reads the drop the way a retrain would (ingest, then clean), finds
the reference — the current @champion's training snapshot in the state folder (its registry tag
``snapshot_fingerprint`` names it; the comparison uses that snapshot's pre-scrub parent when it is
there, so both sides are cleaned but not yet scrubbed), or, with no champion, the ``reference`` path
given — and measures document lengths, token distribution and out-of-vocabulary rate under the
champion's tokenizer (or, without a champion, a tokenizer trained on the reference, as the pipeline
would train one), PII per document and duplicates against the reference (``tasks.data.drift_stats``; the
thresholds are in ``data_contracts/drift.yaml``).

The result is a Markdown report, returned, written to ``$TUNEGATE_HOME/drift/<id>/report.md`` (with
``report.json``) and attached to the flow run as an artifact. On drift it emits ``tunegate.data.drift``
for the resource ``tunegate.dataset.<dataset>``, with the statistics and the new data path in the
payload; the ``retrain`` deployment's trigger (prefect.yaml) turns that event into a retrain on the new
data.

``prompt_drift(model)`` is the same check on the serving gateway's traffic (prompt drift): the distinct
request prompts of the model's traffic store in a time window against the champion's training data — its
instruction records' user turns, scrubbed as the prompts are (``tasks.drift.prompts``). Too few prompts:
"too little traffic", no event. On drift it emits the same event, for the resource ``tunegate.traffic.<model>``
(so the retrain trigger on ``tunegate.dataset.*`` does not train on prompts that have no answers), with
``source: traffic`` in the payload and, as ``new_data``, the window's prompts written as a file; once per
champion. The same prompts checked again against the same reference: the earlier result.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.config import PipelineConfig, load_config_or_default
from tasks.data import drift_stats
from tasks.core import snapshot
from tasks.data.drift_stats import Comparison, DriftThresholds
from tasks.drift import ledger, measure, prompts, report
from tasks.drift.reference import Reference, champion_reference
from tasks.core.state import StatePaths, new_run_id

DRIFT_EVENT = "tunegate.data.drift"
RESOURCE_PREFIX = "tunegate.dataset."
TRAFFIC_RESOURCE_PREFIX = "tunegate.traffic."
DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
MIN_PROMPTS = 30


# ------------------------------------------------------------------------------------------ tasks


@task(name="read-drop", cache_policy=NO_CACHE)
def read_drop(path: str, config: PipelineConfig, store: str) -> dict[str, Any]:
    """Ingest and clean ``path`` into snapshots, as a retrain would (reused when unchanged)."""
    return measure.read_drop(path, config.ingest, config.clean, config.dask, store)


@task(name="find-reference", cache_policy=NO_CACHE)
def find_reference(config: PipelineConfig, reference: str | None, state_home: str, work: str) -> Reference:
    state = StatePaths.from_env(state_home)
    found = champion_reference(config.registry, state, Path(work))
    if found is not None and found.texts_snapshot:
        return found
    note = f"{found.description}; " if found is not None else "no @champion; "
    if reference:
        path = Path(reference).expanduser().resolve()
        if not path.exists():
            raise FileNotFoundError(f"reference: no such file or folder: {path}")
        read = read_drop.fn(str(path), config, str(state.snapshots))
        return Reference(kind="path", description=f"{note}reference path {path}", texts_snapshot=read["snapshot"])
    return Reference(kind="none", description=f"{note}no reference path given: nothing to compare with")


@task(name="reference-tokenizer", cache_policy=NO_CACHE)
def reference_tokenizer(ref: Reference, config: PipelineConfig, state_home: str) -> tuple[str, str]:
    """Without the champion's tokenizer: the base model's, or a BPE trained on the reference (cached)."""
    from tasks.train.tokenizer import prepare

    state = StatePaths.from_env(state_home)
    m = json.loads((Path(ref.texts_snapshot) / snapshot.MANIFEST).read_text())
    snap = snapshot.SnapshotRef(path=ref.texts_snapshot, fingerprint=m["fingerprint"], rows=m["rows"], stage=m["stage"])
    tok = prepare(snap, config.tokenizer, config.model.base_model, state.tokenizers)
    how = "the base model's" if not tok.trained else "trained on the reference (no champion tokenizer)"
    return tok.path, how


@task(name="compare", cache_policy=NO_CACHE)
def compare_sides(ref: Reference, new_snapshot: str, tokenizer: str | None, config: PipelineConfig,
                  t: DriftThresholds) -> Comparison:
    return measure.compare_sides(ref, new_snapshot, tokenizer, config.pii, t)


@task(name="read-traffic", cache_policy=NO_CACHE)
def read_traffic(folder: str, since_hours: float | None) -> prompts.Window:
    return prompts.read_window(folder, since_hours)


@task(name="compare-prompts", cache_policy=NO_CACHE)
def compare_prompts(reference_snapshot: str, scrubbed: bool, window: prompts.Window, tokenizer: str | None,
                    config: PipelineConfig, t: DriftThresholds) -> prompts.PromptComparison:
    return prompts.compare_prompts(reference_snapshot, scrubbed, window, tokenizer, config.pii, t)


# ------------------------------------------------------------------------------------------ the flow


@flow(name="drift-monitor", log_prints=True)
def drift_monitor(
    dataset: str,
    new_data: str,
    reference: str | None = None,
    config_file: str | None = None,
    thresholds_file: str | None = None,
    force: bool = False,
    home: str | None = None,
) -> dict[str, Any]:
    """Compare the data drop at ``new_data`` with the @champion's training data (or ``reference``).

    Returns the report (``markdown`` holds the Markdown); on drift, emits ``tunegate.data.drift`` for
    ``tunegate.dataset.<dataset>`` so the retrain deployment's trigger starts a retrain on the new data.
    A drop already checked against the same reference and thresholds is not compared again: the earlier
    result is repeated, and a drift already reported emits no second event (a scheduled monitor would
    otherwise start a retrain on it every hour while its retrain is blocked) unless ``force``. A ``new_data`` path that does not exist yet (an empty landing folder) is "no new data":
    reported on the flow run, nothing written.
    """
    log = get_run_logger()
    if not DATASET_NAME.match(dataset):
        raise ValueError(f"dataset: {dataset!r} is not a valid name (letters, digits, '_' and '-')")
    state = StatePaths.from_env(home)
    config = load_config_or_default(config_file)
    t = drift_stats.load_thresholds(thresholds_file)
    drift_id = new_run_id()  # the same form as a run folder's name
    out = state.drift / drift_id
    path = Path(new_data).expanduser().resolve()
    rep: dict[str, Any] = {"dataset": dataset, "new_data": str(path), "drift_id": drift_id, "drift": False,
                           "report": str(out / "report.md"), "thresholds": t.model_dump(),
                           "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        empty = path.is_dir() and not any(f.is_file() for f in path.rglob("*"))
        if not path.exists() or empty:
            why = f"the landing folder {path} is empty" if empty else f"new data path does not exist: {path}"
            rep.update(decision="no new data", note=why, report=None)
            log.info("no new data for %s: %s", dataset, why)
            return finish(rep, None)
        ref = _reference(rep, config, reference, state, dataset)
        if ref is None:
            return finish(rep, out)
        drop = read_drop(str(path), config, str(state.snapshots))
        rep["new"] = drop
        tokenizer, how = ref.tokenizer, ref.tokenizer_source
        if not tokenizer:
            tokenizer, how = reference_tokenizer(ref, config, str(state.home))
        rep["tokenizer"] = {"path": tokenizer, "source": how}
        key = {"dataset": dataset, "new": ledger.fingerprint(drop["snapshot"]),
               "reference": ledger.fingerprint(ref.texts_snapshot)}
        check = {**key, "method": drift_stats.METHOD, "thresholds": ledger.settings_digest(t)}
        earlier = None if force else ledger.earlier_check(state, check)
        if earlier:  # the same drop against the same reference and thresholds: the result cannot differ
            rep.update({k: earlier.get(k) for k in ("decision", "drift", "statistics", "checks", "tokenizer")})
            rep.update(earlier=earlier["drift_id"],
                       note=f"this drop was checked against this reference in {earlier['drift_id']}: its result, "
                            f"{earlier['decision']}, is repeated; no new event (force compares and emits again)")
            log.info("drop %s unchanged since check %s: %s", path, earlier["drift_id"], earlier["decision"])
            return finish(rep, out)
        result = compare_sides(ref, drop["snapshot"], tokenizer, config, t)
        rep.update(decision=result.decision, drift=result.drift, statistics=result.statistics,
                   checks=[c.model_dump() for c in result.checks])
        if result.drift:
            fired = "; ".join(c.describe() for c in result.checks if c.drifted)
            before = None if force else ledger.already_reported(state, key)
            if before:
                rep["note"] = f"this drop was already reported as drifted against this reference in {before}: no new event"
                log.warning("drift in %s (%s), already reported in %s", dataset, fired, before)
            else:
                rep["event"] = emit_drift(rep)
                ledger.remember(state, key, drift_id)
                log.warning("drift in %s: %s; event %s emitted", dataset, fired, DRIFT_EVENT)
        else:
            log.info("no drift in %s (%s)", dataset, result.decision)
        ledger.remember_check(state, check, drift_id, result.decision)
        return finish(rep, out)
    finally:
        from tasks.core.executor import close_clients

        close_clients()



@flow(name="prompt-drift", log_prints=True)
def prompt_drift(
    model: str | None = None,
    since_hours: float | None = 24.0,
    dataset: str | None = None,
    reference: str | None = None,
    config_file: str | None = None,
    thresholds_file: str | None = None,
    min_prompts: int = MIN_PROMPTS,
    force: bool = False,
    home: str | None = None,
) -> dict[str, Any]:
    """Compare the prompts the gateway served for ``model`` (default: the config's registered model) in the last
    ``since_hours`` hours (None or 0: all the traffic store keeps) with the @champion's training data.

    Returns the report (``markdown`` holds the Markdown); on drift, emits ``tunegate.data.drift`` for
    ``tunegate.dataset.<dataset>`` (default ``traffic-<model>``) with ``source: traffic`` and the window's
    prompts as ``new_data``; once per champion unless ``force``. Fewer than ``min_prompts`` distinct prompts:
    "too little traffic", nothing written. The same prompts against the same reference again: the earlier
    result is reported, nothing is compared and no event emitted (unless ``force``).
    """
    log = get_run_logger()
    state = StatePaths.from_env(home)
    config = load_config_or_default(config_file)
    t = drift_stats.load_thresholds(thresholds_file)
    model = model or config.registry.model_name
    if not model or Path(model).name != model or model.startswith("."):
        raise ValueError(f"model: {model!r} is not a registered model name the gateway keeps traffic for")
    config = config.model_copy(update={"registry": config.registry.model_copy(update={"model_name": model})})
    dataset = dataset or "traffic-" + re.sub(r"[^A-Za-z0-9_\-]", "-", model)
    if not DATASET_NAME.match(dataset):
        raise ValueError(f"dataset: {dataset!r} is not a valid name (letters, digits, '_' and '-')")
    drift_id = new_run_id()
    out = state.drift / drift_id
    rep: dict[str, Any] = {"source": "traffic", "dataset": dataset, "model": model, "drift_id": drift_id,
                           "drift": False, "report": str(out / "report.md"), "thresholds": t.model_dump(),
                           "min_prompts": max(min_prompts, t.min_documents),
                           "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        window = read_traffic(str(state.traffic / model), since_hours)
        rep["window"] = {**window.model_dump(exclude={"prompts", "prompt_keys"}), "prompts": len(window.prompts),
                         "fingerprint": window.fingerprint, "description": window.describe()}
        if len(window.prompts) < rep["min_prompts"]:
            rep.update(decision="too little traffic", report=None,
                       note=f"{window.describe()} in {window.folder}: fewer than {rep['min_prompts']}, no decision")
            log.info("too little traffic for %s: %s", model, window.describe())
            return finish(rep, None)
        ref = _reference(rep, config, reference, state, model)
        if ref is None:
            return finish(rep, out)
        snap = ref.pii_snapshot or ref.texts_snapshot  # scrubbed as the prompts are, when there is one
        key = {"dataset": dataset, "window": window.fingerprint,
               "reference": ref.fingerprint or ledger.fingerprint(snap), "champion": ref.version or "",
               "method": drift_stats.METHOD, "thresholds": ledger.settings_digest(t)}
        earlier = None if force else ledger.earlier_check(state, key)
        if earlier:
            rep.update({k: earlier.get(k) for k in ("decision", "drift", "statistics", "checks", "tokenizer", "basis",
                                                   "notes")})
            rep.update(earlier=earlier["drift_id"],
                       note=f"nothing new in the traffic since check {earlier['drift_id']} (the same "
                            f"{len(window.prompts)} prompts against the same reference): its result, "
                            f"{earlier['decision']}, is repeated; no new event")
            log.info("prompts of %s unchanged since %s: %s", model, earlier["drift_id"], earlier["decision"])
            return finish(rep, out)
        tokenizer, how = ref.tokenizer, ref.tokenizer_source
        if not tokenizer:
            tokenizer, how = reference_tokenizer(ref, config, str(state.home))
        rep["tokenizer"] = {"path": tokenizer, "source": how}
        found = compare_prompts(snap, snap == ref.pii_snapshot or ref.scrubbed, window, tokenizer, config, t)
        result = found.comparison
        rep.update(decision=result.decision, drift=result.drift, statistics=result.statistics, basis=found.basis,
                   notes=found.notes, checks=[c.model_dump() for c in result.checks])
        if result.drift:
            fired = "; ".join(c.describe() for c in result.checks if c.drifted)
            event_key = {k: key[k] for k in ("dataset", "reference", "champion")} | {"source": "traffic"}
            before = None if force else ledger.already_reported(state, event_key)
            if before:
                rep["note"] = (f"traffic drift from this reference was already reported in {before}: no new event "
                               "(one event per champion; force emits another)")
                log.warning("prompt drift for %s (%s), already reported in %s", model, fired, before)
            else:
                rep["new_data"] = str(prompts.write_drop(window, out / "prompts.jsonl"))
                rep["event"] = emit_drift(rep)
                ledger.remember(state, {**event_key, "new": window.fingerprint}, drift_id)
                log.warning("prompt drift for %s: %s; event %s emitted", model, fired, DRIFT_EVENT)
        else:
            log.info("no prompt drift for %s (%s)", model, result.decision)
        ledger.remember_check(state, key, drift_id, result.decision)
        return finish(rep, out)
    finally:
        from tasks.core.executor import close_clients

        close_clients()


def _reference(rep: dict[str, Any], config, reference: str | None, state, what: str):
    """The reference to compare with (recorded in ``rep``), or None when there is none (and ``rep`` says so)."""
    ref = find_reference(config, reference, str(state.home), str(state.drift / ".champion"))
    rep["reference"] = ref.model_dump()
    if ref.texts_snapshot:
        return ref
    rep.update(decision="no reference", note=ref.description)
    get_run_logger().warning("no reference for %s: %s", what, ref.description)
    return None


def emit_drift(rep: dict[str, Any]) -> dict[str, Any]:
    """Emit the drift event; returns what was emitted (id, event, resource, payload)."""
    from prefect.events import emit_event

    stats = {k: v for k, v in (rep.get("statistics") or {}).items() if v is not None}
    payload = {
        "dataset": rep["dataset"],
        "new_data": rep["new_data"],
        "drift_id": rep["drift_id"],
        "report": rep["report"],
        "drifted": [c["name"] for c in rep.get("checks", []) if c["drifted"]],
        "statistics": stats,
        "reference": {k: rep["reference"].get(k) for k in ("kind", "model", "version", "fingerprint")},
        "source": rep.get("source", "drop"),
    }
    if rep.get("source") == "traffic":
        w = rep["window"]
        payload.update(model=rep["model"], window={k: w.get(k) for k in ("since", "until", "requests", "prompts",
                                                                          "versions", "fingerprint")})
    # prompt drift names the model's traffic, not a dataset: the retrain deployment's drift trigger (tunegate.dataset.*)
    # trains on a drifted drop's documents, and a window of prompts has no answers to train on
    resource_id = (f"{TRAFFIC_RESOURCE_PREFIX}{rep['model']}" if rep.get("source") == "traffic"
                   else f"{RESOURCE_PREFIX}{rep['dataset']}")
    resource = {"prefect.resource.id": resource_id, "prefect.resource.name": rep["dataset"]}
    event = emit_event(event=DRIFT_EVENT, resource=resource, payload=payload)
    return {"event": DRIFT_EVENT, "resource": resource["prefect.resource.id"], "id": str(event.id) if event else None,
            "payload": payload}


def finish(rep: dict[str, Any], out: Path | None) -> dict[str, Any]:
    """Write report.md and report.json (unless ``out`` is None), attach the Markdown to the flow run;
    returns the report with its Markdown."""
    md = report.write(rep, out) if out is not None else report.markdown(rep)
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(markdown=md, key=f"tunegate-drift-{rep['dataset'].lower().replace('_', '-')}",
                                 description=f"drift report {rep['drift_id']}: {rep.get('decision')}")
    except Exception as exc:  # the report on disk is what counts
        get_run_logger().warning("could not attach the drift report artifact: %s", exc)
    return {**rep, "markdown": md}
