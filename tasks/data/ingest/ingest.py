"""Ingest: every input becomes documents, or a quarantine row saying why not.

Inputs
  * files and folders under the data paths (``discover``), read by suffix through ``FORMATS``
    (``tasks.data.ingest.file_formats``): document files through ``unstructured`` (``tasks.data.ingest.partition``), after
    the checks that refuse what must not reach a parser (``tasks.data.ingest.checks``); text files are
    decoded by ``tasks.data.ingest.text_decoding``;
  * JSONL with a text field, and local Hugging Face ``datasets`` (Parquet / JSON files, saved-to-disk
    folders): ``tasks.data.ingest.record_readers``;
  * Hugging Face hub datasets named in ``ingest.hub_datasets`` (``owner/name[:config][@revision]``):
    ``tasks.data.ingest.hub_datasets``. Offline ingest stops at once with one line naming the dataset
    (``HubDatasetUnavailable``).

Decisions
  * A symlinked folder is never descended unless ``ingest.follow_symlinks`` is set and it leads outside
    the data root (inside the root its target is read where it lies); it is quarantined otherwise.
  * ``ingest_path`` never raises for a bad input: it yields a quarantine row (``tasks.data.ingest.quarantine``).

The names that other code imports from here (``Quarantined``, ``check_file``, ``partition_file``,
``decode_text``, ``FORMATS`` ...) are re-exported from the modules that hold them.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.data.ingest.file_formats import (
    FORMATS,
    IMAGE_SUFFIXES,
    INSTALL_HINTS,
    TEXT_LIKE,
    TEXT_READERS,
    UNSTRUCTURED_TYPES,
    Format,
    missing_dependencies,
)
from tasks.data.ingest.hub_datasets import (
    HubDatasetUnavailable,
    read_hub_dataset,
    resolve_hub_revision,
)
from tasks.data.ingest.checks import check_file
from tasks.data.ingest.partition import partition_file
from tasks.data.ingest.quarantine import QUARANTINE_REASONS, Quarantined, quarantine_row
from tasks.data.ingest.record_readers import DATASET_FILES, read_dataset, read_jsonl
from tasks.data.ingest.settings import HUB_PREFIX, IngestSettings
from tasks.core.records import make_document
from tasks.data.ingest.text_decoding import decode_text

__all__ = [
    "CODE_VERSION", "IngestSettings", "discover", "fingerprint_inputs", "ingest_path", "ingest_to_snapshot",
    "ingest_task",
    # re-exported from the modules that hold them
    "QUARANTINE_REASONS", "Quarantined", "quarantine_row",
    "Format", "FORMATS", "INSTALL_HINTS", "IMAGE_SUFFIXES", "TEXT_READERS", "UNSTRUCTURED_TYPES", "TEXT_LIKE",
    "missing_dependencies", "check_file", "decode_text", "partition_file",
    "DATASET_FILES", "read_jsonl", "read_dataset",
    "HUB_PREFIX", "HubDatasetUnavailable", "resolve_hub_revision", "read_hub_dataset",
]

CODE_VERSION = "ingest-4"  # 4: the snapshot lists its raw files (inputs.jsonl)
INVENTORY = "inputs.jsonl"  # in the ingest snapshot: one line per raw file (source, path, bytes, sha256)


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file())


def discover(paths: list[str | Path], settings: IngestSettings) -> Iterator[tuple[Path, str, Path]]:
    """(file or dataset folder, source name, data root) for everything under ``paths``, sorted.

    A data path that does not exist raises FileNotFoundError naming it. Files are yielded whatever they
    are (``ingest_path`` quarantines what it cannot read), so nothing under a data path is dropped
    silently; symlinked folders are yielded as inputs too (quarantined) unless ``follow_symlinks`` lets
    the walk into one that leads outside the data root. Hidden files and folders (a name starting with
    '.', like .git or .DS_Store) under a data folder are skipped.
    """
    for raw in paths:
        root = Path(raw)
        if not root.exists():
            kind = "a broken symlink" if root.is_symlink() else "no such file or folder"
            raise FileNotFoundError(f"data path does not exist: {root} ({kind})")
        if root.is_file() or _is_saved_dataset(root):
            yield root, root.name, root.resolve()  # named explicitly: read even when it is a symlink
            continue
        real_root = root.resolve()
        yield from _walk(root, Path(root.name), real_root, settings, {real_root})


def _walk(folder: Path, name: Path, real_root: Path, settings: IngestSettings, seen: set[Path]):
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        rel = name / here.relative_to(folder)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for d in list(dirnames):
            sub = here / d
            if sub.is_symlink():
                dirnames.remove(d)
                target = sub.resolve()
                if settings.follow_symlinks and not target.is_relative_to(real_root) and target not in seen:
                    yield from _walk(sub, rel / d, real_root, settings, seen | {target})
                else:
                    yield sub, str(rel / d), real_root
            elif _is_saved_dataset(sub):
                dirnames.remove(d)
                yield sub, str(rel / d), real_root
        for fname in sorted(filenames):
            if fname.startswith("."):
                continue
            yield here / fname, str(rel / fname), real_root


def _hub_items(settings: IngestSettings) -> list[tuple[str, str, str]]:
    return [(HUB_PREFIX + spec, HUB_PREFIX + spec, "") for spec in settings.hub_datasets]


def fingerprint_inputs(paths: list[str | Path], settings: IngestSettings,
                       hub_commits: dict[str, str] | None = None, inventory: list[dict] | None = None) -> str:
    """Content hash of every input (name, bytes; hub datasets: the commit their revision resolves to). With
    ``inventory``, one record per raw file is appended to it (source, path, bytes, sha256), read in the same pass:
    what the ingest snapshot's ``inputs.jsonl`` lists for lineage and deletion requests."""
    h = hashlib.sha256()
    for path, source, _root in discover(paths, settings):
        if path.is_symlink() and path.is_dir():  # a symlinked folder is quarantined, never read
            h.update(f"{source}\x00->{path.resolve()}\x00".encode())
            continue
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            h.update(f"{source}\x00{f.name}\x00".encode())
            one, size, note = hashlib.sha256(), 0, None
            try:
                if not stat.S_ISREG(f.stat().st_mode):  # a fifo or device would block or never end
                    h.update(b"not a regular file")
                    note = "not a regular file"
                else:
                    with open(f, "rb") as fh:
                        for chunk in iter(lambda: fh.read(1 << 20), b""):
                            h.update(chunk)
                            one.update(chunk)
                            size += len(chunk)
            except OSError as exc:  # unreadable files are quarantined later; hash the error
                h.update(repr(exc).encode())
                note = f"unreadable: {type(exc).__name__}"
            if inventory is not None:
                entry = str(Path(source) / f.relative_to(path)) if path.is_dir() else source
                inventory.append({"source": entry, "path": str(f.absolute()), "bytes": size,
                                  "sha256": None if note else one.hexdigest(), **({"note": note} if note else {})})
    for spec in settings.hub_datasets:
        commit = (hub_commits or {}).get(spec) or resolve_hub_revision(spec)
        h.update(f"{HUB_PREFIX}{spec}\x00{commit}\x00{settings.hub_split}".encode())
        if inventory is not None:
            inventory.append({"source": HUB_PREFIX + spec, "commit": commit, "split": settings.hub_split})
    return h.hexdigest()


