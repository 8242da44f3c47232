"""Progress of long work, told to whoever shows it.

The pipeline says when a stage ends (``end``) and how far the running one is (``update``, ``track``). The
``tunegate`` command installs a view (``flows/terminal.py``: one live line per stage on a terminal, plain lines
otherwise) with ``use``; without one (a library call, a Prefect worker) progress becomes a log line every few
seconds on the ``tunegate`` logger, which the CLI hands to Prefect (PREFECT_LOGGING_EXTRA_LOGGERS) so it also
shows in the flow run's logs in the UI.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

T = TypeVar("T")
log = logging.getLogger("tunegate")


class View(Protocol):
    def begin(self, stage: str) -> None: ...

    def update(self, done: int, total: int | None, detail: str | None) -> None: ...

    def end(self, stage: str, detail: str, seconds: float, ok: bool) -> None: ...


_view: View | None = None
_last_log, _detail = 0.0, ""


@contextmanager
def use(view: View) -> Iterator[View]:
    """Send progress to ``view`` inside the block."""
    global _view
    before, _view = _view, view
    try:
        yield view
    finally:
        _view = before


def begin(stage: str) -> None:
    if _view is not None:
        _view.begin(stage)


def end(stage: str, detail: str = "", seconds: float = 0.0, ok: bool = True) -> None:
    """A stage finished (``ok``: as it should; else it blocked or failed the run). Also a log line, so the
    flow run's logs in the Prefect UI have it."""
    if _view is not None:
        _view.end(stage, detail, seconds, ok)
    log.log(logging.INFO if ok else logging.WARNING, "%s: %s (%.1f s)", stage, detail or "done", seconds)


def update(done: int, total: int | None = None, detail: str | None = None, every_s: float = 5.0) -> None:
    """How far the running stage is: ``done`` of ``total`` items; ``detail`` (None keeps the last one)."""
    global _last_log, _detail
    if _view is not None:
        _view.update(done, total, detail)
        return
    _detail = _detail if detail is None else detail
    now = time.monotonic()
    if now - _last_log >= every_s or (total is not None and done >= total):
        _last_log = now
        of = f"/{total}" if total else ""
        log.info("%s%d%s", f"{_detail}: " if _detail else "", done, of)


def track(items: Iterable[T], label: str, total: int | None = None, sizes: list[int] | None = None) -> Iterator[T]:
    """Yield ``items`` while telling how far along they are: in items, or with ``sizes`` (one per item: the
    files of a batch, the documents of a shard) in what they hold."""
    if sizes is not None:
        total = sum(sizes)
    elif total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    update(0, total, label)
    done = 0
    for i, item in enumerate(items):
        yield item
        done += sizes[i] if sizes is not None else 1
        update(done, total)
