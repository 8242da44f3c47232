"""Corrections users sent the gateway become instruction data for the next retrain (``data.corrections``).

The export (tasks/serve/corrections.py) on a traffic store written as the gateway writes it: the JSONL ingest
reads as instruction records with their lineage as metadata, the summary, the order, nothing to export. Then one
`tunegate run` of the tiny pipeline with the setting on: the corrections go through ingest (their file's
lineage in the ingest snapshot), dedup and PII scrubbing into the curated snapshot and the training split, and
the report and the registered version carry their lineage.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
import yaml

from conftest import company_documents, run_cli
from helpers.small_runs import SLOW_START, tiny_config
from tasks.core import snapshot
from tasks.core.records import doc_id
from tasks.data import instructions
from tasks.data.ingest.record_readers import read_jsonl
from tasks.data.ingest.settings import IngestSettings
from tasks.report import report
from tasks.serve.corrections import CORRECTIONS_FILE, export_corrections
from tasks.serve.traffic import TrafficSettings, TrafficStore

MODEL = "tunegate-corrections"


def request(rid: str, version: str, prompt: str, t: float, answer: str = "E214: check the lidar.") -> dict:
    """A request record as the gateway writes it (tasks/serve/app.py)."""
    return {"kind": "request", "id": rid, "index": 0, "time": t, "version": version, "strategy": "blue-green",
            "endpoint": "/v1/chat/completions", "key": None, "prompt": prompt, "answer": answer, "tokens": 7,
            "seconds": 0.1}


def feedback(fid: str, rid: str, t: float, rating: float | None, correction: str | None) -> dict:
    """A feedback record as POST /v1/feedback writes it."""
    return {"kind": "feedback", "id": fid, "time": t, "response_id": rid, "index": 0, "rating": rating,
            "correction": correction}


def write_file(path: Path, records: list[dict], mtime: float) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.utime(path, (mtime, mtime))


@pytest.fixture
def store(tmp_path) -> Path:
    """Two replicas' files: answers of v3 and v4, feedback in both files, one answer corrected twice."""
    folder = tmp_path / "traffic" / MODEL
    folder.mkdir(parents=True)
    now = time.time()
    write_file(folder / "traffic-20250101T000000-000000001-a-1.jsonl", [
        request("cmpl-a", "3", "What does E214 mean on a KR-Carrier 1200?", 10.0),
        request("cmpl-b", "4", "How long does a KR-Picker 7 battery last?", 11.0),
        feedback("fb-1", "cmpl-a", 20.0, -1.0, "E214 means the lidar sees an obstacle in an empty aisle."),
        request("cmpl-c", "4", "Who approves a site visit?", 12.0),
        feedback("fb-2", "cmpl-c", 21.0, 1.0, None),  # a rating without a correction: nothing to learn
    ], now - 100)
    write_file(folder / "traffic-20250101T000000-000000002-b-2.jsonl", [
        request("cmpl-d", "3", "Which team handles FleetView outages?", 13.0),
        feedback("fb-3", "cmpl-d", 22.0, -0.5, "The Platform team handles FleetView outages."),
        feedback("fb-4", "cmpl-b", 23.0, None, "A KR-Picker 7 battery lasts about ten hours per shift."),
        feedback("fb-5", "cmpl-a", 24.0, 0.5, "E214 means the lidar sees an obstacle: check racks moved lately."),
        feedback("fb-6", "cmpl-missing", 25.0, 1.0, "An answer the store no longer holds."),
    ], now - 50)
    return folder


def test_export_writes_instruction_records_with_their_lineage(store, tmp_path):
    out = tmp_path / "run" / "corrections" / CORRECTIONS_FILE
    summary = export_corrections(store, out)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    # the latest feedback on an answer wins (fb-5 over fb-1); rated below 0 (fb-3), no correction (fb-2) and an
    # answer not in the store (fb-6) are left out; the order is the feedback's time
    assert [r["feedback_id"] for r in lines] == ["fb-4", "fb-5"]
    assert lines[0] == {"instruction": "How long does a KR-Picker 7 battery last?",
                        "output": "A KR-Picker 7 battery lasts about ten hours per shift.", "kind": "correction",
                        "response_id": "cmpl-b", "model_version": "4", "feedback_id": "fb-4", "feedback_time": 23.0}
    assert lines[1]["output"] == "E214 means the lidar sees an obstacle: check racks moved lately."
    assert summary.count == 2 and summary.file == str(out)
    assert summary.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    assert summary.response_ids == ["cmpl-b", "cmpl-a"] and summary.versions == ["3", "4"]
    assert summary.traffic == str(store) and summary.min_rating == 0.0

    # ingest reads the file as instruction records; the lineage fields become the documents' metadata
    docs = list(read_jsonl(out, out.name, IngestSettings()))
    assert all(d.get("mime_type") == instructions.MIME_TYPE for d in docs), docs
    parsed = instructions.parse(docs[0]["text"])
    assert parsed.instruction == lines[0]["instruction"] and parsed.output == lines[0]["output"]
    meta = json.loads(docs[1]["metadata"])
    assert meta == {"kind": "correction", "response_id": "cmpl-a", "model_version": "3", "feedback_id": "fb-5",
                    "feedback_time": 24.0}


