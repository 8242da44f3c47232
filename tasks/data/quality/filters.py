"""The quality filters, one class each: its settings fields (shown in the config and the Prefect UI) and its
check, ``fails(view)``, on a ``measures.TextView`` of the document's text.

A filter's ``enabled`` switch and its ``action`` (drop or flag) are applied by ``filtering``, not here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.data.quality import injection
from tasks.data.quality.blocklist import DEFAULT_BLOCKLIST, count_hits
from tasks.data.quality.measures import TextView, duplicate_ngram_fractions, repeated_lines, top_ngram_fraction

Action = Literal["drop", "flag"]

_HAS_ALPHA = re.compile(r"[^\W\d_]")  # a letter, in any script
_ELLIPSIS = re.compile(r"\.\.\.|…")


class QualityFilter(BaseModel):
    """What every filter has: a switch, an action, and a check."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="run this filter")
    action: Action = Field("drop", description='"drop" removes a failing document; "flag" keeps it and '
                                               "records the filter in its quality_flags column")

    def fails(self, view: TextView) -> bool:
        """Whether the text fails this filter's check."""
        raise NotImplementedError


def _ordered(model: QualityFilter, low: str, high: str) -> QualityFilter:
    """``model`` when its field ``low`` is at most its field ``high``."""
    if getattr(model, low) > getattr(model, high):
        raise ValueError(f"{low} ({getattr(model, low)}) is greater than {high} ({getattr(model, high)})")
    return model


def _check_fractions(value: dict[int, float]) -> dict[int, float]:
    for n, fraction in value.items():
        if not 1 <= n <= 20:
            raise ValueError(f"n-gram size {n} is outside 1..20")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction {fraction} for {n}-grams is outside 0..1")
    return dict(sorted(value.items()))


class WordCountFilter(QualityFilter):
    """Gopher: documents with fewer than 50 or more than 100,000 words."""

    min_words: int = Field(50, ge=0, description="documents with fewer words fail")
    max_words: int = Field(100_000, gt=0, description="documents with more words fail")

    @model_validator(mode="after")
    def _bounds(self):
        return _ordered(self, "min_words", "max_words")

    def fails(self, view: TextView) -> bool:
        return not self.min_words <= view.n_words <= self.max_words


class MeanWordLengthFilter(QualityFilter):
    """Gopher: a mean word length outside 3..10 characters (tables of numbers, run-together tokens, code)."""

    min_mean: float = Field(3.0, ge=0, description="documents whose mean word length (characters) is below fail")
    max_mean: float = Field(10.0, gt=0, description="documents whose mean word length (characters) is above fail")

    @model_validator(mode="after")
    def _bounds(self):
        return _ordered(self, "min_mean", "max_mean")

    def fails(self, view: TextView) -> bool:
        return bool(view.n_words) and not self.min_mean <= view.total_chars / view.n_words <= self.max_mean


class RepeatedLinesFilter(QualityFilter):
    """Gopher: boilerplate and menus — too many lines that repeat an earlier line of the same document."""

    max_line_fraction: float = Field(0.30, ge=0, le=1, description="fail above this share of non-blank lines "
                                                                   "that repeat an earlier line")
    max_char_fraction: float = Field(0.20, ge=0, le=1, description="fail above this share of the characters "
                                                                   "(of non-blank lines) in repeated lines")

    def fails(self, view: TextView) -> bool:
        line_fraction, char_fraction = repeated_lines(view.text)
        return line_fraction > self.max_line_fraction or char_fraction > self.max_char_fraction


class TopNgramsFilter(QualityFilter):
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

    def fails(self, view: TextView) -> bool:
        return any(top_ngram_fraction(view.words, n, view.total_chars) > limit
                   for n, limit in self.max_fraction.items())


class DuplicateNgramsFilter(QualityFilter):
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

    def fails(self, view: TextView) -> bool:
        if not self.max_fraction:
            return False
        fractions = duplicate_ngram_fractions(view.words, self.max_fraction, view.total_chars)
        return any(fractions[n] > limit for n, limit in self.max_fraction.items())


class SymbolRatioFilter(QualityFilter):
    """Gopher: hashtags and ellipses per word (social-media and truncated-snippet pages)."""

    max_ratio: float = Field(0.10, ge=0, description="fail above this many '#', '...' and '…' per word")

    def fails(self, view: TextView) -> bool:
        symbols = view.text.count("#") + len(_ELLIPSIS.findall(view.text))
        return bool(symbols) and symbols / max(view.n_words, 1) > self.max_ratio


class NonAlphaWordsFilter(QualityFilter):
    """Gopher: mostly non-alphabetic text (number tables, hashes, encoded data)."""

    max_fraction: float = Field(0.20, ge=0, le=1, description="fail above this share of words without a letter")

    def fails(self, view: TextView) -> bool:
        if not view.n_words:
            return False
        alpha = sum(1 for w in view.words if _HAS_ALPHA.search(w))
        return (view.n_words - alpha) / view.n_words > self.max_fraction


class BlocklistFilter(QualityFilter):
    """C4: words from a list of obscene or toxic words (one entry per line; multi-word phrases allowed)."""

    path: Path = Field(DEFAULT_BLOCKLIST, description="word list file; a relative path is looked up in the "
                                                      "working directory, then in the tunegate checkout")
    max_hits: int = Field(0, ge=0, description="a document fails only with more hits than this …")
    max_ratio: float = Field(0.0, ge=0, le=1, description="… and more hits per word than this (both "
                                                          "defaults 0: any hit fails, as in C4)")

    def fails(self, view: TextView) -> bool:
        hits = count_hits(self.path, view.words, view.lowered)
        return hits > self.max_hits and hits / max(view.n_words, 1) > self.max_ratio


class PromptInjectionFilter(QualityFilter):
    """Instructions aimed at a model rather than a reader ("input prompt regulation")."""

    rules: ClassVar[injection.Rules] = injection.PROMPT_RULES

    action: Action = Field("flag", description='"flag" (default) keeps the document and records the filter; '
                                               '"drop" removes it')
    extra_patterns: list[str] = Field(default_factory=list, description="more regular expressions that count as hits "
                                                                        "(matched case-insensitively, ^/$ per line)")

    @field_validator("extra_patterns")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        return injection.check_patterns(value)

    def fails(self, view: TextView) -> bool:
        return injection.matches(self.rules, self.extra_patterns, view.text, view.lowered)


class SqlInjectionFilter(PromptInjectionFilter):
    """SQL-injection payloads ("' OR 1=1 --", "UNION SELECT", "; DROP TABLE")."""

    rules: ClassVar[injection.Rules] = injection.SQL_RULES
