"""The pipeline end to end on the tiny model (configs/tiny.yaml) through the `tunegate` command: promoted, then
blocked by a contract; the registry commands, the pyfunc model, generate and merge on its champion.
(tests/test_retrain_e2e.py runs the real default, configs/demo.yaml.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import PLANTED, ROOT, run_cli, tiny_config
from tasks.core import snapshot

MAX_STEPS = yaml.safe_load((ROOT / "configs/tiny.yaml").read_text())["train"]["max_steps"]
NAME = "tunegate-tiny"


def champion(home: Path, name: str) -> str:
    import mlflow

    uri = f"sqlite:///{home / 'mlflow.db'}"
    return str(mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(name, "champion").version)


def aliases(home: Path, name: str, version: str) -> list[str]:
    import mlflow

    uri = f"sqlite:///{home / 'mlflow.db'}"
    return list(mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version(name, version).aliases)


@pytest.fixture(scope="module")
def demo(tmp_path_factory, extensions_dir):
    home = tmp_path_factory.mktemp("state")
    # as the README's recipe: `tunegate init` writes the config with absolute paths; the run starts elsewhere
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    made = run_cli("init", str(elsewhere / "mine.yaml"), "--from", "configs/tiny.yaml", home=home)
    assert made.returncode == 0, made.stderr
    proc = run_cli("run", "--config", "mine.yaml", "--run-id", "demo", home=home, cwd=elsewhere)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((home / "runs/demo/report.json").read_text())
    return home, proc, report


def failing_contract_run(home: Path, tmp: Path, run_id: str, data: list[str] | None = None, **contract):
    """A tiny run on the demo's data whose curated contract cannot pass (at least 100,000 rows), with the
    contract settings given (on_failure, other suites)."""
    suite = json.loads((ROOT / "data_contracts/curated.json").read_text())
    for e in suite["expectations"]:
        if e["type"] == "expect_table_row_count_to_be_between":
            e["kwargs"]["min_value"] = 100_000
    (tmp / "suite.json").write_text(json.dumps(suite))
    config = tiny_config()
    config["contract"].update(curated=str(tmp / "suite.json"), **contract)
    if data is not None:
        config["data"]["paths"] = data
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    proc = run_cli("run", "--config", str(tmp / "config.yaml"), "--run-id", run_id, home=home)
    return proc, json.loads((home / "runs" / run_id / "report.json").read_text())


@pytest.fixture(scope="module")
def blocked(demo, tmp_path_factory):
    home, _, first = demo
    # continue: the run trains, evaluates and registers its model as @challenger despite the failed contract
    proc, report = failing_contract_run(home, tmp_path_factory.mktemp("blocked"), "blocked", raw=None, training=None,
                                        on_failure="continue")
    return home, proc, report, first


@pytest.fixture(scope="module")
def stopped(demo, tmp_path_factory):
    """The same failing contract under the default contract.on_failure (stop)."""
    home, _, first = demo
    proc, report = failing_contract_run(home, tmp_path_factory.mktemp("stopped"), "stopped")
    return home, proc, report, first


def test_demo_run_is_promoted_to_champion(demo):
    home, proc, report = demo
    assert report["status"] == "promoted" and report["blocked_by"] == []
    model = report["model"]
    assert model["name"] == NAME
    assert set(model["aliases"]) >= {"champion", "challenger"}
    assert champion(home, model["name"]) == model["version"]
    assert "promoted" in proc.stdout.strip().splitlines()[-1]


STAGE_LINE = re.compile(r"^(\S.{16}) +(\d+\.\d) s  (.*)$")
LIBRARY_NOISE = ("INFO", "WARNING", "Task run", "Flow run", "\x1b[", "accelerator", "Traceback", "mlflow", "distributed")


def test_the_terminal_shows_a_line_per_stage_and_the_libraries_logs_go_to_the_run_log(demo):
    """Issue 12, item 4: stdout (not a terminal here) holds one line per stage with what it did, progress lines
    and the summary; nothing from Prefect, Dask, MLflow or DeepSpeed reaches stdout or stderr."""
    from flows.stage_summaries import STAGES

    home, proc, report = demo
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == f"run demo: 1 data path(s), base model tiny (random); library logs in {home}/runs/demo/run.log"
    stages = {m[1].strip(): m[3] for m in map(STAGE_LINE.match, lines) if m}
    assert list(stages) == list(STAGES.values()), lines
    counts = report["counts"]
    assert stages["ingest"] == f"{counts['documents']} documents from {counts['files']} files, 1 quarantined"
    assert stages["raw contract"].startswith("passed: ") and stages["dedup"].endswith("near duplicates removed")
    assert re.fullmatch(rf"{MAX_STEPS} steps, loss \d+\.\d+ -> \d+\.\d+, \d+ tokens/s", stages["train"])
    assert stages["register"] == f"{NAME} v1: @challenger, @champion"
    assert all(ln.startswith("  ") for ln in lines[1:-1] if not STAGE_LINE.match(ln)), lines  # progress lines
    assert proc.stderr == ""
    for noise in LIBRARY_NOISE:
        assert noise not in proc.stdout, noise
    log = (home / "runs/demo/run.log").read_text()
    assert "Task run 'train" in log and "Finished in state Completed()" in log and "\x1b[" not in log


def test_the_mlflow_run_lasts_the_whole_flow_with_live_steps(demo):
    """Issue 12, item 8: the MLflow run opens when the flow starts (not at registration): its duration covers
    the stages, its parameters are the config's, each training step is logged once, and it ends FINISHED."""
    import mlflow
    from datetime import datetime

    home, _, report = demo
    uri = f"sqlite:///{home / 'mlflow.db'}"
    c = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = c.get_run(report["model"]["mlflow_run_id"])
    assert run.info.run_id == report["mlflow_run_id"] and run.info.status == "FINISHED"
    started = datetime.fromisoformat(report["started_at"]).timestamp() * 1000
    # opened as the flow began: before its first stage ended (started_at is to the second)
    assert started - 1000 <= run.info.start_time <= started + 1000 * (report["stage_seconds"]["ingest"] + 1)
    assert (run.info.end_time - run.info.start_time) / 1000 >= 0.9 * sum(report["stage_seconds"].values())
    assert run.data.params["train.max_steps"] == str(MAX_STEPS) and run.data.tags["status"] == "promoted"
    losses = c.get_metric_history(run.info.run_id, "loss")
    assert sorted(m.step for m in losses) == [r["step"] for r in map(json.loads, (home / "runs/demo/train/metrics.jsonl")
                                                                     .read_text().splitlines())]
    assert "candidate_perplexity" in run.data.metrics


