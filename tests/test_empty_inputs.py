"""Inputs where nothing survives are a normal outcome, not a crash (issue 12, item 1).

A folder whose every file is unreadable gives an empty raw snapshot: the raw contract's minimum row count
stops the run there, with its reason. A folder whose every document is too short gives an empty cleaned
snapshot: dedup, PII scrubbing and the curated contract take zero rows, and the curated contract stops the
run before training. Neither run registers anything; each exits 3 with one line naming the failed
expectation.
"""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from conftest import CORPUS, run_cli, tiny_config


def _run(tmp, home, data, run_id, *options):
    config = tiny_config()
    config["data"]["paths"] = [str(data)]
    path = tmp / f"{run_id}.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = run_cli("run", "--config", str(path), "--run-id", run_id, *options, home=home)
    return proc, json.loads((home / "runs" / run_id / "report.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("empty")
    home = tmp / "state"
    unreadable = tmp / "unreadable"
    unreadable.mkdir()
    shutil.copy(CORPUS / "office" / "broken.pdf", unreadable / "broken.pdf")
    (unreadable / "blob.bin").write_bytes(bytes(range(256)) * 8)
    short = tmp / "short"
    short.mkdir()
    for i, text in enumerate(["ok", "Too short to keep.", "Three words here"]):
        (short / f"note{i}.txt").write_text(text)
    return {"unreadable": _run(tmp, home, unreadable, "unreadable", "--verbose"), "short": _run(tmp, home, short, "short"),
            "home": home}


def _assert_stopped(proc, report, kind: str, home) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 3, (proc.stdout + proc.stderr)[-3000:]
    assert report["status"] == "blocked" and report["stopped_at"] == f"contract_{kind}", report.get("error")
    assert any("expect_table_row_count_to_be_between" in b for b in report["blocked_by"]), report["blocked_by"]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("blocked before training: ") and "expect_table_row_count_to_be_between" in last
    assert "nothing registered" in last
    assert "model" not in report and not (home / "runs" / report["run_id"] / "train").exists()


def test_every_file_unreadable_is_stopped_by_the_raw_contract(runs):
    proc, report = runs["unreadable"]
    _assert_stopped(proc, report, "raw", runs["home"])
    assert report["counts"]["documents"] == 0 and report["counts"]["quarantined"] == 2
    assert list(report["snapshots"]) == ["ingest"]  # nothing after the raw contract ran


def test_every_document_too_short_goes_through_every_stage_with_zero_rows(runs):
    proc, report = runs["short"]
    _assert_stopped(proc, report, "curated", runs["home"])
    counts = report["counts"]
    assert counts["documents"] == 3 and counts["dropped_too_short"] == 3 and counts["curated_documents"] == 0
    assert {k: s["rows"] for k, s in report["snapshots"].items()} == {"ingest": 3, "clean": 0, "dedup": 0, "pii": 0}
    assert counts["exact_duplicates"] == 0 and counts["near_duplicates"] == 0
    md = (runs["home"] / "runs/short/report.md").read_text()
    assert "stopped at the curated contract, before training" in md


def test_the_stage_that_stopped_the_run_says_why_and_verbose_shows_the_library_logs(runs):
    """Issue 12, item 4: the stopping stage's line names the failed expectation; without --verbose nothing
    else reaches the terminal, with it Prefect's own log lines do (they are in run.log either way)."""
    short, _ = runs["short"]
    [stopped] = [ln for ln in short.stdout.splitlines() if ln.startswith("curated contract ")]
    assert "STOPPED curated contract (curated.json): " in stopped and "expect_table_row_count_to_be_between" in stopped
    assert short.stderr == "" and "Task run" not in short.stdout
    verbose, _ = runs["unreadable"]
    assert "Beginning flow run 'unreadable'" in verbose.stderr and "Task run" not in verbose.stdout
    for run_id in ("short", "unreadable"):
        assert f"Beginning flow run '{run_id}'" in (runs["home"] / "runs" / run_id / "run.log").read_text()
