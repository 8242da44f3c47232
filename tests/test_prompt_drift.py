"""Prompt drift: the gateway's traffic store against the @champion's training data (real stages, real MLflow, a
real Prefect API for the flow and its event, the real PII scrubber on the prompts; no model is trained)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import CORPUS, SHARED_EVAL, company_documents
from helpers.drift_data import drifted_texts
from test_drift import champion_home, config_file, prefect_api  # noqa: F401 (fixtures of the drop check, reused)

SELF_INSTRUCT = SHARED_EVAL / "corpora" / "instructions" / "self-instruct_user_oriented_instructions.jsonl"
MODELS = ("pd-same", "pd-other")  # one champion, registered under two names: a traffic store for each test


def user_turn(record: dict) -> str:
    return record["instruction"] + (f"\n\n{record['input']}" if record.get("input") else "")


def assistant_records() -> list[dict]:
    return [json.loads(line) for line in (CORPUS / "records" / "assistant.jsonl").read_text().splitlines()]


def other_prompts(n: int = 50) -> list[str]:
    """Prompts of another kind: Self-Instruct's user-oriented tasks (rewrite this sentence, plan a trip, ...);
    without the shared evaluation data, operations jargon."""
    if SELF_INSTRUCT.is_file():
        rows = [json.loads(line) for line in SELF_INSTRUCT.read_text().splitlines()]
        return [r["instruction"] + (f"\n\n{r['instances'][0]['input']}" if r["instances"][0]["input"] else "")
                for r in rows[:n]]
    return [t[:400] for t in drifted_texts(n, seed=3)]


def write_traffic(folder: Path, prompts: list[str], config, at: float | None = None, version: str = "1") -> None:
    """Requests as the gateway stores them: through a TrafficStore that scrubs each prompt with the config's PII
    settings (AnswerScrubber, as `tunegate gateway` does)."""
    from tasks.serve.answer_scrub import AnswerScrubber
    from tasks.serve.traffic import TrafficSettings, TrafficStore

    scrubber = AnswerScrubber(config.pii)
    store = TrafficStore(folder, TrafficSettings(), lambda texts: scrubber.scrub(texts)[0])
    store.start()
    now = time.time() if at is None else at
    for i, prompt in enumerate(prompts):
        store.add({"kind": "request", "id": f"cmpl-{now:.0f}-{i}", "index": 0, "time": now, "version": version,
                   "strategy": "champion", "endpoint": "/v1/chat/completions", "prompt": prompt, "answer": "ok",
                   "tokens": 1, "seconds": 0.1}, scrub_fields=("prompt",))
    assert store.drain()


@pytest.fixture(scope="module")
def prompt_champion(tmp_path_factory):
    """A state folder whose registry has a @champion tagged with a real curated snapshot (the company documents
    and 200 of the assistant's instruction records, through ingest, clean, dedup and the PII scrub) and its
    tokenizer, like test_drift's champion_home plus instruction records: their user turns are what prompts are
    compared with. The other 50 records' user turns are unseen prompts of the same kind."""
    from flows.config import PipelineConfig
    from tasks.core.state import StatePaths
    from tasks.data.clean import clean_snapshot
    from tasks.data.dedup.stage import dedup_snapshot
    from tasks.data.ingest.ingest import ingest_to_snapshot
    from tasks.data.pii.scrub import scrub_snapshot
    from tasks.registry.store import client
    from tasks.train.tokenizer import prepare

    home = tmp_path_factory.mktemp("prompt-drift-state")
    state = StatePaths(home)
    config = PipelineConfig.model_validate({"dask": {"scheduler": "sync"}, "tokenizer": {"vocab_size": 1024},
                                            "registry": {"model_name": MODELS[0]}})
    records = assistant_records()
    trained = home / "inputs" / "assistant.jsonl"
    trained.parent.mkdir()
    trained.write_text("".join(json.dumps(r) + "\n" for r in records[:200]))
    raw = ingest_to_snapshot([*company_documents(), trained], config.ingest, config.dask, state.snapshots)
    deduped = dedup_snapshot(clean_snapshot(raw, config.clean, config.dask, state.snapshots), config.dedup,
                             state.snapshots)
    curated = scrub_snapshot(deduped, config.pii, config.dask, state.snapshots)
    tok = prepare(curated, config.tokenizer, None, state.tokenizers)
    c = client(state.mlflow_uri())
    (home / "model").mkdir()
    for name in MODELS:
        c.create_registered_model(name)
        mv = c.create_model_version(name, source=str(home / "model"), tags={
            "snapshot_fingerprint": curated.fingerprint, "tokenizer_hash": tok.content_hash})
        c.set_registered_model_alias(name, "champion", mv.version)
    return state, config, [user_turn(r) for r in records[200:]]


# ------------------------------------------------------------------------------------------ the window


def test_window_keeps_distinct_prompts_of_its_hours(tmp_path):
    from tasks.drift.prompts import read_window, write_drop

    now = time.time()
    rows = [{"kind": "request", "id": "a", "time": now - 60, "version": "2", "prompt": "Where is E214 explained?"},
            {"kind": "request", "id": "b", "time": now - 30, "version": "3", "prompt": "where is  E214 explained?"},
            {"kind": "request", "id": "c", "time": now - 50 * 3600, "version": "1", "prompt": "An old question."},
            {"kind": "feedback", "id": "f", "time": now, "response_id": "a", "rating": 1.0},
            {"kind": "request", "id": "d", "time": now - 10, "version": "2", "prompt": "  "}]
    (tmp_path / "traffic-1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"kind": "requ')
    day = read_window(tmp_path, 24, now=now)
    assert (day.requests, day.prompts, day.versions) == (2, ["Where is E214 explained?"], {"2": 1, "3": 1})
    everything = read_window(tmp_path, None, now=now)
    assert everything.prompts == ["Where is E214 explained?", "An old question."] and everything.requests == 3
    reordered = everything.model_copy(update={"prompt_keys": everything.prompt_keys[::-1]})
    assert reordered.fingerprint == everything.fingerprint != day.fingerprint
    assert read_window(tmp_path / "no-traffic-yet", 24).prompts == []
    drop = write_drop(everything, tmp_path / "drop" / "prompts.jsonl").read_text().splitlines()
    assert [json.loads(line)["text"] for line in drop] == everything.prompts  # what a triggered retrain ingests


# ------------------------------------------------------------------------------------------ the flow


def test_prompts_like_the_training_data_do_not_drift_and_a_recheck_repeats_the_result(prompt_champion, prefect_api,
                                                                                      tmp_path):
    from flows.drift import prompt_drift

    state, config, unseen = prompt_champion
    write_traffic(state.traffic / "pd-same", unseen, config)
    cfg = config_file(config, tmp_path)
    first = prompt_drift(model="pd-same", config_file=str(cfg), home=str(state.home))
    assert first["decision"] == "no drift" and not first["drift"] and "event" not in first, first["markdown"]
    assert first["basis"] == "prompts" and first["window"]["prompts"] == len(unseen) == 50
    assert first["statistics"]["duplicate_rate"] == 0.0 and first["statistics"]["documents_reference"] == 200
    md = Path(first["report"]).read_text()
    assert md == first["markdown"] and md.startswith("# Prompt drift report") and "— NO DRIFT" in md.splitlines()[0]
    assert "| token_js |" in md and "| length_ks |" in md and "PII placeholders / prompt" in md
    assert json.loads(Path(first["report"]).with_name("report.json").read_text())["source"] == "traffic"
    # nothing new arrived: the earlier result, in a report of its own, and nothing compared again
    again = prompt_drift(model="pd-same", config_file=str(cfg), home=str(state.home))
    assert again["earlier"] == first["drift_id"] != again["drift_id"] and "nothing new" in again["note"]
    assert again["decision"] == "no drift" and again["statistics"] == first["statistics"] and "event" not in again
    assert first["drift_id"] in Path(again["report"]).read_text()


def test_prompts_of_another_kind_drift_and_emit_the_event_once(prompt_champion, prefect_api, tmp_path):
    from flows.drift import prompt_drift

    state, config, _ = prompt_champion
    others = other_prompts()
    write_traffic(state.traffic / "pd-other", others[:40], config)
    cfg = config_file(config, tmp_path)
    first = prompt_drift(model="pd-other", config_file=str(cfg), home=str(state.home))
    assert first["drift"] and first["decision"] == "drift", first["markdown"]
    fired = {c["name"] for c in first["checks"] if c["drifted"]}
    assert "unseen_words" in fired and len(fired) >= 2, first["markdown"]  # words the champion was not trained on
    event = first["event"]
    assert event["id"] and event["resource"] == "tunegate.traffic.pd-other"  # not a dataset: no drop retrain
    assert event["payload"]["source"] == "traffic" and event["payload"]["model"] == "pd-other"
    assert event["payload"]["window"]["prompts"] == 40 and event["payload"]["reference"]["kind"] == "champion"
    drop = [json.loads(line) for line in Path(event["payload"]["new_data"]).read_text().splitlines()]
    assert len(drop) == 40 and all(r["text"] for r in drop)  # what a triggered retrain ingests
    assert "— DRIFT" in Path(first["report"]).read_text().splitlines()[0]
    # more traffic of that kind, against the same champion: drift reported, no second retrain started
    write_traffic(state.traffic / "pd-other", others[40:], config)
    more = prompt_drift(model="pd-other", config_file=str(cfg), home=str(state.home))
    assert more["drift"] and more["window"]["prompts"] == len(others) and "event" not in more
    assert first["drift_id"] in more["note"]
    forced = prompt_drift(model="pd-other", config_file=str(cfg), force=True, home=str(state.home))
    assert forced["event"]["id"] not in (None, event["id"])


def test_too_little_traffic_decides_nothing(prompt_champion, prefect_api, tmp_path):
    from flows.drift import prompt_drift

    state, config, unseen = prompt_champion
    home = tmp_path / "state"  # no champion needed: too little traffic is decided first
    quiet = prompt_drift(model="pd-quiet", home=str(home))
    assert quiet["decision"] == "too little traffic" and quiet["report"] is None and "event" not in quiet
    assert "0 distinct prompts in 0 requests" in quiet["note"]
    from tasks.core.state import StatePaths

    write_traffic(StatePaths(home).traffic / "pd-quiet", unseen[:6] + unseen[:6], config)
    few = prompt_drift(model="pd-quiet", home=str(home))
    assert few["decision"] == "too little traffic" and not few["drift"] and "event" not in few
    assert "6 distinct prompts in 12 requests" in few["note"] and "fewer than 30" in few["note"]
    assert "TOO LITTLE TRAFFIC" in few["markdown"] and not (home / "drift").exists()
    with pytest.raises(ValueError, match="not a registered model name"):
        prompt_drift(model="../elsewhere", home=str(home))


# ------------------------------------------------------------------------------------------ documents only


def test_without_instruction_records_prompts_meet_the_documents(champion_home, tmp_path):
    """A champion trained on documents alone (test_drift's): prompts are compared with passages of its documents,
    and the length and token-frequency tests and the PII rate are off, said why: only the vocabulary is compared.
    Prompts in the documents' own words do not drift; support tickets bring words the manuals never use (a real
    shift for a model trained on manuals alone), and Self-Instruct's tasks far more."""
    from tasks.data import drift_stats
    from tasks.drift.prompts import Window, compare_prompts
    from tasks.drift.reference import champion_reference

    state, config, *_ = champion_home
    ref = champion_reference(config.registry, state, tmp_path)
    t = drift_stats.load_thresholds()
    results = {}
    sentences = [x.strip() for p in company_documents() for x in p.read_text().split(". ") if len(x.strip()) > 40]
    tickets = [user_turn(r) for r in assistant_records()[200:]]
    for name, texts in (("same", sentences[::3][:50]), ("tickets", tickets), ("other", other_prompts())):
        w = Window(folder=str(tmp_path), since=None, until=time.time(), requests=len(texts), prompts=texts,
                   prompt_keys=[str(i) for i in range(len(texts))])
        results[name] = compare_prompts(ref.pii_snapshot, True, w, ref.tokenizer, config.pii, t)
    same, tickets, other = results["same"], results["tickets"], results["other"]
    assert same.basis == "documents" and same.comparison.decision == "no drift", same.comparison.checks
    off = {c.name for c in same.comparison.checks if c.threshold is None}
    assert {"length_ks", "token_js"} <= off and same.comparison.statistics["pii_structured_new"] is None
    assert {c.name for c in same.comparison.checks if c.threshold is not None and not c.decided} == {
        "pii_structured_change", "pii_named_change"}  # not measured: the PII rate is off
    assert any("length and token tests are off" in n for n in same.notes) and any("PII rate not compared" in n for n in same.notes)
    assert other.comparison.drift and "unseen_words" in {c.name for c in other.comparison.checks if c.drifted}
    effect = {name: {c.name: c.value for c in r.comparison.checks}["unseen_words"] for name, r in results.items()}
    assert effect["same"] < t.unseen_words < effect["tickets"] < effect["other"], effect


# ------------------------------------------------------------------------------------------ the command


def test_drift_command_takes_a_drop_or_the_traffic(tmp_path):
    from conftest import run_cli

    both = run_cli("drift", str(tmp_path), "--traffic", home=tmp_path / "state")
    assert both.returncode == 1 and both.stderr.strip().startswith("error: NEW_DATA and --traffic: give one")
    neither = run_cli("drift", home=tmp_path / "state")
    assert neither.returncode == 1 and neither.stderr.strip().startswith("error: NEW_DATA: missing")
    quiet = run_cli("drift", "--traffic", "--name", "pd-quiet", "--since", "2", home=tmp_path / "state")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip().splitlines()[-1].startswith("too little traffic in traffic-pd-quiet: 0 distinct prompts")
