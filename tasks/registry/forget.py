"""`tunegate forget --source PATH`: a deletion request (a data subject's), followed through everything made from a
raw file.

``plan`` changes nothing: it finds the file in the ingest snapshots' inventories (``inputs.jsonl``: by absolute
path, by source name, or by the file's sha256 while it still exists), the documents it became (their doc ids),
every snapshot made from those ingest snapshots (the chain walked forward, through cumulative datasets), the
frozen evaluation sets holding its documents, the runs whose training blocks came from it, and the registered
versions trained on it. ``apply``:
- removes the documents' rows from every affected snapshot (``snapshot.redact``: in place, the manifest records
  it) and from the frozen evaluation sets (``frozen_set.redact``);
- deletes the derived copies: the affected runs' training blocks (``runs/<id>/data``) and the evaluation cache
  (scores and generations on those documents);
- tags each affected version ``tainted`` (``promote`` refuses it as it refuses a blocked one; a tainted
  @champion stays until a retrain or a rollback replaces it: the plan says so).
The inventory lines stay, marked ``forgotten`` (when): the record of what was forgotten, shown by `tunegate lineage`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from tasks.core import snapshot
from tasks.core.hashing import file_sha256
from tasks.core.snapshot_index import Index
from tasks.core.state import StatePaths

TAINT_TAG = "tainted"


@dataclass
class ForgetPlan:
    source: str  # what was asked for
    files: list[dict] = field(default_factory=list)  # inventory entries that match
    doc_ids: set[str] = field(default_factory=set)
    sources: set[str] = field(default_factory=set)  # the documents' source names
    snapshots: list[Path] = field(default_factory=list)  # every snapshot made from the file
    runs: list[Path] = field(default_factory=list)  # runs whose snapshots include them
    versions: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (model, version, aliases)

    @property
    def found(self) -> bool:
        return bool(self.files)


def _matches(entry: dict, asked: str, absolute: str, digest: str | None) -> bool:
    return (entry.get("path") == absolute or entry.get("source") == asked
            or (digest is not None and entry.get("sha256") == digest))


def _of_documents(table: pa.Table, sources: set[str], doc_ids: set[str]) -> pa.Array:
    """The rows that came from the file: by source name, or by doc id (a saved dataset's documents)."""
    mask = pc.is_in(table.column("source"), value_set=pa.array(sorted(sources), pa.string()))
    if doc_ids and "doc_id" in table.column_names:
        mask = pc.or_(mask, pc.is_in(table.column("doc_id"), value_set=pa.array(sorted(doc_ids), pa.string())))
    return pc.fill_null(mask, False)


def plan(state: StatePaths, source: str, c=None) -> ForgetPlan:
    """What ``source`` (a raw file's path or source name) reaches; ``c`` (an MlflowClient) adds the versions."""
    result = ForgetPlan(source)
    asked = Path(source)
    absolute, digest = str(asked.absolute()), file_sha256(asked) if asked.is_file() else None
    index = Index(state.snapshots)
    hit_ingest: list[Path] = []
    for folder, m in index.manifests.items():
        listed = folder / "inputs.jsonl"
        if m.get("stage") != "ingest" or not listed.is_file():
            continue
        entries = [json.loads(line) for line in listed.read_text().splitlines() if line]
        matched = [e for e in entries if _matches(e, source, absolute, digest)]
        if matched:
            hit_ingest.append(folder)
            result.files += [{**e, "ingest": m.get("fingerprint")} for e in matched]
            result.sources.update(e["source"] for e in matched)
    for folder in hit_ingest:  # the documents the file became
        for table in snapshot.iter_tables(folder):
            chosen = table.filter(_of_documents(table, result.sources, set()))
            result.doc_ids.update(chosen.column("doc_id").to_pylist())
    hit = set(hit_ingest)
    result.snapshots = sorted(f for f in index.manifests if hit & set(index.with_ancestors([f])))
    affected_fps = {index.manifests[f].get("fingerprint") for f in result.snapshots}
    for run in sorted(p for p in state.runs.glob("*") if p.is_dir()) if state.runs.is_dir() else []:
        try:
            report = json.loads((run / "report.json").read_text())
        except (OSError, ValueError):
            continue
        if any((s or {}).get("fingerprint") in affected_fps for s in (report.get("snapshots") or {}).values()):
            result.runs.append(run)
    if c is not None:
        for model in c.search_registered_models():
            for v in c.search_model_versions(f"name='{model.name}'"):
                if (v.tags or {}).get("snapshot_fingerprint") in affected_fps:
                    aliases = list(c.get_model_version(model.name, v.version).aliases or [])
                    result.versions.append((model.name, str(v.version), aliases))
    result.versions.sort(key=lambda t: (t[0], int(t[1])))
    return result


def apply(state: StatePaths, found: ForgetPlan, c=None) -> dict[str, int]:
    """Carry the plan out (see the module); returns counts of what changed."""
    from tasks.evaluate import frozen_set

    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    note = {"forgot": sorted(found.sources), "at": when, "by": "tunegate forget"}
    _mark_forgotten(state, found, when)
    rows = sum(snapshot.redact(folder, lambda t: _of_documents(t, found.sources, found.doc_ids), note)
               for folder in found.snapshots)
    evalset_rows = sum(n for _, _, n in frozen_set.redact(state, found.doc_ids, f"tunegate forget {when}"))
    blocks = 0
    for run in found.runs:
        if (run / "data").exists():
            shutil.rmtree(run / "data")
            blocks += 1
    if state.eval_cache.is_dir():
        shutil.rmtree(state.eval_cache)
    if c is not None:
        why = f"trained on {', '.join(sorted(found.sources))}, forgotten on {when[:10]} (tunegate forget)"
        for model, version, _ in found.versions:
            c.set_model_version_tag(model, version, TAINT_TAG, why[:4900])
    return {"snapshot rows": rows, "evaluation-set rows": evalset_rows, "training blocks": blocks,
            "versions tainted": len(found.versions) if c is not None else 0}


def _mark_forgotten(state: StatePaths, found: ForgetPlan, when: str) -> None:
    """Mark the file's lines in the ingest snapshots' inventories ``forgotten`` (an earlier mark is kept)."""
    fingerprints = {f["ingest"] for f in found.files}
    index = Index(state.snapshots)
    for fp in fingerprints:
        for folder in index.find(fp):
            listed = folder / "inputs.jsonl"
            if not listed.is_file():
                continue
            entries = [json.loads(line) for line in listed.read_text().splitlines() if line]
            for e in entries:
                if e.get("source") in found.sources:
                    e.setdefault("forgotten", when)
            tmp = listed.with_name(f".{listed.name}.tmp")
            tmp.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
            tmp.replace(listed)
