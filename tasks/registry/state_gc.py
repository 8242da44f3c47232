"""`tunegate gc`: what the state folder may drop, and dropping it.

Kept:
- the newest ``keep_runs`` runs whole: checkpoints, training blocks and every snapshot their reports name (what
  ``--resume`` and the snapshot cache need);
- for each registered model, the versions with an alias, the newest ``keep_versions`` and the last
  ``keep_versions`` champions (what ``rollback`` goes back to): their training snapshot and the snapshots it was
  made from, as far as the manifests name them (a cumulative retrain starts from the champion's);
- every run's report, config, logs and plots; the registry and its artifacts; tokenizers, base models, frozen
  evaluation sets.
Dropped: the checkpoints, training blocks and downloaded champion of older runs (and their adapter, once the
registry holds it as a version's), snapshots nothing kept names (the versions whose training snapshot goes get the
tag ``snapshot_gc``), temporary folders of writers that died, finished trainings beyond the newest
``keep_train_cache``, evaluation-cache entries beyond the newest ``keep_eval_cache``; with ``delete_versions``,
the registered versions nothing keeps, with their weights (tasks/registry/version_gc.py).

Runs hold the state folder's ``in-use`` lock shared while they work; gc takes it exclusively, so it never deletes
under a running run (``StatePaths.lock``). Plain functions: ``plan`` (nothing changes: the dry run) and ``apply``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tasks.core import snapshot
from tasks.core.snapshot_index import Index
from tasks.core.state import StatePaths
from tasks.registry.settings import RetentionSettings
from tasks.registry.version_gc import VersionDrop

COLLECTED_TAG = "snapshot_gc"


@dataclass
class Item:
    kind: str  # checkpoints, training data, snapshot, temporary, train cache, eval cache
    path: Path
    bytes: int
    why: str


@dataclass
class Plan:
    drop: list[Item] = field(default_factory=list)
    kept_snapshots: dict[str, str] = field(default_factory=dict)  # path -> why it is kept
    collected: list[tuple[str, str]] = field(default_factory=list)  # (model, version) whose training snapshot goes
    versions: list[VersionDrop] = field(default_factory=list)  # registered versions deleted with their weights

    def totals(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for item in self.drop:
            n, size = out.get(item.kind, (0, 0))
            out[item.kind] = (n + 1, size + item.bytes)
        return out


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def runs_newest_first(state: StatePaths) -> list[Path]:
    """Run folders, newest first (by when each started: its config.yaml is written first)."""
    if not state.runs.is_dir():
        return []
    runs = [p for p in state.runs.iterdir() if p.is_dir()]
    return sorted(runs, key=lambda p: (p / "config.yaml").stat().st_mtime if (p / "config.yaml").exists()
                  else p.stat().st_mtime, reverse=True)


def _report_snapshots(run: Path) -> list[Path]:
    """The snapshot folders a run's report names (its stages' and its history parents')."""
    try:
        report = json.loads((run / "report.json").read_text())
    except (OSError, ValueError):
        return []
    paths = [s.get("path") for s in (report.get("snapshots") or {}).values() if isinstance(s, dict)]
    paths += [p.get("snapshot") for p in ((report.get("history") or {}).get("parents") or []) if isinstance(p, dict)]
    return [Path(p) for p in paths if p]


def _registered_as(run: Path) -> str | None:
    """"NAME vN" when the run's report says it registered its model, else None."""
    try:
        model = json.loads((run / "report.json").read_text()).get("model") or {}
    except (OSError, ValueError):
        return None
    return f"{model['name']} v{model['version']}" if model.get("name") and model.get("version") else None


def protected_versions(tracking_uri: str, keep: int) -> dict[tuple[str, str], tuple[str, str, object]]:
    """(model, version) -> (training snapshot fingerprint, why kept, the ModelVersion), for the versions whose data
    is kept; the others have why "" — the ones whose training snapshot (and, with delete_versions, the version) may
    go."""
    from tasks.registry.store import bounded_http, client
    from tasks.registry.versions import all_versions, champion_history

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).is_file():
        return {}  # no registry yet
    c = client(tracking_uri)
    out: dict[tuple[str, str], tuple[str, str]] = {}
    with bounded_http():
        for model in c.search_registered_models():
            versions = all_versions(c, model.name)
            newest = {str(v.version) for v in versions[-keep:]}
            champions = set(champion_history(c, model.name)[-keep:])
            aliases = {str(v): a for a, v in (c.get_registered_model(model.name).aliases or {}).items()}
            for v in versions:
                number, tags = str(v.version), v.tags or {}
                why = (f"@{aliases[number]}" if number in aliases else "a recent champion" if number in champions
                       else f"among the newest {keep} versions" if number in newest else "")
                out[(model.name, number)] = (tags.get("snapshot_fingerprint", ""), why, v)
    return out


