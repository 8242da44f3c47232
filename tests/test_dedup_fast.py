"""Near dedup: quality on planted sets at the defaults, transitive clusters, deterministic survivors, edge
cases, bag-of-words sketches, character shingles, settings.

The planted sets come from bench/dedup_sets.py (the benchmark's own builder): WikiText paragraphs and
Shakespeare passages from the shared corpora when they are there, documents of made-up Zipf words when not.
"""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from conftest import ROOT, SHARED_EVAL
from tasks.data.dedup import minhash, stage
from tasks.data.dedup.clusters import UnionFind
from tasks.data.dedup.minhash import char_values, sign_texts, word_hashes, words
from tasks.data.dedup.settings import DedupSettings, derive_banding
from tasks.data.dedup.sketch import bag_sketches, sketch_jaccard
from tasks.data.dedup.stage import find_duplicates


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_dedup", ROOT / "bench" / "dedup.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_dedup"] = module
    spec.loader.exec_module(module)
    return module


bench = _load_bench()
sets = sys.modules["bench.dedup_sets"]
CORPORA = SHARED_EVAL / "corpora"
HAVE_CORPORA = (CORPORA / "wikitext-2-raw" / "wiki.test.raw").is_file()


def _planted(name: str, limit: int, seed: int = 7):
    if HAVE_CORPORA:
        return sets.build_set(name, seed, CORPORA, limit=limit)
    bounds = sets.LONG if name.endswith("-long") else sets.SHORT
    return sets.build_set(name, seed, originals=sets.synthetic_originals(limit, seed, bounds))


@pytest.fixture(scope="module")
def stream() -> list[str]:
    if HAVE_CORPORA:
        return [w for t in sets.load_originals("wiki-short", CORPORA) for w in t.split()]
    return [w for t in sets.synthetic_originals(200) for w in t.split()]


@pytest.fixture(scope="module")
def planted():
    return _planted("wiki-short", 300)


@pytest.fixture(scope="module")
def planted_long():
    if not HAVE_CORPORA:  # made-up Zipf words share far more of their bags than text does: no fair long set
        pytest.fail(f"the long set needs the shared corpora: {CORPORA / 'wikitext-2-raw' / 'wiki.test.raw'} is missing",
                    pytrace=False)
    return _planted("shakespeare-long", 40)


def _base_text(stream: list[str], n: int, seed: int) -> list[str]:
    """``n`` words of the stream from a seeded position, made unique so that edits change shingles."""
    start = random.Random(seed).randrange(len(stream) - n)
    return [f"{w}{i}" for i, w in enumerate(stream[start : start + n])]


def _substitute(words_: list[str], positions: list[int], tag: str) -> list[str]:
    out = list(words_)
    for p in positions:
        out[p] = f"changed{tag}{p}"
    return out


def _labels(planted_set, removed):
    return sets.clusters_from_removed([d["doc_id"] for d in planted_set.docs], removed)


# ------------------------------------------------------------------------------------------- quality


@pytest.mark.parametrize("which", ["planted", "planted_long"])
def test_planted_sets_at_the_defaults(which, request):
    """Short and long documents, near copies at 1-10 % edited words, hard negatives sharing 60-80 % of their
    words: F1 >= 0.99 at the defaults, as good as datasketch with the same settings (exact verification),
    while the old defaults (word 5-grams, 0.8 on the signature) missed most near copies."""
    planted_set = request.getfixturevalue(which)
    settings = DedupSettings()
    removed = find_duplicates(planted_set.docs, settings)
    ours = sets.pair_scores(planted_set.truth, _labels(planted_set, removed))
    base = sets.pair_scores(planted_set.truth, _labels(planted_set, bench.datasketch_dedup(planted_set.docs, settings)))
    old = sets.pair_scores(planted_set.truth, _labels(planted_set, find_duplicates(planted_set.docs,
                                                                                  bench.OLD_DEFAULTS)))
    assert planted_set.kinds["near"] >= 30 and planted_set.kinds["hard"] >= 15
    assert ours["f1"] >= 0.99, ours
    assert ours["f1"] >= base["f1"] - 0.01, (ours, base)
    assert old["recall"] < 0.6, old


def test_signatures_estimate_jaccard_without_bias(planted):
    """Estimated minus true shingle Jaccard over the planted near pairs: centred on zero, spread as
    datasketch's."""
    errors = bench.estimator_error(planted, DedupSettings())
    mean, std = errors["tunegate"]
    assert abs(mean) < 0.01 and std < 1.2 * errors["datasketch"][1], errors


def test_hard_negatives_are_kept(planted):
    removed = find_duplicates(planted.docs, DedupSettings())
    assert sets.negatives_removed(planted, removed) == Counter()


# ------------------------------------------------------------------------------------------- clusters


def test_union_find_root_is_smallest_member():
    sets = UnionFind(6)
    sets.union(4, 5)
    sets.union(5, 2)
    sets.union(3, 1)
    assert [sets.find(i) for i in range(6)] == [0, 1, 2, 1, 2, 2]


