"""`tunegate ingest | dedup | scrub`: one stage alone, on snapshot folders or JSONL files."""

from __future__ import annotations

import json

from conftest import PLANTED, run_cli
from tasks import snapshot


def test_stages_chain_through_jsonl_and_snapshots(tmp_path, corpus_copy):
    home = tmp_path / "state"
    raw = tmp_path / "raw.jsonl"
    proc = run_cli("ingest", str(corpus_copy), "--out", str(raw), home=home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 quarantined" in proc.stdout and "corrupt PDF" in proc.stderr
    rows = [json.loads(line) for line in raw.read_text().splitlines()]
    assert {"doc_id", "source", "text", "mime_type", "metadata", "ingested_at"} <= set(rows[0])

    deduped = tmp_path / "deduped"
    proc = run_cli("dedup", str(raw), "--out", str(deduped), home=home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert snapshot.is_snapshot(deduped)
    planted = json.loads(PLANTED.read_text())
    kept_sources = snapshot.read_table(deduped).column("source").to_pylist()
    assert len(kept_sources) == len(rows) - len(planted["exact_duplicates"]) - len(planted["near_duplicates"])
    assert not {d["source"] for d in planted["exact_duplicates"] + planted["near_duplicates"]} & set(kept_sources)

    scrubbed = tmp_path / "scrubbed.jsonl"
    proc = run_cli("scrub", str(deduped), "--out", str(scrubbed), home=home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = scrubbed.read_text()
    assert all(s not in text for s in planted["pii"])
    assert "EMAIL_ADDRESS" in proc.stdout


def test_stage_input_must_be_snapshot_or_jsonl(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    proc = run_cli("dedup", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "o"), home=tmp_path / "s")
    assert proc.returncode == 1 and "neither a snapshot folder" in proc.stderr
