"""Properties of the clean, dedup and scrub functions on generated text (hypothesis).

- clean: ``normalise_text`` and ``clean_documents`` never crash on any Unicode text (control characters,
  right-to-left scripts, emoji, combining marks, very long lines), and normalising is idempotent;
- dedup: exact copies (also differing only in case of ASCII letters or in whitespace) always collapse to
  one document, a copy with one word changed in 200 is a near duplicate, and texts whose word-shingle
  Jaccard similarity is under 0.5 are all kept;
- scrub: a batch of arbitrary texts gives one scrubbed text each; scrubbing scrubbed text changes nothing
  for the pattern-recognised types and finds none of them again with the default entity list (the NER
  types are context-dependent: see tests/RELIABILITY.md, "Properties").
Example counts are kept small (Presidio and spaCy run on each example); the scrub examples are batched.
"""

from __future__ import annotations

import re
from collections import Counter

from hypothesis import HealthCheck, assume, example, given, settings as hsettings, strategies as st

from tasks.data.clean import CleanSettings, clean_documents, normalise_text
from tasks.data.dedup.minhash import words
from tasks.data.dedup.settings import DedupSettings
from tasks.data.dedup.stage import exact_key, find_duplicates
from tasks.data.pii.settings import PLACEHOLDER, SECRET_ENTITIES, PiiSettings
from tasks.data.pii.scrub import scrub_texts

STRUCTURED = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS", *SECRET_ENTITIES]

# text of every kind: any code point but surrogates, plus pieces that stress each stage
_ODD = st.sampled_from([
    "\x00", "\x07", "\x1b[31m", "\r\n", "\r", "\u2028", "\u0085", "\t\t", "\u200b", "\ufeff", "\u202e", "\u0301",
    "e\u0301", "\u00e9", "\u05e9\u05dc\u05d5\u05dd", "\u0645\u0631\u062d\u0628\u0627", "\U0001f642", "\U0001f468\u200d\U0001f469",
    "\ufffd", "\U0010fffd", "ß", "İ", "ﬁ", "Å", "٣٤٥", "<PERSON>", "<", ">", "  ", "\n\n\n",
])
TEXT = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=300),
    st.lists(st.one_of(_ODD, st.text(max_size=12)), max_size=60).map("".join),
)
LONG_LINE = st.builds(lambda word, n: (word + " ") * n, st.text(min_size=1, max_size=8), st.integers(1_000, 6_000))


# ------------------------------------------------------------------------------------------------ clean

@hsettings(max_examples=300, deadline=None)
@given(TEXT)
@example("e\x07\u0301")  # a control character between a letter and its combining mark (was not idempotent)
@example("a\r\u0301\x00b\u0327")
def test_normalise_never_crashes_and_is_idempotent(text):
    once = normalise_text(text)
    assert normalise_text(once) == once
    assert once == once.strip() and "\r" not in once and "\n\n\n" not in once


@hsettings(max_examples=10, deadline=None)
@given(LONG_LINE)
def test_normalise_long_lines(text):
    once = normalise_text(text)
    assert normalise_text(once) == once and len(once) <= len(text)


@hsettings(max_examples=100, deadline=None)
@given(st.lists(TEXT, max_size=8), st.integers(0, 60), st.integers(1, 400))
def test_clean_documents_counts_every_document(texts, min_chars, max_chars):
    settings = CleanSettings(min_chars=min_chars, max_chars=max_chars)
    counts: Counter = Counter()
    kept = list(clean_documents([{"doc_id": str(i), "text": t} for i, t in enumerate(texts)], settings, counts))
    assert sum(counts.values()) == len(texts) and counts["kept"] == len(kept)
    assert all(min_chars <= len(d["text"]) <= max_chars and d["text"] == normalise_text(d["text"]) for d in kept)


# ------------------------------------------------------------------------------------------------ dedup

def _kept(texts: list[str], settings: DedupSettings = DedupSettings()) -> list[int]:
    docs = [{"doc_id": str(i), "text": t} for i, t in enumerate(texts)]
    removed = find_duplicates(docs, settings)
    return [i for i in range(len(texts)) if str(i) not in removed]


def _respace(text: str, seed: int) -> str:
    """The same words with other whitespace between them (the exact key is blind to it)."""
    seps = [" ", "\n", "\t", "  ", " \n "]
    return "".join(w + seps[(seed + i) % len(seps)] for i, w in enumerate(text.split()))


@hsettings(max_examples=150, deadline=None)
@given(st.lists(TEXT, min_size=1, max_size=6), st.lists(st.integers(0, 5), min_size=1, max_size=12),
       st.randoms(use_true_random=False))