def ingest_path(path: Path, source: str, root: Path, settings: IngestSettings) -> Iterator[dict[str, Any]]:
    """Documents (dicts of the record schema) or ``{"quarantine": row}`` items from one input.

    Never raises for a bad input: whatever goes wrong becomes a quarantine row naming the input.
    """
    try:
        if path.is_symlink() and path.is_dir():
            target = path.resolve()
            if not target.is_relative_to(root) and not settings.follow_symlinks:
                raise Quarantined("symlink outside the data root", f"{path.name} -> {target}")
            raise Quarantined("symlinked folder", f"not followed: {path.name} -> {target}"
                              + (" (read where it lies)" if target.is_relative_to(root) else ""))
        if path.is_dir():
            yield from read_dataset(path, source, settings)
            return
        known = check_file(path, root, settings)
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            yield from read_jsonl(path, source, settings)
        elif suffix in DATASET_FILES:
            yield from read_dataset(path, source, settings)
        else:
            text, metadata = partition_file(path, settings, known=known)
            yield make_document(source, 0, text, FORMATS[suffix].mime, metadata)
    except Quarantined as q:
        yield {"quarantine": quarantine_row(source, q.reason, q.detail)}
    except OSError as exc:
        yield {"quarantine": quarantine_row(source, "unreadable", f"{type(exc).__name__}: {exc}")}
    except Exception as exc:  # a parser bug must not end the batch
        yield {"quarantine": quarantine_row(source, "unreadable", f"{type(exc).__name__}: {exc}")}


