"""What `tunegate run` shows a person (issue 12, item 4), part by part: progress in what the work holds, the live
view on a terminal, and the libraries' output, child processes' included, kept off the terminal.
(The whole run's output is checked in tests/test_retrain_tiny.py and tests/test_empty_inputs.py.)"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

from conftest import ROOT


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def begin(self, stage):
        self.calls.append(("begin", stage))

    def update(self, done, total, detail):
        self.calls.append(("update", done, total, detail))

    def end(self, stage, detail, seconds, ok):
        self.calls.append(("end", stage, detail, ok))


def test_shard_progress_counts_what_the_shards_hold():
    from tasks.core import progress
    from tasks.core.executor import DaskSettings, map_shards

    with progress.use(Recorder()) as view:
        out = list(map_shards(str.upper, ["ab", "c", "def"], DaskSettings(scheduler="sync"), sizes=[2, 1, 3],
                              unit="files"))
    assert out == ["AB", "C", "DEF"]
    assert view.calls == [("update", 0, 6, "files"), ("update", 2, 6, None), ("update", 3, 6, None),
                          ("update", 6, 6, None)]


def test_the_live_view_shows_finished_stages_and_the_running_one_with_its_bar():
    from rich.console import Console

    from flows.terminal import LiveView

    view = LiveView(io.StringIO())
    view.begin("ingest")
    view.end("ingest", "38 documents from 12 files", 5.8, True)
    view.begin("contract_raw")
    view.end("contract_raw", "failed: too few rows", 0.4, False)
    view.begin("train")
    view.update(3, 16, "loss 2.3141 180 tokens/s")
    console = Console(file=io.StringIO(), width=120, record=True)
    console.print(view.render())
    text = console.export_text()
    lines = text.splitlines()
    assert lines[0].split() == ["✓", "ingest", "5.8", "s", "38", "documents", "from", "12", "files"]
    assert lines[1].split()[:4] == ["✗", "raw", "contract", "0.4"] and "failed: too few rows" in lines[1]
    assert "train" in lines[2] and "3/16" in lines[2] and "loss 2.3141 180 tokens/s" in lines[2]
    assert "━" in lines[2]  # the bar


def test_library_output_goes_to_the_log_and_the_view_to_the_terminal(tmp_path):
    """fds 1 and 2 of the process and of its children go to the log; the stream the block yields, and what is
    printed after it, reach the real stdout."""
    script = textwrap.dedent(f"""
        import os, subprocess, sys, logging
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from flows.terminal import libraries_to
        with libraries_to(Path({str(tmp_path / "run.log")!r})) as terminal:
            print("a library print")
            logging.getLogger("lib").warning("a library warning")
            os.write(2, b"a C extension on fd 2\\n")
            subprocess.run([sys.executable, "-c", "print('a child process')"])
            print("the view", file=terminal)
        print("after the block")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["the view", "after the block"] and proc.stderr == ""
    log = (tmp_path / "run.log").read_text()
    for said in ("a library print", "a library warning", "a C extension on fd 2", "a child process"):
        assert said in log, said
