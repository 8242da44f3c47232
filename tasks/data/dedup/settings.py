"""Dedup's settings, and the LSH banding derived from threshold and permutations when none is set."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

_CANDIDATE_RECALL = 0.99  # derived banding: a pair exactly at the threshold becomes a candidate this often


class DedupSettings(BaseModel):
    """Exact and near-duplicate removal."""

    model_config = ConfigDict(extra="forbid")

    exact: bool = Field(True, description="drop documents whose normalised text is identical")
    near: bool = Field(True, description="drop near duplicates found with MinHash LSH")
    shingle_size: int = Field(5, ge=1, le=32, description="words per shingle")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations")
    threshold: float = Field(0.8, gt=0.0, lt=1.0, description="Jaccard similarity that makes a near duplicate")
    seed: int = Field(1, ge=0, lt=2**32, description="MinHash seed")
    bands: int | None = Field(None, ge=1, le=1024,
                              description="LSH bands (with rows); default: derived from threshold and num_perm")
    rows: int | None = Field(None, ge=1, le=1024, validate_default=True,
                             description="signature values per LSH band (with bands)")

    @field_validator("rows")
    @classmethod
    def _banding_fits(cls, rows: int | None, info: ValidationInfo) -> int | None:
        bands, num_perm = info.data.get("bands"), info.data.get("num_perm")
        if (bands is None) != (rows is None):
            raise ValueError("set bands and rows together, or neither (then they follow from threshold)")
        if rows is not None and bands is not None and num_perm is not None and bands * rows > num_perm:
            raise ValueError(f"bands x rows = {bands * rows} exceeds num_perm = {num_perm}")
        return rows

    def banding(self) -> tuple[int, int]:
        """(bands, rows): as set, or the most rows per band that still find a pair at the threshold."""
        if self.bands is not None and self.rows is not None:
            return self.bands, self.rows
        return derive_banding(self.threshold, self.num_perm)


def derive_banding(threshold: float, num_perm: int, recall: float = _CANDIDATE_RECALL) -> tuple[int, int]:
    """The (bands, rows) with the most rows (fewest dissimilar candidates) such that a pair whose Jaccard
    equals ``threshold`` shares at least one band with probability >= ``recall``."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if 1.0 - (1.0 - threshold**rows) ** bands >= recall:
            best = (bands, rows)
    return best
