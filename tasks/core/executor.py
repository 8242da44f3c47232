"""Where a stage's shards are processed: Dask, one task per shard.

A stage hands a plain function and its shards here; the function runs once per shard. With one shard it
runs in this process (no cluster start-up for small inputs). With more, it runs on a Dask cluster: the
one at ``dask.address`` / ``TUNEGATE_DASK_ADDRESS`` when set, else a LocalCluster sized to the machine
(started once per process and reused by every stage). Results come back in shard order, and only a
bounded window of shards is in flight, so memory is bounded by shard size, not corpus size.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from tasks.core.cpus import usable_cpus
from tasks.core.progress import track

T = TypeVar("T")
R = TypeVar("R")


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
               sizes: list[int] | None = None, unit: str | None = None) -> Iterator[R]:
    """``fn(shard, *args)`` for every shard, results yielded in shard order, with progress: in shards, or in
    ``unit`` with ``sizes`` (what each shard holds)."""
    label = unit or fn.__name__.strip("_").replace("_", " ")
    return track(_map(fn, shards, settings, args), label, total=len(shards), sizes=sizes)


def _map(fn, shards, settings: DaskSettings, args) -> Iterator:
    if not shards:
        return iter(())
    local = settings.cluster_address() is None
    if len(shards) == 1 and local or settings.scheduler == "sync" and local:
        return (fn(shard, *args) for shard in shards)
    if settings.scheduler == "threads" and local:
        import dask

        return iter(dask.compute(*[dask.delayed(fn, pure=False)(s, *args) for s in shards], scheduler="threads",
                                 num_workers=settings.workers))
    return _windowed(client_for(settings), fn, shards, settings, args)


def _windowed(client, fn, shards, settings: DaskSettings, args) -> Iterator:
    """Submit shards a window at a time; yield each result in order and release it."""
    window = max(1, settings.in_flight * len(client.scheduler_info().get("workers", {}) or [1]))
    pending: deque = deque()
    todo = iter(shards)
    for shard in todo:
        pending.append(client.submit(fn, shard, *args, pure=False))
        if len(pending) >= window:
            break
    while pending:
        future = pending.popleft()
        result = future.result()
        future.release()
        nxt = next(todo, None)
        if nxt is not None:
            pending.append(client.submit(fn, nxt, *args, pure=False))
        yield result


class OnShardTable:
    """A stage's table function, run where the shard is processed: the shard is read there, then handed over.
    Dask names each task after the stage's function (``_clean_shard-<token>``)."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
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
                                        sizes=list(shards.values()), unit="documents"):
            total.update(counts)
            yield table
        stats.update(summarize(total))

    return snapshot.materialize(store, stage, input_fingerprint=ref.fingerprint, params=params,
                                code_version=code_version, produce=produce)
