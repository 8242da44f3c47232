"""The reference a data drop is compared with: the @champion's training data (its registry tag
``snapshot_fingerprint`` names the snapshot; the comparison uses that snapshot's pre-scrub parent when it is
there, so both sides are cleaned but not yet scrubbed) and the champion's tokenizer, or a path given."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pydantic import BaseModel

from tasks.core import snapshot
from tasks.data.history import DATASET_TAG, Parent
from tasks.core.state import StatePaths
from tasks.registry.settings import RegistrySettings

STAGE_PREFERENCE = ("pii", "dedup", "clean", "ingest", "import")


class Reference(BaseModel):
    """What the new drop is compared with."""

    kind: str  # "champion", "path" or "none"
    description: str
    texts_snapshot: str | None = None  # the snapshot whose texts are compared
    scrubbed: bool = False  # whether those texts are already PII-scrubbed
    pii_snapshot: str | None = None  # a snapshot with a pii_found column, when the texts are scrubbed
    fingerprint: str | None = None
    model: str | None = None
    version: str | None = None
    tokenizer: str | None = None
    tokenizer_source: str = ""


def find_snapshot(root: Path, fingerprint: str, stages: tuple[str, ...] = STAGE_PREFERENCE) -> snapshot.SnapshotRef | None:
    """The stored snapshot with this content fingerprint, preferring the stages in order."""
    root = Path(root)
    for stage in stages:
        for manifest in sorted((root / stage).glob(f"*/{snapshot.MANIFEST}")):
            try:
                m = json.loads(manifest.read_text())
            except (OSError, ValueError):
                continue
            if m.get("fingerprint") == fingerprint:
                return snapshot.SnapshotRef(path=str(manifest.parent), fingerprint=fingerprint, rows=m["rows"],
                                            stage=stage, reused=True)
    return None


def pre_scrub_parent(root: Path, ref: snapshot.SnapshotRef) -> snapshot.SnapshotRef | None:
    """The snapshot a pii-stage snapshot was scrubbed from (dedup stage), when it is still stored."""
    if ref.stage != "pii":
        return None
    parent = ref.manifest().get("parent_fingerprint")
    return find_snapshot(root, parent, ("dedup", "clean")) if parent else None


def local_tokenizer(store: Path, content_hash: str) -> str | None:
    """A tokenizer folder in the state folder whose content hash is ``content_hash``."""
    from tasks.train.tokenizer import content_hash as hash_of

    if not content_hash or not Path(store).is_dir():
        return None
    for folder in sorted(Path(store).iterdir()):
        if folder.is_dir() and not folder.name.startswith(".") and (folder / "tokenizer.json").is_file():
            if hash_of(folder) == content_hash:
                return str(folder)
    return None


def champion_tokenizer(tracking_uri: str, name: str, dest: Path) -> str | None:
    """Download only the champion's tokenizer folder from the registry (not its weights)."""
    import mlflow
    import yaml

    from tasks.registry.store import tracking

    done = dest / "tokenizer"
    if (done / "tokenizer.json").is_file() or (done / "tokenizer_config.json").is_file():
        return str(done)  # downloaded by an earlier run for this champion version
    dest.mkdir(parents=True, exist_ok=True)
    with tracking(tracking_uri):
        mlmodel = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}@champion/MLmodel", dst_path=str(dest))
    artifacts = (yaml.safe_load(Path(mlmodel).read_text()).get("flavors", {}).get("python_function", {})
                 .get("artifacts", {}))
    sub = (artifacts.get("tokenizer") or {}).get("path")
    if not sub:
        return None
    shutil.rmtree(dest / ".download", ignore_errors=True)
    with tracking(tracking_uri):
        got = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}@champion/{sub}",
                                                       dst_path=str(dest / ".download")))
    shutil.rmtree(done, ignore_errors=True)  # an interrupted earlier download
    got.rename(done)
    return str(done)


def champion_reference(registry_settings: RegistrySettings, state: StatePaths, work: Path) -> Reference | None:
    """The current @champion's training snapshot and tokenizer; None when there is no champion."""
    from mlflow.exceptions import MlflowException

    from tasks.registry.store import client

    uri = registry_settings.tracking_uri or state.mlflow_uri()
    name = registry_settings.model_name
    if not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).is_file():
        c = client(uri)
    else:
        return None  # no registry database yet: no champion
    try:
        mv = c.get_model_version_by_alias(name, "champion")
    except MlflowException:
        return None
    tags = mv.tags or {}
    fp = tags.get("snapshot_fingerprint")
    ref = find_snapshot(state.snapshots, fp) if fp else None
    described = f"@champion {name} v{mv.version}"
    if ref is None:
        return Reference(kind="champion", model=name, version=str(mv.version), fingerprint=fp,
                         description=f"{described}: its training snapshot {str(fp)[:16]} is not in {state.snapshots}")
    parent = pre_scrub_parent(state.snapshots, ref)
    texts = parent or ref
    tok = local_tokenizer(state.tokenizers, tags.get("tokenizer_hash", ""))
    source = "the champion's (state folder)"
    if tok is None:
        try:
            tok = champion_tokenizer(uri, name, work / f"{name}-v{mv.version}")
            source = "the champion's (registry)"
        except Exception:  # the registry copy is the fallback; without it the drop gets a reference tokenizer
            tok, source = None, ""
    return Reference(
        kind="champion", model=name, version=str(mv.version), fingerprint=fp,
        description=f"{described}, training snapshot {ref.stage}/{Path(ref.path).name} ({fp[:16]})",
        texts_snapshot=texts.path, scrubbed=parent is None and ref.stage == "pii",
        pii_snapshot=ref.path if ref.stage == "pii" else None, tokenizer=tok, tokenizer_source=source,
    )


def champion_training(registry_settings: RegistrySettings, state: StatePaths) -> Parent | None:
    """The current @champion and its stored training data, for a cumulative retrain (tasks/data/history.py): the
    pre-scrub snapshot when stored, else the training snapshot. None without a champion; an unreachable tracking
    server gives a Parent with no snapshot and the reason (the run then trains on its new data alone and says so)."""
    from mlflow.exceptions import MlflowException

    from tasks.registry.store import RegistryUnreachable, client

    uri = registry_settings.tracking_uri or state.mlflow_uri()
    name = registry_settings.model_name
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return None  # no registry database yet: no champion
    try:
        mv = client(uri).get_model_version_by_alias(name, "champion")
    except RegistryUnreachable as exc:
        return Parent(model=name, version="", dataset=None, fingerprint="",
                      note=f"the registry is unreachable, so its training data could not be looked up ({exc})")
    except MlflowException:
        return None
    tags = mv.tags or {}
    parent = Parent(model=name, version=str(mv.version), dataset=tags.get(DATASET_TAG),
                    fingerprint=tags.get("snapshot_fingerprint") or "")
    ref = find_snapshot(state.snapshots, parent.fingerprint) if parent.fingerprint else None
    if ref is None:
        return parent.model_copy(update={"note": f"its training snapshot {parent.fingerprint[:16]} is not stored"})
    used = pre_scrub_parent(state.snapshots, ref) or ref
    return parent.model_copy(update={"snapshot": used.path, "stage": used.stage, "rows": used.rows})
