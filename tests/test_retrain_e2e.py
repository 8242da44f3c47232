"""The default end to end, as a new user runs it: `tunegate run` fine-tunes SmolLM2-135M-Instruct into Kestrel
Robotics' support assistant, and the gates judge real ability.

`tunegate prepare` (what `make install` runs) readies the state folder; the first run is then promoted: its answers to the held-out instruction records beat the base model's by a clear,
significant margin (paired bootstrap), it predicts the company's held-out text better, and no known raw secret
or canary comes back out. A regression (the same run with a learning rate far too high) is then blocked by the
task gates and leaves @champion where it was; the base and the champion are not evaluated again (their results
come from the evaluation cache).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, readme_commands, run_cli

NAME = "tunegate-demo"


def champion(home: Path) -> str:
    import mlflow

    uri = f"sqlite:///{home / 'mlflow.db'}"
    return str(mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(NAME, "champion").version)


@pytest.fixture(scope="module")
def demo(tmp_path_factory, extensions_dir):
    home = tmp_path_factory.mktemp("state")
    prepared = run_cli("prepare", home=home, timeout=600)  # what `make install` does after fetching the GGUF
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    assert "base model SmolLM2-135M-Instruct.Q4_1.gguf (dequantized)" in prepared.stdout
    assert (home / "prefect" / "prefect.db").stat().st_size > 0 and "MLflow store: sqlite:///" in prepared.stdout
    # the README's quick start, verbatim: `make demo` (the install it starts with is done: make checks, -q)
    [command] = [c for c in readme_commands("## Quick start") if c.startswith("make demo")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLFLOW_TRACKING", "MAKE", "MFLAGS"))}
    env["TUNEGATE_HOME"] = str(home)
    assert subprocess.run(["make", "-q", "install"], cwd=ROOT, env=env).returncode == 0, "make install is not done"
    proc = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    [run] = list((home / "runs").iterdir())
    report = json.loads((run / "report.json").read_text())
    assert proc.returncode == 0, f"{report.get('blocked_by')} {report.get('error')}\n{proc.stderr[-3000:]}"
    return home, proc, report


@pytest.fixture(scope="module")
def regression(demo, tmp_path_factory):
    """The demo's config with a learning rate far too high: two steps of two sequences wreck the model (the same
    packed data and evaluation settings, so base and champion come from the evaluation cache)."""
    from flows.config import load_config

    home = demo[0]
    tmp = tmp_path_factory.mktemp("regression")
    config = load_config(ROOT / "configs/demo.yaml").model_dump(mode="json")
    config["train"].update(learning_rate=0.05, max_steps=2, micro_batch_size=2, warmup_steps=0, checkpoint_every=2)
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    proc = run_cli("run", "--config", str(tmp / "config.yaml"), "--run-id", "regression", home=home, timeout=1800)
    report = json.loads((home / "runs/regression/report.json").read_text())
    return home, proc, report


def test_the_fine_tune_is_measurably_better_at_the_task_and_is_promoted(demo):
    home, proc, report = demo
    assert report["status"] == "promoted" and report["blocked_by"] == []
    assert report["base_model"]["description"] == "SmolLM2-135M-Instruct.Q4_1.gguf (dequantized)"
    assert champion(home) == report["model"]["version"] and "promoted" in proc.stdout.strip().splitlines()[-1]
    ev = report["evaluation"]
    base, cand = ev["base"], ev["candidate"]
    assert ev["scored_sets"] == ["task"]  # the held-out instruction records
    assert cand["rougeL"] > base["rougeL"] + 10 and cand["exact_match"] >= base["exact_match"]
    gain = ev["deltas"]["base"]["rougeL"]
    assert gain["low"] > 0 and gain["n"] >= 30  # the whole interval above zero, over enough answers
    assert cand["bits_per_byte"] < base["bits_per_byte"]
    gates = {g["name"]: g for g in report["gates"]}
    assert gates["task_beats_base"]["passed"] and gates["task_beats_base"]["delta"]["low"] > 10


def test_no_secret_of_the_raw_data_or_canary_comes_back_out(demo):
    _, _, report = demo
    ev = report["evaluation"]
    by_type = ev["extraction"]["candidate"]["by_type"]
    assert {"PHONE_NUMBER", "EMAIL_ADDRESS", "CREDIT_CARD"} <= set(by_type)
    assert all(v["probed"] >= 1 and v["extracted"] == 0 for v in by_type.values())
    assert len(ev["canaries"]["candidate"]) == 2 and not any(c["extracted"] for c in ev["canaries"]["candidate"])
    assert ev["candidate"]["pii_leaked"] <= ev["base"]["pii_leaked"]
    planted = json.loads((ROOT / "examples/PLANTED.json").read_text())
    written = (Path(report["config"]).parent / "report.json").read_text() + \
        (Path(report["config"]).parent / "report.md").read_text()
    assert not [s["value"] for s in planted["extraction"] if s["value"] in written]  # secrets are masked


def test_the_report_shows_answers_side_by_side_and_what_decided(demo):
    home, _, report = demo
    md = (home / "runs" / report["run_id"] / "report.md").read_text()
    assert "## What decided" in md and "All 8 gates passed" in md
    assert "### What changed: differences on the held-out answers" in md and "candidate − base | rougeL" in md
    assert "## Shadow comparison: answers side by side" in md
    assert "| set | prompt | reference | base answer | challenger answer |" in md
    assert "### Extraction of known raw secrets" in md and "### Canaries" in md
    answers = report["evaluation"]["generations"]
    first = answers["candidate"][0]
    assert first["set"] == "task" and first["reference"] and answers["base"][0]["prompt"] == first["prompt"]


def test_a_regression_is_blocked_by_the_task_gate_and_the_champion_stays(demo, regression):
    home, _, first = demo
    _, proc, report = regression
    assert proc.returncode == 3, f"{report.get('status')} {report.get('error')}\n{proc.stderr[-2000:]}"
    assert report["status"] == "blocked"
    failed = {g["name"] for g in report["gates"] if not g["passed"]}
    assert {"task_beats_base", "task_not_worse_than_champion"} <= failed
    assert any(b.startswith("gate task_not_worse_than_champion failed: rougeL") for b in report["blocked_by"])
    assert champion(home) == first["model"]["version"]
    ev = report["evaluation"]
    assert ev["champion_version"] == first["model"]["version"]
    assert ev["candidate"]["rougeL"] < ev["champion"]["rougeL"] - 2
    assert set(ev["reused"]) == {"base", "champion"}  # scored by the first run on the same inputs
    assert ev["base"] == first["evaluation"]["base"] and ev["champion"] == first["evaluation"]["candidate"]
    md = (home / "runs/regression/report.md").read_text()
    assert "Blocked by" in md
    # data and evaluations came from earlier work; the report says why training did not, and how it could
    assert "- training: trained again. With `train.reuse: true`" in md.split("## Reused from earlier runs", 1)[1]
