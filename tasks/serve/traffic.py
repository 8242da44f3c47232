"""The traffic store: every request and its answer, shadow answers and user feedback, scrubbed and appended as
JSON lines to a folder shared by the gateway's replicas, off the response path.

Each gateway process writes its own files (``traffic-<time>-<host>-<pid>.jsonl``), rotated by size, and keeps
the folder within the bounds of its settings (files older than ``max_age_days`` and then the oldest files beyond
``max_bytes`` are deleted). Records (one JSON object a line, ``kind`` first):

- ``request``: id, time, model version, strategy, endpoint, key (hashed), prompt, answer, tokens, seconds;
- ``shadow``: the request id, both versions and answers, and their similarity (rougeL, chrf);
- ``feedback``: the response id, a rating in [-1, 1] and/or a corrected answer.

Prompts and corrections are scrubbed here, on the writer thread (answers already were, on the answer path).
``read_records`` and ``accepted_corrections`` read the store back (the drift monitor, the retrain flow).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import socket
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("tunegate.gateway")


class TrafficSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="append each request and answer (scrubbed) to the traffic store")
    max_bytes: int = Field(256 * 2**20, ge=2**16, description="the store's folder is kept under this size")
    max_age_days: float = Field(30, gt=0, description="files older than this are deleted")
    file_bytes: int = Field(16 * 2**20, ge=2**12, description="a file is closed and a new one begun at this size")
    queue: int = Field(1000, ge=1, description="records waiting to be written; more are dropped and counted")


def hashed_key(key: str | None) -> str | None:
    return hashlib.sha256(key.encode()).hexdigest()[:16] if key else None


class TrafficStore:
    """Appends records on a writer thread; ``scrub`` (a list of texts → the same, scrubbed) runs there too."""

    def __init__(self, folder: Path, settings: TrafficSettings, scrub: Callable[[list[str]], list[str]],
                 metrics=None) -> None:
        self.folder, self.settings, self.scrub, self.metrics = Path(folder), settings, scrub, metrics
        self.queue: queue.Queue = queue.Queue(maxsize=settings.queue)
        self.recent: OrderedDict[str, str] = OrderedDict()  # response id -> version, the last 10,000 here
        self._file: Path | None = None
        self._thread: threading.Thread | None = None
        self._stamp = f"{socket.gethostname()}-{os.getpid()}"

    def start(self) -> None:
        if self.settings.enabled and self._thread is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._thread = threading.Thread(target=self._write_loop, name="gateway-traffic", daemon=True)
            self._thread.start()

    def add(self, record: dict[str, Any], scrub_fields: tuple[str, ...] = ()) -> None:
        """Queue ``record`` (its ``scrub_fields`` are scrubbed before it is written); never blocks."""
        if not self.settings.enabled:
            return
        if record.get("kind") == "request":
            self.recent[record["id"]] = record.get("version", "")
            while len(self.recent) > 10_000:
                self.recent.popitem(last=False)
        try:
            self.queue.put_nowait((record, scrub_fields))
        except queue.Full:
            self._count(record["kind"], "dropped")

    def knows(self, response_id: str) -> bool:
        """Whether ``response_id`` was answered here or is in the store (written by any replica)."""
        if response_id in self.recent:
            return True
        needle = json.dumps(response_id)
        for path in sorted(self.folder.glob("traffic-*.jsonl"), reverse=True):
            with path.open() as fh:
                if any(needle in line and json.loads(line).get("id") == response_id for line in fh):
                    return True
        return False

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued record is written (tests, shutdown)."""
        end = time.time() + timeout
        while self.queue.unfinished_tasks and time.time() < end:
            time.sleep(0.02)
        return not self.queue.unfinished_tasks

    def _write_loop(self) -> None:
        while True:
            record, scrub_fields = self.queue.get()
            try:
                self._write(record, scrub_fields)
                self._count(record["kind"], "written")
            except Exception as exc:  # a full disk or a scrubber failure loses the record, not the gateway
                log.warning("traffic record not written: %s", exc)
                self._count(record["kind"], "dropped")
            finally:
                self.queue.task_done()

    def _write(self, record: dict[str, Any], scrub_fields: tuple[str, ...]) -> None:
        fields = [f for f in scrub_fields if isinstance(record.get(f), str) and record[f]]
        if fields:
            for f, text in zip(fields, self.scrub([record[f] for f in fields])):
                record[f] = text
        line = json.dumps(record, ensure_ascii=False) + "\n"
        path = self._current()
        with path.open("a") as fh:
            fh.write(line)

    def _current(self) -> Path:
        if self._file is None or not self._file.exists() or self._file.stat().st_size >= self.settings.file_bytes:
            self._file = self.folder / f"traffic-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**9:09d}-" \
                                       f"{self._stamp}.jsonl"
            self._file.touch()
            self.enforce_bounds()
        return self._file

    def enforce_bounds(self) -> list[Path]:
        """Delete files older than max_age_days, then the oldest until the folder is under max_bytes (never the
        file being written). Returns what was deleted."""
        files = sorted(self.folder.glob("traffic-*.jsonl"), key=lambda p: p.stat().st_mtime)
        cutoff = time.time() - self.settings.max_age_days * 86400
        gone = [p for p in files if p.stat().st_mtime < cutoff and p != self._file]
        kept = [p for p in files if p not in gone]
        total = sum(p.stat().st_size for p in kept)
        for p in kept:
            if total <= self.settings.max_bytes:
                break
            if p != self._file:
                total -= p.stat().st_size
                gone.append(p)
        for p in gone:
            p.unlink(missing_ok=True)
        return gone

    def _count(self, kind: str, status: str) -> None:
        if self.metrics:
            self.metrics.traffic_records.labels(kind, status).inc()


def read_records(folder: Path, kind: str | None = None) -> Iterator[dict[str, Any]]:
    """Every record in the store (oldest file first), or those of one ``kind``; a torn last line is skipped."""
    for path in sorted(Path(folder).glob("traffic-*.jsonl"), key=lambda p: (p.stat().st_mtime, p.name)):
        with path.open() as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if kind is None or record.get("kind") == kind:
                    yield record


def accepted_corrections(folder: Path, min_rating: float = 0.0) -> list[dict[str, Any]]:
    """Corrected answers users sent for answers in the store, as instruction pairs with their lineage: the
    request's prompt, the correction, and the response id and version it corrects. The latest feedback on a
    response wins; feedback rated below ``min_rating`` is left out."""
    requests = {r["id"]: r for r in read_records(folder, "request")}
    latest: dict[str, dict] = {}
    for fb in read_records(folder, "feedback"):  # by feedback time: replicas' files interleave
        held = latest.get(fb["response_id"])
        if held is None or fb.get("time", 0) >= held.get("time", 0):
            latest[fb["response_id"]] = fb
    out = []
    for rid, fb in latest.items():
        req = requests.get(rid)
        if req is None or not fb.get("correction") or (fb.get("rating") is not None and fb["rating"] < min_rating):
            continue
        out.append({"instruction": req["prompt"], "response": fb["correction"], "response_id": rid,
                    "version": req.get("version"), "feedback_id": fb["id"], "time": fb["time"]})
    return out
