"""Quality filters: Gopher / C4 style heuristics, a word blocklist, and injection-pattern flags.

Every filter has a name (the ``FILTER_NAMES`` below, in the order they are checked), an ``enabled`` switch,
its thresholds, and an ``action``:

- ``"drop"`` removes the document (the default for the quality heuristics and the blocklist: text that
  fails them teaches the model little or teaches it the wrong thing);
- ``"flag"`` keeps the document and records the filter's name in its ``quality_flags`` column (the default
  for the prompt-injection and SQL-injection patterns: these also occur in legitimate text, e.g. a security
  tutorial or a write-up of an incident, so a reviewer or a later stage decides, not a regex).

The heuristics and their default thresholds follow Gopher (Rae et al. 2021, "Scaling Language Models",
appendix A) and C4 (Raffel et al. 2020), as reimplemented in datatrove / RedPajama:

- ``word_count``       — 50 ≤ words ≤ 100,000;
- ``mean_word_length`` — 3 ≤ mean characters per word ≤ 10;
- ``repeated_lines``   — duplicate lines ≤ 30 % of the lines and ≤ 20 % of the characters;
- ``top_ngrams``       — the most frequent 2/3/4-gram covers ≤ 20/18/16 % of the word characters;
- ``duplicate_ngrams`` — repeated 5..10-grams cover ≤ 15/14/13/12/11/10 % of the word characters;
- ``symbol_ratio``     — ('#' + '...' + '…') per word ≤ 0.1;
- ``non_alpha_words``  — ≤ 20 % of the words without a single letter (Gopher: 80 % must have one);
- ``blocklist``        — C4's bad-words rule: any hit on the word list drops the document by default.

Words are the whitespace-separated tokens with leading and trailing punctuation stripped (tokens that are
only punctuation, such as ``--`` or ``@-@``, are not words), lower-cased for n-gram and blocklist matching.
The heuristics assume a language that separates words by spaces, as Gopher did; switch them off (or widen
them) for Chinese, Japanese or Thai text.

A "duplicate" line or n-gram is a repeat of one seen earlier in the same document: the first occurrence is
not counted (datatrove's reading of the Gopher rules), so a text that says something twice has half its
characters in duplicates, not all of them.

Nothing heavy is imported here: the module is plain ``re`` and ``pydantic``, so a Dask worker or a test
imports it in milliseconds. The blocklist is read once per process per path (``functools.lru_cache``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.core.paths import PROJECT_ROOT

CODE_VERSION = "quality-1"
DEFAULT_BLOCKLIST = Path("data_contracts/blocklist.txt")

Action = Literal["drop", "flag"]

# the order in which filters are checked, reported, and (for drops) counted
FILTER_NAMES = (
    "word_count",
    "mean_word_length",
    "repeated_lines",
    "top_ngrams",
    "duplicate_ngrams",
    "symbol_ratio",
    "non_alpha_words",
    "blocklist",
    "prompt_injection",
    "sql_injection",
)

_WORD = re.compile(r"\w(?:\S*\w)?")  # a whitespace token from its first to its last letter/digit/underscore
_HAS_ALPHA = re.compile(r"[^\W\d_]")  # a letter, in any script
_ELLIPSIS = re.compile(r"\.\.\.|…")
_FLAGS = re.IGNORECASE | re.MULTILINE  # for the injection patterns: any case, ^ and $ at every line


# ---------------------------------------------------------------------------------------------- settings


class _Filter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="run this filter")
    action: Action = Field("drop", description='"drop" removes a failing document; "flag" keeps it and '
                                               "records the filter in its quality_flags column")


def _check_fractions(value: dict[int, float]) -> dict[int, float]:
    for n, fraction in value.items():
        if not 1 <= n <= 20:
            raise ValueError(f"n-gram size {n} is outside 1..20")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction {fraction} for {n}-grams is outside 0..1")
    return dict(sorted(value.items()))


class WordCountFilter(_Filter):
    """Gopher: documents with fewer than 50 or more than 100,000 words."""

    min_words: int = Field(50, ge=0, description="documents with fewer words fail")
    max_words: int = Field(100_000, gt=0, description="documents with more words fail")

    @model_validator(mode="after")
    def _bounds(self):
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) is greater than max_words ({self.max_words})")
        return self


class MeanWordLengthFilter(_Filter):
    """Gopher: a mean word length outside 3..10 characters (tables of numbers, run-together tokens, code)."""

    min_mean: float = Field(3.0, ge=0, description="documents whose mean word length (characters) is below fail")
    max_mean: float = Field(10.0, gt=0, description="documents whose mean word length (characters) is above fail")

    @model_validator(mode="after")
    def _bounds(self):
        if self.min_mean > self.max_mean:
            raise ValueError(f"min_mean ({self.min_mean}) is greater than max_mean ({self.max_mean})")
        return self


class RepeatedLinesFilter(_Filter):
    """Gopher: boilerplate and menus — too many lines that repeat an earlier line of the same document."""

    max_line_fraction: float = Field(0.30, ge=0, le=1, description="fail above this share of non-blank lines "
                                                                   "that repeat an earlier line")
    max_char_fraction: float = Field(0.20, ge=0, le=1, description="fail above this share of the characters "
                                                                   "(of non-blank lines) in repeated lines")


class TopNgramsFilter(_Filter):
    """Gopher: the single most frequent n-gram covers too much of the text ("buy now buy now ...")."""

    max_fraction: dict[int, float] = Field(
        default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16},
        description="n → the highest share of word characters the most frequent n-gram (if it occurs more "
                    "than once) may cover",
    )

    @field_validator("max_fraction")
    @classmethod
    def _fractions(cls, value: dict[int, float]) -> dict[int, float]:
        return _check_fractions(value)


class DuplicateNgramsFilter(_Filter):
    """Gopher: repeated n-grams (n = 5..10) cover too much of the text (copy-pasted passages, templates)."""

    max_fraction: dict[int, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10},
        description="n → the highest share of word characters that may lie in n-grams repeating an earlier "
                    "n-gram of the document",
    )

    @field_validator("max_fraction")
    @classmethod
    def _fractions(cls, value: dict[int, float]) -> dict[int, float]:
        return _check_fractions(value)


class SymbolRatioFilter(_Filter):
    """Gopher: hashtags and ellipses per word (social-media and truncated-snippet pages)."""

    max_ratio: float = Field(0.10, ge=0, description="fail above this many '#', '...' and '…' per word")


class NonAlphaWordsFilter(_Filter):
    """Gopher: mostly non-alphabetic text (number tables, hashes, encoded data)."""

    max_fraction: float = Field(0.20, ge=0, le=1, description="fail above this share of words without a letter")


class BlocklistFilter(_Filter):
    """C4: words from a list of obscene or toxic words (one entry per line; multi-word phrases allowed)."""

    path: Path = Field(DEFAULT_BLOCKLIST, description="word list file; a relative path is looked up in the "
                                                      "working directory, then in the tunegate checkout")
    max_hits: int = Field(0, ge=0, description="a document fails only with more hits than this …")
    max_ratio: float = Field(0.0, ge=0, le=1, description="… and more hits per word than this (both "
                                                          "defaults 0: any hit fails, as in C4)")


def _check_patterns(value: list[str]) -> list[str]:
    for pattern in value:
        try:
            re.compile(pattern, _FLAGS)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc
    return value


class PromptInjectionFilter(_Filter):
    """Instructions aimed at a model rather than a reader ("input prompt regulation")."""

    action: Action = Field("flag", description='"flag" (default) keeps the document and records the filter; '
                                               '"drop" removes it')
    extra_patterns: list[str] = Field(default_factory=list, description="more regular expressions that count as hits "
                                                                        "(matched case-insensitively, ^/$ per line)")

    @field_validator("extra_patterns")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        return _check_patterns(value)


class SqlInjectionFilter(PromptInjectionFilter):
    """SQL-injection payloads ("' OR 1=1 --", "UNION SELECT", "; DROP TABLE")."""


def _section(model: type[_Filter], description: str):
    return Field(default_factory=model, description=description)


class QualitySettings(BaseModel):
    """The quality filters run by the clean stage, each switchable, with its thresholds and action."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="run the quality filters at all")
    word_count: WordCountFilter = _section(WordCountFilter, "word-count bounds (Gopher)")
    mean_word_length: MeanWordLengthFilter = _section(MeanWordLengthFilter, "mean word length bounds (Gopher)")
    repeated_lines: RepeatedLinesFilter = _section(RepeatedLinesFilter, "repeated lines and their characters (Gopher)")
    top_ngrams: TopNgramsFilter = _section(TopNgramsFilter, "most frequent 2/3/4-gram (Gopher)")
    duplicate_ngrams: DuplicateNgramsFilter = _section(DuplicateNgramsFilter, "repeated 5..10-grams (Gopher)")
    symbol_ratio: SymbolRatioFilter = _section(SymbolRatioFilter, "'#', '...' and '…' per word (Gopher)")
    non_alpha_words: NonAlphaWordsFilter = _section(NonAlphaWordsFilter, "share of words without a letter (Gopher)")
    blocklist: BlocklistFilter = _section(BlocklistFilter, "obscene / toxic word list (C4)")
    prompt_injection: PromptInjectionFilter = _section(PromptInjectionFilter, "prompt injection (flagged by default)")
    sql_injection: SqlInjectionFilter = _section(SqlInjectionFilter, "SQL-injection patterns (flagged by default)")