@pytest.fixture(scope="module")
def chain(stream):
    """A ~ B and B ~ C (bag-of-words Jaccard ~0.82, 10 % of the words substituted) while A and C are further
    apart (~0.67), at the defaults (threshold 0.8)."""
    a = _base_text(stream, 300, seed=1)
    b = _substitute(a, list(range(5, 300, 10)), "b")
    c = _substitute(b, list(range(0, 300, 10)), "c")
    texts = {name: " ".join(w) for name, w in zip("ABC", (a, b, c))}
    settings = DedupSettings()
    assert sets.bag_jaccard(texts["A"], texts["B"]) > 0.81 and sets.bag_jaccard(texts["B"], texts["C"]) > 0.81
    assert sets.bag_jaccard(texts["A"], texts["C"]) < 0.7
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


def test_char_values_are_the_words_joined_by_single_spaces():
    texts = ["Hello,  World!\n foo", "", "!!", "a b", "ﬁne 😀 İx"]
    values, counts = char_values(texts)
    joined = [" ".join(words(t)) for t in texts]
    assert counts.tolist() == [len(j) for j in joined]
    expected = minhash.mix64(np.array([ord(c) for c in "".join(joined)], dtype=np.uint64)
                             + np.uint64(0x632BE59BD9B4E019))
    assert np.array_equal(values, expected)


def test_character_shingles_and_signature_verification_still_work(chain):
    """The other settings the study compares: character shingles, and the old verification on the
    signatures' estimated shingle Jaccard (here with word 5-grams and a low threshold)."""
    texts, _ = chain
    docs = [{"doc_id": n, "text": texts[n]} for n in "AB"] + [{"doc_id": "Z", "text": "something else " * 30}]
    assert set(find_duplicates(docs, DedupSettings(shingle_unit="char", shingle_size=5))) == {"B"}
    signature = DedupSettings(shingle_size=5, verify="signature", threshold=0.2, candidate_threshold=0.2)
    removed = find_duplicates(docs, signature)
    assert set(removed) == {"B"} and 0.2 <= removed["B"]["jaccard"] < 0.6  # the 5-gram estimate, not the bag's


# ------------------------------------------------------------------------------------------ sketches


def _bag(text: str) -> Counter:
    return Counter(words(text))


def test_sketch_jaccard_is_exact_up_to_the_sketch_size_and_close_beyond(stream):
    rng = random.Random(4)
    texts = []
    for n in (3, 40, 200, 511, 512, 2000, 6000):
        a = stream[rng.randrange(len(stream) - n):][:n]
        b = [w if rng.random() > 0.12 else rng.choice(stream) for w in a]
        texts += [" ".join(a), " ".join(b)]
    texts += ["", "lonely words"]
    hashes, lengths = word_hashes(texts)
    sketches = bag_sketches(hashes, lengths, 512)
    left = np.arange(0, len(texts), 2)
    got = sketch_jaccard(sketches, left, left + 1)
    want = np.array([sets.bag_jaccard(texts[i], texts[i + 1]) if texts[i] else 0.0 for i in left])
    exact = np.array([max(sum(_bag(texts[i]).values()), sum(_bag(texts[i + 1]).values())) <= 512 for i in left])
    assert np.allclose(got[exact], want[exact], atol=1e-12), (got, want)
    assert np.all(np.abs(got[~exact] - want[~exact]) < 0.06), (got, want)
    # a document's sketch does not depend on the batch it is in
    alone = [bag_sketches(*word_hashes([t]), 512) for t in texts[:4]]
    assert all(np.array_equal(a.values, sketches.values[sketches.starts[i]:sketches.starts[i + 1]])
               for i, a in enumerate(alone))


def test_repeated_words_count_in_the_bag():
    """The bag counts repeats: ten 'a' and one 'a' are not alike, though their word sets are equal."""
    texts = ["a " * 10 + "b", "a b", "a " * 9 + "b"]
    hashes, lengths = word_hashes(texts)
    got = sketch_jaccard(bag_sketches(hashes, lengths, 512), np.array([0, 0]), np.array([1, 2]))
    assert got.tolist() == [2 / 11, 10 / 11]


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
        ({"shingle_unit": "byte"}, "shingle_unit"),
        ({"verify": "exact"}, "verify"),
        ({"candidate_threshold": 1.0}, "candidate_threshold"),
        ({"sketch_size": 8}, "sketch_size"),
    ],
)
def test_bad_settings_are_rejected_naming_the_field(kwargs, field):
    with pytest.raises(ValidationError) as err:
        DedupSettings(**kwargs)
    assert field in {str(p) for e in err.value.errors() for p in e["loc"]}, err.value


def test_banding_follows_the_candidate_threshold_unless_set():
    assert DedupSettings().banding() == (42, 3)  # a pair at shingle Jaccard 0.5 is a candidate 99.6 % of the time
    assert DedupSettings(candidate_threshold=0.8).banding() == (21, 6)  # the old defaults' banding
    assert DedupSettings(bands=16, rows=8).banding() == (16, 8)
    for threshold in (0.3, 0.5, 0.7, 0.8, 0.9, 0.95):
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
