"""Drift-triggered retraining a team can trust (issue 18, "done when"), against a real Prefect server and
`tunegate serve`, nothing stubbed: a @champion of dataset corpus is trained by `tunegate run` (its first run, which
freezes the dataset's evaluation set); then a drop resampled from the champion's own training data starts
nothing, and a drifted drop starts a retrain that trains on the champion's documents plus the drop's and is
judged on the frozen set, with the drop's own held-out part scored apart."""

from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TUNEGATE, tiny_config
from helpers.drift_data import drifted_texts, undrifted_texts, write_jsonl
from helpers.processes import client, prefect_server, start, stop, wait_for
from helpers.served import client_env, drift_report, is_final, retrain_runs_by_automation, run_monitor, wait_registered
from tasks.core import snapshot


@pytest.fixture(scope="module")
def champion_served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("drift-retrain")
    home = tmp / "state"
    config = tiny_config()
    config["data"]["paths"] = [str(ROOT / "examples/corpus")]
    config["dask"] = {"scheduler": "sync"}
    config_file = tmp / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    (tmp / "prefect").mkdir()
    with prefect_server(tmp / "prefect") as api:
        env = client_env(api, home, PREFECT_RUNNER_POLL_FREQUENCY="1")
        first = subprocess.run([str(TUNEGATE), "run", "--config", str(config_file), "--run-id", "first"], cwd=ROOT,
                               env=env, capture_output=True, text=True, timeout=900)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        log = tmp / "serve.log"
        proc = start([str(TUNEGATE), "serve", "--config", str(config_file), "--dataset", "corpus"], env, log)
        try:
            wait_registered(api, proc, log, "config_file", str(config_file.resolve()))
            report = json.loads((home / "runs/first/report.json").read_text())
            yield {"api": api, "home": home, "tmp": tmp, "proc": proc, "log": log, "first": report}
        finally:
            stop(proc)


def started_by(api: str, drop: Path) -> list:
    return [r for r in retrain_runs_by_automation(api) if r.parameters["config"]["data"]["paths"] == [str(drop)]]


def test_a_drop_resampled_from_the_champions_data_starts_nothing(champion_served):
    served = champion_served
    # 40 documents drawn from what the champion was trained on (before PII scrubbing, as the monitor reads it),
    # each with two words swapped: new documents of exactly the same kind
    trained_on = snapshot.read_table(served["first"]["snapshots"]["dedup"]["path"]).column("text").to_pylist()
    drop = write_jsonl(served["tmp"] / "drops" / "resampled.jsonl",
                       undrifted_texts(random.Random(7).sample(trained_on, 40)))
    fr = run_monitor(served, drop)
    assert fr.state.is_completed(), fr.state
    rep = drift_report(served["home"], fr)
    assert rep["reference"]["kind"] == "champion" and rep["decision"] == "no drift", rep["decision"]
    assert not rep["drift"] and "event" not in rep
    time.sleep(5)  # an event would have started a run by now (it takes well under a second)
    assert started_by(served["api"], drop) == []


def test_a_drifted_drop_retrains_on_the_champions_data_and_the_drop_judged_on_the_frozen_set(champion_served):
    served, first = champion_served, champion_served["first"]
    api, home = served["api"], served["home"]
    drop = write_jsonl(served["tmp"] / "drops" / "ops.jsonl", drifted_texts())
    fr = run_monitor(served, drop)
    rep = drift_report(home, fr)
    assert rep["decision"] == "drift" and rep["event"]["resource"] == "tunegate.dataset.corpus"
    [run] = wait_for(lambda: started_by(api, drop), 60, "the retrain started by the drift trigger", served["proc"],
                     served["log"])
    wait_for(lambda: is_final(api, run), 900, "the drift-started retrain to finish", served["proc"], served["log"], every=2)
    with client(api) as c:
        state = c.read_flow_run(run.id).state
    assert state.is_completed() and state.name in ("Completed", "Blocked"), state
    report = json.loads((home / "runs" / run.parameters["run_id"] / "report.json").read_text())
    assert report["status"] in ("promoted", "blocked"), report.get("error")

    # trained on the champion's documents plus the drop's
    history = report["history"]
    assert history["merged"] and [p["version"] for p in history["parents"]] == [first["model"]["version"]]
    curated = snapshot.read_table(report["snapshots"]["pii"]["path"]).to_pylist()
    drop_ids = {d["doc_id"] for d in curated if d["source"].endswith("ops.jsonl")}
    assert len(drop_ids) == 40
    train = set(json.loads(Path(report["dataset"]["split"]).read_text())["train"])
    champion_train = set(json.loads(Path(first["dataset"]["split"]).read_text())["train"])
    assert champion_train <= train and len(drop_ids & train) >= 30

    # judged on the frozen set the champion's run made, which stays out of training
    frozen = first["eval_set"]
    assert frozen["frozen_by_this_run"] and report["eval_set"]["label"] == frozen["label"]
    assert not report["eval_set"]["frozen_by_this_run"] and report["evaluation"]["eval_set"] == frozen["label"]
    held = {json.loads(line)["doc_id"] for line in Path(frozen["path"]).read_text().splitlines()}
    assert not held & train
    assert {g["eval_set_label"] for g in report["gates"]} == {frozen["label"]}
    assert set(report["evaluation"]) >= {"base", "candidate", "champion"}
    # the drop's own held-out part is scored apart
    new = report["evaluation"]["new_data"]
    assert new["evaluated"] and new["rows"] >= 1, new
    rows = [json.loads(line) for line in Path(new["file"]).read_text().splitlines()]
    assert {r["doc_id"] for r in rows} <= drop_ids - train and set(new) >= {"base", "candidate", "champion"}
    md = (home / "runs" / run.parameters["run_id"] / "report.md").read_text()
    assert f"Evaluation set: **{frozen['label']}**" in md and "### The new data's held-out part" in md
