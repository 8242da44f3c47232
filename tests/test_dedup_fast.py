"""Near dedup: quality on a planted set, transitive clusters, deterministic survivors, edge cases, settings.

The planted set comes from bench/dedup.py (the benchmark's own builder), on the shared text corpora when
they are there and on a made-up Zipf word stream when they are not.
"""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from conftest import ROOT, SHARED_EVAL
from tasks.data.dedup import minhash, stage
from tasks.data.dedup.clusters import UnionFind
from tasks.data.dedup.minhash import sign_texts, word_hashes, words
from tasks.data.dedup.settings import DedupSettings, derive_banding
from tasks.data.dedup.stage import find_duplicates


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_dedup", ROOT / "bench" / "dedup.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_dedup"] = module
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


@pytest.fixture(scope="module")
def stream() -> list[str]:
    corpora = SHARED_EVAL / "corpora"
    if (corpora / "wikitext-2-raw" / "wiki.test.raw").is_file():
        return bench.corpus_words(corpora)
    return bench.synthetic_words()


@pytest.fixture(scope="module")
def planted(stream):
    return bench.build_planted(400, seed=7, stream=stream)


def _base_text(stream: list[str], n: int, seed: int) -> list[str]:
    """``n`` words of the stream from a seeded position, made unique so that edits change shingles."""
    start = random.Random(seed).randrange(len(stream) - n)
    return [f"{w}{i}" for i, w in enumerate(stream[start : start + n])]


def _substitute(words_: list[str], positions: list[int], tag: str) -> list[str]:
    out = list(words_)
    for p in positions:
        out[p] = f"changed{tag}{p}"
    return out


# ------------------------------------------------------------------------------------------- quality


def test_planted_set_f1_and_not_worse_than_datasketch(planted):
    ids = [d["doc_id"] for d in planted.docs]
    settings = DedupSettings()
    ours = bench.pair_scores(planted.truth, bench.clusters_from_removed(ids, find_duplicates(planted.docs, settings)))
    base = bench.pair_scores(planted.truth, bench.clusters_from_removed(
        ids, bench.datasketch_dedup(planted.docs, settings.num_perm, settings.threshold, settings.shingle_size,
                                    settings.seed)))
    assert planted.kinds["near"] >= 30 and planted.kinds["hard"] >= 15
    assert ours["f1"] >= 0.97, ours
    assert ours["f1"] >= base["f1"] - 1e-9, (ours, base)


def test_signatures_estimate_jaccard_without_bias(planted):
    """Estimated minus true Jaccard over the planted cluster pairs: centred on zero, spread as MinHash's."""
    errors = bench.estimator_error(planted, num_perm=128, seed=1, shingle_size=5)
    mean, std = errors["tunegate"]
    assert abs(mean) < 0.01 and std < 0.035, errors


def test_hard_negatives_are_kept(planted):
    removed = find_duplicates(planted.docs, DedupSettings())
    hard_clusters = {c for c in planted.truth.values() if c >= planted.kinds["original"]}
    assert not [d for d in removed if planted.truth[d] in hard_clusters]


# ------------------------------------------------------------------------------------------- clusters


def test_union_find_root_is_smallest_member():
    sets = UnionFind(6)
    sets.union(4, 5)
    sets.union(5, 2)
    sets.union(3, 1)
    assert [sets.find(i) for i in range(6)] == [0, 1, 2, 1, 2, 2]


@pytest.fixture(scope="module")
def chain(stream):
    """A ~ B and B ~ C (true Jaccard ~0.9) while A and C are further apart (~0.82), with threshold 0.86."""
    a = _base_text(stream, 300, seed=1)
    b = _substitute(a, [10, 60, 110], "b")
    c = _substitute(b, [160, 210, 260], "c")
    texts = {name: " ".join(w) for name, w in zip("ABC", (a, b, c))}
    settings = DedupSettings(threshold=0.86, num_perm=512)
    assert bench.jaccard(texts["A"], texts["B"]) > 0.9 and bench.jaccard(texts["B"], texts["C"]) > 0.9
    assert bench.jaccard(texts["A"], texts["C"]) < 0.83
    return texts, settings