def test_export_is_deterministic_and_follows_the_rating_floor(store, tmp_path):
    first = export_corrections(store, tmp_path / "one.jsonl")
    second = export_corrections(store, tmp_path / "two.jsonl")
    assert (tmp_path / "one.jsonl").read_bytes() == (tmp_path / "two.jsonl").read_bytes()
    assert first.sha256 == second.sha256 and first.response_ids == second.response_ids
    lenient = export_corrections(store, tmp_path / "all.jsonl", min_rating=-1.0)
    assert lenient.response_ids == ["cmpl-d", "cmpl-b", "cmpl-a"] and lenient.versions == ["3", "4"]
    strict = export_corrections(store, tmp_path / "strict.jsonl", min_rating=0.6)
    assert strict.response_ids == ["cmpl-b"]  # fb-5 is rated 0.5; fb-4 has no rating and is kept

    # two replicas' files, the older file holding the later feedback: lines follow the feedback's time
    folder = tmp_path / "replicas"
    folder.mkdir()
    write_file(folder / "traffic-b.jsonl", [request("cmpl-2", "7", "Second question?", 5.0),
                                            feedback("fb-2", "cmpl-2", 30.0, None, "The second answer.")],
               time.time() - 100)
    write_file(folder / "traffic-a.jsonl", [request("cmpl-1", "6", "First question?", 1.0),
                                            feedback("fb-1", "cmpl-1", 10.0, None, "The first answer.")],
               time.time() - 50)
    summary = export_corrections(folder, tmp_path / "replicas.jsonl")
    assert summary.response_ids == ["cmpl-1", "cmpl-2"] and summary.versions == ["6", "7"]


def test_nothing_to_export_writes_no_file_and_says_so(tmp_path):
    out = tmp_path / "run" / CORRECTIONS_FILE
    summary = export_corrections(tmp_path / "no-such-store", out)
    assert summary.count == 0 and summary.file is None and summary.sha256 is None and not out.exists()
    folder = tmp_path / "traffic"  # a store with answers but no corrections; a file left by an earlier attempt
    folder.mkdir()
    write_file(folder / "traffic-1.jsonl", [request("cmpl-a", "1", "Hello?", 1.0),
                                            feedback("fb-1", "cmpl-a", 2.0, 1.0, None)], time.time())
    out.parent.mkdir(parents=True)
    out.write_text("stale\n")
    summary = export_corrections(folder, out)
    assert summary.count == 0 and summary.response_ids == [] and not out.exists()
    md = report.markdown({"run_id": "r", "status": "failed", "corrections": summary.model_dump(mode="json")})
    assert f"Corrections from the gateway (`data.corrections`): none accepted in `{folder}`" in md


# ------------------------------------------------------------------------------------------ the retrain flow

PII_EMAIL = "ann.lee@example.com"
CORRECTIONS = [  # (prompt, the model's answer, the user's correction): long enough for the length checks
    ("What does error E214 on a KR-Carrier 1200 mean and what should the site check first?",
     "Restart the robot.",
     "E214 means the lidar reports an obstacle where the map shows an empty aisle; check whether racks were "
     "moved since the site map was last updated."),
    ("How many hours does a KR-Picker 7 battery last on a normal shift?",
     "Two hours.",
     "A fully charged KR-Picker 7 battery lasts about ten hours on a normal shift, and it recharges in ninety "
     "minutes on its dock."),
    (f"I am {PII_EMAIL}: who do I call when FleetView is down during the night?",
     "Nobody.",
     "Call the on-call engineer through the support line; FleetView outages are priority one at any hour "
     "of the day or night."),
    ("Which team takes tickets about the KR-Dock 2 charging contacts?",
     "The sales team.",
     "The Hardware team takes KR-Dock 2 tickets: worn charging contacts are replaced under the warranty."),
    ("What must a field engineer bring on a site visit to a customer warehouse?",
     "A laptop.",
     "A field engineer brings the signed visit form, safety shoes and a high-visibility vest, and signs in "
     "at the site office first."),
]


