"""The MLflow model registry: register every run's model with its lineage; move aliases.

``@challenger`` goes on every new version; ``@champion`` moves only when a run passes every contract and
gate, or by ``promote``. The previous champions are kept, newest last, in the registered model's tag
``tunegate.champion_history`` so ``rollback`` can step back. Registering is idempotent per run id, also
after a first attempt that died half-way. A tracking server that does not answer fails within seconds with
a message naming its URI (not after MLflow's minutes of retries). MlflowClient gets the URI explicitly; the
fluent API, where MLflow needs it, is pointed at it only for the call (``tracking``) and put back after.
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

RUN_TAG = "tunegate.run_id"
MODEL_URI_TAG = "tunegate.model_uri"  # on the MLflow run, once its model is logged in full
MODEL_ID_TAG = "tunegate.model_id"
HISTORY_TAG = "tunegate.champion_history"
EXPERIMENT = "tunegate"
STEP_METRICS = ("loss", "lr", "tokens_per_s", "eval_loss", "tokens")
# evaluation metrics carried as version tags (so `tunegate models` shows them without opening runs)
EVAL_DATA_TAG = "eval_data"  # which held-out data the version's metrics come from (a fingerprint)
TAG_METRICS = ("perplexity", "bits_per_byte", "rougeL", "bleu", "chrf", "pii_leaked", "canaries_extracted")
HTTP_RETRIES, HTTP_TIMEOUT_S, PROBE_TIMEOUT_S = 2, 30, 5


class RegistryUnreachable(ConnectionError):
    """The MLflow tracking server does not answer; the message names its URI."""


class RegistrySettings(BaseModel):
    """Where models are registered."""

    model_config = ConfigDict(extra="forbid")

    model_name: str = Field("tunegate-demo", min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI; default MLFLOW_TRACKING_URI or sqlite in the state folder")


class VersionInfo(BaseModel):
    name: str
    version: str
    aliases: list[str]
    status: str | None = None
    run_id: str | None = None  # the tunegate run
    mlflow_run_id: str | None = None  # the MLflow run that logged the model (and the report)
    metrics: dict[str, float] = {}  # TAG_METRICS found on the version
    blocked_by: str | None = None
    created: int | None = None
    eval_data: str | None = None  # fingerprint of the held-out data its metrics were measured on


def generation_signature():
    """Prompts in, continuations out, with the generation settings as parameters."""
    from mlflow.models import infer_signature

    from tasks.evaluate.generation import SERVING_DEFAULTS

    return infer_signature(["a prompt"], ["a continuation"], params=SERVING_DEFAULTS.model_dump())


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def probe(tracking_uri: str) -> None:
    """Raise RegistryUnreachable within seconds when a tracking server does not answer (HTTP URIs only)."""
    if not _is_http(tracking_uri):
        return
    import requests

    try:
        requests.get(tracking_uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S)
    except requests.RequestException as exc:
        raise RegistryUnreachable(f"MLflow tracking server at {tracking_uri} is unreachable: "
                                  f"{type(exc).__name__}: {_short(exc)}") from exc


def _short(exc: Exception) -> str:
    text = str(exc)
    reason = text.rsplit("Caused by ", 1)[-1] if "Caused by " in text else text
    return reason.strip("()'\" ")[:200]


@contextmanager
def bounded_http():
    """Few retries and a short timeout for MLflow's HTTP calls (its defaults retry for minutes)."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(HTTP_RETRIES), "MLFLOW_HTTP_REQUEST_TIMEOUT": str(HTTP_TIMEOUT_S)}
    before = {k: os.environ.get(k) for k in keys}
    for k, v in keys.items():
        os.environ.setdefault(k, v)  # a user's own setting wins
    try:
        yield
    finally:
        _restore_env(before)


