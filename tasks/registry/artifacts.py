"""Download a registered version's model folders (base, adapter, tokenizer)."""

from __future__ import annotations

from pathlib import Path

from tasks.registry.store import bounded_http, client, tracking


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
