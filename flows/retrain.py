"""The retrain flow: raw documents to a gated model in the MLflow registry.

Reads like the pipeline: (gates file read) → (with data.corrections, the gateway's corrections as instruction
data) → ingest → clean → (data.history cumulative: + the @champion's training data of the dataset) → dedup →
scrub PII → contract → tokenizer → base model → split and pack (the dataset's frozen evaluation set kept out,
canaries in) → train → evaluate (on the frozen set; the new data's held-out part apart) → gates → register →
promote → report (to disk, the Prefect run and the MLflow run). Stages pass
snapshot references (paths and fingerprints), never the data itself; each data stage reuses its snapshot when its
inputs, parameters and code are unchanged, so a rerun (``tunegate run --resume RUN_ID``) recomputes nothing it
already has and training continues from its newest checkpoint.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows import retrain_stages as stages
from flows.dataset_slot import dataset_slot
from flows.config import PipelineConfig
from flows.retrain_run import ContractStop, RetrainRun
from tasks.core.executor import close_clients
from tasks.core.state import StatePaths, new_run_id
from tasks.data.clean import clean_task
from tasks.data.dedup.stage import dedup_task
from tasks.data.ingest.ingest import ingest_task
from tasks.data.pii.scrub import scrub_task
from tasks.evaluate.gates import load_gates
from tasks.train.dataset import split_sets
from tasks.train.model import base_model_task
from tasks.train.tokenizer import tokenizer_task


def flow_run_name() -> str:
    """The flow run is named by the tunegate run id (the one given, or a new one the flow then adopts)."""
    from prefect.runtime import flow_run

    return flow_run.parameters.get("run_id") or new_run_id()


def final_state(rep: dict[str, Any]):
    """The flow run's end state, what the Prefect UI lists and an automation matches: a failed run is Failed, with
    its error as the message (the report is written first); a blocked run is a Completed state named ``Blocked``
    whose message says why; otherwise None, Prefect's own Completed."""
    from prefect.states import Completed, Failed

    if rep.get("status") == "failed":
        return Failed(message=f"run {rep.get('run_id')} failed: {rep.get('error')}"[:2000])
    if rep.get("status") != "blocked":
        return None
    why = "; ".join(rep.get("blocked_by") or []) or str(rep.get("stopped_at") or "blocked")
    return Completed(name="Blocked", message=why[:2000], data=rep)


@flow(name="retrain", log_prints=True, flow_run_name=flow_run_name)
def retrain(config: PipelineConfig, run_id: str | None = None, home: str | None = None,
            dataset: str | None = None) -> dict[str, Any]:
    """Run the whole pipeline once; returns the report (also written to runs/<run_id>/report.json). A blocked run
    ends in a Completed state named Blocked, with the gates and contracts that blocked it as its message; a failed
    one, its report written, in a Failed state (call with ``return_state=True`` to get it without an exception).
    ``dataset`` (default: the config's data.dataset) names the dataset; one run per dataset at a time holds its
    slot (flows/dataset_slot.py), runs of other datasets go on."""
    from prefect import get_run_logger
    from prefect.runtime import flow_run

    if dataset:
        config = config.model_copy(update={"data": config.data.model_copy(update={"dataset": dataset})})
    with dataset_slot(config.data.dataset, log=get_run_logger().info):
        rep = pipeline(config, run_id or flow_run.name or new_run_id(), home)
    return final_state(rep) or rep


def pipeline(config: PipelineConfig, run_id: str, home: str | None) -> dict[str, Any]:
    """The stages, in order, on one run; returns the report."""
    run = RetrainRun(config, run_id, StatePaths.from_env(home))
    store = str(run.state.snapshots)
    try:
        gates = load_gates(config.gates.file)  # first: a missing or malformed gates file fails before any data work
        run.report.gates_file = str(config.gates.file)
        run.open_tracking()

        paths = [str(p) for p in config.data.paths] + stages.corrections(run)  # + the corrections file, when on
        raw = run.snapshot("ingest", ingest_task(paths, config.ingest, config.dask, store))
        run.keep_quarantine(raw)
        run.contract("contract_raw", "raw", raw, config.contract.raw)
        cleaned = run.snapshot("clean", clean_task(raw, config.clean, config.dask, store))
        merged = stages.history(run, cleaned)  # cumulative: + the champion's training data of this dataset
        deduped = run.snapshot("dedup", dedup_task(merged, config.dedup, store))
        curated = run.snapshot("pii", scrub_task(deduped, config.pii, config.dask, store))
        run.contract("contract", "curated", curated, config.contract.curated)
        close_clients()  # the data stages are done: local Dask workers give their memory and cores to training

        tok = tokenizer_task(curated, config.tokenizer, config.model.base_model, str(run.state.tokenizers),
                             str(run.state.models))
        base = base_model_task(config.model, tok.path, tok.content_hash, str(run.state.models))
        run.done("tokenizer_and_model", tokenizer=tok.model_dump(), base_model=base.model_dump())
        # the dataset's frozen evaluation set stays out of training; canaries (when on) join the training stream
        data, frozen = stages.split(run, curated, tok, cleaned, merged)
        run.contract("split", "training", curated, config.contract.training, split_sets(data))

        trained = stages.train(run, base, tok, data)
        figures, champion = stages.evaluate(run, base, tok, trained, data, raw, frozen)
        verdicts = stages.judge(run, gates, figures)
        stages.register(run, curated, tok, base, trained, frozen, verdicts, figures["frozen"].scores, champion)
    except ContractStop as stop:
        run.stopped(stop)
    except Exception as exc:
        run.failed(exc)
    finally:
        rep = run.finish()
    return rep
