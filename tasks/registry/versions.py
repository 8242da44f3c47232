"""A registered model's versions and the aliases on them.

Versions are read as VersionInfo, with their lineage and evaluation-metric tags. ``@challenger`` goes on every
new version; ``@champion`` moves only when a run passes every contract and gate, or by ``promote``. The
previous champions are kept, newest last, in the registered model's tag ``tunegate.champion_history`` so
``rollback`` can step back.
"""

from __future__ import annotations

import json

from pydantic import BaseModel

from tasks.registry.alias_log import set_alias
from tasks.registry.store import bounded_http, client

RUN_TAG = "tunegate.run_id"
HISTORY_TAG = "tunegate.champion_history"
# evaluation metrics carried as version tags (so `tunegate models` shows them without opening runs)
EVAL_DATA_TAG = "eval_data"  # which held-out data the version's metrics come from (a fingerprint)
TAG_METRICS = ("perplexity", "bits_per_byte", "rougeL", "bleu", "chrf", "pii_leaked", "canaries_extracted")


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
    cost: dict | None = None  # what its run used: CPU/GPU seconds, peak memory, tokens, estimated cost


def find_version(c, name: str, run_id: str):
    """The version already registered for ``run_id``, if any (a retried task must not add another)."""
    for v in all_versions(c, name):
        if (v.tags or {}).get(RUN_TAG) == run_id:
            return v
    return None


def all_versions(c, name: str) -> list:
    """Every version of ``name``, oldest first; none when the model is not registered."""
    from mlflow.exceptions import MlflowException

    try:
        c.get_registered_model(name)
    except MlflowException:
        return []
    return sorted(c.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))


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
    status = "tainted" if tags.get("tainted") else tags.get("status")  # tainted: `tunegate forget` reached its data
    return VersionInfo(name=mv.name, version=str(mv.version), aliases=list(mv.aliases or []),
                       status=status, run_id=tags.get(RUN_TAG), mlflow_run_id=mv.run_id,
                       metrics=metrics, blocked_by=tags.get("blocked_by"), created=mv.creation_timestamp,
                       eval_data=tags.get(EVAL_DATA_TAG), cost=_json_or_none(tags.get("cost")))


def _json_or_none(text: str | None) -> dict | None:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def blocked_reason(tracking_uri: str, name: str, version: str) -> str | None:
    """What blocks promoting ``version``: its run's block (status and blocked_by tags), or a deletion request that
    reached its training data (tag ``tainted``, `tunegate forget`); None when nothing does."""
    with bounded_http():
        tags = client(tracking_uri).get_model_version(name, str(version)).tags
    if tags.get("tainted"):
        return f"tainted: {tags['tainted']}"
    if tags.get("status") != "blocked":
        return None
    return tags.get("blocked_by") or "blocked"


def list_versions(tracking_uri: str, name: str | None = None) -> list[VersionInfo]:
    c = client(tracking_uri)
    with bounded_http():
        names = [name] if name else [m.name for m in c.search_registered_models()]
        return [describe(c, v) for n in names for v in all_versions(c, n)]


def champion_version(c, name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(c.get_model_version_by_alias(name, "champion").version)
    except MlflowException:
        return None


def ensure_challenger(c, name: str, version: str, via: str = "tunegate register") -> None:
    """@challenger on ``version`` unless it already sits on this or a newer version."""
    from mlflow.exceptions import MlflowException

    try:
        current = int(c.get_model_version_by_alias(name, "challenger").version)
    except MlflowException:
        current = 0
    if current < int(version):
        set_alias(c, name, "challenger", version, via, "registered: the newest candidate")


def champion_history(c, name: str) -> list[str]:
    """The versions that were @champion before the current one, oldest first (what rollback goes back to)."""
    tags = c.get_registered_model(name).tags or {}
    try:
        return list(json.loads(tags.get(HISTORY_TAG, "[]")))
    except ValueError:
        return []


def promote(tracking_uri: str, name: str, version: str, via: str = "tunegate promote",
            reason: str = "promoted by hand") -> tuple[str | None, str]:
    """Move @champion to ``version``; the previous champion joins the history and the move the alias log (``via``
    and ``reason`` say what moved it and why). Returns (from, to)."""
    c = client(tracking_uri)
    with bounded_http():
        c.get_model_version(name, str(version))  # raises when it does not exist
        current = champion_version(c, name)
        if current == str(version):
            return current, str(version)
        if current is not None:
            c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(champion_history(c, name) + [current]))
        set_alias(c, name, "champion", str(version), via, reason)
    return current, str(version)


class Blocked(Exception):
    """A promotion refused because the version's own run blocked it (a failed contract or gate)."""


def promote_unless_blocked(tracking_uri: str, name: str, version: str, force: bool = False,
                           via: str = "tunegate promote", reason: str = "promoted by hand") -> tuple[str | None, str]:
    """``promote``, refused (Blocked) when the version's run blocked it, unless ``force``: what ``tunegate
    promote`` and the gateway's canary controller both call."""
    why = blocked_reason(tracking_uri, name, version)
    if why is not None:
        if not force:
            said = why if why.startswith("tainted") else f"was blocked by its run: {why}"
            raise Blocked(f"{name} v{version} {said}")
        reason = f"{reason} (--force over its run's block: {why})"
    return promote(tracking_uri, name, version, via, reason)


def rollback(tracking_uri: str, name: str, via: str = "tunegate rollback",
             reason: str = "rolled back by hand") -> tuple[str | None, str]:
    """Move @champion back to the previous champion. Returns (from, to)."""
    c = client(tracking_uri)
    with bounded_http():
        current = champion_version(c, name)
        history = champion_history(c, name)
        existing = {str(v.version) for v in all_versions(c, name)}
        while history and (history[-1] == current or history[-1] not in existing):
            history.pop()
        if not history:
            raise LookupError(f"model '{name}' has no previous champion to roll back to")
        target = history.pop()
        c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
        set_alias(c, name, "champion", target, via, reason)
    return current, target

