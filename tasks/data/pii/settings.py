"""What the PII stage scrubs and how: the ``pii`` section of the config and the entity lists.

No Presidio import here: the config and the evaluation read these without loading the analyzer.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


SECRET_ENTITIES = ["API_KEY", "PASSWORD", "PRIVATE_KEY", "CONNECTION_STRING"]
PRESIDIO_ENTITIES = [
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "US_SSN",
    "IBAN_CODE",
    "IP_ADDRESS",
    "LOCATION",
]
DEFAULT_ENTITIES = PRESIDIO_ENTITIES + SECRET_ENTITIES
# spaCy labels that map to no Presidio entity: left out instead of logged once per document
IGNORED_NER_LABELS = ["CARDINAL", "ORDINAL", "QUANTITY", "MONEY", "PERCENT", "WORK_OF_ART", "LAW", "LANGUAGE",
                      "EVENT", "PRODUCT"]
PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*>")
Operator = Literal["replace", "mask", "hash", "redact", "encrypt"]


class PiiSettings(BaseModel):
    """Which entities are scrubbed and how."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    entities: list[str] = Field(default_factory=lambda: list(DEFAULT_ENTITIES), min_length=1)
    operator: Operator = Field("replace", description="default operator; replace gives <TYPE>")
    operators: dict[str, Operator] = Field(default_factory=dict, description="operator per entity type")
    score_threshold: float = Field(0.3, ge=0.0, le=1.0)
    spacy_model: str = Field("en_core_web_sm", min_length=1, description="installed spaCy package")
    language: str = "en"
    batch_size: int = Field(64, ge=1, description="texts per spaCy batch")
    batch_chars: int = Field(50_000, ge=1_000, description="characters per spaCy batch, whatever batch_size says")
    encrypt_key_env: str = Field("TUNEGATE_PII_KEY", description="environment variable holding the AES key")
    hash_salt_env: str = Field(
        "TUNEGATE_PII_SALT",
        description="environment variable holding the salt for 'hash' (at least 16 bytes), so equal values get "
        "equal hashes; unset, every value gets a random salt",
    )
    engine: Literal["fast", "presidio"] = Field(
        "fast", description="fast: NER-only spaCy, pre-checked recognizers; presidio: Presidio's batch analyzer"
    )
    chunk_chars: int = Field(
        100_000, ge=1_000, le=1_000_000,
        description="texts longer than this are scrubbed in pieces cut at blank lines, line breaks or spaces",
    )
    structured_fallbacks: bool = Field(
        True, description="also run the card-number (Luhn, issuer prefix, cue word) and phone (cue word) "
        "recognizers for the structured values Presidio's own miss (tests/RELIABILITY.md)",
    )
    propagate: list[str] = Field(
        default_factory=lambda: ["PERSON"],
        description="entity types whose multi-word strings, once found, are scrubbed wherever else they occur "
        "in the same shard (the NER model misses names in some contexts it finds in others)",
    )

    @field_validator("entities", "propagate")
    @classmethod
    def _upper(cls, v: list[str]) -> list[str]:
        return [e.strip().upper() for e in v]

    @field_validator("operators")
    @classmethod
    def _upper_keys(cls, v: dict[str, str]) -> dict[str, str]:
        return {k.strip().upper(): op for k, op in v.items()}
