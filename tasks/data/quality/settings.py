"""The quality section of the config: one field per filter, in the order they are checked, and the cache key.

``QualitySettings`` is the one place that lists the filters: ``FILTER_NAMES`` is read off its fields, so a
new filter is its class in ``filters.py`` plus its field here, placed where it is to be checked.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.data.quality.blocklist import blocklist_sha256
from tasks.data.quality.filters import (
    BlocklistFilter,
    DuplicateNgramsFilter,
    MeanWordLengthFilter,
    NonAlphaWordsFilter,
    PromptInjectionFilter,
    QualityFilter,
    RepeatedLinesFilter,
    SqlInjectionFilter,
    SymbolRatioFilter,
    TopNgramsFilter,
    WordCountFilter,
)

CODE_VERSION = "quality-1"


def _section(model: type[QualityFilter], description: str):
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


# the order in which filters are checked, reported, and (for drops) counted: the order of the fields above
FILTER_NAMES = tuple(name for name, field in QualitySettings.model_fields.items()
                     if isinstance(field.annotation, type) and issubclass(field.annotation, QualityFilter))


def cache_params(settings: QualitySettings) -> dict[str, Any]:
    """The settings as JSON-ready parameters for a snapshot's cache key and manifest, with the sha256 of the
    blocklist's content (when that filter runs), so editing the word list invalidates cached snapshots."""
    params = settings.model_dump(mode="json")
    params["code_version"] = CODE_VERSION
    if settings.enabled and settings.blocklist.enabled:
        params["blocklist_sha256"] = blocklist_sha256(settings.blocklist.path)
    return params
