"""What the PII stage scrubs and how: the ``pii`` section of the config and the entity lists.

No Presidio import here: the config and the evaluation read these without loading the analyzer.
"""

from __future__ import annotations

import re
from functools import lru_cache
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
# every entity type the engine can find with spaCy's English pipelines (sm, md): Presidio's predefined recognizers
# for English, the NER's labels as Presidio maps them, and the secrets (tests/test_pii_fast.py checks it against the
# analyzer)
KNOWN_ENTITIES = sorted({
    *DEFAULT_ENTITIES, "ORGANIZATION", "NRP", "DATE_TIME", "URL", "CRYPTO", "MAC_ADDRESS", "UUID", "MEDICAL_LICENSE",
    "UK_NHS", "US_BANK_NUMBER", "US_DRIVER_LICENSE", "US_ITIN", "US_PASSPORT",
})
# spaCy labels that map to no Presidio entity: left out instead of logged once per document
IGNORED_NER_LABELS = ["CARDINAL", "ORDINAL", "QUANTITY", "MONEY", "PERCENT", "WORK_OF_ART", "LAW", "LANGUAGE",
                      "EVENT", "PRODUCT"]
PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*>")  # the shape of a placeholder; the scrubber uses placeholder_pattern
Operator = Literal["replace", "mask", "hash", "redact", "encrypt"]


class PiiSettings(BaseModel):
    """Which entities are scrubbed and how."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    entities: list[str] = Field(default_factory=lambda: list(DEFAULT_ENTITIES), min_length=1)
    operator: Operator = Field("replace", description="default operator; replace gives <TYPE>")
    operators: dict[str, Operator] = Field(default_factory=dict, description="operator per entity type")
    score_threshold: float = Field(0.3, ge=0.0, le=1.0)
    spacy_model: str = Field(
        "en_core_web_md", min_length=1,
        description="installed spaCy package: en_core_web_md (default; infra/spacy-shim-md) or en_core_web_sm "
        "(~7% faster, but on presidio-research's set 21.8% of the names left against 13.2%: bench/RESULTS.md)",
    )
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
    address_rules: bool = Field(
        True, description="also scrub postal addresses as LOCATION by their shape: house number and street, unit "
        "(Apt./Suite/P.O. Box), postal code after a cue word, and the short lines of an address block below them "
        "(spaCy's small model leaves most street addresses; bench/RESULTS.md)",
    )
    name_rules: bool = Field(
        True, description="also scrub person names the NER leaves: a name after a cue (\"my name is\", "
        "\"Dear\", \"Mr.\") and a capitalised US-census first name with the capitalised words after it, outside "
        "places, dates and numbers; and drop the NER's 'names' that hold a digit or are a weekday or month and its "
        "'places' that hold a code (\"E417\", \"E305\") (tasks/data/pii/names.py; bench/RESULTS.md)",
    )
    social_handles: bool = Field(
        False, description="also scrub social-media handles (@name) as PERSON: on WNUT-17's tweets person leaks fall "
        "from 57% to 29%, but the precision of what is replaced from 76% to 57% (many handles there are no one's "
        "name; bench/RESULTS.md); for social-media text",
    )
    propagate: list[str] = Field(
        default_factory=list,
        description="must be empty: pii-5 scrubbed a name found in one document wherever else it occurred in the "
        "shard, which made a document's output depend on its shard and spread false positives; measured on gold "
        "data it caught almost no more names and mostly spread non-names (bench/pii_propagation.py), so it was removed",
    )

    @field_validator("entities")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        v = [e.strip().upper() for e in v]
        _check_known(v)
        return v

    @field_validator("propagate")
    @classmethod
    def _no_propagation(cls, v: list[str]) -> list[str]:
        v = [e.strip().upper() for e in v]
        _check_known(v)
        if v:
            raise ValueError("name propagation was removed in pii-6 (a document's output depended on its shard and "
                             "false positives spread; bench/pii_propagation.py): leave propagate out")
        return v

    @field_validator("operators")
    @classmethod
    def _known_keys(cls, v: dict[str, str]) -> dict[str, str]:
        v = {k.strip().upper(): op for k, op in v.items()}
        _check_known(list(v))
        return v


def _check_known(names: list[str]) -> None:
    unknown = [e for e in names if e not in KNOWN_ENTITIES]
    if unknown:
        raise ValueError(f"unknown PII entity types {unknown} (known: {', '.join(KNOWN_ENTITIES)})")


def placeholder_pattern(settings: PiiSettings) -> re.Pattern:
    """The placeholders this configuration's operators write (``<EMAIL_ADDRESS>`` for replace on
    EMAIL_ADDRESS): what a scrub leaves and a later scrub takes for no PII. Nothing else in angle brackets is
    (an AWS access key id in angle brackets is scrubbed like any secret)."""
    ops = settings.operators
    return _placeholders(tuple(e for e in settings.entities if ops.get(e, settings.operator) == "replace"))


@lru_cache(maxsize=32)
def _placeholders(entities: tuple[str, ...]) -> re.Pattern:
    if not entities:
        return re.compile(r"(?!)")  # matches nothing
    return re.compile("<(?:" + "|".join(sorted(map(re.escape, set(entities)), key=len, reverse=True)) + ")>")
