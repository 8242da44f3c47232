"""Register a run's model: log the run to MLflow (parameters, metrics, training steps, report files, the
pyfunc model) and create its model version, tagged with its lineage, with ``@challenger`` on it.

Registering is idempotent per run id, also after a first attempt that died half-way.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.core import failpoints
from tasks.registry.alias_log import set_alias
from tasks.registry.artifacts import DIGESTS_TAG, artifact_digests
from tasks.registry.store import client, no_http_retries, tracking
from tasks.registry.versions import RUN_TAG, VersionInfo, describe, ensure_challenger, find_version

MODEL_URI_TAG = "tunegate.model_uri"  # on the MLflow run, once its model is logged in full
MODEL_ID_TAG = "tunegate.model_id"
EXPERIMENT = "tunegate"
STEP_METRICS = ("loss", "lr", "tokens_per_s", "eval_loss", "tokens")


def generation_signature():
    """Prompts in, continuations out, with the generation settings as parameters."""
    from mlflow.models import infer_signature

    from tasks.evaluate.generation import SERVING_DEFAULTS

    return infer_signature(["a prompt"], ["a continuation"], params=SERVING_DEFAULTS.model_dump())


def _requirements() -> list[str]:
    reqs = []
    for dist in ("torch", "transformers", "peft", "tokenizers", "safetensors", "mlflow"):
        try:
            reqs.append(f"{dist}=={metadata.version(dist).split('+')[0]}")
        except metadata.PackageNotFoundError:
            continue
    return reqs


def register(
    tracking_uri: str,
    artifact_location: str | None,
    name: str,
    run_id: str,
    *,
    base: str,
    adapter: str,
    tokenizer: str,
    tags: dict[str, str],
    params: dict[str, Any],
    metrics: dict[str, float],
    step_metrics: list[dict] | None = None,
    files: list[Path] | None = None,
    mlflow_run_id: str | None = None,
) -> VersionInfo:
    """Log the run to MLflow and register its model (once per run id), tagged with its lineage.

    Idempotent, also after a first attempt that died half-way: a version already registered for the run
    is returned (with @challenger set if it never was); an MLflow run whose model was logged in full is
    registered instead of logging a new one; a run that died before its model was logged is deleted and
    logged again. With ``mlflow_run_id`` (the run's MLflow run, open since the flow started: tasks.registry.mlflow_run)
    the model and metrics go into that run (its parameters are logged already).
    """
    c = client(tracking_uri)
    # the fluent URI also for create_model_version: the registry store resolves a logged model's
    # models:/m-… source through the global tracking URI
    with tracking(tracking_uri):
        existing = find_version(c, name, run_id)
        if existing is not None:
            ensure_challenger(c, name, str(existing.version), via=f"tunegate run {run_id}")
            return describe(c, existing)
        exp_id = experiment_id(c, artifact_location)
        logged = _logged_run(c, exp_id, run_id, keep=mlflow_run_id)
        if logged is None:
            logged = _log_run(c, exp_id, run_id, base=base, adapter=adapter, tokenizer=tokenizer,
                              tags=tags, params=params, metrics=metrics, step_metrics=step_metrics, files=files,
                              into=mlflow_run_id)
        mlflow_run_id, model_uri, model_id = logged
        failpoints.reached("register:logged")
        _ensure_registered_model(c, name)
        digests = json.dumps(artifact_digests({"base": base, "adapter": adapter, "tokenizer": tokenizer}))
        version = create_once(c, name, run_id, lambda: c.create_model_version(
            name, source=model_uri, run_id=mlflow_run_id, tags={RUN_TAG: run_id, **tags, DIGESTS_TAG: digests},
            model_id=model_id))
        failpoints.reached("register:created")
        set_alias(c, name, "challenger", str(version.version), f"tunegate run {run_id}",
                  "registered: the newest candidate")
        return describe(c, c.get_model_version(name, version.version))


def create_once(c, name: str, run_id: str, create: Callable[[], Any], attempts: int = 3):
    """``create()`` (create_model_version) without HTTP-level retries; after a failure the version is looked up by
    the run's tag (the request may have reached the server) and created again only when it is not there."""
    for attempt in range(attempts):
        try:
            with no_http_retries():
                return create()
        except Exception:
            found = find_version(c, name, run_id)
            if found is not None:
                return found
            if attempt == attempts - 1:
                raise
            time.sleep(2 ** attempt)


def experiment_id(c, artifact_location: str | None) -> str:
    """The id of tunegate's MLflow experiment, created (artifacts at ``artifact_location``) if missing."""
    exp = c.get_experiment_by_name(EXPERIMENT)
    return exp.experiment_id if exp else c.create_experiment(EXPERIMENT, artifact_location=artifact_location)


def _logged_run(c, exp_id: str, run_id: str, keep: str | None = None) -> tuple[str, str, str | None] | None:
    """(MLflow run id, model URI, model id) of this run's completely logged MLflow run; half-logged ones
    other than ``keep`` (the run's open MLflow run) are deleted (soft: they stay visible as deleted runs)."""
    found = None
    for r in c.search_runs([exp_id], filter_string=f"tags.`{RUN_TAG}` = '{run_id}'"):
        t = r.data.tags
        if found is None and t.get(MODEL_URI_TAG):
            found = (r.info.run_id, t[MODEL_URI_TAG], t.get(MODEL_ID_TAG) or None)
        elif not t.get(MODEL_URI_TAG) and r.info.run_id != keep:
            c.delete_run(r.info.run_id)
    return found


def _log_run(c, exp_id: str, run_id: str, *, base, adapter, tokenizer, tags, params, metrics,
             step_metrics, files, into: str | None = None) -> tuple[str, str, str | None]:
    import mlflow

    from tasks.registry.pyfunc import CausalLMWithAdapter

    opened = (mlflow.start_run(run_id=into) if into else
              mlflow.start_run(experiment_id=exp_id, run_name=run_id, tags={RUN_TAG: run_id, **tags}))
    with opened as run:
        if into:
            mlflow.set_tags(tags)
        else:
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        if step_metrics:  # those the open run has not got yet (tasks.registry.mlflow_run logs them while training)
            batch = step_metric_entities(step_metrics, logged_up_to(c, run.info.run_id) if into else 0)
            for i in range(0, len(batch), 900):
                c.log_batch(run.info.run_id, metrics=batch[i : i + 900])
        for f in files or []:
            if Path(f).exists():
                mlflow.log_artifact(str(f), artifact_path="report")
        with warnings.catch_warnings():
            # the signature is given; an input example would make MLflow load and run the model to check it
            for said in ("input example was not provided", "Add type hints to the `predict` method"):
                warnings.filterwarnings("ignore", message=f".*{re.escape(said)}")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=CausalLMWithAdapter(),
                signature=generation_signature(),
                artifacts={"base": base, "adapter": adapter, "tokenizer": tokenizer},
                pip_requirements=_requirements(),
            )
        model_id = getattr(info, "model_id", None)
        mlflow.set_tags({MODEL_URI_TAG: info.model_uri, MODEL_ID_TAG: model_id or ""})
    return run.info.run_id, info.model_uri, model_id