def test_report_has_every_section(demo):
    home, _, report = demo
    for key in ("run_id", "status", "blocked_by", "counts", "contracts", "training", "evaluation", "gates", "model"):
        assert key in report, key
    counts = report["counts"]
    for key in ("files", "documents", "quarantined", "exact_duplicates", "near_duplicates", "pii_entities"):
        assert key in counts, key
    assert counts["quarantined"] == 1 and counts["exact_duplicates"] >= 1 and counts["near_duplicates"] >= 2
    assert {"EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD"} <= set(counts["pii_entities"])
    ev = report["evaluation"]
    assert ev["candidate"]["perplexity"] < ev["base"]["perplexity"]
    assert all(g["passed"] for g in report["gates"])
    md = (home / "runs/demo/report.md").read_text()
    assert "PROMOTED" in md and "| perplexity_improves_on_base |" in md
    assert [c["kind"] for c in report["contracts"]] == ["raw", "curated", "training"]
    assert all(c["passed"] for c in report["contracts"])
    assert "## Training contract `training.json` — passed" in md
    assert (home / "runs/demo/loss_curve.png").stat().st_size > 1000
    assert (home / "runs/demo/metrics_vs_champion.png").stat().st_size > 1000
    assert "## Shadow comparison" in md and "| no_pii_leaked | pii_leaked |" in md
    assert {"rougeL", "bleu", "chrf", "pii_leaked", "toxic_outputs"} <= set(ev["candidate"])
    assert "contract_raw" in report["stage_seconds"]


