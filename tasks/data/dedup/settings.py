"""Dedup's settings, and the LSH banding derived from the candidate threshold and permutations when none is set.

The defaults come from bench/dedup_study.py: five sets built from text written by others (WikiText-2,
Tiny Shakespeare, Self-Instruct; documents of 40-400 and 400-2,500 words), with planted near copies that
have 1-10 % of their words inserted, deleted or substituted, exact copies, and hard negatives that share
60-80 % of their words with a document as long verbatim passages. Word 3-grams find the candidates: a copy
with 10 % of its words edited keeps a 3-gram Jaccard of 0.5 or more, while unrelated documents share almost
none (banding 42 x 3: few pairs to verify, also in large corpora). The bag of words decides: such a copy
keeps a bag-of-words Jaccard of about 0.82 or more, a document sharing 80 % of its words as passages about
0.8 or less. No single shingle Jaccard separates the two: word 5-grams at 0.8, the old defaults, found
about one near copy in four; lower thresholds that find them also remove the hard negatives.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

_CANDIDATE_RECALL = 0.99  # derived banding: a pair at the candidate threshold becomes a candidate this often


class DedupSettings(BaseModel):
    """Exact and near-duplicate removal."""

    model_config = ConfigDict(extra="forbid")

    exact: bool = Field(True, description="drop documents whose normalised text is identical")
    near: bool = Field(True, description="drop near duplicates found with MinHash LSH")
    shingle_unit: Literal["word", "char"] = Field(
        "word", description="what LSH shingles are made of: words, or characters of the words joined by single spaces")
    shingle_size: int = Field(3, ge=1, le=32, description="words (or characters) per LSH shingle")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations")
    candidate_threshold: float = Field(
        0.5, gt=0.0, lt=1.0,
        description="shingle Jaccard at which a pair becomes an LSH candidate (99% of the time) when bands/rows "
                    "are not set")
    verify: Literal["words", "signature"] = Field(
        "words", description="what a candidate pair must reach `threshold` on: 'words', the Jaccard of the two "
                             "bags of words (exact up to `sketch_size` words, estimated beyond), or 'signature', "
                             "the shingle Jaccard estimated from the MinHash signatures")
    threshold: float = Field(0.8, gt=0.0, lt=1.0, description="similarity (see verify) that makes a near duplicate")
    sketch_size: int = Field(512, ge=16, le=65536,
                             description="words' hashes kept per document to verify pairs (verify: words)")
    seed: int = Field(1, ge=0, lt=2**32, description="MinHash seed")
    bands: int | None = Field(None, ge=1, le=1024,
                              description="LSH bands (with rows); default: from candidate_threshold and num_perm")
    rows: int | None = Field(None, ge=1, le=1024, validate_default=True,
                             description="signature values per LSH band (with bands)")

    @field_validator("rows")
    @classmethod
    def _banding_fits(cls, rows: int | None, info: ValidationInfo) -> int | None:
        bands, num_perm = info.data.get("bands"), info.data.get("num_perm")
        if (bands is None) != (rows is None):
            raise ValueError("set bands and rows together, or neither (then they follow from candidate_threshold)")
        if rows is not None and bands is not None and num_perm is not None and bands * rows > num_perm:
            raise ValueError(f"bands x rows = {bands * rows} exceeds num_perm = {num_perm}")
        return rows

    def banding(self) -> tuple[int, int]:
        """(bands, rows): as set, or the most rows per band that still find a pair at the candidate threshold."""
        if self.bands is not None and self.rows is not None:
            return self.bands, self.rows
        return derive_banding(self.candidate_threshold, self.num_perm)


def derive_banding(threshold: float, num_perm: int, recall: float = _CANDIDATE_RECALL) -> tuple[int, int]:
    """The (bands, rows) with the most rows (fewest dissimilar candidates) such that a pair whose Jaccard
    equals ``threshold`` shares at least one band with probability >= ``recall``."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if 1.0 - (1.0 - threshold**rows) ** bands >= recall:
            best = (bands, rows)
    return best