# ---------------------------------------------------------------------------------------------- patterns

_PREVIOUS = r"(?:previous|prior|above|earlier|preceding|foregoing|original|initial|system)"
_ORDERS = r"(?:instructions?|prompts?|directions?|rules|guidelines|messages?|context|commands?|directives?)"

# (triggers, pattern): the pattern only runs when one of its lower-case literal triggers occurs in the
# lower-cased text — a substring test costs microseconds, a regex scan with \b at every position does not.
_PROMPT_INJECTION = [
    # "ignore all previous instructions", "disregard your prior rules", "forget the above prompt"
    (("ignore", "disregard", "forget", "override", "bypass", "skip"),
     rf"\b(?:ignore|disregard|forget|override|bypass|skip)\s+"
     rf"(?:(?:all|any|every|each|the|your|my|of|these|those)\s+){{0,3}}{_PREVIOUS}\s+{_ORDERS}"),
    # "disregard the above", "ignore everything above", "forget all of the above"
    (("ignore", "disregard", "forget"),
     r"\b(?:ignore|disregard|forget)\s+(?:(?:all|everything|of|the)\s+){0,3}(?:above|before\s+this)\b"),
    # "you are now DAN", "you are DAN", "DAN mode", "DAN (Do Anything Now)"
    (("dan",),
     r"\byou\s+are\s+(?:now\s+)?(?-i:DAN)\b|\b(?-i:DAN)\s+mode\b"
     r"|\b(?-i:DAN)\s*\(\s*do\s+anything\s+now\s*\)|\bdo\s+anything\s+now\s*\(\s*(?-i:DAN)\s*\)"),
    # "you are now in developer mode", "you are now an unrestricted AI", "developer mode enabled"
    (("you are now", "mode"),
     r"\byou\s+are\s+now\s+(?:in\s+(?:developer|god|jailbreak|unrestricted|dev)\s+mode"
     r"|an?\s+(?:unrestricted|unfiltered|uncensored|jailbroken)\b)"
     r"|\b(?:developer|jailbreak)\s+mode\s+(?:enabled|activated|on)\b"),
    # "system prompt:", "reveal your system prompt", "print the hidden instructions"
    (("prompt", "instructions"),
     r"\bsystem\s+prompt\s*:"
     r"|\b(?:reveal|print|show|repeat|output|leak|tell\s+me)\s+(?:me\s+)?(?:your|the)\s+"
     r"(?:system|initial|hidden|secret|original)\s+(?:prompt|instructions)\b"),
    # role tags of chat templates smuggled into text; a role line that gives orders
    (("<|", "inst]", "<<sys>>", "<</sys>>"),
     r"<\|(?:im_start|im_end|system|user|assistant|endoftext|start_header_id|end_header_id|eot_id)\|>"
     r"|\[/?INST\]|<</?SYS>>"),
    (("system", "instruction", "assistant"),
     r"^[ \t]*###[ \t]*(?:system|instruction)s?[ \t]*:"
     r"|^[ \t]*(?:system|assistant)[ \t]*:[ \t]*(?:you\s+are|ignore|disregard|from\s+now\s+on|new\s+instructions)"),
]
_SQL_INJECTION = [
    # "' OR 1=1 --", "' or 'a'='a", "admin' AND 1=1", "OR 1=1"
    (("=",), r"'\s*(?:\)\s*)?(?:or|and)\s+'?\w+'?\s*=\s*'?\w+|\bor\s+1\s*=\s*1\b"),
    # "UNION SELECT", "UNION ALL SELECT"
    (("union",), r"\bunion\s+(?:all\s+)?select\b"),
    # "; DROP TABLE users", "; DELETE FROM accounts", "; EXEC xp_cmdshell", "; SHUTDOWN --"
    ((";",), r";\s*(?:drop\s+(?:table|database|schema)|truncate\s+table|delete\s+from|insert\s+into|alter\s+table)\b"
             r"|;\s*(?:exec(?:ute)?\s+(?:xp_|sp_)|shutdown\s*(?:--|;|$))"),
    # payload staples: command shell, time-based probes, schema enumeration
    (("xp_cmdshell", "waitfor", "pg_sleep", "information_schema"),
     r"\bxp_cmdshell\b|\bwaitfor\s+delay\s+'|\bpg_sleep\s*\(|\binformation_schema\s*\.\s*(?:tables|columns)\b"),
]


