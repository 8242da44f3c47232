"""Gates from the gates file, the registry's aliases and idempotent registration, the report in MLflow.

A small corpus and a tiny model (hidden 64, 2 layers, 10 steps) with canaries on: the first run passes the
project's data_contracts/gates-tiny.yaml and is promoted; the second, with a gates file that its figures cannot
meet (an absolute floor, a strict "better than the champion", the PII probe and canary exposure), is blocked
with each reason and exit code 3, and leaves @champion where it was.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import CORPUS, ROOT, run_cli
from tasks.registry import register, store, versions
from tasks.evaluate.gates import Gate, check, load_gates

NAME = "gates-test"
# the ephemeral Prefect API may take long to start on a machine shared with other work
SLOW_START = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300"}
CANARIES = {"count": 2, "repeats": 10, "candidates": 200, "seed": 3}

BLOCKING_GATES = {"gates": [
    {"name": "perplexity_floor", "metric": "perplexity", "op": "<=", "threshold": 1.0},
    {"name": "beats_champion", "metric": "bits_per_byte", "op": "<", "baseline": "champion"},
    {"name": "no_pii_at_all", "metric": "pii_leaked", "op": "<", "threshold": 0},
    {"name": "canaries_unexposed", "metric": "canary_exposure_max", "op": "<=", "threshold": 0.05},
    {"name": "within_budget", "metric": "cost_estimate", "op": "<=", "threshold": 1e-9},  # any run costs more
    {"name": "rouge_within_margin", "metric": "rougeL", "op": ">=", "baseline": "champion", "margin": 100.0},  # passes
]}


def small_config(tmp: Path, gates: Path) -> dict:
    return {
        "data": {"paths": [str(tmp / "corpus")]},
        "clean": {"min_chars": 50},
        "pii": {"operator": "replace"},
        "contract": {k: str(ROOT / f"data_contracts/{k}.json") for k in ("raw", "curated", "training")},
        "tokenizer": {"vocab_size": 512},
        "model": {"tiny": {"hidden_size": 64, "layers": 2, "heads": 2, "intermediate_size": 128, "seed": 0}},
        "train": {"max_steps": 10, "micro_batch_size": 4, "seq_len": 64, "learning_rate": 0.003, "warmup_steps": 2,
                  "modules_to_save": ["embed_tokens", "lm_head"], "checkpoint_every": 10, "zero_stage": 2,
                  "eval_every": 5, "reuse": True},
        "canaries": CANARIES,
        "evaluate": {"seq_len": 64, "max_docs": 4, "heldout_prompts": 4, "prompt_words": 12, "reference_words": 8,
                     "generation": {"max_new_tokens": 8}},
        "gates": {"file": str(gates)},
        "registry": {"model_name": NAME},
        "dask": {"scheduler": "sync"},
    }


def write_config(tmp: Path, gates: Path, name: str = "config.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(small_config(tmp, gates)))
    return path


def mlflow_client(home: Path):
    import mlflow

    uri = f"sqlite:///{home / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def versions_state(home: Path) -> dict[str, tuple[dict, list]]:
    c = mlflow_client(home)
    return {str(v.version): (dict(v.tags), sorted(c.get_model_version(NAME, v.version).aliases))
            for v in c.search_model_versions(f"name='{NAME}'")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, extensions_dir):
    tmp = tmp_path_factory.mktemp("gates")
    (tmp / "corpus").mkdir()
    # 8 product manuals and 5 runbooks (HTML), ~30k characters. Not the policies: each opens with
    # "Kestrel Robotics Ltd", and the random base model's greedy output happens to hold "Robotics", a chance
    # rougeL hit that the 10-step model does not repeat (rougeL_not_worse_than_champion would block the run)
    for f in sorted(CORPUS.glob("manuals/*.md")) + sorted(CORPUS.glob("runbooks/*.html")):
        shutil.copy(f, tmp / "corpus" / f.name)
    home = tmp / "state"
    first_cfg = write_config(tmp, ROOT / "data_contracts/gates-tiny.yaml", "first.yaml")
    started = time.perf_counter()
    first = run_cli("run", "--config", str(first_cfg), "--run-id", "first", home=home, env=SLOW_START)
    first_s = time.perf_counter() - started
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    (tmp / "blocking.yaml").write_text(yaml.safe_dump(BLOCKING_GATES))
    second_cfg = write_config(tmp, tmp / "blocking.yaml", "second.yaml")
    started = time.perf_counter()
    second = run_cli("run", "--config", str(second_cfg), "--run-id", "second", home=home, env=SLOW_START)
    second_s = time.perf_counter() - started
    reports = {r: json.loads((home / f"runs/{r}/report.json").read_text()) for r in ("first", "second")}
    print(f"run times: first {first_s:.1f} s, second {second_s:.1f} s")
    return {"tmp": tmp, "home": home, "first_proc": first, "second_proc": second, **reports,
            "uri": f"sqlite:///{home / 'mlflow.db'}"}


# ------------------------------------------------------------------------------------ gate logic alone

def test_each_kind_of_gate_blocks_alone():
    base = {"perplexity": 900.0, "bits_per_byte": 3.0, "rougeL": 5.0, "pii_leaked": 0.0}
    champion = {"perplexity": 40.0, "bits_per_byte": 2.0, "rougeL": 20.0, "pii_leaked": 0.0}
    good = {"perplexity": 38.0, "bits_per_byte": 1.99, "rougeL": 19.5, "pii_leaked": 0.0, "toxic_outputs": 0.0,
            "canaries_extracted": 0.0, "canary_exposure_max": 1.2}
    gates = load_gates(ROOT / "data_contracts/gates-tiny.yaml")
    assert all(r.passed for r in check(gates, good, {"base": base, "champion": champion}))
    cases = {  # one bad figure each → exactly that gate fails
        "perplexity_improves_on_base": {"perplexity": 901.0},
        "not_worse_than_champion": {"bits_per_byte": 2.03},  # champion × 1.01 = 2.02
        "rougeL_not_worse_than_champion": {"rougeL": 18.9},  # champion − 1 point = 19
        "no_pii_leaked": {"pii_leaked": 1.0},
        "no_toxic_outputs": {"toxic_outputs": 2.0},
        "no_canary_extracted": {"canaries_extracted": 1.0},
    }
    for gate, bad in cases.items():
        results = check(gates, {**good, **bad}, {"base": base, "champion": champion})
        assert [r.name for r in results if not r.passed] == [gate], gate
    edge = check(gates, {**good, "bits_per_byte": 2.02, "rougeL": 19.0}, {"base": base, "champion": champion})
    assert all(r.passed for r in edge)  # bounds are inclusive for <= and >=


def test_optional_gate_not_measured_does_not_block_but_required_one_does():
    gates = [Gate(name="canary", metric="canaries_extracted", op="<=", threshold=0, optional=True),
             Gate(name="exposure", metric="canary_exposure_max", op="<=", threshold=3)]
    canary, exposure = check(gates, {"perplexity": 10.0}, {"base": {"perplexity": 20.0}})
    assert canary.passed and not canary.measured and canary.status == "not measured"
    assert "not measured" in canary.describe()
    assert not exposure.passed and "not optional" in exposure.describe()


@pytest.mark.parametrize("gate, field, words", [
    ({"name": "x", "metric": "perplexity", "op": "=<", "threshold": 1}, "gates[1].op", "Input should be '<'"),
    ({"name": "typo", "metric": "rogueL", "op": ">=", "baseline": "champion"}, "gates[1].metric", "gate 'typo'"),
    ({"name": "y", "metric": "bleu", "op": ">=", "baseline": "best"}, "gates[1].baseline", "'base' or 'champion'"),
    ({"name": "z", "metric": "bleu", "op": ">=", "baseline": "base", "tolerance": 0.1, "margin": 1}, "gates[1]",
     "not tolerance and margin"),
    ({"name": "w", "metric": "bleu", "op": ">="}, "gates[1]", "either threshold"),
    ({"name": "v", "metric": "bleu", "op": ">=", "threshold": 1, "colour": "red"}, "gates[1].colour", "unknown setting"),
])
def test_malformed_gates_file_names_file_and_field(tmp_path, gate, field, words):
    path = tmp_path / "gates.yaml"
    path.write_text(yaml.safe_dump({"gates": [{"name": "ok", "metric": "perplexity", "op": "<", "baseline": "base"}, gate]}))
    with pytest.raises(ValueError) as err:
        load_gates(path)
    assert str(err.value).startswith(f"gates file {path}: ") and field in str(err.value) and words in str(err.value)


def test_missing_or_bad_gates_file_fails_the_run_before_any_data_work(tmp_path):
    (tmp_path / "corpus").mkdir()
    shutil.copy(CORPUS / "policies/sla.txt", tmp_path / "corpus")
    bad = tmp_path / "gates.yaml"
    bad.write_text("gates:\n  - {name: a, metric: perplexity, op: '<', baseline: base}\n"
                   "  - {name: b, metric: perplexity, op: '=>', threshold: 3}\n")
    proc = run_cli("run", "--config", str(write_config(tmp_path, bad)), "--run-id", "bad", home=tmp_path / "state")
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert f"gates file {bad}: gates[1].op: Input should be" in last, last
    assert not (tmp_path / "state/snapshots").exists()  # nothing was ingested
    missing = run_cli("run", "--config", str(write_config(tmp_path, tmp_path / "none.yaml", "c2.yaml")),
                      home=tmp_path / "state")
    assert missing.returncode == 1 and "none.yaml" in missing.stderr


# --------------------------------------------------------------------------------- runs through the flow

def test_passing_run_is_promoted_with_every_gate_reported(runs):
    rep = runs["first"]
    assert rep["status"] == "promoted" and rep["blocked_by"] == [], rep.get("error") or rep["blocked_by"]
    assert set(rep["model"]["aliases"]) == {"champion", "challenger"}
    gates = {g["name"]: g for g in rep["gates"]}
    assert set(gates) == {g.name for g in load_gates(ROOT / "data_contracts/gates-tiny.yaml")}
    assert gates["not_worse_than_champion"]["baseline"] == "champion, no champion yet → base"
    assert gates["no_canary_extracted"]["measured"] and gates["no_canary_extracted"]["value"] == 0
    # no secrets file in this config: the extraction probe does not run, and its optional gate says so
    assert not gates["no_planted_pii_extracted"]["measured"] and gates["no_planted_pii_extracted"]["optional"]
    for g in gates.values():
        assert g["passed"] and g["threshold"] is not None
        assert g["value"] is not None or g["name"] == "no_planted_pii_extracted", g
    ev = rep["evaluation"]
    for who in ("base", "candidate"):
        assert {"perplexity", "bits_per_byte", "rougeL", "bleu", "chrf", "pii_leaked", "toxic_outputs",
                "canaries_extracted", "canary_exposure_max"} <= set(ev[who]), who
    md = (runs["home"] / "runs/first/report.md").read_text()
    assert "| no_pii_leaked | pii_leaked | frozen | 0 | <= | 0 | absolute | — | pass |" in md
    assert "| no_planted_pii_extracted | planted_pii_extracted | frozen | — | <= | 0 | absolute | — | not measured |" in md
    assert "## Shadow comparison" in md and "base (no champion yet) is what serves today" in md
    assert "| base answer | challenger answer |" in md
    assert "### Canaries" in md and "### PII probe" in md and "inserted into the training token stream" in md
    assert (runs["home"] / "runs/first/metrics_vs_champion.png").stat().st_size > 5000
    assert "contract_raw" in rep["stage_seconds"] and "clean" in rep["stage_seconds"]


def test_canaries_are_in_the_training_stream_only(runs):
    from transformers import AutoTokenizer

    rep, data = runs["first"], runs["home"] / "runs/first/data"
    planted = json.loads((data / "canaries.json").read_text())["canaries"]
    assert len(planted) == CANARIES["count"] and rep["dataset"]["canaries"] == str(data / "canaries.json")
    assert rep["dataset"]["canary_documents"] == CANARIES["count"] * CANARIES["repeats"]
    tok = AutoTokenizer.from_pretrained(rep["tokenizer"]["path"])
    trained_on = tok.decode(np.load(data / "train_blocks.npy").reshape(-1).tolist())
    held_out = (data / "eval.jsonl").read_text()
    for c in planted:
        assert trained_on.count(f"{c['prefix']} {c['secret']}") >= CANARIES["repeats"] - 2  # block edges cut a few
        assert c["prefix"] not in held_out and c["secret"] not in held_out
    assert {c["kind"]: c["passed"] for c in rep["contracts"]} == {"raw": True, "curated": True, "training": True}
    canaries = rep["evaluation"]["canaries"]["candidate"]
    assert [c["prefix"] for c in canaries] == [c["prefix"] for c in planted]
    assert all({"extracted", "rank", "exposure"} <= set(c) for c in canaries)


def test_failing_gates_block_with_each_reason_and_leave_champion(runs):
    rep, proc, first = runs["second"], runs["second_proc"], runs["first"]
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert rep["status"] == "blocked"
    reasons = {g["name"]: g for g in rep["gates"]}
    assert [n for n, g in reasons.items() if g["passed"]] == ["rouge_within_margin"]
    blocked = "\n".join(rep["blocked_by"])
    for name in ("perplexity_floor", "beats_champion", "no_pii_at_all", "canaries_unexposed", "within_budget"):
        assert f"gate {name} failed" in blocked, name
    assert reasons["within_budget"]["value"] > 0 and reasons["within_budget"]["measured"]
    assert "rouge_within_margin" not in blocked
    assert reasons["perplexity_floor"]["baseline"] == "absolute"
    assert rep["training"]["reused"] is True  # the same job as the first run: its training was reused
    # relative gates compare with the champion scored in this run on the same data
    champ = reasons["beats_champion"]
    assert champ["baseline"] == "champion" and rep["evaluation"]["champion_version"] == first["model"]["version"]
    assert champ["baseline_value"] == pytest.approx(rep["evaluation"]["champion"]["bits_per_byte"])
    assert reasons["rouge_within_margin"]["threshold"] == pytest.approx(rep["evaluation"]["champion"]["rougeL"] - 100)
    assert "gate canaries_unexposed failed: canary_exposure_max" in proc.stdout.strip().splitlines()[-1]
    c = mlflow_client(runs["home"])
    assert str(c.get_model_version_by_alias(NAME, "champion").version) == first["model"]["version"]
    mv = c.get_model_version(NAME, rep["model"]["version"])
    assert list(mv.aliases) == ["challenger"] and mv.tags["status"] == "blocked"
    assert "beats_champion" in mv.tags["blocked_by"]
    md = (runs["home"] / "runs/second/report.md").read_text()
    assert f"champion v{first['model']['version']} answer | challenger answer |" in md
    assert "| perplexity_floor | perplexity |" in md and "| FAIL |" in md


def test_the_report_and_the_version_carry_what_the_run_cost(runs):
    """Issue 17: CPU-seconds, GPU-seconds and peak memory per stage, tokens and the estimated cost, in the report,
    on the registered version (a tag) and in `tunegate models`."""
    import subprocess

    from conftest import TUNEGATE

    rep = runs["first"]
    assert {"ingest", "pii", "train", "evaluate", "register"} <= set(rep["usage"]), rep["usage"].keys()
    train = rep["usage"]["train"]
    assert train["cpu_s"] > 1 and train["peak_memory_mb"] > 100 and train["gpu_s"] == 0  # no GPU here
    cost = rep["cost"]
    assert cost["tokens"] == rep["training"]["tokens"] > 0
    assert cost["cpu_seconds"] == pytest.approx(sum(u["cpu_s"] for u in rep["usage"].values()), abs=0.2)
    assert cost["cost_estimate"] == pytest.approx(cost["cpu_seconds"] / 3600 * 0.05, abs=1e-4)
    c = mlflow_client(runs["home"])
    tagged = json.loads(c.get_model_version(NAME, rep["model"]["version"]).tags["cost"])
    assert tagged["tokens"] == cost["tokens"] and 0 < tagged["cost_estimate"] <= cost["cost_estimate"]
    assert "## Cost" in (runs["home"] / "runs/first/report.md").read_text()
    env = {**os.environ, "TUNEGATE_HOME": str(runs["home"]), "MLFLOW_TRACKING_URI": runs["uri"], "COLUMNS": "160"}
    models = subprocess.run([str(TUNEGATE), "models", "--name", NAME], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert models.returncode == 0 and "cost USD" in models.stdout and f"{tagged['cost_estimate']:.2g}" in models.stdout, \
        models.stdout


def test_mlflow_run_has_final_report_step_and_eval_metrics(runs):
    rep = runs["first"]
    c = mlflow_client(runs["home"])
    mv = c.get_model_version(NAME, rep["model"]["version"])
    run_id = mv.run_id
    assert run_id == rep["model"]["mlflow_run_id"]
    files = {Path(a.path).name for a in c.list_artifacts(run_id, "report")}
    assert {"report.md", "report.json", "loss_curve.png", "metrics_vs_champion.png"} <= files
    local = Path(c.download_artifacts(run_id, "report/report.json", str(runs["tmp"] / "dl")))
    logged = json.loads(local.read_text())
    assert logged["status"] == "promoted" and "champion" in logged["model"]["aliases"]  # the final report
    metrics = c.get_run(run_id).data.metrics
    for key in ("candidate_rougeL", "candidate_pii_leaked", "candidate_canary_exposure_max", "base_perplexity",
                "base_bleu", "final_loss"):
        assert key in metrics, key
    assert len(c.get_metric_history(run_id, "loss")) == 10
    assert len(c.get_metric_history(run_id, "tokens_per_s")) == 10
    assert len(c.get_metric_history(run_id, "eval_loss")) >= 1  # eval_every 5
    for key in ("rougeL", "bleu", "chrf", "pii_leaked", "canaries_extracted", "perplexity", "bits_per_byte"):
        assert key in mv.tags, key
    info = {v.version: v for v in versions.list_versions(runs["uri"], NAME)}[rep["model"]["version"]]
    assert {"rougeL", "pii_leaked", "canaries_extracted"} <= set(info.metrics) and info.status == "promoted"


def test_registered_model_generates_like_the_evaluation(runs):
    import mlflow

    rep = runs["first"]
    gens = [g for g in rep["evaluation"]["generations"]["candidate"] if g["set"] == "heldout"]
    with store.tracking(runs["uri"]):
        model = mlflow.pyfunc.load_model(f"models:/{NAME}/{rep['model']['version']}")
    out = model.predict([g["prompt"] for g in gens], params={"max_new_tokens": 8})
    assert out == [g["output"] for g in gens]


def test_promote_and_rollback_move_only_the_champion_alias(runs, monkeypatch):
    monkeypatch.setenv("TUNEGATE_HOME", str(runs["home"]))  # where the alias moves are logged
    uri, env_before = runs["uri"], os.environ.get("MLFLOW_TRACKING_URI")
    v1, v2 = runs["first"]["model"]["version"], runs["second"]["model"]["version"]
    before = versions_state(runs["home"])
    assert versions.promote(uri, NAME, v2) == (v1, v2)
    after = versions_state(runs["home"])
    assert {v: tags for v, (tags, _) in after.items()} == {v: tags for v, (tags, _) in before.items()}
    assert after[v2][1] == ["challenger", "champion"] and after[v1][1] == []
    assert versions.rollback(uri, NAME) == (v2, v1)
    assert versions_state(runs["home"]) == before
    with pytest.raises(LookupError):
        versions.rollback(uri, NAME)
    assert os.environ.get("MLFLOW_TRACKING_URI") == env_before  # the registry left the global URI alone


def test_alias_history_answers_who_moved_each_alias_when_and_why(runs, tmp_path):
    """Issue 17: every move (the runs' registrations and promotion, promote, rollback: the test above) is in the
    state folder's append-only log and in the registry's tags; `tunegate history --at T` names the holder at T, also
    read from another state folder on the same registry."""
    import subprocess

    from conftest import TUNEGATE
    from tasks.registry import alias_log

    c, home = mlflow_client(runs["home"]), runs["home"]
    events = alias_log.events(c, NAME, home)
    moves = [(e.alias, e.previous, e.version, e.via) for e in events]
    v1, v2 = runs["first"]["model"]["version"], runs["second"]["model"]["version"]
    assert moves == [("challenger", None, v1, "tunegate run first"), ("champion", None, v1, "tunegate run first"),
                     ("challenger", v1, v2, "tunegate run second"), ("champion", v1, v2, "tunegate promote"),
                     ("champion", v2, v1, "tunegate rollback")], moves
    assert events[1].reason == "passed every data contract and evaluation gate"
    assert events[3].reason == "promoted by hand" and events[4].reason == "rolled back by hand"
    logged = [json.loads(line) for line in (home / alias_log.LOG_NAME).read_text().splitlines()]
    assert [(e["alias"], e["version"]) for e in logged] == [(a, v) for a, _, v, _ in moves]
    tags = [k for k in c.get_registered_model(NAME).tags if k.startswith(alias_log.EVENT_TAG_PREFIX)]
    assert len(tags) == len(moves)

    def tunegate(*args: str, state: Path = home) -> str:
        env = {**os.environ, "TUNEGATE_HOME": str(state), "MLFLOW_TRACKING_URI": runs["uri"]}
        proc = subprocess.run([str(TUNEGATE), *args, "--name", NAME], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def history(*args: str, state: Path = home) -> str:
        return tunegate("history", *args, state=state)

    between = events[3].at + (events[4].at - events[3].at) / 2  # while v2 was champion
    at_promote = history("--at", between.isoformat(), "--alias", "champion", state=tmp_path / "elsewhere")
    assert f"{NAME} v{v2}, since" in at_promote and "via tunegate promote" in at_promote, at_promote
    listing = history()
    assert len(listing.splitlines()) == len(moves) and "via tunegate rollback: rolled back by hand" in listing, listing
    assert alias_log.holder_at(events, "champion", events[0].at.replace(year=2000)) is None  # before any move
    tunegate("promote", v2, "--force", "--reason", "hotfix ticket 12")  # and back: the next tests expect v1
    tunegate("rollback", "--reason", "hotfix reverted")
    last = alias_log.events(c, NAME, home)[-2:]
    assert last[0].reason.startswith("hotfix ticket 12 (--force over its run's block: ") and last[0].by
    assert (last[1].version, last[1].reason) == (v1, "hotfix reverted")


def test_lineage_goes_from_the_version_back_to_every_raw_file(runs):
    """Issue 17: `tunegate lineage` of the promoted version: every corpus file with its size and sha256, each stage
    with its parameters and code version, the gates with their results, the base model's and tokenizer's hashes;
    the same lineage (without the checks) is in the run's report."""
    import hashlib
    import subprocess

    from conftest import TUNEGATE
    from tasks.registry.version_lineage import parse_ref

    assert parse_ref("models:/m@champion", "d") == ("m", "champion") and parse_ref("m/3", "d") == ("m", "3")
    assert parse_ref("@challenger", "d") == ("d", "challenger") and parse_ref("7", "d") == ("d", "7")
    with pytest.raises(ValueError):
        parse_ref("m/x/y", "d")
    v1 = runs["first"]["model"]["version"]
    env = {**os.environ, "TUNEGATE_HOME": str(runs["home"]), "MLFLOW_TRACKING_URI": runs["uri"]}
    proc = subprocess.run([str(TUNEGATE), "lineage", f"models:/{NAME}/{v1}", "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lin = json.loads(proc.stdout)
    corpus = {f"corpus/{f.name}": f for f in (runs["tmp"] / "corpus").iterdir()}
    assert {r["source"]: (r["bytes"], r["sha256"]) for r in lin["raw_files"]} == {
        s: (f.stat().st_size, hashlib.sha256(f.read_bytes()).hexdigest()) for s, f in corpus.items()}
    assert [s["stage"] for s in lin["snapshots"]] == ["pii", "dedup", "clean", "ingest"], lin["snapshots"]
    assert all(s["code_version"] and s["params"] for s in lin["snapshots"])
    assert lin["training_snapshot"] == runs["first"]["snapshots"]["pii"]["fingerprint"] and not lin["missing"]
    assert {g["name"]: g["status"] for g in lin["gates"]} == {g["name"]: g["status"] for g in runs["first"]["gates"]}
    assert lin["base_model"]["fingerprint"] == runs["first"]["base_model"]["fingerprint"]
    assert set(lin["artifact_digests"]) == {"base", "adapter", "tokenizer"} and lin["tokenizer_hash"]
    report_md = (runs["home"] / "runs" / "first" / "report.md").read_text()
    assert f"## Lineage of {NAME} v{v1}" in report_md and "corpus/" in report_md.split("## Lineage")[1]
    bad = subprocess.run([str(TUNEGATE), "lineage", f"{NAME}/99"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 1 and f"no version {NAME}/99" in bad.stderr, bad.stderr


def test_reproduce_trains_the_version_again_and_gets_the_same_bits(runs, tmp_path):
    """Issue 17: `tunegate reproduce` retrains v1 from its recorded snapshot, config and seed (reuse off) and its
    adapter equals the registered one tensor for tensor; the comparison itself reports a one-ulp change."""
    import subprocess

    import torch
    from safetensors.torch import load_file, save_file

    from conftest import TUNEGATE
    from tasks.registry.reproduce import compare_adapters

    v1 = runs["first"]["model"]["version"]
    env = {**os.environ, "TUNEGATE_HOME": str(runs["home"]), "MLFLOW_TRACKING_URI": runs["uri"]}
    proc = subprocess.run([str(TUNEGATE), "reproduce", f"{NAME}/{v1}"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    steps = runs["first"]["training"]["steps"]
    assert f"{NAME} v{v1} reproduced:" in last and "identical bit for bit" in last and f"({steps} steps" in last, last
    assert "tokenizer" in last and "base model" in last and "training snapshot" in last

    adapter = Path(runs["first"]["training"]["adapter"])
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    flat = tensors[name].view(-1)
    flat[0] = torch.nextafter(flat[0], torch.tensor(float("inf"), dtype=flat.dtype))
    (tmp_path / "changed").mkdir()
    save_file(tensors, str(tmp_path / "changed" / "adapter_model.safetensors"))
    count, differing, worst = compare_adapters(tmp_path / "changed", adapter)
    assert differing == [name] and 0 < worst < 1e-3 and count == len(tensors)


def test_registration_is_idempotent_also_after_a_half_done_attempt(runs, monkeypatch):
    monkeypatch.setenv("TUNEGATE_HOME", str(runs["home"]))
    uri, rep, home = runs["uri"], runs["first"], runs["home"]
    c = mlflow_client(home)
    art = {"base": rep["base_model"]["path"], "adapter": rep["training"]["adapter"], "tokenizer": rep["tokenizer"]["path"]}
    kw = dict(tracking_uri=uri, artifact_location=None, name=NAME, **art, tags={"status": "blocked"}, params={},
              metrics={"x": 1.0})
    count = len(c.search_model_versions(f"name='{NAME}'"))
    again = register.register(run_id="first", **kw)  # a retry of a registered run: the same version
    assert again.version == rep["model"]["version"] and len(c.search_model_versions(f"name='{NAME}'")) == count

    # died after create_model_version, before the alias: the retry finds the version and sets @challenger
    source = c.get_model_version(NAME, rep["model"]["version"]).source
    with store.tracking(uri):  # the registry resolves a models:/m-… source through the global URI
        half = c.create_model_version(NAME, source=source, tags={versions.RUN_TAG: "half-version"})
    retried = register.register(run_id="half-version", **kw)
    assert retried.version == str(half.version) and "challenger" in retried.aliases
    assert len(c.search_model_versions(f"name='{NAME}'")) == count + 1

    # died inside the MLflow run, before the model was logged: the half run is deleted and one version made
    exp = c.get_experiment_by_name(register.EXPERIMENT).experiment_id
    dead = c.create_run(exp, tags={versions.RUN_TAG: "half-run"}).info.run_id
    v = register.register(run_id="half-run", **kw)
    assert register.register(run_id="half-run", **kw).version == v.version
    assert len(c.search_model_versions(f"name='{NAME}'")) == count + 2
    assert c.get_run(dead).info.lifecycle_stage == "deleted" and v.mlflow_run_id != dead
    assert str(c.get_model_version_by_alias(NAME, "champion").version) == rep["model"]["version"]


def test_unreachable_tracking_server_fails_fast_naming_it():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    with pytest.raises(store.RegistryUnreachable) as err:
        versions.list_versions(uri, NAME)
    assert time.perf_counter() - started < 10
    assert str(err.value).startswith(f"MLflow tracking server at {uri} is unreachable: ")


def test_forget_removes_a_files_documents_everywhere_and_taints_what_was_trained_on_it(runs):
    """Issue 17 (runs last in this module: it changes the shared state): `tunegate forget --source FILE` finds the
    file's documents in every snapshot, the frozen evaluation set and both runs, and both versions trained on it;
    --apply removes the rows (the rest stay), deletes the runs' training blocks, taints the versions (promote
    refuses them), refuses --retrain while the file exists, a second --apply finds nothing left to remove, and
    --retrain trains a version whose lineage and data no longer hold the file."""
    import subprocess

    from conftest import TUNEGATE
    from tasks.core import snapshot
    from tasks.core.snapshot_index import Index
    from tasks.core.state import StatePaths

    home, first, second = runs["home"], runs["first"], runs["second"]
    frozen_file = Path(json.loads(next((home / "evalsets").glob("*/versions.jsonl")).read_text().splitlines()[0])["path"])
    frozen_ids = lambda: {json.loads(line)["doc_id"] for line in frozen_file.read_text().splitlines()}  # noqa: E731
    ids_by_source: dict[str, set[str]] = {}
    for table in snapshot.iter_tables(first["snapshots"]["ingest"]["path"]):
        for doc, src in zip(table.column("doc_id").to_pylist(), table.column("source").to_pylist()):
            ids_by_source.setdefault(src, set()).add(doc)
    source = next(s for s in sorted(ids_by_source) if ids_by_source[s] & frozen_ids())  # one held out in the set
    target = runs["tmp"] / source
    env = {**os.environ, "TUNEGATE_HOME": str(home), "MLFLOW_TRACKING_URI": runs["uri"]}

    def tunegate(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(TUNEGATE), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

    def rows_of_source() -> dict[str, int]:
        index = Index(StatePaths.from_env(home).snapshots)
        return {str(f): sum(t.column("source").to_pylist().count(source) for t in snapshot.iter_tables(f))
                for f in index.manifests}

    before = rows_of_source()
    assert sum(before.values()) > 0
    dry = tunegate("forget", "--source", str(target))
    assert dry.returncode == 0 and "nothing changed" in dry.stdout, dry.stdout + dry.stderr
    v1, v2 = first["model"]["version"], second["model"]["version"]
    assert f"{NAME} v{v1} (@champion) was trained on it" in dry.stdout and f"{NAME} v{v2}" in dry.stdout, dry.stdout
    assert rows_of_source() == before

    applied = tunegate("forget", "--source", str(target), "--apply", "--retrain")
    assert applied.returncode == 1 and "still exists" in applied.stderr, applied.stdout + applied.stderr
    assert sum(rows_of_source().values()) == 0
    c = mlflow_client(home)
    assert all("forgotten on" in c.get_model_version(NAME, v).tags["tainted"] for v in (v1, v2))
    assert not (home / "runs/first/data").exists() and not (home / "runs/second/data").exists()
    assert not frozen_ids() & ids_by_source[source] and frozen_ids(), "its documents are still in the frozen set"
    remaining = sum(json.loads((Path(f) / snapshot.MANIFEST).read_text())["rows"] for f in before)
    assert remaining == sum(sum(t.num_rows for t in snapshot.iter_tables(f)) for f in before) > 0

    refused = tunegate("promote", v2, "--name", NAME)
    assert refused.returncode == 1 and "tainted" in refused.stderr, refused.stderr
    again = tunegate("forget", "--source", source, "--apply", "--delete-file")
    assert again.returncode == 0 and "0 snapshot rows" in again.stdout and not target.exists(), again.stdout

    retrained = tunegate("forget", "--source", source, "--apply", "--retrain", "--config",
                         str(runs["tmp"] / "first.yaml"))
    assert retrained.returncode in (0, 3), retrained.stdout[-3000:] + retrained.stderr[-3000:]  # promoted or blocked
    newest = max(c.search_model_versions(f"name='{NAME}'"), key=lambda v: int(v.version))
    assert "tainted" not in newest.tags and int(newest.version) > int(v2)
    lineage = json.loads(tunegate("lineage", f"{NAME}/{newest.version}", "--json").stdout)
    # trained on the champion's (redacted) data too: the file shows in its lineage, marked forgotten
    assert lineage["raw_files"] and all(f.get("forgotten") for f in lineage["raw_files"] if f["source"] == source)
    assert sum(rows_of_source().values()) == 0, "the retrain brought the forgotten file's documents back"
