"""The frozen evaluation set of a dataset: the one set every champion-versus-candidate comparison is made on.

A dataset's first retrain freezes its held-out split (documents and instruction records, as the split wrote
them) as version 1. After that the set changes only on purpose (``tunegate evalset add``), each change a new
version; a retrain evaluates on the newest version and keeps every document of it out of training (by document
id or by text), so a growing dataset can never train on what it is judged on. A version is named by its number
and by the sha256 of its texts in order (``content_hash``); reading a version checks that hash, so a frozen
file edited by hand fails loudly instead of quietly moving the goalposts.

On disk, under ``<home>/evalsets/<dataset>/``: ``v<N>-<hash12>.jsonl`` ({"doc_id", "text"} lines, the format of a
run's eval.jsonl) and ``versions.jsonl``, one line per version (FrozenSet). Writers take the state folder's
lock ``evalset-<dataset>``: two first runs of a dataset finishing their splits together freeze one set.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel

from tasks.core.state import StatePaths
from tasks.data import instructions
from tasks.train.dataset import text_key

VERSIONS = "versions.jsonl"


class FrozenSet(BaseModel):
    """One version of a dataset's frozen evaluation set."""

    dataset: str
    version: int
    content_hash: str  # sha256 of the texts, in order
    path: str  # the JSONL of {"doc_id", "text"}
    documents: int  # held-out documents (perplexity, continuations)
    instructions: int  # instruction records (the task's answers)
    created: str  # UTC, ISO 8601
    source: str  # what it was built from: "run <id>" (frozen from its split) or "evalset add <paths>"
    added: int  # items new in this version
    redacted: str | None = None  # rows removed later by a deletion request (`tunegate forget`), and why

    @property
    def label(self) -> str:
        """How reports and gates name it: ``corpus v2 (3f2a9c1e0b7d)``."""
        return f"{self.dataset} v{self.version} ({self.content_hash[:12]})"

    @property
    def size(self) -> int:
        return self.documents + self.instructions


def content_hash(rows: list[dict]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(row["text"].encode())
        digest.update(b"\0")
    return digest.hexdigest()


def folder(state: StatePaths, dataset: str) -> Path:
    return state.evalsets / dataset


def versions(state: StatePaths, dataset: str) -> list[FrozenSet]:
    """Every version of the dataset's set, oldest first (none yet: [])."""
    index = folder(state, dataset) / VERSIONS
    if not index.is_file():
        return []
    return [FrozenSet.model_validate_json(line) for line in index.read_text().splitlines() if line.strip()]


def read_rows(frozen: FrozenSet) -> list[dict]:
    """The version's {"doc_id", "text"} rows; ValueError when the file no longer has the hash it was frozen with."""
    path = Path(frozen.path)
    if not path.is_file():
        raise FileNotFoundError(f"frozen evaluation set {frozen.label}: {path} is missing")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    found = content_hash(rows)
    if found != frozen.content_hash:
        raise ValueError(f"frozen evaluation set {frozen.label}: {path} was changed after it was frozen (its texts "
                         f"hash to {found[:12]}); restore it, or extend the set with `tunegate evalset add`")
    return rows


def current(state: StatePaths, dataset: str) -> FrozenSet | None:
    """The newest version, its file checked against its hash; None when the dataset has none yet."""
    found = versions(state, dataset)
    if not found:
        return None
    read_rows(found[-1])
    return found[-1]


def _write(state: StatePaths, dataset: str, rows: list[dict], source: str, added: int) -> FrozenSet:
    """A new version of ``rows`` (caller holds the lock)."""
    previous = versions(state, dataset)
    digest = content_hash(rows)
    where = folder(state, dataset)
    where.mkdir(parents=True, exist_ok=True)
    number = len(previous) + 1
    path = where / f"v{number}-{digest[:12]}.jsonl"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({"doc_id": row["doc_id"], "text": row["text"]}, ensure_ascii=False) + "\n")
    tmp.replace(path)
    n_records = sum(instructions.parse(r["text"]) is not None for r in rows)
    frozen = FrozenSet(dataset=dataset, version=number, content_hash=digest, path=str(path),
                       documents=len(rows) - n_records, instructions=n_records,
                       created=datetime.now(timezone.utc).isoformat(timespec="seconds"), source=source, added=added)
    with open(where / VERSIONS, "a", encoding="utf-8") as fh:
        fh.write(frozen.model_dump_json() + "\n")
    return frozen


