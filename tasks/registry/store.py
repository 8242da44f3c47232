"""The connection to MLflow's tracking and registry store.

A tracking server that does not answer fails within seconds with a message naming its URI (not after
MLflow's minutes of retries). MlflowClient gets the URI explicitly; the fluent API, where MLflow needs it, is
pointed at it only for the call (``tracking``) and put back after.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

HTTP_RETRIES, HTTP_TIMEOUT_S, PROBE_TIMEOUT_S = 2, 30, 5


class RegistryUnreachable(ConnectionError):
    """The MLflow tracking server does not answer; the message names its URI."""


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


@contextmanager
def no_http_retries():
    """MLflow's HTTP calls in the block are not retried by its HTTP layer: a POST it retried after the server had
    done the work (the answer lost, a 5xx from a proxy) would do it twice. The caller retries, looking first."""
    before = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
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
