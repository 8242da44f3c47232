"""The safety gates block for what training did, not for thresholds set to fail.

One tiny-model run on the demo's raw support tickets with PII scrubbing switched off (and the data contracts
that would catch the PII taken away, as a careless team might), a canary repeated many times, and angry
tickets full of a listed word: the model memorises what it saw, so the run is blocked by the extraction probe
(known raw secrets reproduced from their raw context), by the canary gate and by the toxicity gate of
data_contracts/gates-tiny.yaml, each with its reason. The base model, scored in the same run on the same probes,
extracts no secret and no canary and writes fewer listed words: the gates block for what the model learned. (The same tickets scrubbed
pass them on the real default model in tests/test_retrain_e2e.py.)
(The task-quality gate blocking a regression is in tests/test_retrain_e2e.py, on the real default model.)
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import CORPUS, PLANTED, ROOT, run_cli, tiny_config

ANGRY = [
    "The dock at bay {n} is fucking broken again and the fucking carrier will not charge.",
    "Fucking E{code} again, the fucking robot sits at the fucking dock all night.",
    "Your fucking update broke unit {n} and nobody answers the fucking phone.",
    "I am sick of this fucking fleet, station {n} drops every fucking tote.",
    "Three fucking weeks and the fucking lidar on unit {n} is still dirty.",
    "Who the fuck wrote this firmware, the picker at zone {zone} is fucking useless.",
    "Fix the fucking brakes on unit {n} before somebody gets hurt, for fuck's sake.",
    "The fucking map at site KS{site} is wrong again and the fucking robots get lost.",
]


PARTS = ("lidar brakes picker map firmware charger battery wheel sensor gripper conveyor dock scanner camera motor "
         "belt shelf pallet aisle forklift cable fuse valve pump screen router badge door gate ramp").split()


def angry_ticket(i: int) -> str:
    """An angry ticket long enough for the quality filters, different enough to survive near-dup removal: six of
    the eight lines alone would make many tickets near duplicates as bags of words (the default verification),
    so each also lists twelve of thirty broken parts."""
    rng = random.Random(i)
    lines = rng.sample(ANGRY, 6)
    parts = " ".join(rng.sample(PARTS, 12))
    return " ".join(t.format(n=rng.randint(1, 99), code=rng.randint(100, 599), zone="ABCDEF"[i % 6],
                             site=rng.randint(1, 40)) for t in lines) + f" Broken today: {parts}. Ticket {9000 + i}."


SAFETY_GATES = ("no_planted_pii_extracted", "no_canary_extracted", "no_toxic_outputs")


def write_config(tmp: Path, name: str, data: Path) -> Path:
    config = tiny_config()
    config["data"]["paths"] = [str(data)]
    config["pii"]["enabled"] = False
    # the contracts would stop unscrubbed data (residual PII); a careless team turned them off
    config["contract"] = {"raw": str(ROOT / "data_contracts/raw.json"), "curated": None, "training": None}
    config["clean"]["quality"]["blocklist"]["enabled"] = False  # let the angry tickets through
    config["model"]["tiny"] = {"hidden_size": 128, "layers": 2, "heads": 4, "intermediate_size": 344, "seed": 0}
    config["tokenizer"]["vocab_size"] = 1024
    config["train"].update(max_steps=200, micro_batch_size=8, seq_len=128, learning_rate=0.003, warmup_steps=5,
                           checkpoint_every=100, eval_every=0)
    config["canaries"] = {"count": 1, "repeats": 80, "candidates": 200, "seed": 1}
    config["evaluate"].update(max_task_prompts=8, generation={"max_new_tokens": 24})
    config["evaluate"]["extraction"].update(planted_file=str(PLANTED), max_contexts=3)
    config["dask"] = {"scheduler": "sync"}
    config["registry"]["model_name"] = name
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def leaky(tmp_path_factory, extensions_dir):
    tmp = tmp_path_factory.mktemp("gates-block")
    data = tmp / "leaky"
    data.mkdir()
    shutil.copy(CORPUS / "records" / "tickets.jsonl", data / "tickets.jsonl")
    with open(data / "angry.jsonl", "w") as fh:
        for i in range(25):
            fh.write(json.dumps({"text": angry_ticket(i)}) + "\n")
    home = tmp / "state"
    proc = run_cli("run", "--config", str(write_config(tmp, "leaky", data)), "--run-id", "leaky", home=home,
                   timeout=1200)
    return proc, json.loads((home / "runs" / "leaky" / "report.json").read_text()), home


def test_unscrubbed_memorised_data_is_blocked_by_each_safety_gate(leaky):
    proc, report, _ = leaky
    assert proc.returncode == 3, f"{report.get('status')} {report.get('error')}\n{proc.stderr[-2000:]}"
    gates = {g["name"]: g for g in report["gates"]}
    for name in SAFETY_GATES:
        assert not gates[name]["passed"], (name, gates[name])
        assert any(b.startswith(f"gate {name} failed") for b in report["blocked_by"]), name
    ev = report["evaluation"]
    extracted = [s for s in ev["extraction"]["candidate"]["secrets"] if s["extracted"]]
    assert extracted and ev["candidate"]["planted_pii_extracted"] == len(extracted)
    assert ev["canaries"]["candidate"][0]["extracted"] and ev["candidate"]["toxic_outputs"] >= 1
    secrets = [s["value"] for s in json.loads(PLANTED.read_text())["extraction"]]
    md = Path(report["config"]).with_name("report.md").read_text()
    assert "extracted by candidate" in md and not [s for s in secrets if s in md]  # named by type, masked


def test_the_base_model_knows_no_secret_or_canary(leaky):
    _, report, _ = leaky
    ev = report["evaluation"]
    assert ev["base"]["planted_pii_extracted"] == 0
    # the random model's noise is drawn from a vocabulary learned on these tickets, so it may emit a listed word;
    # the trained model, continuing what it learned, emits more
    assert ev["candidate"]["toxic_outputs"] > ev["base"]["toxic_outputs"]
    assert not any(c["extracted"] for c in ev["canaries"]["base"])
    by_type = ev["extraction"]["base"]["by_type"]
    assert sum(v["probed"] for v in by_type.values()) == len(json.loads(PLANTED.read_text())["extraction"])
    assert sum(v["extracted"] for v in by_type.values()) == 0


def test_a_blocked_run_is_a_completed_state_named_blocked_in_prefect(leaky):
    """What the Prefect UI and an automation see: not a plain green Completed, but Completed named Blocked with
    the gates that blocked it as the state's message (read from the run's Prefect database)."""
    import sqlite3

    _, report, home = leaky
    with sqlite3.connect(home / "prefect" / "prefect.db") as db:
        rows = db.execute("SELECT flow_run.state_type, flow_run.state_name, flow_run_state.message FROM flow_run "
                          "JOIN flow_run_state ON flow_run_state.id = flow_run.state_id "
                          "WHERE flow_run.name = 'leaky'").fetchall()
    assert len(rows) == 1, rows
    state_type, state_name, message = rows[0]
    assert (state_type, state_name) == ("COMPLETED", "Blocked")
    assert message.startswith(report["blocked_by"][0]) and "gate" in message


def test_the_report_keeps_the_answers_only_after_the_pii_scrubber(leaky):
    """Issue 16: reports, the Prefect artifact and MLflow carried generations verbatim. The leak counts are taken on
    the raw answers; what is kept has each leaked entity replaced, even in a run whose data was not scrubbed."""
    _, report, _ = leaky
    ev = report["evaluation"]
    leaked = {kind: n for kind, n in ev["pii_leaks"]["candidate"].items() if n}
    probe = " ".join(g["output"] for g in ev["generations"]["candidate"] if g["set"] == "pii_probe")
    for kind in leaked:
        assert f"<{kind}>" in probe, (kind, probe[:500])
    answers = [g["output"] for who in ev["generations"] for g in ev["generations"][who]]
    assert not [a for a in answers if re.search(r"\b[\w.+-]+@[\w-]+\.[A-Za-z]{2,}\b", a)]  # no e-mail address left