def freeze(state: StatePaths, dataset: str, eval_texts: str | Path, source: str) -> tuple[FrozenSet, bool]:
    """(the dataset's set, whether this call froze it): version 1 from a split's eval.jsonl when the dataset has
    no set yet, else the newest version unchanged."""
    with state.lock(f"evalset-{dataset}"):
        existing = current(state, dataset)
        if existing is not None:
            return existing, False
        rows = [json.loads(line) for line in Path(eval_texts).read_text(encoding="utf-8").splitlines() if line.strip()]
        if not rows:
            raise ValueError(f"dataset {dataset}: the held-out split {eval_texts} is empty; nothing to freeze")
        return _write(state, dataset, rows, source, len(rows)), True


def extend(state: StatePaths, dataset: str, rows: list[dict], source: str) -> tuple[FrozenSet, int]:
    """(the newest version, items added): a new version holding the current set's rows, then those of ``rows``
    whose text (or document id) it does not hold yet, in order; no new version when nothing is new. A dataset
    without a set starts one with these rows."""
    with state.lock(f"evalset-{dataset}"):
        existing = current(state, dataset)
        held = read_rows(existing) if existing else []
        ids, texts = {r["doc_id"] for r in held}, {text_key(r["text"]) for r in held}
        fresh = []
        for row in rows:
            key = text_key(row["text"])
            if key in texts or row.get("doc_id") in ids:
                continue
            texts.add(key)
            ids.add(row["doc_id"])
            fresh.append(row)
        if not fresh:
            if existing is None:
                raise ValueError(f"dataset {dataset}: nothing to put in a new evaluation set (no documents read)")
            return existing, 0
        return _write(state, dataset, held + fresh, source, len(fresh)), len(fresh)


def new_data_heldout(eval_texts: str | Path, frozen: FrozenSet, out: Path) -> Path | None:
    """The held-out part of a run's new data, written to ``out``: the rows of its split's eval.jsonl (the split
    holds out new documents only, tasks/train/dataset.py) that are not in the frozen set (by id or text). None
    when there are none: the new data's held-out documents are the frozen set (its first version was frozen from
    this very split), or all of them are in it."""
    held = read_rows(frozen)
    ids, texts = {r["doc_id"] for r in held}, {text_key(r["text"]) for r in held}
    rows = [json.loads(line) for line in Path(eval_texts).read_text(encoding="utf-8").splitlines() if line.strip()]
    mine = [r for r in rows if r["doc_id"] not in ids and text_key(r["text"]) not in texts]
    if not mine:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in mine), encoding="utf-8")
    return out


def redact(state: StatePaths, doc_ids: set[str], note: str) -> list[tuple[str, int, int]]:
    """Remove the rows of ``doc_ids`` from every version of every dataset's set, in place (`tunegate forget`: a
    deletion request reaches the frozen copies too); each changed version's entry gets its new hash and counts and a
    ``redacted`` note. Returns (dataset, version, rows removed) for each version changed."""
    changed = []
    for where in sorted(p for p in state.evalsets.glob("*") if p.is_dir()) if state.evalsets.is_dir() else []:
        dataset = where.name
        with state.lock(f"evalset-{dataset}"):
            entries = versions(state, dataset)
            for frozen in entries:
                path = Path(frozen.path)
                rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
                kept = [r for r in rows if r.get("doc_id") not in doc_ids]
                if len(kept) == len(rows):
                    continue
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
                tmp.replace(path)
                n_records = sum(instructions.parse(r["text"]) is not None for r in kept)
                frozen.content_hash, frozen.instructions = content_hash(kept), n_records
                frozen.documents = len(kept) - n_records
                frozen.redacted = f"{note}: {len(rows) - len(kept)} rows removed"
                changed.append((dataset, frozen.version, len(rows) - len(kept)))
            if any(d == dataset for d, _, _ in changed):
                tmp = where / f"{VERSIONS}.{os.getpid()}.tmp"
                tmp.write_text("".join(e.model_dump_json() + "\n" for e in entries))
                tmp.replace(where / VERSIONS)
    return changed