def _compile(rules: Iterable[tuple[tuple[str, ...], str]]) -> tuple[tuple[tuple[str, ...], re.Pattern], ...]:
    return tuple((triggers, re.compile(pattern, _FLAGS)) for triggers, pattern in rules)


_PROMPT_RULES = _compile(_PROMPT_INJECTION)
_SQL_RULES = _compile(_SQL_INJECTION)


def _matches(rules, text: str, lowered: str) -> bool:
    return any(pattern.search(text) for triggers, pattern in rules if any(t in lowered for t in triggers))


@functools.lru_cache(maxsize=32)
def _extra_regexes(patterns: tuple[str, ...]) -> tuple[re.Pattern, ...]:
    # compiled one by one: a user's pattern may carry its own global flags, e.g. "(?s)..."
    return tuple(re.compile(p, _FLAGS) for p in patterns)


def resolve_blocklist_path(path: Path | str) -> Path:
    """``path`` itself when absolute or present in the working directory, else inside the tunegate checkout."""
    path = Path(path)
    if path.is_absolute() or path.is_file():
        return path
    return PROJECT_ROOT / path


@functools.lru_cache(maxsize=8)
def load_blocklist(path: str) -> tuple[frozenset[str], re.Pattern | None]:
    """The list at ``path``: single words (lower-cased) and one regex for the multi-word phrases.

    One entry per line; blank lines and lines starting with '#' are ignored. Read once per process per path.
    """
    resolved = resolve_blocklist_path(path)
    try:
        lines = resolved.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"quality.blocklist.path: word list not found: {resolved}") from None
    words, phrases = set(), []
    for line in lines:
        entry = line.strip().lower()
        if not entry or entry.startswith("#"):
            continue
        tokens = _WORD.findall(entry)
        if len(tokens) == 1 and tokens[0] == entry:
            words.add(entry)
        elif tokens:
            phrases.append(r"\s+".join(re.escape(t) for t in entry.split()))
    phrase_re = re.compile(r"(?<!\w)(?:" + "|".join(phrases) + r")(?!\w)") if phrases else None
    return frozenset(words), phrase_re