def step_metric_entities(rows: list[dict], after_step: int = 0) -> list:
    """MLflow Metric entities of the training rows (metrics.jsonl) past ``after_step``."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(key, float(row[key]), now, int(row["step"])) for row in rows
            if "step" in row and int(row["step"]) > after_step for key in STEP_METRICS if row.get(key) is not None]


def logged_up_to(c, mlflow_run_id: str) -> int:
    """The last training step the MLflow run has a loss for (0: none)."""
    return max((m.step for m in c.get_metric_history(mlflow_run_id, "loss")), default=0)


def _ensure_registered_model(c, name: str) -> None:
    from mlflow.exceptions import MlflowException

    if c.search_registered_models(f"name='{name}'"):
        return
    try:
        c.create_registered_model(name)
    except MlflowException as exc:  # created meanwhile by another run
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise


def log_report(tracking_uri: str, mlflow_run_id: str, files: list[Path], artifact_path: str = "report") -> list[str]:
    """Log the final report files (report.md, report.json, PNGs) to the MLflow run of the registered version."""
    c = client(tracking_uri)
    logged = []
    with tracking(tracking_uri):
        for f in files:
            if Path(f).is_file():
                c.log_artifact(mlflow_run_id, str(f), artifact_path)
                logged.append(Path(f).name)
    return logged


@task(name="register", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def register_task(**kwargs) -> VersionInfo:
    """Idempotent: a retry finds the version this run already registered."""
    return register(**kwargs)
