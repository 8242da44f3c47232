"""Measuring one side of a drift comparison: every document's length and exact key, a seeded sample of texts,
their words and tokens under a tokenizer, and PII per document (tasks/data/drift_stats.py compares the sides)."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tasks.core import snapshot
from tasks.core.executor import DaskSettings
from tasks.data import drift_stats
from tasks.data.clean import CleanSettings
from tasks.data.drift_stats import Comparison, DriftThresholds, Side
from tasks.data.ingest.settings import IngestSettings
from tasks.data.pii.settings import PiiSettings
from tasks.drift.reference import Reference

TEXT_CAP = 20_000  # characters of one document used for token and word statistics (lengths use all)
_WORD = re.compile(r"\w+")


class Loaded(BaseModel):
    """One side read from its snapshot: every document's length and exact key, and a sample of texts."""

    documents: int
    lengths: list[int]
    keys: list[str]
    sample: list[str]
    pii_found: list[tuple[int, int]] | None = None  # (structured, named) per sampled document, from pii_found


def load_side(path: str, t: DriftThresholds) -> Loaded:
    """Lengths and exact keys of every document; a seeded reservoir sample of texts."""
    from tasks.data.dedup.stage import exact_key

    rng = random.Random(t.seed)
    lengths: list[int] = []
    keys: list[str] = []
    sample: list[str] = []
    pii: list[tuple[int, int]] = []
    has_pii, n = False, 0
    for table in snapshot.iter_tables(path):
        texts = table.column("text").to_pylist()
        found = table.column("pii_found").to_pylist() if "pii_found" in table.column_names else None
        has_pii = has_pii or found is not None
        for i, text in enumerate(texts):
            text = text or ""
            lengths.append(len(text))
            keys.append(exact_key(text))
            entities = drift_stats.split_entities(json.loads(found[i] or "{}")) if found else (0, 0)
            if len(sample) < t.sample_size:
                sample.append(text)
                pii.append(entities)
            else:
                j = rng.randrange(n + 1)
                if j < t.sample_size:
                    sample[j], pii[j] = text, entities
            n += 1
    return Loaded(documents=n, lengths=lengths, keys=keys, sample=sample, pii_found=pii if has_pii else None)


def words_of(text: str) -> Counter:
    return Counter(_WORD.findall(text[:TEXT_CAP]))


class TokenizerView:
    """What the statistics need from a tokenizer: token ids of texts, and whether a word is one token."""

    def __init__(self, folder: str) -> None:
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(folder)
        self.unk = self.tok.unk_token_id
        self._known: dict[str, bool] = {}

    def token_counts(self, texts: list[str]) -> list[Counter]:
        """Token id counts per text."""
        out = []
        for i in range(0, len(texts), 64):
            out += [Counter(ids) for ids in self.tok([t[:TEXT_CAP] for t in texts[i : i + 64]],
                                                     add_special_tokens=False)["input_ids"]]
        return out

    def learn(self, words: list[str]) -> None:
        todo = [w for w in words if w not in self._known]
        for i in range(0, len(todo), 1024):
            chunk = todo[i : i + 1024]
            spaced = self.tok([" " + w for w in chunk], add_special_tokens=False)["input_ids"]
            bare = self.tok(chunk, add_special_tokens=False)["input_ids"]
            for w, a, b in zip(chunk, spaced, bare):
                self._known[w] = any(len(ids) == 1 and ids[0] != self.unk for ids in (a, b))

    def known(self, word: str) -> bool:
        if word not in self._known:
            self.learn([word])
        return self._known[word]


def pii_per_document(texts: list[str], pii: PiiSettings, limit: int) -> list[tuple[int, int]]:
    """(structured entities, names and places) found in each of the first ``limit`` texts."""
    from tasks.data.pii.scrub import scrub_texts

    sample = texts[:limit]
    return [drift_stats.split_entities(found) for _, found in scrub_texts(sample, pii)] if sample else []


def oov_per_document(words: list[Counter], tok: TokenizerView) -> list[tuple[int, int]]:
    """(word occurrences that are not one token, word occurrences) per document."""
    tok.learn(list({w for counts in words for w in counts}))
    return [(sum(n for w, n in counts.items() if not tok.known(w)), sum(counts.values())) for counts in words]


def measure(loaded: Loaded, tok: TokenizerView | None, pii_settings: PiiSettings, t: DriftThresholds,
            scrubbed: bool = False) -> Side:
    """Per-document measurements of one side's sample (tokens are words without a tokenizer; no OOV then)."""
    words = [words_of(text) for text in loaded.sample]
    pii = None
    if pii_settings.enabled:
        if scrubbed:  # texts already scrubbed: what the scrub found is in the pii_found column
            pii = loaded.pii_found[: t.pii_sample_size] if loaded.pii_found is not None else None
        else:
            pii = pii_per_document(loaded.sample, pii_settings, t.pii_sample_size)
    return Side(documents=loaded.documents, lengths=loaded.lengths, sample_lengths=[len(x) for x in loaded.sample],
                tokens=[dict(c) for c in (tok.token_counts(loaded.sample) if tok is not None else words)],
                words=[dict(c) for c in words],
                oov=oov_per_document(words, tok) if tok is not None else None, pii=pii)


def side_of_texts(texts: list[str], tok: TokenizerView | None, pii_settings: PiiSettings, t: DriftThresholds) -> Side:
    """A side measured from texts in memory (a seeded sample of them, as ``load_side`` takes from a snapshot)."""
    sample = list(texts) if len(texts) <= t.sample_size else random.Random(t.seed).sample(list(texts), t.sample_size)
    loaded = Loaded(documents=len(texts), lengths=[len(x) for x in texts], keys=[], sample=sample)
    return measure(loaded, tok, pii_settings, t)


def read_drop(path: str, ingest: IngestSettings, clean: CleanSettings, dask: DaskSettings, store: str) -> dict[str, Any]:
    """Ingest and clean ``path`` into snapshots, as a retrain would (reused when unchanged)."""
    from tasks.data.clean import clean_snapshot
    from tasks.data.ingest.ingest import ingest_to_snapshot

    if snapshot.is_snapshot(path):
        ref = snapshot.open_input(path, Path(store))
        return {"snapshot": ref.path, "ingested": ref.rows, "quarantined": 0, "stage": ref.stage}
    raw = ingest_to_snapshot([path], ingest, dask, Path(store))
    cleaned = clean_snapshot(raw, clean, dask, Path(store))
    stats = raw.manifest()["stats"]
    return {"snapshot": cleaned.path, "ingested": stats.get("documents"), "quarantined": stats.get("quarantined"),
            "stage": "clean"}


def compare_sides(ref: Reference, new_snapshot: str, tokenizer: str | None, pii: PiiSettings,
                  t: DriftThresholds) -> Comparison:
    reference = load_side(ref.texts_snapshot, t)
    new = load_side(new_snapshot, t)
    tok = TokenizerView(tokenizer) if tokenizer else None
    ref_side = measure(reference, tok, pii, t, scrubbed=ref.scrubbed)
    new_side = measure(new, tok, pii, t)
    return drift_stats.compare(ref_side, new_side, t, drift_stats.duplicate_rate(new.keys, set(reference.keys)))