def plan(state: StatePaths, settings: RetentionSettings, tracking_uri: str) -> Plan:
    """What gc would drop (nothing changes). Raises RegistryUnreachable when the registry does not answer: what
    its versions name cannot be known then, so nothing is planned."""
    result = Plan()
    index = Index(state.snapshots)
    runs = runs_newest_first(state)
    recent, older = runs[: settings.keep_runs], runs[settings.keep_runs:]
    for run in recent:
        for folder in index.with_ancestors(_report_snapshots(run)):
            result.kept_snapshots.setdefault(str(folder), f"run {run.name} (among the newest {settings.keep_runs})")
    versions = protected_versions(tracking_uri, settings.keep_versions)
    by_kept_run = {_registered_as(run): run.name for run in recent}  # --resume of a kept run finds its version
    for (model, number), (fingerprint, why, v) in versions.items():
        if not why and f"{model} v{number}" in by_kept_run:
            versions[(model, number)] = (fingerprint, f"registered by run {by_kept_run[f'{model} v{number}']}", v)
    ordered = sorted(versions.items(), key=lambda kv: (kv[0][0], int(kv[0][1])))
    for (model, number), (fingerprint, why, _) in ordered:
        if why and fingerprint:
            for folder in index.with_ancestors(index.find(fingerprint)):
                result.kept_snapshots.setdefault(str(folder), f"{model} v{number} ({why})")
    for (model, number), (fingerprint, why, v) in ordered:
        stored = index.find(fingerprint) if fingerprint else []
        if why:
            continue
        if settings.delete_versions:
            result.versions.append(_version_drop(tracking_uri, v, settings.keep_versions))
        elif stored and not any(str(f) in result.kept_snapshots for f in stored):
            result.collected.append((model, number))
    for folder in index.manifests:
        if str(folder) not in result.kept_snapshots:
            result.drop.append(Item("snapshot", folder, size_of(folder), "named by no kept run or version"))
    for stage_dir in sorted(p for p in state.snapshots.glob("*") if p.is_dir()):
        for tmp in snapshot.stale_temp_folders(stage_dir):
            result.drop.append(Item("temporary", tmp, size_of(tmp), "left by a writer that died"))
    for run in older:
        why = f"run {run.name} is not among the newest {settings.keep_runs}"
        parts = [("train/checkpoints", "checkpoints", why), ("data", "training data", why),
                 ("champion", "champion copy", why)]  # the champion's artifacts, downloaded to compare with
        registered = _registered_as(run)
        if registered:  # the registry holds the adapter (with base and tokenizer) as that version's artifacts
            parts.append(("train/adapter", "adapter copy", f"{why}; registered as {registered}"))
        for name, kind, reason in parts:
            if (run / name).exists():
                result.drop.append(Item(kind, run / name, size_of(run / name), reason))
    result.drop += _beyond_newest(state.train_cache, settings.keep_train_cache, "train cache")
    result.drop += _beyond_newest(state.eval_cache, settings.keep_eval_cache, "eval cache")
    return result


def _version_drop(tracking_uri: str, version, keep: int) -> VersionDrop:
    from tasks.registry.store import bounded_http, client
    from tasks.registry.version_gc import drop_for

    with bounded_http():
        return drop_for(client(tracking_uri), version, f"no alias, not among the newest {keep} versions or champions")


def _beyond_newest(folder: Path, keep: int, kind: str) -> list[Item]:
    if not folder.is_dir():
        return []
    entries = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.stat().st_mtime,
                     reverse=True)
    return [Item(kind, p, size_of(p), f"beyond the newest {keep}") for p in entries[keep:]]


def apply(result: Plan, tracking_uri: str) -> None:
    """Drop what ``result`` lists: delete the versions it lists (tasks/registry/version_gc.py), tag those whose
    training snapshot went (``snapshot_gc``: the date), remove the files."""
    from tasks.registry.store import bounded_http, client
    from tasks.registry.version_gc import delete

    if result.collected or result.versions:
        c = client(tracking_uri)
        today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        with bounded_http():
            for drop in result.versions:
                delete(c, drop)
            for model, number in result.collected:
                c.set_model_version_tag(model, number, COLLECTED_TAG, f"training snapshot removed by tunegate gc on "
                                                                      f"{today}")
    for item in result.drop:
        if item.path.is_dir():
            # a snapshot loses its manifest first: a folder without one is never read as a snapshot
            (item.path / snapshot.MANIFEST).unlink(missing_ok=True)
            shutil.rmtree(item.path, ignore_errors=True)
        else:
            item.path.unlink(missing_ok=True)