def test_exact_copies_collapse_to_one(texts, copies, rnd):
    """Each text and its copies (verbatim, re-spaced, ASCII-upper-cased) leave exactly one document."""
    stream = []
    for k, text in enumerate(texts):
        variants = [text, _respace(text, k), text.encode("ascii", "ignore").decode().upper()
                    if text.isascii() else text]
        for c in copies[: 1 + k % len(copies)]:
            stream.append((k, variants[c % len(variants)]))
    rnd.shuffle(stream)
    kept = _kept([t for _, t in stream], DedupSettings(near=False))
    groups = {exact_key(t) for _, t in stream}
    assert len(kept) == len(groups)
    assert {exact_key(stream[i][1]) for i in kept} == groups


_WORDS = st.lists(st.text("abcdefghijklmnopqrstuvwxyzéßøł", min_size=2, max_size=9), min_size=40, max_size=80)


def _jaccard(a: str, b: str) -> float:
    """The Jaccard of the two texts' bags of words (each word with its count): what the near-dedup stage's
    default verification compares with its threshold (0.8)."""
    from collections import Counter

    ca, cb = Counter(words(a)), Counter(words(b))
    return sum((ca & cb).values()) / max(1, sum((ca | cb).values()))


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.lists(_WORDS, min_size=2, max_size=6))
def test_distinct_texts_are_all_kept(word_lists):
    texts = [" ".join(ws) for ws in word_lists]
    assume(len({exact_key(t) for t in texts}) == len(texts))
    assume(all(_jaccard(a, b) < 0.5 for i, a in enumerate(texts) for b in texts[i + 1:]))
    assert _kept(texts) == list(range(len(texts)))


@hsettings(max_examples=40, deadline=None)
@given(st.lists(st.text("abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=9), min_size=200, max_size=240),
       st.integers(0, 10_000), st.booleans())
def test_a_copy_with_one_word_changed_is_a_near_duplicate(ws, where, copy_first):
    original = " ".join(f"{w}{i}" for i, w in enumerate(ws))  # unique words: one change touches 5 shingles
    edited = list(original.split())
    edited[where % len(edited)] = "changed"
    texts = [original, " ".join(edited)]
    if copy_first:
        texts.reverse()
    assert _kept(texts) == [0]
    assert _kept(texts + [texts[1]]) == [0]


# ------------------------------------------------------------------------------------------------ scrub

_PII_PIECES = st.sampled_from([
    "Maria Gonzalez", " lives in Chicago.", " mail maria.gonzalez@example.org", " call +1 415-555-0132",
    " card 4111 1111 1111 1111", " ssn 078-05-1120", " server 10.20.30.40", " IBAN GB82 WEST 1234 5698 7654 32",
    " password=hunter2", "<PERSON>", "<EMAIL_ADDRESS>", " and ", "\n", ", ",
])
SCRUB_TEXT = st.lists(st.one_of(_PII_PIECES, _ODD, st.text(max_size=15)), max_size=14).map("".join)


@hsettings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(SCRUB_TEXT, min_size=1, max_size=12), LONG_LINE)
def test_scrub_batches_of_any_text(texts, long_line):
    batch = [*texts, long_line]
    out = scrub_texts(batch, PiiSettings())
    assert len(out) == len(batch)
    for (scrubbed, found), original in zip(out, batch):
        assert isinstance(scrubbed, str) and all(v > 0 for v in found.values())
        new = Counter(PLACEHOLDER.findall(scrubbed)) - Counter(PLACEHOLDER.findall(original))
        assert set(found) >= {p[1:-1] for p in new}  # every new placeholder was counted


@hsettings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(SCRUB_TEXT, min_size=4, max_size=16))
# the NER took "PHONE_NUMBER>\x1a\x800¨¼" for a name and cut the placeholder: "call <<PERSON>" (fixed);
# it took all of "\u200b<PERSON>\x00" for a name, which trimmed was the PERSON inside the placeholder:
# "<<PERSON>>" (fixed: a span with nothing outside placeholders is dropped)
@example(["", " call +1 415-555-0132\x1a\x800¨¼"])
@example(["", "", "Maria Gonzalez", "\u200bMaria Gonzalez\x00"])
def test_scrubbing_is_idempotent_for_the_pattern_types(texts):
    structured = PiiSettings(entities=STRUCTURED)
    once = [t for t, _ in scrub_texts(texts, structured)]
    twice = scrub_texts(once, structured)
    assert [t for t, _ in twice] == once and not any(found for _, found in twice)
    default_once = [t for t, _ in scrub_texts(texts, PiiSettings())]
    again = scrub_texts(default_once, PiiSettings())
    assert not any(set(found) & set(STRUCTURED) for _, found in again)
    for before, (after, _) in zip(default_once, again):  # a second pass may only replace more NER spans
        assert _subsequence(re.sub(r"\s+", "", PLACEHOLDER.sub("", after)),
                            re.sub(r"\s+", "", PLACEHOLDER.sub("", before))), (before, after)


def _subsequence(short: str, long: str) -> bool:
    """Whether ``short`` is ``long`` with some characters left out (a scrub only takes text away)."""
    it = iter(long)
    return all(ch in it for ch in short)
