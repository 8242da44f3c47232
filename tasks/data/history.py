"""Datasets with history: a retrain adds its new documents to what the @champion of the same dataset was trained
on, instead of replacing it (``data.history: cumulative``, the default).

The parent is the champion's training snapshot (its registry tag ``snapshot_fingerprint``), taken before PII
scrubbing when that snapshot is still stored (the new documents are not scrubbed yet either, and the PII stage
scrubs the union the same way). The ``history`` stage writes one snapshot: the parent's documents inside the
retention window (``data.retention_days`` before the newest new document, at most ``data.retention_documents``
of the newest), then the new cleaned documents. A new document with a parent document's id replaces it (the
newer version of that document); the dedup stage that follows drops new documents that repeat a parent's (it
keeps the first of each cluster, which is the parent's), so a document seen before is not counted twice.

Nothing to merge: no champion, a champion of another dataset (its ``dataset`` tag), ``data.history: replace``,
or new data that is exactly what the champion was trained on (the champion's pre-scrub snapshot was made from
this cleaned snapshot): then the cleaned snapshot goes on unchanged, so a rerun on unchanged data reuses every
snapshot. Plain functions (the champion is looked up by tasks/drift/reference.champion_training); the flow step is
flows/retrain_stages.history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from tasks.core import snapshot

CODE_VERSION = "history-1"
DATASET_TAG = "dataset"
PARENTS_TAG = "history_parents"


class Parent(BaseModel):
    """The champion whose training data a cumulative retrain starts from."""

    model: str
    version: str
    dataset: str | None  # its dataset tag (None: registered before datasets had names)
    fingerprint: str  # its training snapshot (tag snapshot_fingerprint)
    snapshot: str | None = None  # the stored snapshot read: the pre-scrub parent, else the training snapshot
    stage: str | None = None
    rows: int | None = None
    note: str = ""  # why no stored snapshot could be read (the registry unreachable, the snapshot gone)


def _aligned(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns in its order (a column it lacks: nulls)."""
    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
            for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def unified_schema(new_path: str, parent_path: str) -> pa.Schema:
    """The new snapshot's columns, with the parent's type where the new one's is null (a column all empty)."""
    new_schema = pq.read_schema(snapshot.shard_paths(new_path)[0])
    parent_schema = pq.read_schema(snapshot.shard_paths(parent_path)[0])
    fields = []
    for f in new_schema:
        if pa.types.is_null(f.type) and f.name in parent_schema.names:
            f = parent_schema.field(f.name)
        fields.append(f)
    return pa.schema(fields)


def _newest(values: list[str | None]) -> str | None:
    present = [v for v in values if v]
    return max(present) if present else None


def with_history(new: snapshot.SnapshotRef, parent: Parent | None, data, store: Path) -> tuple[snapshot.SnapshotRef,
                                                                                           dict[str, Any]]:
    """The snapshot the dedup stage reads, and the lineage record for the report."""
    record: dict[str, Any] = {"dataset": data.dataset, "mode": data.history, "new": new.fingerprint,
                              "new_rows": new.rows, "parents": []}
    if data.history == "replace":
        return new, {**record, "merged": False, "why": "data.history is replace: the new data alone"}
    if parent is None:
        return new, {**record, "merged": False, "why": "no @champion yet: the new data alone"}
    described = {"model": parent.model, "version": parent.version, "fingerprint": parent.fingerprint}
    if parent.dataset not in (None, data.dataset):
        return new, {**record, "merged": False,
                     "why": f"the @champion v{parent.version} was trained on dataset {parent.dataset!r}, not "
                            f"{data.dataset!r}: the new data alone"}
    if parent.snapshot is None:
        who = f"@champion v{parent.version}" if parent.version else "the @champion"
        return new, {**record, "merged": False, "why": f"{who}: {parent.note}; the new data alone"}
    source = json.loads((Path(parent.snapshot) / snapshot.MANIFEST).read_text())
    if source.get("parent_fingerprint") == new.fingerprint:
        return new, {**record, "merged": False, "parents": [described],
                     "why": f"the new data is what @champion v{parent.version} was trained on: nothing to add"}

    new_ids: set[str] = set()
    newest: list[str | None] = []
    for table in snapshot.iter_tables(new.path):
        new_ids.update(table.column("doc_id").to_pylist())
        if "ingested_at" in table.column_names:
            newest.append(_newest(table.column("ingested_at").to_pylist()))
    newest_new = _newest(newest)
    params = {"parent": source["fingerprint"], "retention_days": data.retention_days,
              "retention_documents": data.retention_documents}

    def produce(stats: dict, extra: dict):
        from datetime import datetime, timedelta

        schema = unified_schema(new.path, parent.snapshot)
        cutoff = None
        if data.retention_days is not None and newest_new:
            cutoff = (datetime.fromisoformat(newest_new) - timedelta(days=data.retention_days)).isoformat()
        # the parent's documents inside the window; with a size bound, the newest of them
        stamps = []
        for table in snapshot.iter_tables(parent.snapshot):
            at = table.column("ingested_at").to_pylist() if "ingested_at" in table.column_names else [None] * table.num_rows
            stamps += [a or "" for a in at]
        allowed = None
        if data.retention_documents is not None and len(stamps) > data.retention_documents:
            order = sorted(range(len(stamps)), key=lambda i: stamps[i], reverse=True)
            allowed = set(order[: data.retention_documents])
        kept = replaced = too_old = too_many = 0
        at = 0
        for table in snapshot.iter_tables(parent.snapshot):
            ids = table.column("doc_id").to_pylist()
            mask = []
            for i, doc in enumerate(ids):
                pos = at + i
                if doc in new_ids:
                    replaced += 1
                    mask.append(False)
                elif cutoff is not None and stamps[pos] and stamps[pos] < cutoff:
                    too_old += 1
                    mask.append(False)
                elif allowed is not None and pos not in allowed:
                    too_many += 1
                    mask.append(False)
                else:
                    kept += 1
                    mask.append(True)
            at += table.num_rows
            part = table.filter(pa.array(mask, type=pa.bool_()))
            if part.num_rows:
                yield _aligned(part, schema)
        for table in snapshot.iter_tables(new.path):
            yield _aligned(table, schema)
        stats.update(made_from=[source["fingerprint"], new.fingerprint],  # what lineage walks (snapshot_index)
                     parent_rows=len(stamps), parent_kept=kept, parent_replaced_by_new=replaced,
                     parent_older_than_window=too_old, parent_over_size=too_many, new_rows=new.rows)

    merged = snapshot.materialize(store, "history", input_fingerprint=snapshot.stable_hash(source["fingerprint"],
                                                                                            new.fingerprint),
                                  params=params, code_version=CODE_VERSION, produce=produce)
    stats = merged.manifest()["stats"]
    return merged, {**record, "merged": True, "parents": [{**described, "snapshot": parent.snapshot,
                                                           "stage": parent.stage, "rows": parent.rows}],
                    "snapshot": merged.fingerprint, "rows": merged.rows, **stats,
                    "why": f"@champion v{parent.version}'s training data ({stats['parent_kept']} of "
                           f"{stats['parent_rows']} documents kept) plus {new.rows} new"}

