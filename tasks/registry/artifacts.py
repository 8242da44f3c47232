"""Download a registered version's model folders (base, adapter, tokenizer), checked against the digests recorded
when it was registered (tag ``artifact_digests``): a folder changed in the artifact store since is refused. The
folders are read as files (safetensors weights, JSON configs): nothing of a version is unpickled to use it."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.core.hashing import folder_sha256
from tasks.registry.store import bounded_http, client, tracking

DIGESTS_TAG = "artifact_digests"
PARTS = ("base", "adapter", "tokenizer")


class ArtifactMismatch(ValueError):
    """A downloaded folder whose content is not what was registered."""


def artifact_digests(folders: dict[str, str]) -> dict[str, str]:
    """sha256 of every file (names and bytes) of each model folder: base, adapter, tokenizer."""
    return {part: folder_sha256(folders[part], recursive=True) for part in PARTS if folders.get(part)}


def verify(name: str, version: str, folders: dict[str, str], recorded: str | None) -> None:
    """ArtifactMismatch naming the folder when a downloaded folder differs from its digest at registration."""
    if not recorded:
        return  # registered before digests were recorded
    for part, digest in json.loads(recorded).items():
        found = folder_sha256(folders[part], recursive=True) if folders.get(part) else None
        if found != digest:
            raise ArtifactMismatch(f"{name} v{version}: its {part} folder in the artifact store is not the one "
                                   f"registered (sha256 {str(found)[:12]}, recorded {digest[:12]}); refusing to load it")


def model_artifacts(tracking_uri: str, name: str, ref: str, dest: Path) -> dict[str, str] | None:
    """Download a version's base, adapter and tokenizer folders; ``ref`` is an alias or a version number.
    None when the alias points nowhere; ArtifactMismatch when a folder is not what was registered."""
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
        tags = c.get_model_version(name, version).tags or {}
    verify(name, version, out, tags.get(DIGESTS_TAG))
    fingerprint = tags.get("base_model_fingerprint")
    if fingerprint:  # lets the evaluation put the champion's adapter on the base it already holds
        out["base_fingerprint"] = fingerprint
    return out


def champion_artifacts(tracking_uri: str, name: str, dest: Path) -> dict[str, str] | None:
    """Download the current champion's base, adapter and tokenizer folders; None without a champion."""
    return model_artifacts(tracking_uri, name, "champion", dest)