def _restore_env(before: dict[str, str | None]) -> None:
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@contextmanager
def tracking(tracking_uri: str):
    """MLflow's fluent API (start_run, pyfunc.log_model, artifact downloads) pointed at ``tracking_uri``,
    then put back as it was: mlflow.set_tracking_uri() also exports MLFLOW_TRACKING_URI to os.environ."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    old_tracking = getattr(tracking_utils, "_tracking_uri", None)
    old_registry = getattr(registry_utils, "_registry_uri", None)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        with bounded_http():
            yield
    finally:
        if old_tracking is None:
            tracking_utils._tracking_uri = None
        else:
            mlflow.set_tracking_uri(old_tracking)
        registry_utils._registry_uri = old_registry
        _restore_env(env)


def client(tracking_uri: str):
    """An MlflowClient for ``tracking_uri`` (also the registry); the global MLflow URI is left alone.
    A tracking server that does not answer raises RegistryUnreachable at once."""
    import mlflow

    probe(tracking_uri)
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def ensure_store(tracking_uri: str) -> None:
    """Create (or migrate) the tracking and registry store now. Call it under the state's registry lock:
    two processes opening a new SQLite store at the same moment both run its schema migrations, and the
    second fails ("Online migration expected to match one row ... in 'alembic_version'"). A tracking server
    migrates its own database when it starts: nothing to do (and it need not be up yet)."""
    if not tracking_uri.startswith("sqlite:"):
        return
    c = client(tracking_uri)
    with bounded_http():
        c.search_experiments(max_results=1)
        c.search_registered_models(max_results=1)


def find_version(c, name: str, run_id: str):
    """The version already registered for ``run_id``, if any (a retried task must not add another)."""
    for v in _versions(c, name):
        if (v.tags or {}).get(RUN_TAG) == run_id:
            return v
    return None


def _versions(c, name: str) -> list:
    from mlflow.exceptions import MlflowException

    try:
        c.get_registered_model(name)
    except MlflowException:
        return []
    return sorted(c.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))


def champion_version(c, name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(c.get_model_version_by_alias(name, "champion").version)
    except MlflowException:
        return None


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
            _ensure_challenger(c, name, str(existing.version))
            return describe(c, existing)
        exp_id = experiment_id(c, artifact_location)
        logged = _logged_run(c, exp_id, run_id, keep=mlflow_run_id)
        if logged is None:
            logged = _log_run(c, exp_id, run_id, base=base, adapter=adapter, tokenizer=tokenizer,
                              tags=tags, params=params, metrics=metrics, step_metrics=step_metrics, files=files,
                              into=mlflow_run_id)
        mlflow_run_id, model_uri, model_id = logged
        _ensure_registered_model(c, name)
        version = c.create_model_version(name, source=model_uri, run_id=mlflow_run_id,
                                         tags={RUN_TAG: run_id, **tags}, model_id=model_id)
        c.set_registered_model_alias(name, "challenger", version.version)
        return describe(c, c.get_model_version(name, version.version))


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


def _ensure_challenger(c, name: str, version: str) -> None:
    """@challenger on ``version`` unless it already sits on this or a newer version."""
    from mlflow.exceptions import MlflowException

    try:
        current = int(c.get_model_version_by_alias(name, "challenger").version)
    except MlflowException:
        current = 0
    if current < int(version):
        c.set_registered_model_alias(name, "challenger", version)


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


def describe(c, v) -> VersionInfo:
    mv = c.get_model_version(v.name, v.version)
    tags = mv.tags or {}
    metrics = {}
    for key in TAG_METRICS:
        if key in tags:
            try:
                metrics[key] = float(tags[key])
            except ValueError:
                pass
    return VersionInfo(name=mv.name, version=str(mv.version), aliases=list(mv.aliases or []),
                       status=tags.get("status"), run_id=tags.get(RUN_TAG), mlflow_run_id=mv.run_id,
                       metrics=metrics, blocked_by=tags.get("blocked_by"), created=mv.creation_timestamp,
                       eval_data=tags.get(EVAL_DATA_TAG))


def _history(c, name: str) -> list[str]:
    tags = c.get_registered_model(name).tags or {}
    try:
        return list(json.loads(tags.get(HISTORY_TAG, "[]")))
    except ValueError:
        return []


def blocked_reason(tracking_uri: str, name: str, version: str) -> str | None:
    """What blocked ``version`` in the run that registered it (its status and blocked_by tags), or None."""
    with bounded_http():
        tags = client(tracking_uri).get_model_version(name, str(version)).tags
    if tags.get("status") != "blocked":
        return None
    return tags.get("blocked_by") or "blocked"


def promote(tracking_uri: str, name: str, version: str) -> tuple[str | None, str]:
    """Move @champion to ``version``; the previous champion joins the history. Returns (from, to)."""
    c = client(tracking_uri)
    with bounded_http():
        c.get_model_version(name, str(version))  # raises when it does not exist
        current = champion_version(c, name)
        if current == str(version):
            return current, str(version)
        if current is not None:
            c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(_history(c, name) + [current]))
        c.set_registered_model_alias(name, "champion", str(version))
    return current, str(version)


def rollback(tracking_uri: str, name: str) -> tuple[str | None, str]:
    """Move @champion back to the previous champion. Returns (from, to)."""
    c = client(tracking_uri)
    with bounded_http():
        current = champion_version(c, name)
        history = _history(c, name)
        existing = {str(v.version) for v in _versions(c, name)}
        while history and (history[-1] == current or history[-1] not in existing):
            history.pop()
        if not history:
            raise LookupError(f"model '{name}' has no previous champion to roll back to")
        target = history.pop()
        c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
        c.set_registered_model_alias(name, "champion", target)
    return current, target


def list_versions(tracking_uri: str, name: str | None = None) -> list[VersionInfo]:
    c = client(tracking_uri)
    with bounded_http():
        names = [name] if name else [m.name for m in c.search_registered_models()]
        return [describe(c, v) for n in names for v in _versions(c, n)]


def model_artifacts(tracking_uri: str, name: str, ref: str, dest: Path) -> dict[str, str] | None:
    """Download a version's base, adapter and tokenizer folders; ``ref`` is an alias or a version number.
    None when the alias points nowhere."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    c = client(tracking_uri)
    with bounded_http():
        if str(ref).isdigit():
            version = str(c.get_model_version(name, str(ref)).version)
        else:
            try:
                version = str(c.get_model_version_by_alias(name, ref).version)
            except MlflowException:
                return None
    with tracking(tracking_uri):
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(dest),
                                                         tracking_uri=tracking_uri, registry_uri=tracking_uri))
    artifacts = Model.load(str(local / "MLmodel")).flavors["python_function"]["artifacts"]
    out = {"version": version, **{key: str(local / a["path"]) for key, a in artifacts.items()}}
    with bounded_http():
        fingerprint = (c.get_model_version(name, version).tags or {}).get("base_model_fingerprint")
    if fingerprint:  # lets the evaluation put the champion's adapter on the base it already holds
        out["base_fingerprint"] = fingerprint
    return out


def champion_artifacts(tracking_uri: str, name: str, dest: Path) -> dict[str, str] | None:
    """Download the current champion's base, adapter and tokenizer folders; None without a champion."""
    return model_artifacts(tracking_uri, name, "champion", dest)


@task(name="register", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def register_task(**kwargs) -> VersionInfo:
    """Idempotent: a retry finds the version this run already registered."""
    return register(**kwargs)