def cache_params(settings: QualitySettings) -> dict[str, Any]:
    """The settings as JSON-ready parameters for a snapshot's cache key and manifest, with the sha256 of the
    blocklist's content (when that filter runs), so editing the word list invalidates cached snapshots."""
    params = settings.model_dump(mode="json")
    params["code_version"] = CODE_VERSION
    if settings.enabled and settings.blocklist.enabled:
        resolved = resolve_blocklist_path(settings.blocklist.path)
        try:
            params["blocklist_sha256"] = hashlib.sha256(resolved.read_bytes()).hexdigest()
        except FileNotFoundError:
            raise FileNotFoundError(f"quality.blocklist.path: word list not found: {resolved}") from None
    return params


# ---------------------------------------------------------------------------------------------- measures


def _repeated_lines(text: str) -> tuple[float, float]:
    """(share of non-blank lines that repeat an earlier one, share of their characters)."""
    seen: set[str] = set()
    lines = dup_lines = chars = dup_chars = 0
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        lines += 1
        chars += len(line)
        if line in seen:
            dup_lines += 1
            dup_chars += len(line)
        else:
            seen.add(line)
    if not lines:
        return 0.0, 0.0
    return dup_lines / lines, dup_chars / chars


def _top_ngram_fraction(words: list[str], n: int, total_chars: int) -> float:
    """Share of word characters in all occurrences of the most frequent n-gram (0 when none repeats)."""
    if len(words) < n or not total_chars:
        return 0.0
    counts = Counter(zip(*(words[i:] for i in range(n))))
    gram, count = counts.most_common(1)[0]
    if count < 2:
        return 0.0
    return sum(map(len, gram)) * count / total_chars


