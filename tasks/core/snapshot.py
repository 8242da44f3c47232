"""Snapshots: folders of Parquet shards plus ``manifest.json``. The only code that reads or writes them.

A snapshot is never edited. It is written to a temporary folder beside its final place and renamed
into place once complete, so a half-written snapshot is never visible; the temporary folder is named after
the writing process (host and pid), and one left behind by a process that died (SIGKILL, power loss) is
removed by the next write of that stage. Two processes writing the same snapshot at once both succeed:
the first rename wins and the second discards its copy. Its fingerprint is a hash over the shards' rows
in order, leaving out ``ingested_at`` (when, not what: the same files ingested twice give the same
fingerprint); the folder name is the stage's cache key, so a rerun with the same input, parameters and
stage code finds the snapshot already there and reuses it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq
from pydantic import BaseModel

from tasks.core import failpoints

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
DOCUMENT_COLUMNS = ["doc_id", "source", "text", "mime_type", "metadata", "ingested_at"]
VOLATILE_COLUMNS = frozenset({"ingested_at"})  # not part of the content fingerprint
_TMP = ".tmp-"


class SnapshotRef(BaseModel):
    """What flows pass between stages: where a snapshot lies and what it holds, never the data."""

    path: str
    fingerprint: str
    rows: int
    stage: str
    reused: bool = False

    def manifest(self) -> dict[str, Any]:
        return json.loads((Path(self.path) / MANIFEST).read_text())


def stable_hash(*parts: Any) -> str:
    """sha256 over a JSON rendering of ``parts`` (keys sorted), as hex."""
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()


def cache_key(stage: str, input_fingerprint: str, params: dict[str, Any], code_version: str) -> str:
    """The key a stage's output is stored under: same inputs, parameters and code give the same key."""
    return stable_hash(stage, input_fingerprint, params, code_version)[:24]


def find(root: Path, stage: str, key: str) -> SnapshotRef | None:
    """The complete snapshot stored under ``key``, or None."""
    path = Path(root) / stage / key
    manifest = path / MANIFEST
    if not manifest.is_file():
        return None
    m = json.loads(manifest.read_text())
    return SnapshotRef(path=str(path), fingerprint=m["fingerprint"], rows=m["rows"], stage=stage, reused=True)


class _RowHasher:
    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def update(self, table: pa.Table) -> None:
        columns = sorted(c for c in table.column_names if c not in VOLATILE_COLUMNS)
        for row in table.select(columns).to_pylist():
            self._h.update(json.dumps(row, sort_keys=True, default=str, ensure_ascii=False).encode())
            self._h.update(b"\n")

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def write(
    root: Path,
    stage: str,
    key: str,
    tables: Iterable[pa.Table],
    *,
    parent: str | None,
    params: dict[str, Any],
    stats: dict[str, Any],
    schema: pa.Schema | None = None,
    extra_files: dict[str, str] | None = None,
    code_version: str | None = None,
) -> SnapshotRef:
    """Write ``tables`` as shards of a new snapshot under ``root/stage/key``, atomically; the manifest records
    ``params`` and the stage's ``code_version`` (what lineage reports of each stage).

    ``stats`` may be filled in by the caller while ``tables`` is consumed (a generator that counts what
    it drops): it is read only after the last shard is written, as is ``extra_files`` (name -> text,
    side files such as the quarantine list).
    """
    started = time.perf_counter()
    final = Path(root) / stage / key
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(final.parent)
    tmp = final.parent / f".{key}{_TMP}{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    hasher, rows, shards = _RowHasher(), 0, []
    try:
        for table in tables:
            if schema is None:
                schema = table.schema
            if table.num_rows == 0:
                continue
            name = f"part-{len(shards):05d}.parquet"
            pq.write_table(table, tmp / name)
            hasher.update(table)
            rows += table.num_rows
            shards.append({"file": name, "rows": table.num_rows})
            if len(shards) == 1:
                failpoints.reached(f"{stage}:shard")
        if not shards and schema is not None:  # an empty snapshot still carries its schema
            pq.write_table(schema.empty_table(), tmp / "part-00000.parquet")
            shards.append({"file": "part-00000.parquet", "rows": 0})
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "stage": stage,
            "key": key,
            "rows": rows,
            "fingerprint": hasher.hexdigest(),
            "parent_fingerprint": parent,
            "params": params,
            **({"code_version": code_version} if code_version else {}),
            "stats": stats,
            "shards": shards,
            "created_at": datetime.now(timezone.utc).isoformat(),
            "seconds": round(time.perf_counter() - started, 2),  # to produce and write: what a reuse saves
        }
        for name, content in (extra_files or {}).items():
            (tmp / name).write_text(content)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        try:
            os.rename(tmp, final)
        except OSError as exc:  # written meanwhile by an identical run: keep the first
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not (final / MANIFEST).is_file():
                raise
            shutil.rmtree(tmp)
            manifest = json.loads((final / MANIFEST).read_text())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SnapshotRef(path=str(final), fingerprint=manifest["fingerprint"], rows=manifest["rows"], stage=stage)


