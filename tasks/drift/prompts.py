"""Prompt drift: what users asked the gateway (its traffic store) against what the @champion was trained on.

The new side is the request prompts of one model's traffic store (``tasks.serve.traffic``) in a time window,
one per distinct prompt (exact key: lower-cased, whitespace collapsed). The gateway scrubbed them before it
stored them, so the reference is the champion's *scrubbed* training snapshot (pii stage), where PII is the
same kind of ``<TYPE>`` placeholder.

What a prompt is compared with: the user turns (instruction, then input) of the instruction records in the
training data — the prompts the model was trained to answer. Without (enough of) them, the training
documents, and then the length checks and the PII rate are off: a document's length or its entities per
document say nothing about a prompt's. The statistics are the drop check's (``tasks.data.drift_stats``):
length PSI and KS, token Jensen–Shannon divergence and OOV rate under the champion's tokenizer, PII
placeholders per prompt, and the share of prompts already in the training data ("nothing new").
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from pathlib import Path

from pydantic import BaseModel

from tasks.core import snapshot
from tasks.data import drift_stats, instructions
from tasks.data.drift_stats import Comparison, DriftThresholds, Side
from tasks.data.pii.settings import PLACEHOLDER, PiiSettings
from tasks.drift.measure import TokenizerView, oov_per_document, words_of


class Window(BaseModel):
    """The distinct request prompts of a traffic store in a time window."""

    folder: str
    since: float | None  # epoch seconds; None: everything the store keeps
    until: float
    requests: int = 0  # request records with a prompt in the window
    prompts: list[str] = []  # distinct prompts, in the order first seen
    prompt_keys: list[str] = []  # their exact keys
    versions: dict[str, int] = {}  # requests by the model version that answered them
    first: float | None = None
    last: float | None = None

    @property
    def fingerprint(self) -> str:
        """The same set of prompts gives the same fingerprint, whatever the order and the repeats."""
        return hashlib.sha256("\n".join(sorted(self.prompt_keys)).encode()).hexdigest()

    def describe(self) -> str:
        when = "everything the store keeps" if self.since is None else f"since {_utc(self.since)}"
        return (f"{len(self.prompts)} distinct prompts in {self.requests} requests ({when}, until "
                f"{_utc(self.until)})")


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def read_window(folder: str | Path, since_hours: float | None, now: float | None = None) -> Window:
    """The request prompts in ``folder`` of the last ``since_hours`` hours (None or 0: all), deduplicated."""
    from tasks.data.dedup.stage import exact_key
    from tasks.serve.traffic import read_records

    until = time.time() if now is None else now
    since = until - since_hours * 3600 if since_hours else None
    w = Window(folder=str(folder), since=since, until=until)
    if not Path(folder).is_dir():
        return w
    seen: set[str] = set()
    versions: Counter = Counter()
    for r in read_records(Path(folder), "request"):
        prompt, at = r.get("prompt"), r.get("time")
        if not isinstance(prompt, str) or not prompt.strip() or not isinstance(at, int | float):
            continue
        if (since is not None and at < since) or at > until:
            continue
        w.requests += 1
        versions[str(r.get("version", "?"))] += 1
        w.first = at if w.first is None else min(w.first, at)
        w.last = at if w.last is None else max(w.last, at)
        key = exact_key(prompt)
        if key not in seen:
            seen.add(key)
            w.prompts.append(prompt)
            w.prompt_keys.append(key)
    w.versions = dict(versions)
    return w


def write_drop(w: Window, path: Path) -> Path:
    """The window as a data drop a retrain can ingest: one ``{"text": prompt}`` line per distinct prompt (the
    corrections users sent join a retrain through its own ``data.corrections``, not through this drop)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for prompt in w.prompts:
            fh.write(json.dumps({"text": prompt, "metadata": {"source": "traffic"}}, ensure_ascii=False) + "\n")
    return path


# ------------------------------------------------------------------------------------------ the reference


class ReferenceTexts(BaseModel):
    """The training snapshot read for prompts: its instruction records' user turns, its other documents."""

    prompts: list[str]  # a seeded sample of user turns
    prompt_lengths: list[int]  # every user turn's
    prompt_placeholders: list[tuple[int, int]]  # (structured, names and places) per sampled user turn
    documents: list[str]  # a seeded sample of the other documents
    document_lengths: list[int]
    exact_keys: set[str]  # of every user turn and document


def load_reference(path: str, pii: PiiSettings, t: DriftThresholds) -> ReferenceTexts:
    from tasks.data.dedup.stage import exact_key

    rng = random.Random(t.seed)
    prompts: list[str] = []
    documents: list[str] = []
    prompt_lengths: list[int] = []
    document_lengths: list[int] = []
    keys: set[str] = set()
    for table in snapshot.iter_tables(path):
        for text in table.column("text").to_pylist():
            text = text or ""
            record = instructions.parse(text)
            unit = record.user_turn if record is not None else text
            keys.add(exact_key(unit))
            lengths, sample = (prompt_lengths, prompts) if record is not None else (document_lengths, documents)
            lengths.append(len(unit))
            if len(sample) < t.sample_size:
                sample.append(unit)
            else:
                j = rng.randrange(len(lengths))
                if j < t.sample_size:
                    sample[j] = unit
    return ReferenceTexts(prompts=prompts, prompt_lengths=prompt_lengths,
                          prompt_placeholders=[placeholders(p, pii) for p in prompts], documents=documents,
                          document_lengths=document_lengths, exact_keys=keys)


