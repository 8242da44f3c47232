"""Clean and dedup on small inputs."""

from __future__ import annotations

from collections import Counter

from tasks.data.clean import CleanSettings, clean_documents, normalise_text
from tasks.data.dedup.settings import DedupSettings
from tasks.data.dedup.stage import exact_key, find_duplicates

TEXT = ("The quick brown fox jumps over the lazy dog while the farmer watches from the gate and the sun sets "
        "slowly behind the hills of the valley where the river runs quietly towards the distant sea.")


def test_normalise_whitespace_and_controls():
    assert normalise_text("  a\t\tb \r\n\r\n\r\n c\x00d  ") == "a b\n\ncd"


def test_clean_drops_empty_and_short_and_counts():
    counts: Counter = Counter()
    docs = [{"doc_id": "1", "text": "   "}, {"doc_id": "2", "text": "tiny"}, {"doc_id": "3", "text": TEXT}]
    kept = list(clean_documents(docs, CleanSettings(min_chars=20), counts))
    assert [d["doc_id"] for d in kept] == ["3"]
    assert counts == Counter(empty=1, too_short=1, kept=1)


def test_exact_key_ignores_case_and_whitespace():
    assert exact_key("Hello   World\n") == exact_key("hello world")
    assert exact_key("hello world") != exact_key("hello worlds")


def test_dedup_removes_exact_and_near_keeps_first():
    """At the defaults: one word changed and one added in a 36-word text is a near duplicate (bag-of-words
    Jaccard 0.92; the old defaults, word 5-grams at 0.8, needed shingle_size=3 and threshold=0.7 here)."""
    near = TEXT.replace("lazy", "sleepy", 1)
    docs = [
        {"doc_id": "a", "text": TEXT},
        {"doc_id": "b", "text": TEXT.upper()},
        {"doc_id": "c", "text": near + " Indeed."},
        {"doc_id": "d", "text": "Something else entirely, about ships and harbours and the sailors in them all."},
    ]
    removed = find_duplicates(docs, DedupSettings())
    assert removed["b"] == {"kind": "exact", "of": "a"}
    assert removed["c"]["kind"] == "near" and removed["c"]["of"] == "a"
    assert "a" not in removed and "d" not in removed


def test_near_dedup_can_be_switched_off():
    docs = [{"doc_id": "a", "text": TEXT}, {"doc_id": "c", "text": TEXT.replace("lazy", "sleepy")}]
    assert find_duplicates(docs, DedupSettings(near=False)) == {}