def _host() -> str:
    return socket.gethostname().replace("-", "_") or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def stale_temp_folders(stage_dir: Path) -> list[Path]:
    """Temporary folders in ``stage_dir`` left by writers on this host that are no longer running."""
    stale = []
    for path in Path(stage_dir).glob(f".*{_TMP}*"):
        host, _, rest = path.name.rpartition(_TMP)[2].partition("-")
        pid = rest.partition("-")[0]
        if host == _host() and pid.isdigit() and not _alive(int(pid)):
            stale.append(path)
    return stale


def sweep_stale(stage_dir: Path) -> int:
    """Remove the temporary folders of writers that died mid-write; returns how many."""
    stale = stale_temp_folders(stage_dir)
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return len(stale)


def publish(final: str | Path, build: Callable[[Path], Any]) -> bool:
    """Make the folder ``final`` atomically, for any cached folder (tokenizer, base model): ``build(tmp)``
    fills a temporary folder private to this process beside it, which is then renamed into place. When
    another process published ``final`` meanwhile, its copy is kept and this one discarded (returns False).
    Temporary folders of writers that died are swept first."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(final.parent)
    tmp = final.parent / f".{final.name}{_TMP}{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
            return True
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not final.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return False
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def shard_paths(ref: SnapshotRef | str | Path) -> list[Path]:
    return list(shard_rows(ref))


def shard_rows(ref: SnapshotRef | str | Path) -> dict[Path, int]:
    """Each shard's path and row count, in order."""
    path = Path(ref.path if isinstance(ref, SnapshotRef) else ref)
    manifest = json.loads((path / MANIFEST).read_text())
    return {path / s["file"]: s["rows"] for s in manifest["shards"]}


def iter_tables(ref: SnapshotRef | str | Path) -> Iterator[pa.Table]:
    """The snapshot's shards, one Arrow table at a time (memory bounded by shard size)."""
    for shard in shard_paths(ref):
        yield read_shard(shard)


def read_shard(path: str | Path) -> pa.Table:
    """One shard of a snapshot as an Arrow table."""
    return pq.read_table(path)


def read_table(ref: SnapshotRef | str | Path) -> pa.Table:
    return pa.concat_tables(list(iter_tables(ref)))


