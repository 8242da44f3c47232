"""How raw inputs become documents: the ``ingest`` section of the config, and the form of a hub dataset id."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

HUB_PREFIX = "hf://datasets/"
HUB_SPEC = re.compile(r"^(?P<repo>[\w.-]+(?:/[\w.-]+)?)(?::(?P<config>[\w.-]+))?(?:@(?P<revision>[\w./-]+))?$")


class IngestSettings(BaseModel):
    """How raw files become documents."""

    model_config = ConfigDict(extra="forbid")

    pdf_strategy: Literal["fast", "auto", "hi_res", "ocr_only"] = Field(
        "fast", description="unstructured's PDF strategy; only 'fast' works without hub weights"
    )
    pdf_copy_protected: Literal["read", "quarantine"] = Field(
        "read", description="PDFs whose permissions forbid text extraction: read them, or quarantine them"
    )
    text_field: str = Field("text", min_length=1, description="field holding the text in JSONL/datasets")
    max_file_mb: float = Field(64.0, gt=0, description="larger files are quarantined")
    plain_text_mb: float = Field(
        1.0, ge=0,
        description="plain text files (.txt, .text, .log) larger than this (or with a line over 5,000 characters) "
        "are split into lines here, not by unstructured, which takes ~12 s per MB and ~50 MB of memory per MB "
        "of text (tests/RELIABILITY.md)",
    )
    shard_size: int = Field(2000, ge=1, description="documents per Parquet shard")
    follow_symlinks: bool = Field(False, description="read symlinks that point outside the data root")
    hub_datasets: list[str] = Field(
        default_factory=list,
        description="Hugging Face hub datasets to ingest, 'owner/name[:config][@revision]'; need a network",
    )
    hub_split: str | None = Field(None, description="the split of each hub dataset to read; null: all splits")

    @field_validator("hub_datasets")
    @classmethod
    def _hub_ids(cls, value: list[str]) -> list[str]:
        out = []
        for spec in value:
            spec = spec.strip().removeprefix(HUB_PREFIX)
            if not HUB_SPEC.match(spec):
                raise ValueError(f"{spec!r} is not a hub dataset id (owner/name[:config][@revision])")
            out.append(spec)
        return out
