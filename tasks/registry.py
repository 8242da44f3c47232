"""The MLflow model registry: register every run's model with its lineage; move aliases.

``@challenger`` goes on every new version; ``@champion`` moves only when a run passes every contract and
gate, or by ``promote``. The previous champions are kept, newest last, in the registered model's tag
``tunegate.champion_history`` so ``rollback`` can step back. Registering is idempotent per run id.
"""

from __future__ import annotations

import json
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

RUN_TAG = "tunegate.run_id"
HISTORY_TAG = "tunegate.champion_history"
EXPERIMENT = "tunegate"


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
    run_id: str | None = None
    metrics: dict[str, float] = {}
    created: int | None = None


def generation_signature():
    """Prompts in, continuations out, with the generation settings as parameters."""
    from mlflow.models import infer_signature

    return infer_signature(["a prompt"], ["a continuation"], params=dict(DEFAULT_GENERATION))


DEFAULT_GENERATION = {"max_new_tokens": 48, "temperature": 0.0, "seed": 0}


def client(tracking_uri: str):
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


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
) -> VersionInfo:
    """Log the run to MLflow and register its model (once per run id), tagged with its lineage."""
    import mlflow
    from mlflow.entities import Metric

    from tasks.lm_pyfunc import CausalLMWithAdapter

    c = client(tracking_uri)
    existing = find_version(c, name, run_id)
    if existing is not None:
        return describe(c, existing)
    exp = c.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp else c.create_experiment(EXPERIMENT, artifact_location=artifact_location)
    with mlflow.start_run(experiment_id=exp_id, run_name=run_id, tags={RUN_TAG: run_id, **tags}) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics(metrics)
        if step_metrics:
            now = int(time.time() * 1000)
            batch = [Metric(key, float(m[key]), now, int(m["step"])) for m in step_metrics
                     for key in ("loss", "lr", "tokens_per_s") if key in m]
            for i in range(0, len(batch), 900):
                c.log_batch(run.info.run_id, metrics=batch[i : i + 900])
        for f in files or []:
            if Path(f).exists():
                mlflow.log_artifact(str(f), artifact_path="report")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=CausalLMWithAdapter(),
            signature=generation_signature(),
            artifacts={"base": base, "adapter": adapter, "tokenizer": tokenizer},
            pip_requirements=_requirements(),
        )
    if not c.search_registered_models(f"name='{name}'"):
        c.create_registered_model(name)
    version = c.create_model_version(
        name, source=info.model_uri, run_id=run.info.run_id, tags={RUN_TAG: run_id, **tags}, model_id=info.model_id
    )
    c.set_registered_model_alias(name, "challenger", version.version)
    return describe(c, c.get_model_version(name, version.version))


def describe(c, v) -> VersionInfo:
    mv = c.get_model_version(v.name, v.version)
    tags = mv.tags or {}
    metrics = {}
    for key in ("perplexity", "bits_per_byte"):
        if key in tags:
            try:
                metrics[key] = float(tags[key])
            except ValueError:
                pass
    return VersionInfo(name=mv.name, version=str(mv.version), aliases=list(mv.aliases or []),
                       status=tags.get("status"), run_id=tags.get(RUN_TAG), metrics=metrics,
                       created=mv.creation_timestamp)


def _history(c, name: str) -> list[str]:
    tags = c.get_registered_model(name).tags or {}
    try:
        return list(json.loads(tags.get(HISTORY_TAG, "[]")))
    except ValueError:
        return []


def promote(tracking_uri: str, name: str, version: str) -> tuple[str | None, str]:
    """Move @champion to ``version``; the previous champion joins the history. Returns (from, to)."""
    c = client(tracking_uri)
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
    names = [name] if name else [m.name for m in c.search_registered_models()]
    return [describe(c, v) for n in names for v in _versions(c, n)]


def champion_artifacts(tracking_uri: str, name: str, dest: Path) -> dict[str, str] | None:
    """Download the current champion's base, adapter and tokenizer folders; None without a champion."""
    import mlflow
    from mlflow.models import Model

    c = client(tracking_uri)
    version = champion_version(c, name)
    if version is None:
        return None
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}@champion", dst_path=str(dest)))
    artifacts = Model.load(str(local / "MLmodel")).flavors["python_function"]["artifacts"]
    return {"version": version, **{key: str(local / a["path"]) for key, a in artifacts.items()}}



@task(name="register", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def register_task(**kwargs) -> VersionInfo:
    """Idempotent: a retry finds the version this run already registered."""
    return register(**kwargs)
