"""Registered versions beyond retention, deleted with their weights (what `tunegate gc` does to the registry).

Every registered version is a full copy of its model (base, adapter, tokenizer: the pyfunc model's artifacts), a
blocked candidate too, so without this the artifact store grows by one model per run. A version goes when nothing
keeps it: no alias on it, not among the newest ``keep_versions`` nor the last ``keep_versions`` champions (what
``rollback`` goes back to), not registered by one of the newest runs (kept whole for ``--resume``). Its logged
model's artifacts are deleted through MLflow's artifact repository (local folders, S3, the tracking server's
proxied store alike), the logged model is marked deleted (``mlflow gc`` on the server purges the record) and the
version is deleted. The MLflow run that logged it stays, with its parameters, metrics and report, tagged
``tunegate.gc`` with what went.

Crash-safe in the order of the steps: the version is tagged first and deleted last, so a gc killed half-way leaves
a version that is still unprotected and tagged, and the next gc finishes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

GC_TAG = "tunegate.gc"


@dataclass
class VersionDrop:
    model: str
    version: str
    model_id: str | None  # the logged model holding its artifacts (MLflow 3 registers models:/m-…)
    bytes: int
    why: str


def logged_model_id(version) -> str | None:
    """The id of the logged model a version was registered from, if it was (``models:/m-…``)."""
    model_id = getattr(version, "model_id", None)
    if model_id:
        return model_id
    source = str(version.source or "")
    return source.removeprefix("models:/").split("/")[0] if source.startswith("models:/m-") else None


def artifact_bytes(location: str) -> int:
    """Bytes under an artifact location (a local folder read directly; any other store listed through MLflow)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.utils.uri import is_local_uri
    from mlflow.utils.file_utils import local_file_uri_to_path

    if is_local_uri(location):
        root = Path(local_file_uri_to_path(location))
        return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0
    repo, total, todo = get_artifact_repository(location), 0, [None]
    while todo:
        for info in repo.list_artifacts(todo.pop()):
            if info.is_dir:
                todo.append(info.path)
            else:
                total += info.file_size or 0
    return total


def drop_for(c, version, why: str) -> VersionDrop:
    """What deleting ``version`` frees (its logged model's artifacts; 0 when they are gone already)."""
    from mlflow.exceptions import MlflowException

    model_id, size = logged_model_id(version), 0
    if model_id:
        try:
            size = artifact_bytes(c.get_logged_model(model_id).artifact_location)
        except MlflowException:  # deleted by an earlier gc that died before deleting the version
            size = 0
    return VersionDrop(version.name, str(version.version), model_id, size, why)


def delete(c, drop: VersionDrop) -> None:
    """Delete the version and its logged model's artifacts; the MLflow run that logged it stays, tagged."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    c.set_model_version_tag(drop.model, drop.version, GC_TAG, f"being deleted by tunegate gc ({today}): {drop.why}")
    run_id = c.get_model_version(drop.model, drop.version).run_id
    if run_id:
        c.set_tag(run_id, GC_TAG, f"{drop.model} v{drop.version} and its model's artifacts were deleted by tunegate "
                                  f"gc on {today} ({drop.why}); this run's parameters, metrics and report stay")
    if drop.model_id:
        try:
            location = c.get_logged_model(drop.model_id).artifact_location
        except MlflowException:
            location = None  # marked deleted by a gc that died after it
        if location:
            get_artifact_repository(location).delete_artifacts()
            c.delete_logged_model(drop.model_id)
    c.delete_model_version(drop.model, drop.version)
