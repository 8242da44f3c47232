"""What `tunegate run` shows a person: one line per stage, and nothing from the libraries underneath.

While the flow runs, the process's stdout and stderr (file descriptors 1 and 2, so child processes, Dask
workers, C extensions and every library's logging and warnings too) go to the run's log file; the view
writes to the terminal it was given before that. On a terminal the view is live (rich): the finished stages
with their counts and times, the running one with a spinner, its elapsed time and a progress bar where it
has one (ingest batches, PII shards, training steps with loss and tokens/s, evaluation generations).
Elsewhere (a pipe, CI) it prints a plain line per finished stage and a progress line every few seconds.
``--verbose`` copies the libraries' output to the terminal's stderr as well.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from flows.stage_summaries import label

PLAIN_EVERY_S = 10.0


@contextmanager
def libraries_to(log_path: Path, verbose: bool = False) -> Iterator[IO[str]]:
    """Inside the block, fds 1 and 2 write to ``log_path`` (appending), and with ``verbose`` to the terminal's
    stderr as well; yields a stream on the terminal's stdout for the view. The descriptors are restored on
    the way out, error or not."""
    sys.stdout.flush()
    sys.stderr.flush()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    terminal = os.fdopen(os.dup(1), "w", encoding="utf-8", errors="replace", buffering=1)
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab", buffering=0) as log:
        copier = None
        if verbose:  # a pipe, copied to the log and to the terminal's stderr
            read_end, write_end = os.pipe()
            copier = threading.Thread(target=_copy, args=(read_end, log, saved[1]), daemon=True)
            copier.start()
            target = write_end
        else:
            target = log.fileno()
        os.dup2(target, 1)
        os.dup2(target, 2)
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            if copier is not None:
                os.close(write_end)
                copier.join(timeout=5)  # a child still holding the pipe open is not waited for
            os.close(saved[0])
            os.close(saved[1])
            terminal.close()


def _copy(read_end: int, log, terminal_fd: int) -> None:
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        try:
            while chunk := pipe.read(65536):
                log.write(chunk)
                os.write(terminal_fd, chunk)
        except (OSError, ValueError):  # the block ended while a child still wrote: the rest is dropped
            pass


class PlainView:
    """A line per finished stage, and where the running one is every PLAIN_EVERY_S seconds."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.stage: str | None = None
        self.detail = ""
        self.last = time.monotonic()

    def __enter__(self) -> PlainView:
        return self

    def __exit__(self, *exc) -> None:
        self.out.flush()

    def begin(self, stage: str) -> None:
        self.stage, self.detail, self.last = stage, "", time.monotonic()

    def update(self, done: int, total: int | None, detail: str | None) -> None:
        self.detail = self.detail if detail is None else detail
        now = time.monotonic()
        if now - self.last >= PLAIN_EVERY_S and self.stage:
            self.last = now
            of = f" {done}/{total}" if total else ""
            print(f"  {label(self.stage)}:{of} {self.detail}".rstrip(), file=self.out)

    def end(self, stage: str, detail: str, seconds: float, ok: bool) -> None:
        mark = "" if ok else "STOPPED "
        print(f"{label(stage):<17} {seconds:7.1f} s  {mark}{detail}".rstrip(), file=self.out)
        self.stage = None


class LiveView:
    """rich.live: finished stages above, the running one (spinner, elapsed, bar, detail) below them."""

    def __init__(self, out: IO[str]) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.spinner import Spinner

        self.console = Console(file=out, force_terminal=True)
        self.rows: list[tuple[bool, str, float, str]] = []
        self.stage: str | None = None
        self.started = time.monotonic()
        self.done, self.total, self.detail = 0, None, ""
        self.spinner = Spinner("dots", style="cyan")
        self.live = Live(get_renderable=self.render, console=self.console, refresh_per_second=4, transient=False,
                         redirect_stdout=False, redirect_stderr=False)

    def __enter__(self) -> LiveView:
        self.live.start()
        return self

    def __exit__(self, *exc) -> None:
        self.live.stop()

    def begin(self, stage: str) -> None:
        self.stage, self.started = stage, time.monotonic()
        self.done, self.total, self.detail = 0, None, ""

    def update(self, done: int, total: int | None, detail: str | None) -> None:
        self.done, self.total = done, total
        self.detail = self.detail if detail is None else detail

    def end(self, stage: str, detail: str, seconds: float, ok: bool) -> None:
        self.rows.append((ok, label(stage), seconds, detail))
        self.stage = None

    def render(self):
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=1)
        grid.add_column(min_width=16, no_wrap=True)
        grid.add_column(justify="right", min_width=7, no_wrap=True)
        grid.add_column(overflow="fold")
        for ok, name, seconds, detail in self.rows:
            grid.add_row(Text("✓", style="green") if ok else Text("✗", style="bold red"), name, f"{seconds:.1f} s",
                         Text(detail, style="" if ok else "red"))
        if self.stage:
            line = Table.grid(padding=(0, 1))
            parts = []
            if self.total:
                parts += [ProgressBar(total=self.total, completed=min(self.done, self.total), width=24),
                          f"{self.done}/{self.total}"]
            parts.append(Text(self.detail, style="dim"))
            line.add_row(*parts)
            grid.add_row(self.spinner, Text(label(self.stage), style="bold"),
                         f"{time.monotonic() - self.started:.0f} s", line)
        return grid


def view_for(out: IO[str]) -> PlainView | LiveView:
    """The live view on a terminal (unless TERM=dumb), plain lines elsewhere."""
    if out.isatty() and os.environ.get("TERM") != "dumb":
        return LiveView(out)
    return PlainView(out)
