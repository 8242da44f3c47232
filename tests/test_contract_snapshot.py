"""Contracts on snapshots: validated shard by shard, the same verdicts as on the whole table."""

from __future__ import annotations

import json

import pyarrow as pa

from conftest import ROOT
from tasks.core import snapshot
from tasks.data.contracts import frame_for_contract, validate_frame, validate_snapshot

SUITE = ROOT / "data_contracts/curated.json"
WORDS = "a perfectly ordinary paragraph about training schedules and evaluation gates with nothing secret in it"


def shards(texts: list[str], per: int) -> list[pa.Table]:
    ids = [f"d{i}" for i in range(len(texts))]
    return [pa.table({"doc_id": ids[i : i + per], "text": texts[i : i + per]}) for i in range(0, len(texts), per)]


def test_shardwise_equals_whole_table(tmp_path):
    texts = [f"{WORDS} and {WORDS} number {i}." for i in range(30)]
    texts[7] += " Mail me at someone@example.com."
    texts[22] += " Or call (212) 555-0199."
    ref = snapshot.write(tmp_path, "pii", "k", shards(texts, 8), parent=None, params={}, stats={})
    by_shard = validate_snapshot(ref, SUITE, "curated")
    whole = validate_frame(frame_for_contract(snapshot.read_table(ref)), SUITE, "curated")
    key = lambda o: (o.expectation, json.dumps(o.kwargs, sort_keys=True))  # noqa: E731
    assert sorted((key(o), o.success, o.unexpected_count) for o in by_shard.expectations) == \
        sorted((key(o), o.success, o.unexpected_count) for o in whole.expectations)
    assert not by_shard.passed and by_shard.rows == 30
    failed = {o.expectation for o in by_shard.expectations if not o.success}
    assert failed == {"expect_column_values_to_not_match_regex", "expect_column_sum_to_be_between"}


def test_training_contract_catches_eval_leakage(tmp_path):
    texts = [f"{WORDS} number {i}. " * 6 for i in range(12)]
    ref = snapshot.write(tmp_path, "pii", "k", shards(texts, 5), parent=None, params={}, stats={})
    ids = {f"d{i}" for i in range(12)}
    clean = validate_snapshot(ref, ROOT / "data_contracts/training.json", "training", (ids - {"d0"}, {"d0"}))
    leaky = validate_snapshot(ref, ROOT / "data_contracts/training.json", "training", (ids, {"d0"}))
    assert clean.passed and clean.rows == 11
    assert [f for f in leaky.failures if "in_eval" in f]
