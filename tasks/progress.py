"""Progress of long stages: a rich bar on a terminal, a log line every few seconds elsewhere.

The log lines go to the ``tunegate`` logger, which the CLI hands to Prefect (PREFECT_LOGGING_EXTRA_LOGGERS),
so they also show in the flow run's logs in the UI.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("tunegate")


def track(items: Iterable[T], label: str, total: int | None = None, every_s: float = 5.0) -> Iterator[T]:
    """Yield ``items`` while showing how far along they are."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if sys.stderr.isatty():
        from rich.progress import track as rich_track

        yield from rich_track(items, description=label, total=total, transient=True)
        return
    start = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            of = f"/{total}" if total else ""
            log.info("%s: %d%s in %.0f s", label, done, of, now - start)
    if time.monotonic() - start >= every_s:
        log.info("%s: %d done in %.0f s", label, done, time.monotonic() - start)
