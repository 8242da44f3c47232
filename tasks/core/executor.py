"""Where a stage's shards are processed: Dask, one task per shard.

A stage hands a plain function and its shards here; the function runs once per shard. With one shard it
runs in this process (no cluster start-up for small inputs). With more, it runs on a Dask cluster: the
one at ``dask.address`` / ``TUNEGATE_DASK_ADDRESS`` when set, else a LocalCluster sized to the machine
(started once per process and reused by every stage). Results come back in shard order, and only a
bounded window of shards is in flight, so memory is bounded by shard size, not corpus size.

A Dask worker runs the code it imported when it started, while a stage keys its snapshot by this process's
code version. So every shard computed on a worker comes back with what it was computed with there: the
``CODE_VERSION`` constants of the stage function's module (``code_versions``, what the key is made from) and a
fingerprint of the worker's ``tasks/`` source. A version that differs from this process's fails the stage
(``StaleWorkerError``, naming the worker, the stage and both versions) before the snapshot is renamed into
place, so a stale worker never fills the new key; source that differs with equal versions is only logged
(the key is unaffected, but the worker did not import the same code).
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import socket
import sys
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from tasks.core.cpus import usable_cpus
from tasks.core.progress import track

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger("tunegate")


class DaskSettings(BaseModel):
    """Which Dask cluster runs the data stages."""

    model_config = ConfigDict(extra="forbid")

    scheduler: Literal["local", "sync", "threads"] = Field(
        "local", description="without an address: a LocalCluster of processes, or in-process (sync/threads)"
    )
    address: str | None = Field(None, description="tcp://host:port of a Dask scheduler (or TUNEGATE_DASK_ADDRESS)")
    workers: int = Field(default_factory=usable_cpus, ge=1, description="local worker processes")
    memory_limit: str = Field("4GiB", description="per local worker; Dask spills and restarts beyond it")
    in_flight: int = Field(2, ge=1, description="shards in flight per worker (bounds memory)")

    def cluster_address(self) -> str | None:
        return self.address or os.environ.get("TUNEGATE_DASK_ADDRESS") or None


_lock = threading.Lock()
_clients: dict[tuple, Any] = {}


def client_for(settings: DaskSettings):
    """A distributed Client for these settings, created once per process."""
    from distributed import Client, LocalCluster

    address = settings.cluster_address()
    key = (address,) if address else ("local", settings.workers, settings.memory_limit)
    with _lock:
        client = _clients.get(key)
        if client is None or client.status != "running":
            if address:
                client = Client(address, set_as_default=False)
            else:
                cluster = LocalCluster(
                    n_workers=settings.workers, threads_per_worker=1, processes=True,
                    memory_limit=settings.memory_limit, dashboard_address=None, host="127.0.0.1",
                    silence_logs=logging.WARNING,
                )
                client = Client(cluster, set_as_default=False)
            _clients[key] = client
    return client


def _close(client) -> None:
    try:
        cluster = client.cluster
        client.close()
        if cluster is not None:
            cluster.close()
    except Exception:
        pass


@atexit.register
def close_clients() -> None:
    logging.getLogger("distributed").setLevel(logging.ERROR)
    for client in list(_clients.values()):
        _close(client)
    _clients.clear()


def close_client(address: str) -> None:
    """Close this process's client of the cluster at ``address`` (before that cluster is shut down)."""
    with _lock:
        client = _clients.pop((address,), None)
    if client is not None:
        _close(client)


def map_shards(fn: Callable[..., R], shards: Sequence[T], settings: DaskSettings, *args: Any,
               sizes: list[int] | None = None, unit: str | None = None, stage: str | None = None) -> Iterator[R]:
    """``fn(shard, *args)`` for every shard, results yielded in shard order, with progress: in shards, or in
    ``unit`` with ``sizes`` (what each shard holds). On a cluster, a shard computed with other code versions
    than this process has raises ``StaleWorkerError`` (``stage`` names the stage in it)."""
    label = unit or fn.__name__.strip("_").replace("_", " ")
    return track(_map(fn, shards, settings, args, stage or fn.__name__), label, total=len(shards), sizes=sizes)


def _map(fn, shards, settings: DaskSettings, args, stage: str) -> Iterator:
    if not shards:
        return iter(())
    local = settings.cluster_address() is None
    if len(shards) == 1 and local or settings.scheduler == "sync" and local:
        return (fn(shard, *args) for shard in shards)
    if settings.scheduler == "threads" and local:
        import dask

        return iter(dask.compute(*[dask.delayed(fn, pure=False)(s, *args) for s in shards], scheduler="threads",
                                 num_workers=settings.workers))
    return _windowed(client_for(settings), fn, shards, settings, args, stage)


def _windowed(client, fn, shards, settings: DaskSettings, args, stage: str) -> Iterator:
    """Submit shards a window at a time; check what each was computed with, yield its result in order and
    release it. Shards still in flight when this stops early (an error, a stale worker) are cancelled."""
    expected, task = code_versions(fn), _Reporting(fn)
    window = max(1, settings.in_flight * len(client.scheduler_info().get("workers", {}) or [1]))
    pending: deque = deque()
    todo = enumerate(shards)
    try:
        for i, shard in todo:
            pending.append((i, client.submit(task, shard, *args, pure=False)))
            if len(pending) >= window:
                break
        while pending:
            i, future = pending.popleft()
            computed_with, result = future.result()
            future.release()
            _check(computed_with, expected, stage, i, len(shards))
            nxt = next(todo, None)
            if nxt is not None:
                pending.append((nxt[0], client.submit(task, nxt[1], *args, pure=False)))
            yield result
    finally:
        if pending:
            try:
                client.cancel([f for _, f in pending])
            except Exception:
                pass