@pytest.mark.parametrize("order", ["ABC", "CAB", "BCA", "ACB"])
def test_clusters_are_transitive_with_first_in_order_surviving(chain, order):
    texts, settings = chain
    removed = find_duplicates([{"doc_id": n, "text": texts[n]} for n in order], settings)
    survivor = order[0]
    assert set(removed) == set(order) - {survivor}
    assert all(r["kind"] == "near" and r["of"] == survivor for r in removed.values())
    if survivor in "AC":  # the far end of the chain joins through B
        far = "C" if survivor == "A" else "A"
        assert removed[far]["match"] == "B"
        assert "match" not in removed["B"]


def test_survivor_is_deterministic_and_first_in_input_order(planted):
    settings = DedupSettings()
    first = find_duplicates(planted.docs, settings)
    assert find_duplicates(planted.docs, settings) == first
    shuffled = list(planted.docs)
    random.Random(3).shuffle(shuffled)
    position = {d["doc_id"]: i for i, d in enumerate(shuffled)}
    removed = find_duplicates(shuffled, settings)
    for doc_id, record in removed.items():
        assert record["of"] not in removed
        assert position[record["of"]] < position[doc_id]


@pytest.mark.parametrize("exact", [True, False])
def test_identical_documents_in_any_order_keep_exactly_one(stream, exact):
    text = " ".join(_base_text(stream, 120, seed=5))
    variants = [text, text.upper(), "  " + text.replace(" ", "\n", 4), text.title(), text]
    for seed in range(4):
        docs = [{"doc_id": f"v{i}", "text": t} for i, t in enumerate(variants)]
        random.Random(seed).shuffle(docs)
        removed = find_duplicates(docs, DedupSettings(exact=exact))
        kept = [d["doc_id"] for d in docs if d["doc_id"] not in removed]
        assert kept == [docs[0]["doc_id"]]
        assert {r["kind"] for r in removed.values()} == {"exact" if exact else "near"}


def test_exact_copy_of_a_near_duplicate_points_at_the_survivor(chain):
    texts, settings = chain
    docs = [{"doc_id": "A", "text": texts["A"]}, {"doc_id": "B", "text": texts["B"]},
            {"doc_id": "B2", "text": texts["B"].upper()}]
    removed = find_duplicates(docs, settings)
    assert removed["B"]["kind"] == "near" and removed["B"]["of"] == "A"
    assert removed["B2"] == {"kind": "exact", "of": "A", "match": "B"}


# ----------------------------------------------------------------------------------------- edge cases


def test_empty_and_very_short_documents():
    texts = ["", "   ", "!!!", "???", "a", "a", "A b", "a  b", "a b c", "x y z w v u", "x y z w v u."]
    docs = [{"doc_id": str(i), "text": t} for i, t in enumerate(texts)]
    removed = find_duplicates(docs, DedupSettings())
    assert removed == {"1": {"kind": "exact", "of": "0"}, "5": {"kind": "exact", "of": "4"},
                       "7": {"kind": "exact", "of": "6"}, "10": {"kind": "near", "of": "9", "jaccard": 1.0}}
    # without the exact pass, documents without words are never near duplicates of anything
    removed = find_duplicates(docs, DedupSettings(exact=False))
    assert not {"0", "1", "2", "3"} & set(removed)
    assert removed["5"]["of"] == "4" and removed["7"]["of"] == "6"
    assert find_duplicates([], DedupSettings()) == {}
    assert find_duplicates([{"doc_id": "n", "text": None}, {"doc_id": "e", "text": ""}], DedupSettings()) == {
        "e": {"kind": "exact", "of": "n"}}
    assert find_duplicates([{"doc_id": "only", "text": ""}], DedupSettings()) == {}


def test_long_documents_span_several_chunks(stream, monkeypatch):
    long_words = _base_text(stream, 5000, seed=9)
    long_text = " ".join(long_words)
    near = " ".join(_substitute(long_words, list(range(100, 5000, 400)), "n"))
    whole, _ = sign_texts([long_text, "short text here", near], DedupSettings())
    monkeypatch.setattr(minhash, "_CHUNK_SHINGLES", 997)
    chunked, _ = sign_texts([long_text, "short text here", near], DedupSettings())
    assert np.array_equal(whole, chunked)
    removed = find_duplicates([{"doc_id": "long", "text": long_text}, {"doc_id": "near", "text": near}],
                              DedupSettings())
    assert removed["near"]["of"] == "long"


