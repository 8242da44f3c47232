"""Where a stage's shards are processed: Dask, one partition per shard.

A stage hands a plain function and its shards here; the function runs once per shard on the chosen
Dask scheduler — in process (``sync``), on threads or processes, or on a real cluster when an address
is configured (``dask.address`` or ``TUNEGATE_DASK_ADDRESS``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")
R = TypeVar("R")


class DaskSettings(BaseModel):
    """Which Dask scheduler runs the data stages."""

    model_config = ConfigDict(extra="forbid")

    scheduler: Literal["sync", "threads", "processes"] = Field(
        "sync", description="local scheduler when no cluster address is set"
    )
    address: str | None = Field(None, description="tcp://host:port of a Dask scheduler (or TUNEGATE_DASK_ADDRESS)")
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, description="local workers")

    def cluster_address(self) -> str | None:
        return self.address or os.environ.get("TUNEGATE_DASK_ADDRESS") or None


def map_shards(fn: Callable[..., R], shards: Sequence[T], settings: DaskSettings, *args: Any) -> Iterator[R]:
    """``fn(shard, *args)`` for every shard, in shard order, as Dask tasks; results as they are needed."""
    if not shards:
        return iter(())
    if len(shards) == 1 and settings.cluster_address() is None:
        return iter([fn(shards[0], *args)])
    import dask

    tasks = [dask.delayed(fn, pure=False)(shard, *args) for shard in shards]
    address = settings.cluster_address()
    if address:
        from distributed import Client

        with Client(address, set_as_default=False) as client:
            return iter(client.gather(client.compute(tasks)))
    return iter(dask.compute(*tasks, scheduler=settings.scheduler, num_workers=settings.workers))