def test_metrics_has_one_line_per_step(demo):
    home, _, _ = demo
    rows = [json.loads(line) for line in (home / "runs/demo/train/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, MAX_STEPS + 1))
    assert all({"step", "loss", "tokens_per_s"} <= set(r) for r in rows)
    assert all(np.isfinite(r["loss"]) and r["tokens_per_s"] > 0 for r in rows)


def test_planted_duplicates_are_removed(demo):
    _, _, report = demo
    planted = json.loads(PLANTED.read_text())
    sources = snapshot.read_table(report["snapshots"]["pii"]["path"]).column("source").to_pylist()
    for dup in planted["exact_duplicates"] + planted["near_duplicates"]:
        assert dup["source"] not in sources, dup
        assert dup["of"] in sources, dup


def test_planted_pii_is_gone_from_curated_and_training_data(demo):
    from transformers import AutoTokenizer

    home, _, report = demo
    pii = json.loads(PLANTED.read_text())["pii"]
    curated = "\n".join(snapshot.read_table(report["snapshots"]["pii"]["path"]).column("text").to_pylist())
    raw = "\n".join(snapshot.read_table(report["snapshots"]["ingest"]["path"]).column("text").to_pylist())
    data = home / "runs/demo/data"
    tok = AutoTokenizer.from_pretrained(report["tokenizer"]["path"])
    trained_on = tok.decode(np.load(data / "train_blocks.npy").reshape(-1).tolist())
    held_out = (data / "eval.jsonl").read_text()
    assert sum(s in raw for s in pii) == len(pii)  # every planted string was there to begin with
    for s in pii:
        assert s not in curated, s
        assert s not in trained_on, s
        assert s not in held_out, s


def test_unreadable_file_is_quarantined_with_reason(demo):
    home, _, _ = demo
    rows = [json.loads(x) for x in (home / "runs/demo/quarantine/quarantine.jsonl").read_text().splitlines()]
    assert rows == [{"source": "corpus/office/broken.pdf", "reason": "corrupt PDF", "detail": rows[0]["detail"]}]


def test_failed_contract_blocks_and_leaves_champion(blocked):
    home, proc, report, first = blocked
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert report["status"] == "blocked"
    assert any("expect_table_row_count_to_be_between" in b for b in report["blocked_by"])
    assert "expect_table_row_count_to_be_between" in proc.stdout.strip().splitlines()[-1]
    name, version = report["model"]["name"], report["model"]["version"]
    assert version != first["model"]["version"]
    assert champion(home, name) == first["model"]["version"]
    assert aliases(home, name, version) == ["challenger"]


def test_failed_contract_stops_the_run_before_training_by_default(stopped):
    import mlflow

    home, proc, report, first = stopped
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert report["status"] == "blocked" and report["stopped_at"] == "contract_curated"
    assert any("expect_table_row_count_to_be_between" in b for b in report["blocked_by"])
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("blocked before training: ") and "nothing registered" in last
    assert "training" not in report and "model" not in report and "evaluation" not in report
    assert not (home / "runs/stopped/train").exists()
    from tasks.registry.register import MODEL_URI_TAG
    from tasks.registry.versions import RUN_TAG

    uri = f"sqlite:///{home / 'mlflow.db'}"
    c = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    # its MLflow run (open since the flow started) ended with the status and the report, and no model
    [run] = c.search_runs([e.experiment_id for e in c.search_experiments()], f"tags.`{RUN_TAG}` = 'stopped'")
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "blocked" and MODEL_URI_TAG not in run.data.tags
    assert "report.md" in [Path(f.path).name for f in c.list_artifacts(run.info.run_id, "report")]
    assert all(v.tags.get(RUN_TAG) != "stopped" for v in c.search_model_versions(f"name='{NAME}'"))
    assert champion(home, NAME) == first["model"]["version"]
    md = (home / "runs/stopped/report.md").read_text()
    assert "BLOCKED" in md and "stopped at the curated contract, before training" in md


def test_a_retrain_on_a_new_drop_keeps_the_champions_documents(demo, tmp_path):
    """data.history: cumulative (the default): a run on a drop alone curates the champion's training data plus the
    drop's documents, and the report names the parent snapshot. (The curated contract stops it before training:
    the data stages are what this is about.)"""
    from helpers.drift_data import drifted_texts, write_jsonl

    home, _, first = demo
    drop = write_jsonl(tmp_path / "drop" / "ops.jsonl", drifted_texts(n=6, seed=21))
    proc, report = failing_contract_run(home, tmp_path, "cumulative", data=[str(drop.parent)])
    assert report["stopped_at"] == "contract_curated", proc.stderr[-2000:]
    history = report["history"]
    assert history["merged"] and history["dataset"] == "corpus" and history["mode"] == "cumulative"
    [parent] = history["parents"]
    assert parent["version"] == champion(home, NAME) and parent["fingerprint"] == first["snapshots"]["pii"]["fingerprint"]
    assert report["snapshots"]["history"]["fingerprint"] == history["snapshot"]
    curated = snapshot.read_table(report["snapshots"]["pii"]["path"]).to_pylist()
    trained_on = snapshot.read_table(first["snapshots"]["pii"]["path"]).column("doc_id").to_pylist()
    assert set(trained_on) <= {d["doc_id"] for d in curated}  # every document the champion was trained on
    assert sum(d["source"].endswith("ops.jsonl") for d in curated) == 6  # and the drop's
    assert len(curated) == len(trained_on) + 6
    md = (home / "runs/cumulative/report.md").read_text()
    assert f"Dataset `corpus` (cumulative): @champion v{parent['version']}'s training data" in md


def test_every_run_of_the_dataset_is_judged_on_the_set_its_first_run_froze(blocked):
    """Issue 18, item 2: the demo run froze its held-out split as the dataset's evaluation set; the next run is
    scored on that set, its gates name it, and so does its registered version."""
    import mlflow

    home, _, report, first = blocked
    frozen = first["eval_set"]
    assert frozen["frozen_by_this_run"] and frozen["version"] == 1 and frozen["source"] == "run demo"
    assert frozen["instructions"] == first["dataset"]["eval_docs"] - frozen["documents"]
    assert report["eval_set"]["label"] == frozen["label"] and not report["eval_set"]["frozen_by_this_run"]
    assert report["evaluation"]["eval_set"] == frozen["label"]
    assert {g["eval_set_label"] for g in report["gates"]} == {frozen["label"]}
    uri = f"sqlite:///{home / 'mlflow.db'}"
    version = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version(NAME, report["model"]["version"])
    assert version.tags["eval_set"] == frozen["label"]
    assert f"Evaluation set: **{frozen['label']}**" in (home / "runs/blocked/report.md").read_text()


def test_second_run_reuses_the_snapshots(blocked):
    home, _, report, first = blocked
    for stage, snap in report["snapshots"].items():
        assert snap["reused"] is True, stage
        assert snap["fingerprint"] == first["snapshots"][stage]["fingerprint"]
        assert snap["seconds"] == first["snapshots"][stage]["seconds"] > 0  # the earlier run's work, recorded
    md = (home / "runs/blocked/report.md").read_text()
    section = md.split("## Reused from earlier runs", 1)[1].split("\n## ", 1)[0]
    saved = sum(s["seconds"] for s in first["snapshots"].values())
    assert f"- snapshots: ingest, clean, dedup, pii: same inputs, parameters and code as an earlier run (about {saved:.0f} s" in section
    evaluated = next(line for line in section.splitlines() if line.startswith("- evaluation: "))
    assert "base" in evaluated and "from the evaluation cache" in evaluated  # the same base, the same held-out data
    # configs/tiny.yaml has train.reuse: the same base, data blocks, tokenizer and settings as the demo's run
    assert report["training"]["reused"] is True and "- training: copied from the training cache" in section
    assert "## Reused from earlier runs" not in (home / "runs/demo/report.md").read_text()  # nothing to reuse at first


def test_models_promote_and_rollback_move_only_champion(blocked):
    home, _, report, first = blocked
    name, v1, v2 = first["model"]["name"], first["model"]["version"], report["model"]["version"]
    listing = run_cli("models", home=home)
    assert listing.returncode == 0 and "@champion" in listing.stdout and "blocked" in listing.stdout
    refused = run_cli("promote", v2, "--name", NAME, home=home)  # its run was blocked by a contract
    assert refused.returncode == 1 and champion(home, name) == v1
    assert refused.stderr.strip().startswith(f"error: {NAME} v{v2} was blocked by its run: ")
    assert "expect_table_row_count_to_be_between" in refused.stderr and "--force" in refused.stderr
    assert run_cli("promote", v2, "--name", NAME, "--force", home=home).returncode == 0
    assert champion(home, name) == v2 and "challenger" in aliases(home, name, v2)
    back = run_cli("rollback", "--name", NAME, home=home)
    assert back.returncode == 0 and f"v{v2} -> v{v1}" in back.stdout
    assert champion(home, name) == v1
    assert run_cli("rollback", "--name", NAME, home=home).returncode == 1  # nothing further back


def test_champion_loads_as_pyfunc_and_generates(demo):
    import mlflow

    home, _, report = demo
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{home / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f"models:/{report['model']['name']}@champion")
    out = model.predict(["### Instruction:\nRoute this ticket.", "The dock"], params={"max_new_tokens": 8})
    assert len(out) == 2 and all(isinstance(o, str) and o for o in out)


def test_generate_command_uses_the_champion(demo):
    """`tunegate generate` reads the version's folders as files (no unpickling) and continues a prompt exactly as
    the registered pyfunc does."""
    import mlflow

    home, _, report = demo
    proc = run_cli("generate", "The dock", "--name", NAME, "--max-new-tokens", "12", "--temperature", "1.0", "--seed",
                   "1", home=home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{home / 'mlflow.db'}")
    pyfunc = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    [expected] = pyfunc.predict(["The dock"], params={"max_new_tokens": 12, "temperature": 1.0, "seed": 1})
    assert proc.stdout.strip() == expected.strip() and expected.strip()
    assert run_cli("generate", "x", "--name", NAME, "--model", "99", home=home).returncode == 1


def test_merge_command_writes_a_plain_model_with_the_champions_logits(demo, tmp_path):
    """`tunegate merge` folds the champion's LoRA adapter into its base: a transformers folder, no PEFT."""
    import torch
    from transformers import AutoModelForCausalLM

    from tasks.registry.artifacts import champion_artifacts
    from tasks.evaluate.evaluate import load_model

    home, _, _ = demo
    proc = run_cli("merge", str(tmp_path / "merged"), "--model", "champion", "--name", NAME, home=home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"merged {NAME} v" in proc.stdout
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    parts = champion_artifacts(f"sqlite:///{home / 'mlflow.db'}", NAME, tmp_path / "champion")
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged")).eval()(input_ids=ids).logits
        unmerged = load_model(parts["base"], parts["adapter"])(input_ids=ids).logits
    assert torch.allclose(merged, unmerged, atol=1e-4)
    assert run_cli("merge", str(tmp_path / "none"), "--model", "99", "--name", NAME, home=home).returncode == 1


def test_a_version_whose_folders_changed_in_the_artifact_store_is_refused(demo):
    """Issue 16: whoever can write to the artifact store must not get their files loaded as the champion. The
    digests recorded at registration are checked after download; a changed adapter file is refused, naming it.
    (Last in this module: it restores the files it changes.)"""
    home, _, _ = demo
    configs = [p for p in (home / "mlartifacts").rglob("adapter/adapter_config.json") if "artifacts" in p.parts]
    originals = {p: p.read_bytes() for p in configs}
    assert configs
    try:
        for p, data in originals.items():
            p.write_bytes(data + b"\n")
        for command in (["generate", "x"], ["merge", str(home / "merged-tampered")]):
            proc = run_cli(*command, "--name", NAME, home=home)
            assert proc.returncode == 1, proc.stdout[-1000:]
            assert re.search(rf"{NAME} v\d+: its adapter folder in the artifact store is not the one registered",
                             proc.stderr.strip().splitlines()[-1]), proc.stderr[-1000:]
    finally:
        for p, data in originals.items():
            p.write_bytes(data)
    assert run_cli("generate", "x", "--name", NAME, "--max-new-tokens", "2", home=home).returncode == 0


def test_promote_and_rollback_wait_for_the_registry_lock(demo):
    """Issue 16: `promote` and `rollback` take the state folder's registry lock, as a run's compare-and-promote does:
    held elsewhere, they wait for it, then act (the lock's journal shows the holds one after the other)."""
    import threading
    import time

    from tasks.core.state import StatePaths

    home, _, report = demo
    state = StatePaths(home)
    held = threading.Event()

    def hold():
        with state.lock("registry"):
            held.set()
            time.sleep(4)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(30)
    started = time.monotonic()
    proc = run_cli("promote", report["model"]["version"], "--name", NAME, "--force", home=home)
    waited = time.monotonic() - started
    holder.join()
    assert proc.returncode == 0, proc.stderr[-1000:]
    holds = state.lock_holds("registry")
    mine, theirs = holds[-1], holds[-2]
    assert theirs["released"] <= mine["acquired"] and waited >= 3, (holds[-2:], waited)
    assert run_cli("rollback", "--name", NAME, home=home).returncode in (0, 1)
    assert state.lock_holds("registry")[-1]["acquired"] >= mine["released"]