def redact(folder: str | Path, drop: Callable[[pa.Table], pa.Array], note: dict[str, Any]) -> int:
    """Remove the rows ``drop`` marks (a boolean mask per shard) from a stored snapshot, in place: the one edit a
    snapshot allows, for a deletion request (`tunegate forget`). Each shard is rewritten through a temporary file;
    the manifest keeps the fingerprint as the snapshot's identity (what its children and the registry name) and
    records ``note`` under ``redactions`` with the rows removed and the content's hash after. Idempotent: a rerun
    after a crash finds nothing left to remove in the shards already done. Returns the rows removed."""
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    removed, hasher = 0, _RowHasher()
    for shard in manifest["shards"]:
        table = read_shard(folder / shard["file"])
        mask = drop(table)
        gone = int(pa.compute.sum(mask).as_py() or 0) if len(mask) else 0
        if gone:
            table = table.filter(pa.compute.invert(mask))
            tmp = folder / f".{shard['file']}{_TMP}{os.getpid()}"
            pq.write_table(table, tmp)
            os.replace(tmp, folder / shard["file"])
            removed += gone
        shard["rows"] = table.num_rows
        hasher.update(table)
    if removed or not any(r.get("note") == note for r in manifest.get("redactions", [])):
        manifest["rows"] = sum(s["rows"] for s in manifest["shards"])
        manifest.setdefault("redactions", []).append({**note, "rows_removed": removed,
                                                     "content_fingerprint_after": hasher.hexdigest()})
        tmp = folder / f".{MANIFEST}{_TMP}{os.getpid()}"
        tmp.write_text(json.dumps(manifest, indent=2, default=str))
        os.replace(tmp, folder / MANIFEST)
    return removed


def is_snapshot(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def batched(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def materialize(
    root: Path,
    stage: str,
    *,
    input_fingerprint: str,
    params: dict[str, Any],
    code_version: str,
    produce: Any,
    schema: pa.Schema | None = None,
) -> SnapshotRef:
    """The stage's snapshot for these inputs: reused when already stored, else produced and written.

    ``produce(stats, extra_files)`` returns the output tables; it fills ``stats`` (and side files) as
    they are consumed.
    """
    key = cache_key(stage, input_fingerprint, params, code_version)
    hit = find(root, stage, key)
    if hit is not None:
        return hit
    stats: dict[str, Any] = {}
    extra: dict[str, str] = {}
    return write(
        root, stage, key, produce(stats, extra), parent=input_fingerprint, params=params, stats=stats,
        schema=schema, extra_files=extra, code_version=code_version,
    )


def import_jsonl(path: Path, root: Path) -> SnapshotRef:
    """A snapshot of a JSONL file (one object per line with a ``text`` field; other fields carried)."""
    import hashlib as _h

    from tasks.core.records import doc_id as make_id

    path = Path(path)
    digest = _h.sha256(path.read_bytes()).hexdigest()

    def produce(stats: dict, extra: dict):
        rows, bad = [], 0
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                bad += 1
                continue
            obj.setdefault("doc_id", make_id(path.name, lineno))
            rows.append(obj)
        stats.update(rows=len(rows), skipped_lines=bad)
        yield pa.Table.from_pylist(rows) if rows else pa.table({"doc_id": pa.array([], pa.string()), "text": pa.array([], pa.string())})

    return materialize(root, "import", input_fingerprint=digest, params={"file": path.name}, code_version="import-1",
                       produce=produce)


def open_input(path: str | Path, root: Path) -> SnapshotRef:
    """A snapshot folder as it is, or a JSONL file imported into one."""
    path = Path(path)
    if is_snapshot(path):
        m = json.loads((path / MANIFEST).read_text())
        return SnapshotRef(path=str(path), fingerprint=m["fingerprint"], rows=m["rows"], stage=m["stage"], reused=True)
    if path.is_file() and path.suffix == ".jsonl":
        return import_jsonl(path, root)
    raise ValueError(f"{path} is neither a snapshot folder (with {MANIFEST}) nor a .jsonl file")


def export(ref: SnapshotRef, out: str | Path) -> Path:
    """Write the snapshot to ``out``: a .jsonl file (one object per row), or a copy of the snapshot folder."""
    out = Path(out)
    if out.suffix == ".jsonl":
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w") as fh:
            for table in iter_tables(ref):
                for row in table.to_pylist():
                    fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        return out
    if out.exists():
        if not is_snapshot(out):
            raise FileExistsError(f"{out} exists and is not a snapshot; choose another --out")
        shutil.rmtree(out)
    shutil.copytree(ref.path, out)
    return out