@pytest.fixture(scope="module")
def corrected(tmp_path_factory, extensions_dir):
    """A traffic store for the model, written by the gateway's own TrafficStore (two answers corrected with
    the same text, one prompt with an e-mail address), then `tunegate run` of the tiny pipeline on the company
    documents with data.corrections on."""
    tmp = tmp_path_factory.mktemp("corrections")
    home = tmp / "state"
    traffic = TrafficStore(home / "traffic" / MODEL, TrafficSettings(), lambda texts: texts)  # scrubbed by the run
    traffic.start()
    rows = [*CORRECTIONS, CORRECTIONS[0]]  # the same correction of two answers: dedup keeps one
    for i, (prompt, answer, correction) in enumerate(rows):
        traffic.add(request(f"cmpl-{i}", str(1 + i % 2), prompt, 100.0 + i, answer))
        traffic.add(feedback(f"fb-{i}", f"cmpl-{i}", 200.0 + i, 1.0, correction))
    traffic.add(request("cmpl-low", "2", "What does E305 mean?", 150.0))
    traffic.add(feedback("fb-low", "cmpl-low", 250.0, -1.0, "E305 means the battery is too hot to charge safely."))
    assert traffic.drain()
    config = tiny_config(tmp, company_documents(), registry={"model_name": MODEL})
    settings = yaml.safe_load(config.read_text())
    settings["data"]["corrections"] = True
    config.write_text(yaml.safe_dump(settings))
    proc = run_cli("run", "--config", str(config), "--run-id", "corrected", home=home, env=SLOW_START)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rep = json.loads((home / "runs/corrected/report.json").read_text())
    return home, rep


def test_corrections_reach_the_training_data_through_the_data_stages(corrected):
    home, rep = corrected
    export = home / "runs/corrected/corrections" / CORRECTIONS_FILE
    # the export is a raw input like any other: its path in the ingest snapshot's parameters, its bytes in its
    # input fingerprint
    manifest = json.loads((Path(rep["snapshots"]["ingest"]["path"]) / snapshot.MANIFEST).read_text())
    assert str(export) in manifest["params"]["paths"]
    raw = snapshot.read_table(rep["snapshots"]["ingest"]["path"]).to_pylist()
    from_gateway = [d for d in raw if d["source"] == CORRECTIONS_FILE]
    assert len(from_gateway) == 6 and all(d["mime_type"] == instructions.MIME_TYPE for d in from_gateway)
    assert rep["counts"]["exact_duplicates"] == 1  # the company documents have none: the repeated correction

    curated = snapshot.read_table(rep["snapshots"]["pii"]["path"]).to_pylist()
    texts = "\n".join(d["text"] for d in curated)
    for _, answer, correction in CORRECTIONS:
        assert correction in texts
        assert f"### Response:\n{answer}" not in texts  # the corrected answer is learnt, not the model's
    assert "E305 means the battery" not in texts  # rated below data.corrections_min_rating
    assert PII_EMAIL not in texts and PII_EMAIL in "\n".join(d["text"] for d in from_gateway)
    ids = {doc_id(CORRECTIONS_FILE, line) for line in range(1, 7)}
    kept = {d["doc_id"] for d in curated} & ids
    assert len(kept) == 5
    meta = [json.loads(d["metadata"]) for d in curated if d["doc_id"] in kept]
    assert {m["kind"] for m in meta} == {"correction"} and {m["model_version"] for m in meta} == {"1", "2"}

    split = json.loads((home / "runs/corrected/data/split.json").read_text())
    assert set(split["train"]) & kept and set(split["train"] + split["eval"]) >= kept


def test_the_report_and_the_registered_version_carry_the_corrections_lineage(corrected):
    import mlflow

    home, rep = corrected
    export = home / "runs/corrected/corrections" / CORRECTIONS_FILE
    c = rep["corrections"]
    sha = hashlib.sha256(export.read_bytes()).hexdigest()
    assert c["count"] == 6 and c["file"] == str(export) and c["sha256"] == sha
    assert c["response_ids"] == [f"cmpl-{i}" for i in range(6)] and c["versions"] == ["1", "2"]
    assert c["traffic"] == str(home / "traffic" / MODEL) and c["min_rating"] == 0.0
    md = (home / "runs/corrected/report.md").read_text()
    assert (f"Corrections from the gateway (`data.corrections`): 6 corrected answers of v1, v2 joined the data as "
            f"instruction records (`{CORRECTIONS_FILE}`, sha256 `{sha[:16]}`)") in md

    uri = f"sqlite:///{home / 'mlflow.db'}"
    version = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version(MODEL, rep["model"]["version"])
    assert version.tags["corrections"] == "6" and version.tags["corrections_sha256"] == sha
    assert version.tags["corrections_versions"] == "1,2"
