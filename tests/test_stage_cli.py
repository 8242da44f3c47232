"""`tunegate ingest | dedup | scrub`: one stage alone, on snapshot folders or JSONL files, on the sample corpus.

Besides the stages chaining, this is the check that the corpus does what examples/PLANTED.json says: only the
corrupt PDF is quarantined, dedup removes exactly the planted duplicates (no ticket, no instruction record), and
scrubbing leaves none of the planted PII, nothing the curated contract's patterns match, and every instruction
record in its layout with its response untouched (the response is the reference the evaluation scores against).
"""

from __future__ import annotations

import json
from collections import Counter

from conftest import PLANTED, run_cli
from tasks.data import instructions
from tasks.core import snapshot
from tasks.data.contracts import RESIDUAL_PII


def test_stages_chain_through_jsonl_and_snapshots(tmp_path, corpus_copy):
    home = tmp_path / "state"
    raw = tmp_path / "raw.jsonl"
    proc = run_cli("ingest", str(corpus_copy), "--out", str(raw), home=home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    planted = json.loads(PLANTED.read_text())
    files = sum(1 for p in corpus_copy.rglob("*") if p.is_file())
    assert f"from {files} inputs, 1 quarantined" in proc.stdout and "corrupt PDF" in proc.stderr
    rows = [json.loads(line) for line in raw.read_text().splitlines()]
    assert {"doc_id", "source", "text", "mime_type", "metadata", "ingested_at"} <= set(rows[0])
    raw_text = "\n".join(r["text"] for r in rows)
    assert [s for s in planted["pii"] if s not in raw_text] == []  # every planted string is there to begin with
    assert len({r["source"] for r in rows}) == files - 1  # every file but the broken PDF gave a document
    by_source = Counter(r["source"] for r in rows)
    assert by_source[planted["instructions"]["source"]] == planted["instructions"]["count"]
    tickets = "corpus/records/tickets.jsonl"
    assert by_source[tickets] == sum(1 for _ in (corpus_copy / "records/tickets.jsonl").open())

    deduped = tmp_path / "deduped"
    proc = run_cli("dedup", str(raw), "--out", str(deduped), home=home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert snapshot.is_snapshot(deduped)
    kept = snapshot.read_table(deduped).to_pylist()
    kept_sources = [r["source"] for r in kept]
    planted_dups = {d["source"] for d in planted["exact_duplicates"] + planted["near_duplicates"]}
    assert len(kept) == len(rows) - len(planted_dups)
    assert not planted_dups & set(kept_sources)
    assert Counter(kept_sources) == by_source - Counter(planted_dups)  # no ticket or instruction record removed

    scrubbed = tmp_path / "scrubbed.jsonl"
    proc = run_cli("scrub", str(deduped), "--out", str(scrubbed), home=home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = scrubbed.read_text()
    assert all(s not in text for s in planted["pii"])
    assert "EMAIL_ADDRESS" in proc.stdout
    out = [json.loads(line) for line in text.splitlines()]
    assert [m for r in out for m in RESIDUAL_PII.findall(r["text"])] == []  # the curated contract's patterns

    before = {r["doc_id"]: instructions.parse(r["text"]) for r in kept if r["mime_type"] == instructions.MIME_TYPE}
    after = {r["doc_id"]: instructions.parse(r["text"]) for r in out if r["mime_type"] == instructions.MIME_TYPE}
    assert len(after) == planted["instructions"]["count"] and None not in after.values()
    changed = [(before[k].output, after[k].output) for k in after if after[k].output != before[k].output]
    assert changed == [], changed[:5]


def test_stage_input_must_be_snapshot_or_jsonl(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    proc = run_cli("dedup", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "o"), home=tmp_path / "s")
    assert proc.returncode == 1 and "neither a snapshot folder" in proc.stderr