class StaleWorkerError(RuntimeError):
    """A Dask worker computed a shard with other code versions than this process keys the snapshot by."""


def code_versions(fn: Callable) -> dict[str, str]:
    """The code versions ``fn`` computes with, as this process imported them: the string constants named
    ``CODE_VERSION`` or ``*_CODE_VERSION`` (clean's copy of quality's) of the module that defines the stage's
    function (``OnShardTable`` looks through to it), by qualified name. Empty for a module without any."""
    module = sys.modules.get(getattr(getattr(fn, "__wrapped__", fn), "__module__", None) or "")
    if module is None:
        return {}
    return {f"{module.__name__}.{name}": value for name, value in sorted(vars(module).items())
            if (name == "CODE_VERSION" or name.endswith("_CODE_VERSION")) and isinstance(value, str)}


def _source_fingerprint() -> str:
    """sha256 over the ``tasks/`` package's Python files as this process found them on import (16 hex)."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        try:
            digest.update(f"{path.relative_to(root).as_posix()}\0".encode() + path.read_bytes() + b"\0")
        except OSError:  # removed meanwhile
            continue
    return digest.hexdigest()[:16]


SOURCE_FINGERPRINT = _source_fingerprint()  # at import: what this process's tasks/ modules were loaded from
_source_warned: set[str] = set()


def _worker_name() -> str:
    where = f"host {socket.gethostname()}, pid {os.getpid()}"
    try:
        from distributed import get_worker

        return f"{get_worker().address} ({where})"
    except ValueError:  # not in a worker
        return where


class _Reporting:
    """``fn`` run on a worker, its result paired with what it was computed with there."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self.__name__ = fn.__name__  # Dask names the task after the stage's function

    def __call__(self, *args: Any) -> tuple[dict[str, Any], Any]:
        result = self.fn(*args)
        return {"worker": _worker_name(), "versions": code_versions(self.fn), "source": SOURCE_FINGERPRINT}, result


def _check(computed_with: dict[str, Any], expected: dict[str, str], stage: str, shard: int, shards: int) -> None:
    got, worker = computed_with["versions"], computed_with["worker"]
    if got != expected:
        names = sorted(n for n in expected.keys() | got.keys() if got.get(n) != expected.get(n))
        theirs = ", ".join(f"{n} = {got.get(n, '(none)')!r}" for n in names)
        ours = ", ".join(f"{n} = {expected.get(n, '(none)')!r}" for n in names)
        raise StaleWorkerError(
            f"stage {stage!r}: Dask worker {worker} computed shard {shard + 1} of {shards} with code version "
            f"{theirs}, but this process has {ours} and keys the snapshot by it. The worker runs code it imported "
            "before a change: restart the Dask workers (e.g. `docker compose restart dask-worker-1 dask-worker-2`) "
            "so they import the current code, then rerun. Nothing was written under the new key.")
    if computed_with["source"] != SOURCE_FINGERPRINT and worker not in _source_warned:
        _source_warned.add(worker)
        log.warning("stage %r: Dask worker %s imported other tasks/ source (%s) than this process (%s); the code "
                    "versions agree, so the snapshot key holds, but restart the workers if the change alters output "
                    "(and bump the stage's CODE_VERSION)", stage, worker, computed_with["source"], SOURCE_FINGERPRINT)


class OnShardTable:
    """A stage's table function, run where the shard is processed: the shard is read there, then handed over.
    Dask names each task after the stage's function (``_clean_shard-<token>``)."""

    def __init__(self, fn: Callable) -> None:
        self.fn = self.__wrapped__ = fn  # __wrapped__: ``code_versions`` reads the stage's module
        self.__name__ = fn.__name__

    def __call__(self, shard: str, settings: Any):
        from tasks.core import snapshot

        return self.fn(snapshot.read_shard(shard), settings)


def shardwise_snapshot(ref, stage: str, shard_fn: Callable, settings: Any, dask_settings: DaskSettings, store, *,
                       params: dict[str, Any], code_version: str, summarize: Callable[[Counter], dict[str, Any]]):
    """The ``stage`` snapshot made from ``ref`` shard by shard: ``shard_fn(table, settings)`` returns
    (table, Counter) for one shard of ``ref`` (read where it runs, a Dask task); ``summarize`` turns the summed
    counters into the stats. The stage's function knows tables, not files or executors."""
    from tasks.core import snapshot

    shards = snapshot.shard_rows(ref)

    def produce(stats: dict, extra: dict):
        total: Counter = Counter()
        for table, counts in map_shards(OnShardTable(shard_fn), [str(p) for p in shards], dask_settings, settings,
                                        sizes=list(shards.values()), unit="documents", stage=stage):
            total.update(counts)
            yield table
        stats.update(summarize(total))

    return snapshot.materialize(store, stage, input_fingerprint=ref.fingerprint, params=params,
                                code_version=code_version, produce=produce)
