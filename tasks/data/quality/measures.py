"""What the quality filters measure in a text: its words, their characters, repeated lines and n-grams.

Words are the whitespace-separated tokens with leading and trailing punctuation stripped (tokens that are
only punctuation, such as ``--`` or ``@-@``, are not words), lower-cased for n-gram and blocklist matching.
The heuristics assume a language that separates words by spaces, as Gopher did; switch them off (or widen
them) for Chinese, Japanese or Thai text.

A "duplicate" line or n-gram is a repeat of one seen earlier in the same document: the first occurrence is
not counted (datatrove's reading of the Gopher rules), so a text that says something twice has half its
characters in duplicates, not all of them.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable

WORD = re.compile(r"\w(?:\S*\w)?")  # a whitespace token from its first to its last letter/digit/underscore


class TextView:
    """One text and its measures, each computed on first use and then kept, so the filters that share a
    measure compute it once and a filter that is switched off costs nothing."""

    def __init__(self, text: str) -> None:
        self.text = text

    @functools.cached_property
    def lowered(self) -> str:
        return self.text.lower()

    @functools.cached_property
    def words(self) -> list[str]:
        """The words of the lower-cased text."""
        return WORD.findall(self.lowered)

    @functools.cached_property
    def n_words(self) -> int:
        return len(self.words)

    @functools.cached_property
    def total_chars(self) -> int:
        """Characters in words."""
        return sum(map(len, self.words))


def repeated_lines(text: str) -> tuple[float, float]:
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


def top_ngram_fraction(words: list[str], n: int, total_chars: int) -> float:
    """Share of word characters in all occurrences of the most frequent n-gram (0 when none repeats)."""
    if len(words) < n or not total_chars:
        return 0.0
    counts = Counter(zip(*(words[i:] for i in range(n))))
    gram, count = counts.most_common(1)[0]
    if count < 2:
        return 0.0
    return sum(map(len, gram)) * count / total_chars


def duplicate_ngram_fractions(words: list[str], sizes: Iterable[int], total_chars: int) -> dict[int, float]:
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