def placeholders(text: str, pii: PiiSettings) -> tuple[int, int]:
    """The ``<TYPE>`` placeholders in ``text`` of the entity types the scrubber replaces: (structured, names and
    places)."""
    entities = set(pii.entities)
    return drift_stats.split_entities(Counter(m.group(0)[1:-1] for m in PLACEHOLDER.finditer(text)
                                              if m.group(0)[1:-1] in entities))


def pii_off_reason(pii: PiiSettings, scrubbed_reference: bool, basis: str) -> str | None:
    """Why the PII rate cannot be compared, or None when it can."""
    if not pii.enabled:
        return "PII scrubbing is off in the config"
    if any(pii.operators.get(e, pii.operator) != "replace" for e in pii.entities):
        return "some entities are not replaced by <TYPE> placeholders (pii.operator/operators), so they cannot be counted"
    if not scrubbed_reference:
        return "the reference is not scrubbed: its PII is text, the prompts' is placeholders"
    if basis != "prompts":
        return "the reference has no prompts: entities per document say nothing about entities per prompt"
    return None


# ------------------------------------------------------------------------------------------ the comparison


def passages(documents: list[str], prompts: list[str]) -> list[str]:
    """``documents`` cut into consecutive passages of the prompts' median length in words (at least 5)."""
    sizes = sorted(len(p.split()) for p in prompts) or [50]
    size = max(5, sizes[len(sizes) // 2])
    out = []
    for doc in documents:
        words = doc.split()
        out += [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return out


class PromptComparison(BaseModel):
    comparison: Comparison
    basis: str  # "prompts" (the training data's instruction user turns) or "documents"
    notes: list[str]


def compare_prompts(reference_snapshot: str, scrubbed_reference: bool, w: Window, tokenizer: str | None,
                    pii: PiiSettings, t: DriftThresholds) -> PromptComparison:
    """The window's prompts against the training snapshot's prompts (or, without any, its documents)."""
    ref = load_reference(reference_snapshot, pii, t)
    rng = random.Random(t.seed)
    new = list(w.prompts) if len(w.prompts) <= t.sample_size else rng.sample(w.prompts, t.sample_size)
    basis = "prompts" if len(ref.prompts) >= t.min_documents else "documents"
    notes = [f"reference: {len(ref.prompt_lengths)} instruction records (their user turns are the reference "
             f"prompts) and {len(ref.document_lengths)} other documents"]
    if basis == "documents":
        t = t.model_copy(update={"length_ks": None, "token_js": None})
        notes.append("the training data has too few instruction records: the prompts are compared with its "
                     "documents, and the length and token tests are off (a prompt is not a document: its length "
                     "and its token frequencies differ from a manual's whatever it asks); only the vocabulary is "
                     "compared")
    elif len(w.prompts) < 10 * t.length_bins:  # PSI over sparse bins measures sampling noise (~ bins / prompts)
        bins = max(2, len(w.prompts) // 10)
        notes.append(f"length PSI (reported) over {bins} quantile bins, not {t.length_bins}: about ten prompts a bin")
        t = t.model_copy(update={"length_bins": bins})
    ref_texts = ref.prompts if basis == "prompts" else passages(ref.documents, new)
    ref_lengths = ref.prompt_lengths if basis == "prompts" else [len(x) for x in ref_texts]
    if basis == "documents":
        notes.append(f"the {len(ref.documents)} sampled documents are cut into {len(ref_texts)} passages of about "
                     "a prompt's length in words, so the vocabulary test compares units of one size")
    tok = TokenizerView(tokenizer) if tokenizer else None
    words_ref, words_new = [words_of(x) for x in ref_texts], [words_of(x) for x in new]
    off = pii_off_reason(pii, scrubbed_reference, basis)
    if off is None:
        notes.append("PII: <TYPE> placeholders per prompt on both sides (the gateway scrubbed the prompts, the "
                     "PII stage the training data)")
    else:
        notes.append(f"PII rate not compared: {off}")

    def side(documents: int, lengths: list[int], texts: list[str], words: list[Counter], pii_counts) -> Side:
        return Side(documents=documents, lengths=lengths, sample_lengths=[len(x) for x in texts],
                    tokens=[dict(c) for c in (tok.token_counts(texts) if tok is not None else words)],
                    words=[dict(c) for c in words],
                    oov=oov_per_document(words, tok) if tok is not None else None,
                    pii=pii_counts[: t.pii_sample_size] if off is None else None)

    ref_side = side(len(ref_lengths), ref_lengths, ref_texts, words_ref, ref.prompt_placeholders)
    new_side = side(len(w.prompts), [len(p) for p in w.prompts], new, words_new, [placeholders(p, pii) for p in new])
    duplicate = drift_stats.duplicate_rate(w.prompt_keys, ref.exact_keys)
    return PromptComparison(comparison=drift_stats.compare(ref_side, new_side, t, duplicate), basis=basis, notes=notes)
