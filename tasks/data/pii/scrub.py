"""The PII stage: scrub batches of texts and documents, and a snapshot shard by shard (tasks/core/executor.py).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.data.pii.engine import engine_for
from tasks.data.pii.names import is_calendar
from tasks.data.pii.operators import Operators, secret_fingerprints
from tasks.data.pii.settings import PiiSettings, placeholder_pattern


CODE_VERSION = "pii-8"  # pii-8: name rules, en_core_web_md, no digits in names; pii-7: address rules; pii-6: no name propagation across documents; only the configured placeholders kept


def _outside_placeholders(text: str, results: list, placeholders: re.Pattern) -> list:
    """Results outside the placeholders a previous scrub left (``placeholders``: placeholder_pattern's).

    A result inside a placeholder is dropped; one that starts or ends inside a placeholder (the NER may take
    "PHONE_NUMBER>" and the word after it for a name) is trimmed to the part outside it, and dropped when
    nothing but spaces and punctuation is left: otherwise its replacement would cut the placeholder
    ("call <PHONE_NUMBER>xyz" became "call <<PERSON>"). A result that spans a whole placeholder is kept.
    """
    if "<" not in text:
        return results
    spots = [(m.start(), m.end()) for m in placeholders.finditer(text)]
    if not spots:
        return results
    from presidio_analyzer import RecognizerResult

    out = []
    for r in results:
        start, end = r.start, r.end
        for a, b in spots:
            if b <= start or a >= end or (start < a and b < end):
                continue
            if a <= start and end <= b:
                start = end
                break
            if a <= start < b:
                start = b
            else:
                end = a
        while start < end and not text[start].isalnum():
            start += 1
        while end > start and not text[end - 1].isalnum():
            end -= 1
        if start >= end or not _text_outside(text, start, end, spots):
            continue  # nothing left but placeholders ("\u200b<PERSON>\x00" trimmed to the PERSON inside one)
        if (start, end) == (r.start, r.end):
            out.append(r)
        else:
            out.append(RecognizerResult(r.entity_type, start, end, r.score, r.analysis_explanation,
                                        r.recognition_metadata))
    return out


_CODE = re.compile(r"(?<!\w)(?=[\w-]*\d)(?=[\w-]*[^\W\d_])[\w-]+(?!\w)")  # a word of letters and digits: E305, KS03


def _plausible_names(text: str, results: list) -> list:
    """``results`` without what the NER took for a name or a place but is none: a PERSON that holds a digit or is
    only weekdays and months, and a place of the NER that holds a code ("E417", "Navigation\n- E220", "Thu";
    en_core_web_md takes the sample corpus's error codes for names and places). Handles ("@name42") and what the
    address rules found ("Apt. 12B") are kept."""
    out = []
    for r in results:
        span = text[r.start:r.end]
        if r.entity_type == "PERSON" and not text.startswith("@", r.start):
            if any(ch.isdigit() for ch in span) or is_calendar(span):
                continue
        elif r.entity_type == "LOCATION" and (r.recognition_metadata or {}).get("recognizer_name") == "SpacyRecognizer":
            if _CODE.search(span):
                continue
        out.append(r)
    return out


def _text_outside(text: str, start: int, end: int, spots: list[tuple[int, int]]) -> bool:
    """Whether text[start:end] has a letter or digit outside the placeholders at ``spots``."""
    return any(text[i].isalnum() for i in range(start, end) if not any(a <= i < b for a, b in spots))


_KEY_BLOCK_CHARS = 40_000  # the longest private key block the PRIVATE_KEY recognizer matches


def _pieces(text: str, limit: int) -> list[str]:
    """``text`` cut into pieces of at most ``limit`` characters, at a blank line, a line break or a space
    in the second half of each window where there is one, and never inside a private key block (a piece
    that would cut one runs on to the block's end)."""
    if len(text) <= limit:
        return [text]
    out, start = [], 0
    while len(text) - start > limit:
        window_end, half = start + limit, start + limit // 2
        cut = -1
        for sep in ("\n\n", "\n", " "):
            at = text.rfind(sep, half, window_end)
            if at > start:
                cut = at + len(sep)
                break
        if cut <= start:
            cut = window_end
        begin = text.rfind("-----BEGIN", start, cut)
        if begin >= start and text.find("-----END", begin, cut) < 0:  # a key block would be cut
            end = text.find("-----END", cut, begin + _KEY_BLOCK_CHARS)
            if end >= 0:  # the piece runs to the end of the block's END line, past the limit
                eol = text.find("\n", end)
                cut = eol + 1 if eol >= 0 else len(text)
            elif begin > start:
                cut = begin
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out


def scrub_texts(texts: list[str], settings: PiiSettings) -> list[tuple[str, Counter]]:
    """(scrubbed text, entities found by type) for each text, analysed in batches."""
    return [(text, counts) for text, counts, _ in scrub_texts_with_spans(texts, settings)]


def scrub_texts_with_spans(texts: list[str], settings: PiiSettings) -> list[tuple[str, Counter, list]]:
    """Like scrub_texts, plus the findings (entity type, start, end in the original text) for each text."""
    engine = engine_for(settings.spacy_model, settings.language, settings.structured_fallbacks, settings.address_rules,
                        settings.name_rules, settings.social_handles)
    operators = Operators(settings)  # fails early, before any work, on a missing or unusable key or salt

    # long texts in pieces; each distinct piece analysed once
    pieces_of = [_pieces(t, settings.chunk_chars) for t in texts]
    flat = [p for ps in pieces_of for p in ps]
    unique = list(dict.fromkeys(flat))
    analyze = engine.analyze_fast if settings.engine == "fast" else engine.analyze_presidio
    by_text = dict(zip(unique, analyze(unique, settings)))
    placeholders = placeholder_pattern(settings)
    if settings.name_rules:
        by_text = {p: _plausible_names(p, results) for p, results in by_text.items()}
    analyses = [_outside_placeholders(p, by_text[p], placeholders) for p in flat]

    out, k = [], 0
    for ps in pieces_of:
        parts, counts, spans, offset = [], Counter(), [], 0
        for piece in ps:
            text, found = engine.anonymize(piece, analyses[k], operators)
            parts.append(text)
            counts.update(found)
            spans += [(r.entity_type, r.start + offset, r.end + offset) for r in analyses[k]]
            offset += len(piece)
            k += 1
        out.append(("".join(parts), counts, spans))
    return out


def scrub_documents(docs: list[dict[str, Any]], settings: PiiSettings, found: Counter) -> list[dict]:
    """Documents with PII replaced in their text and in their metadata's string values.

    Each document's output depends on that document alone, not on the others in the list (so not on how a
    snapshot is sharded): the list is analysed in batches only for speed. ``found`` counts entities by type;
    each document gets a ``pii_found`` column with its own counts.
    """
    metas = [json.loads(d.get("metadata") or "{}") for d in docs]
    meta_keys = [[k for k, v in m.items() if isinstance(v, str) and v.strip()] for m in metas]
    texts = [d["text"] for d in docs] + [m[k] for m, keys in zip(metas, meta_keys) for k in keys]
    results = iter(scrub_texts(texts, settings))
    scrubbed = [next(results) for _ in docs]
    out = []
    for doc, (text, counts), meta, keys in zip(docs, scrubbed, metas, meta_keys):
        counts = Counter(counts)
        for k in keys:
            meta[k], c = next(results)
            counts.update(c)
        found.update(counts)
        row = {**doc, "text": text, "pii_found": json.dumps(dict(sorted(counts.items())))}
        if "metadata" in doc:
            row["metadata"] = json.dumps(meta, ensure_ascii=False, sort_keys=True)
        out.append(row)
    return out


def _scrub_shard(table, settings: PiiSettings):
    """One shard's documents scrubbed; each gets a ``pii_found`` column (what was replaced)."""
    import pyarrow as pa

    found: Counter = Counter()
    rows = scrub_documents(table.to_pylist(), settings, found)
    schema = table.schema if "pii_found" in table.schema.names else table.schema.append(pa.field("pii_found", pa.string()))
    return pa.Table.from_pylist(rows, schema=schema), found


def cache_params(settings: PiiSettings) -> dict:
    """What the PII snapshot's cache key holds of the settings: all of them but the names of the environment
    variables, plus a fingerprint of each key or salt in use (a rotated key scrubs again; never the value)."""
    params = settings.model_dump(exclude={"encrypt_key_env", "hash_salt_env"})
    secrets = secret_fingerprints(settings)
    return {**params, "secrets": secrets} if secrets else params


def scrub_snapshot(ref, settings: PiiSettings, dask_settings, store):
    """The snapshot of ``ref`` with PII scrubbed, one Dask task per shard; counts entities by type."""
    from tasks.core.executor import shardwise_snapshot

    return shardwise_snapshot(
        ref, "pii", _scrub_shard, settings, dask_settings, store,
        params=cache_params(settings), code_version=CODE_VERSION,
        summarize=lambda total: {"pii_entities": dict(sorted(total.items())), "pii_total": sum(total.values())},
    )


@task(name="scrub-pii", cache_policy=NO_CACHE)
def scrub_task(ref, settings: PiiSettings, dask_settings, store: str):
    return scrub_snapshot(ref, settings, dask_settings, store) if settings.enabled else ref