def test_signature_depends_only_on_the_text(planted):
    texts = [d["text"] for d in planted.docs[:50]]
    alone = np.vstack([sign_texts([t], DedupSettings())[0] for t in texts[:5]])
    together, _ = sign_texts(texts, DedupSettings())
    assert np.array_equal(alone, together[:5])
    other_seed, _ = sign_texts(texts[:5], DedupSettings(seed=2))
    assert not np.array_equal(alone, other_seed)


def test_word_hashes_find_the_regex_words():
    texts = ["Hello, World! naïve café — x_y 42", "", "  \n ", "ab abc ab ba",
             "ﬁne İstanbul 𝔘nicode 😀 done", "tab\tseparated\u00a0nbsp\u2003em-space", "ÀÉÎ ÕÜ"]
    hashes, counts = word_hashes(texts)
    assert counts.tolist() == [len(words(t)) for t in texts]
    one_by_one = [int(word_hashes([w])[0][0]) for t in texts for w in words(t)]
    assert hashes.tolist() == one_by_one
    vocab = sorted({w for t in texts for w in words(t)})
    assert len(set(word_hashes(vocab)[0].tolist())) == len(vocab)


# ----------------------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": 0}, "threshold"),
        ({"num_perm": 8}, "num_perm"),
        ({"shingle_size": 0}, "shingle_size"),
        ({"seed": -1}, "seed"),
        ({"bands": 16}, "rows"),
        ({"rows": 8}, "rows"),
        ({"bands": 30, "rows": 5}, "rows"),
        ({"bands": 0, "rows": 5}, "bands"),
        ({"permutations": 64}, "permutations"),
    ],
)
def test_bad_settings_are_rejected_naming_the_field(kwargs, field):
    with pytest.raises(ValidationError) as err:
        DedupSettings(**kwargs)
    assert field in {str(p) for e in err.value.errors() for p in e["loc"]}, err.value


def test_banding_follows_threshold_unless_set():
    assert DedupSettings().banding() == (21, 6)
    assert DedupSettings(bands=16, rows=8).banding() == (16, 8)
    for threshold in (0.5, 0.7, 0.8, 0.9, 0.95):
        bands, rows = derive_banding(threshold, 128)
        assert bands * rows <= 128
        assert 1 - (1 - threshold**rows) ** bands >= 0.99


def test_config_error_names_the_dedup_field(tmp_path):
    from flows.config import ConfigError, load_config

    (tmp_path / "c.yaml").write_text("dedup:\n  bands: 40\n  rows: 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "c.yaml")
    assert "dedup.rows" in str(err.value) and "num_perm" in str(err.value)


# ----------------------------------------------------------------------------------------- snapshot


def test_dedup_snapshot_writes_removed_list_and_counts(tmp_path, chain):
    from tasks.core import snapshot

    texts, settings = chain
    rows = [{"doc_id": n, "text": t} for n, t in
            [("A", texts["A"]), ("A2", texts["A"].upper()), ("B", texts["B"]), ("C", texts["C"]), ("Z", "other")]]
    source = snapshot.write(tmp_path / "store", "clean", "k", [pa.Table.from_pylist(rows)], parent=None,
                            params={}, stats={})
    ref = stage.dedup_snapshot(source, settings, tmp_path / "store")
    assert snapshot.read_table(ref).column("doc_id").to_pylist() == ["A", "Z"]
    stats = ref.manifest()["stats"]
    assert stats == {"exact_duplicates": 1, "near_duplicates": 2, "kept": 2}
    removed = [json.loads(line) for line in (Path(ref.path) / "removed.jsonl").read_text().splitlines()]
    assert [r["doc_id"] for r in removed] == ["A2", "B", "C"] and {r["of"] for r in removed} == {"A"}
    assert stage.dedup_snapshot(source, settings, tmp_path / "store").reused