def _ingest_batch(items: list[tuple[str, str, str]], settings: IngestSettings,
                  commits: dict[str, str] | None = None) -> tuple[list[dict], list[dict]]:
    """(documents, quarantine rows) for a batch of (path, source, root) inputs — one Dask task."""
    docs, bad = [], []
    for path, source, root in items:
        if path.startswith(HUB_PREFIX):
            spec = path.removeprefix(HUB_PREFIX)
            try:
                produced = list(read_hub_dataset(spec, settings, (commits or {}).get(spec)))
            except Quarantined as q:
                produced = [{"quarantine": quarantine_row(source, q.reason, q.detail)}]
        else:
            produced = ingest_path(Path(path), source, Path(root), settings)
        for item in produced:
            (bad.append(item["quarantine"]) if "quarantine" in item else docs.append(item))
    return docs, bad


# Below this much input a local run ingests in its own process: each Dask worker process would first import
# unstructured, spaCy and (for PDFs) torch, about ten seconds per worker on two cores, more than a small input
# takes to read. A configured cluster (dask.address / TUNEGATE_DASK_ADDRESS) always gets the batches.
IN_PROCESS_FILES, IN_PROCESS_BYTES = 100, 32 * 2**20


def _small_local(items: list[tuple[str, str, str]], dask_settings) -> bool:
    if dask_settings.cluster_address() is not None or len(items) > IN_PROCESS_FILES:
        return False
    size = 0
    for path, _, _ in items:
        try:
            size += os.path.getsize(path)
        except OSError:  # a hub dataset, or a file that went away (quarantined later with its reason)
            continue
    return size <= IN_PROCESS_BYTES


def ingest_to_snapshot(paths: list[str | Path], settings: IngestSettings, dask_settings, store: Path):
    """Ingest everything under ``paths`` (and ``settings.hub_datasets``) into a documents snapshot.

    Reused when the inputs are unchanged. Raises FileNotFoundError for a data path that does not exist
    and HubDatasetUnavailable for a hub dataset that cannot be reached, both naming it in one line.
    """
    from tasks.core import snapshot
    from tasks.core.executor import map_shards
    from tasks.core.records import DOCUMENT_SCHEMA, to_table

    commits = {spec: resolve_hub_revision(spec) for spec in settings.hub_datasets}  # fails first, offline
    items = [(str(p), s, str(r)) for p, s, r in discover(paths, settings)] + _hub_items(settings)
    if not items:
        raise FileNotFoundError(f"no input files under {', '.join(map(str, paths)) or '(no data paths)'}")
    if _small_local(items, dask_settings):
        batches = [items]  # one batch, in this process: no worker processes to start and import into
    else:
        batch = max(1, min(64, len(items) // max(1, dask_settings.workers * 4) or 1))
        batches = [items[i : i + batch] for i in range(0, len(items), batch)]

    def produce(stats: dict, extra: dict):
        quarantined: list[dict] = []
        pending: list[dict] = []
        documents = 0
        for docs, bad in map_shards(_ingest_batch, batches, dask_settings, settings, commits,
                                    sizes=[len(b) for b in batches], unit="files", stage="ingest"):
            quarantined.extend(bad)
            pending.extend(docs)
            documents += len(docs)
            while len(pending) >= settings.shard_size:
                yield to_table(pending[: settings.shard_size])
                pending = pending[settings.shard_size :]
        if pending:
            yield to_table(pending)
        reasons: dict[str, int] = {}
        for q in quarantined:
            reasons[q["reason"]] = reasons.get(q["reason"], 0) + 1
        stats.update(inputs=len(items), documents=documents, quarantined=len(quarantined),
                     quarantined_by_reason=reasons)
        extra["quarantine.jsonl"] = "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in quarantined)
        extra[INVENTORY] = "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in inventory)

    inventory: list[dict] = []
    return snapshot.materialize(
        store, "ingest", input_fingerprint=fingerprint_inputs(paths, settings, hub_commits=commits,
                                                              inventory=inventory),
        params={"paths": [str(p) for p in paths], **settings.model_dump()}, code_version=CODE_VERSION,
        produce=produce, schema=DOCUMENT_SCHEMA,
    )


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(paths: list[str], settings: IngestSettings, dask_settings, store: str):
    return ingest_to_snapshot(paths, settings, dask_settings, Path(store))