def _duplicate_ngram_fractions(words: list[str], sizes: Iterable[int], total_chars: int) -> dict[int, float]:
    """n → share of word characters covered by n-grams that repeat an earlier n-gram of the document.

    A repeated n-gram starting at i implies a repeated (n-1)-gram starting at i, so each larger size only
    looks at the positions whose smaller n-gram occurs more than once: natural prose costs one pass.
    """
    result: dict[int, float] = {}
    n_words = len(words)
    ids_of: dict[str, int] = {}
    ids = [ids_of.setdefault(w, len(ids_of)) for w in words]
    lengths = [len(w) for w in words]
    candidates = range(n_words)
    for n in sorted(sizes):
        starts = [i for i in candidates if i + n <= n_words]
        keys = [tuple(ids[i:i + n]) for i in starts]
        counts = Counter(keys)
        covered = bytearray(n_words)
        seen: set[tuple[int, ...]] = set()
        for i, key in zip(starts, keys):
            if counts[key] < 2:
                continue
            if key in seen:
                covered[i:i + n] = b"\x01" * n
            else:
                seen.add(key)
        dup_chars = sum(length for length, flag in zip(lengths, covered) if flag)
        result[n] = dup_chars / total_chars if total_chars else 0.0
        candidates = [i for i, key in zip(starts, keys) if counts[key] >= 2]
    return result


# ---------------------------------------------------------------------------------------------- checks


def check_text(text: str, settings: QualitySettings) -> list[str]:
    """The names of the enabled filters ``text`` fails, in ``FILTER_NAMES`` order; ``[]`` when it passes all.

    The action (drop or flag) does not matter here; ``filter_documents`` applies it.
    """
    if not settings.enabled:
        return []
    failed: list[str] = []
    lowered = text.lower()
    words = _WORD.findall(lowered)
    n_words = len(words)
    total_chars = sum(map(len, words))

    f = settings.word_count
    if f.enabled and not f.min_words <= n_words <= f.max_words:
        failed.append("word_count")

    f = settings.mean_word_length
    if f.enabled and n_words and not f.min_mean <= total_chars / n_words <= f.max_mean:
        failed.append("mean_word_length")

    f = settings.repeated_lines
    if f.enabled:
        line_fraction, char_fraction = _repeated_lines(text)
        if line_fraction > f.max_line_fraction or char_fraction > f.max_char_fraction:
            failed.append("repeated_lines")

    f = settings.top_ngrams
    if f.enabled and any(_top_ngram_fraction(words, n, total_chars) > limit for n, limit in f.max_fraction.items()):
        failed.append("top_ngrams")

    f = settings.duplicate_ngrams
    if f.enabled and f.max_fraction:
        fractions = _duplicate_ngram_fractions(words, f.max_fraction, total_chars)
        if any(fractions[n] > limit for n, limit in f.max_fraction.items()):
            failed.append("duplicate_ngrams")

    f = settings.symbol_ratio
    if f.enabled:
        symbols = text.count("#") + len(_ELLIPSIS.findall(text))
        if symbols and symbols / max(n_words, 1) > f.max_ratio:
            failed.append("symbol_ratio")

    f = settings.non_alpha_words
    if f.enabled and n_words:
        alpha = sum(1 for w in words if _HAS_ALPHA.search(w))
        if (n_words - alpha) / n_words > f.max_fraction:
            failed.append("non_alpha_words")

    f = settings.blocklist
    if f.enabled:
        blocked, phrase_re = load_blocklist(str(f.path))
        hits = sum(1 for w in words if w in blocked) if blocked else 0
        if phrase_re is not None:
            hits += len(phrase_re.findall(lowered))
        if hits > f.max_hits and hits / max(n_words, 1) > f.max_ratio:
            failed.append("blocklist")

    for name, f, rules in (("prompt_injection", settings.prompt_injection, _PROMPT_RULES),
                           ("sql_injection", settings.sql_injection, _SQL_RULES)):
        if f.enabled and (_matches(rules, text, lowered)
                          or any(p.search(text) for p in _extra_regexes(tuple(f.extra_patterns)))):
            failed.append(name)
    return failed


def filter_documents(docs: Iterable[dict[str, Any]], settings: QualitySettings, counts: Counter) -> Iterator[dict]:
    """The documents that fail no "drop" filter, each with ``quality_flags`` (a JSON list of the "flag"
    filters it fails, ``"[]"`` when none).

    A dropped document counts once, as ``dropped_<name>`` of the first "drop" filter it fails in
    ``FILTER_NAMES`` order, so the ``dropped_*`` counts add up to the number dropped. A kept document counts
    ``flagged_<name>`` for every "flag" filter it fails. ``counts`` gets nothing else.
    """
    for doc in docs:
        failed = check_text(doc.get("text") or "", settings)
        drops = [name for name in failed if getattr(settings, name).action == "drop"]
        if drops:
            counts[f"dropped_{drops[0]}"] += 1
            continue
        for name in failed:
            counts[f"flagged_{name}"] += 1
        yield {**doc, "quality_flags": json.dumps(failed)}
