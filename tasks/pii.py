"""PII and secrets scrubbing with Presidio's recognizers, offline, fast.

The spaCy model comes from a registry package pinned by hash (``en_core_web_sm``, see infra/); entities,
score threshold and the operator per entity are configurable. The default replaces each entity with
``<TYPE>``. Besides Presidio's entities, the secrets recognizers of tasks/secrets.py (API_KEY, PASSWORD,
PRIVATE_KEY, CONNECTION_STRING) are on by default.

Two engines (bench/pii.py measures them against vanilla Presidio on gold spans):

- ``presidio``: Presidio's BatchAnalyzerEngine, i.e. the whole spaCy pipeline and every selected
  recognizer on every text.
- ``fast`` (default): spaCy runs only the components its NER needs (en_core_web_sm's ner has its own
  tok2vec, so tok2vec, tagger, parser, attribute_ruler and lemmatizer are skipped; the rule-based sentencizer
  stands in for the parser's sentence boundaries, which the NER respects), in batches of up to
  ``batch_size`` texts and ``batch_chars`` characters, each distinct text once. Each recognizer runs only
  when a cheap test implied by its own patterns passes (no '@', no e-mail; no 13 digits in a card's
  grouping, no credit card; the phone matcher only for the regions whose valid numbers fit the text's digit
  runs). Lemmas, which only Presidio's context enhancement reads, come from the rest of the pipeline, run
  only on the texts where a context word could change the outcome: a result of a recognizer with context
  words below the score threshold, or results of different types on one span whose label a raised score
  could flip. The anonymizer's conflict rules are applied as Presidio applies them, then the text is rebuilt
  in one pass. Findings are Presidio's except where the NER reads a sentence boundary differently (1 of
  synth_dataset_v2's 1,500 texts, where one name more is found), and no type leaks more.

Two fallback recognizers (``structured_fallbacks``, on by default) find what Presidio's own miss on
presidio-research's benchmark: card numbers outside its pattern (Mastercard 2-series, 19-digit Visa,
12-19-digit Maestro, JCB 2131/1800; Luhn-checked, after a card cue word) and national phone numbers of
regions it does not try (after a cue such as "Phone:" or "call me on", before "office"/"fax", or with a
bracketed area code). With them no gold e-mail, phone, card, SSN, IBAN or IP value of the benchmark survives
(tests/test_pii_benchmark_leaks.py); without them 30 cards and 38 phones of 319 structured values did.

Where an entity was already replaced by a ``<TYPE>`` placeholder, nothing inside the placeholder is taken for
PII again: scrubbing scrubbed text finds nothing new of the pattern types (the NER may still find a name it
missed in the original's context). Texts over ``chunk_chars`` are scrubbed in pieces.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import unicodedata
from collections import Counter
from functools import lru_cache
from typing import Any, Callable, Iterable, Literal, NamedTuple

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.secrets import SECRET_ENTITIES, SecretRecognizer, secret_recognizers

CODE_VERSION = "pii-5"
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


# ---------------------------------------------------------------------------------------------- operators

def _secret_from_env(env: str) -> str | None:
    """The value of ``$env`` (a key or a salt): callers name the variable in messages, never the value."""
    return os.environ.get(env) or None


def _operator_fn(name: str, entity: str, settings: PiiSettings) -> Callable[[str], str]:
    """A function from the original value to its replacement. Keys and salts stay inside closures."""
    if name == "replace":
        token = f"<{entity}>"
        return lambda value: token
    if name == "redact":
        return lambda value: ""
    if name == "mask":
        return lambda value: "*" * len(value)  # Presidio's mask with chars_to_mask >= len(value)
    if name == "hash":
        from presidio_anonymizer.operators import Hash

        params: dict[str, Any] = {"hash_type": "sha256"}
        salt = _secret_from_env(settings.hash_salt_env)
        if salt is not None:
            if len(salt.encode()) < 16:
                raise ValueError(f"pii operator 'hash': the salt in ${settings.hash_salt_env} must be at least 16 "
                                 "bytes long")
            params["salt"] = salt
        hasher = Hash()
        return lambda value: hasher.operate(text=value, params=dict(params))
    if name == "encrypt":
        from presidio_anonymizer.operators import Encrypt
        from presidio_anonymizer.operators.aes_cipher import AESCipher

        key = _secret_from_env(settings.encrypt_key_env)
        if not key:
            raise ValueError(f"pii operator 'encrypt' needs a key in ${settings.encrypt_key_env}")
        if not AESCipher.is_valid_key_size(key.encode("utf8")):
            raise ValueError(f"pii operator 'encrypt': the key in ${settings.encrypt_key_env} must be 16, 24 or 32 "
                             "bytes long")
        encrypter = Encrypt()

        def encrypt(value: str) -> str:
            try:
                return encrypter.operate(text=value, params={"key": key})
            except Exception as e:  # never let the key travel in an exception's text or its chain
                raise ValueError(f"pii operator 'encrypt' failed for {entity}: {type(e).__name__}") from None

        return encrypt
    raise ValueError(f"unknown pii operator {name!r}")


class Operators:
    """The replacement function for each entity type, built once per batch."""

    def __init__(self, settings: PiiSettings):
        self.names = {e: settings.operators.get(e, settings.operator) for e in settings.entities}
        self.fns = {e: _operator_fn(op, e, settings) for e, op in self.names.items()}
        self.default = _operator_fn(settings.operator, "PII", settings)
        self.default_name = settings.operator

    def __call__(self, entity: str, value: str) -> str:
        return self.fns.get(entity, self.default)(value)


def operators_for(settings: PiiSettings) -> dict[str, Any]:
    """Presidio ``OperatorConfig`` per entity type, for AnonymizerEngine (reference and comparison code)."""
    from presidio_anonymizer.entities import OperatorConfig

    def config(name: str, entity: str):
        if name == "replace":
            return OperatorConfig("replace", {"new_value": f"<{entity}>"})
        if name == "mask":
            return OperatorConfig("mask", {"masking_char": "*", "chars_to_mask": 10_000, "from_end": False})
        if name == "hash":
            salt = _secret_from_env(settings.hash_salt_env)
            return OperatorConfig("hash", {"hash_type": "sha256", **({"salt": salt} if salt else {})})
        if name == "encrypt":
            key = _secret_from_env(settings.encrypt_key_env)
            if not key:
                raise ValueError(f"pii operator 'encrypt' needs a key in ${settings.encrypt_key_env}")
            return OperatorConfig("encrypt", {"key": key})
        return OperatorConfig("redact", {})

    ops = {e: config(settings.operators.get(e, settings.operator), e) for e in settings.entities}
    ops["DEFAULT"] = config(settings.operator, "PII")
    return ops


# ---------------------------------------------------------------------------------------------- pre-checks

# Each is implied by the recognizer's own patterns (boundaries and look-arounds dropped, alternatives merged),
# so a text it does not match cannot give that recognizer a result.
_CREDIT_CARD_HINT = re.compile(r"[13456]\d{3}[- ]?\d{3,4}[- ]?\d{3,4}[- ]?\d{3,5}")
_SSN_HINT = re.compile(r"[0-9]{5}-[0-9]{4}|[0-9]{3}-[0-9]{6}|[0-9]{3}[- .][0-9]{2}[- .][0-9]{4}|[0-9]{9}")
_IBAN_HINT = re.compile(r"[^\W\d_]{2}[0-9]{2}(?:[ -]?[^\W_]{4}){2}")  # the registry compiles it case-insensitive
_IP_HINT = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]|::|[0-9A-Fa-f]:[0-9A-Fa-f]")  # IPv4, IPv6 forms


def _phone_run_pattern():
    from phonenumbers import phonenumbermatcher as pm
    from phonenumbers import phonenumberutil as pu

    # every character the matcher's candidate pattern (phonenumbermatcher._PATTERN) allows before an extension,
    # in a class written the way phonenumbers writes its own (its strings hold ranges and escapes)
    chars = pu._VALID_PUNCTUATION + pu._PLUS_CHARS + pm._OPENING_PARENS + pm._CLOSING_PARENS + "X\\d"
    return re.compile("[" + chars + "]+")


_DIGIT_GROUP = re.compile(r"\d+")


class _RegionBounds(NamedTuple):
    national: int  # fewest digits of a valid national significant number (its shortest possible length)
    lengths: frozenset  # the possible lengths of a national significant number
    stripped: float  # most digits parsing can strip before it (country code, national prefix twice)
    inserted: int  # most digits a national prefix transform rule can add (twice)
    idd_digits: int  # fewest digits of the international dialling prefix
    idd_zero: bool  # the international dialling prefix always starts with 0


def _sre_parse():
    try:
        import re._parser as sre_parse
    except ImportError:  # Python < 3.11
        import sre_parse  # type: ignore[no-redef]
    return sre_parse


def _regex_width(pattern: str) -> tuple[int, int]:
    return _sre_parse().parse(pattern).getwidth() if pattern else (0, 0)


def _always_starts_with_zero(pattern: str) -> bool:
    parsed = _sre_parse().parse(pattern) if pattern else []
    return len(parsed) > 0 and parsed[0] == (_sre_parse().LITERAL, ord("0"))


@lru_cache(maxsize=64)
def _phone_bounds(region: str) -> _RegionBounds | None:
    """What libphonenumber's metadata says about valid numbers of ``region``.

    A valid number's national significant number has one of the lengths in the region's general description
    (the validity check tests them first), and its digits are digits of the text, except that parsing may
    strip a leading country code and national prefix and a transform rule may add digits.
    """
    from phonenumbers.phonemetadata import PhoneMetadata

    meta = PhoneMetadata.metadata_for_region(region)
    if meta is None or not meta.general_desc or not meta.general_desc.possible_length:
        return None
    prefix_width = _regex_width(meta.national_prefix_for_parsing or meta.national_prefix or "")[1]
    stripped = float("inf") if prefix_width >= 1_000 else len(str(meta.country_code)) + 2 * prefix_width
    literal = re.sub(r"\\g<\w+>|[\\$]\d", "", meta.national_prefix_transform_rule or "")
    idd = meta.international_prefix or ""
    lengths = frozenset(meta.general_desc.possible_length)
    return _RegionBounds(min(lengths), lengths, stripped, 2 * sum(c.isdigit() for c in literal),
                         _regex_width(idd)[0], _always_starts_with_zero(idd))


# Written after a plus sign, a valid number of any country shows at least 6 digits: country code and national
# number together, less any digits a transform rule inserts, are 6 or more for every country (AT, DE, IR).
_PHONE_MIN_WITH_PLUS = 6
_PHONE_LONG_GROUP = 400  # the matcher's candidate pattern takes at most 21 blocks of 20 digits


class PhoneGate:
    """Presidio's PhoneRecognizer, run only for the regions where a valid number could fit the text.

    A run is a maximal stretch of the characters the phone matcher's candidates are made of (digits, its
    punctuation, plus signs and brackets), a group a maximal stretch of digits in it. The matcher's candidates
    and the parts it retries are whole groups, so a candidate's digits are consecutive groups of one run, and
    an international prefix can only open a group. Per run: a plus sign and 6+ digits, or a group starting
    with 0 (the first digit of these regions' international prefixes) and 8+ digits from it on, and any
    region may match; a single group of g digits can only be a
    national number of a region with a possible length in [g - stripped, g + inserted]; otherwise the run
    needs at least the region's shortest length. The recognizer's own results are kept as they are, less
    its explanation's region lookup (a second parse of each match).
    """

    def __init__(self, recognizer):
        self.recognizer = recognizer
        self.regions = tuple(recognizer.supported_regions)
        self.bounds = {r: _phone_bounds(r) for r in self.regions}
        self.runs = _phone_run_pattern()
        known = [b for b in self.bounds.values() if b is not None]
        # written with an international prefix: the prefix, then what a plus sign would need
        self.min_idd = min((b.idd_digits for b in known), default=0) + _PHONE_MIN_WITH_PLUS
        self.idd_zero = len(known) == len(self.bounds) and all(b.idd_zero for b in known)

    def _fits(self, region: str, digits: int, groups: int) -> bool:
        b = self.bounds[region]
        if b is None:
            return True
        if groups > 1:
            return digits >= b.national
        return any(digits - b.stripped <= n <= digits + b.inserted for n in b.lengths)

    def regions_for(self, text: str) -> tuple:
        needed: set = set()
        for m in self.runs.finditer(text):
            run = m.group()
            groups = _DIGIT_GROUP.findall(run)
            n = sum(map(len, groups))
            if n < 4:
                continue  # no region has a national number under 4 digits
            if n >= _PHONE_MIN_WITH_PLUS and ("+" in run or "\uff0b" in run):
                return self.regions
            rest = n
            for g in groups:
                if len(g) > _PHONE_LONG_GROUP or (rest >= self.min_idd and (
                        not self.idd_zero or unicodedata.decimal(g[0]) == 0)):
                    return self.regions
                rest -= len(g)
            needed.update(r for r in self.regions if r not in needed and self._fits(r, n, len(groups)))
            if len(needed) == len(self.regions):
                return self.regions
        return tuple(r for r in self.regions if r in needed)

    def analyze(self, text: str, entities: list[str], nlp_artifacts=None) -> list:
        import phonenumbers
        from presidio_analyzer import AnalysisExplanation, EntityRecognizer, RecognizerResult

        rec = self.recognizer
        results = []
        for region in self.regions_for(text):
            for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=rec.leniency):
                results.append(RecognizerResult(
                    entity_type=rec.supported_entities[0], start=match.start, end=match.end, score=rec.SCORE,
                    analysis_explanation=AnalysisExplanation(
                        recognizer=type(rec).__name__, original_score=rec.SCORE,
                        textual_explanation=f"Recognized as a phone number by the {region} region's matcher"),
                    recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: rec.name,
                                          RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: rec.id},
                ))
        return EntityRecognizer.remove_duplicates(results) if results else []


# The pre-checks above were derived from these recognizers' patterns as presidio-analyzer 2.2.366 ships them
# (sha256 of the regexes, one a line): a recognizer whose patterns differ runs without one.
_GATED_PATTERNS = {
    "EmailRecognizer": "004723abbb67ff6c",
    "CreditCardRecognizer": "f619fa242c932c37",
    "UsSsnRecognizer": "99e2c61f6a973b04",
    "IbanRecognizer": "1f98697e78e08d67",
    "IpRecognizer": "2e5b4e8ccce1e531",
}


def _patterns_digest(recognizer) -> str:
    regexes = "\n".join(p.regex for p in getattr(recognizer, "patterns", None) or [])
    return hashlib.sha256(regexes.encode()).hexdigest()[:16]


def _gate_for(recognizer) -> Callable[[str], bool] | None:
    """A cheap test that is true whenever ``recognizer`` could find something (None: always run it)."""
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        UsSsnRecognizer,
    )

    if isinstance(recognizer, SecretRecognizer) or hasattr(recognizer, "fallback"):
        return recognizer.may_match
    gates = {
        EmailRecognizer: lambda t: "@" in t,
        CreditCardRecognizer: lambda t: _CREDIT_CARD_HINT.search(t) is not None,
        UsSsnRecognizer: lambda t: _SSN_HINT.search(t) is not None,
        IbanRecognizer: lambda t: _IBAN_HINT.search(t) is not None,
        IpRecognizer: lambda t: _IP_HINT.search(t) is not None,
    }
    cls = type(recognizer)
    if cls not in gates or getattr(recognizer, "deny_list", None):
        return None  # unknown to us, or a deny list, which matches words rather than these shapes
    if _patterns_digest(recognizer) != _GATED_PATTERNS[cls.__name__]:
        return None
    return gates[cls]


def _phone_gate_applies(recognizer) -> bool:
    """PhoneGate's bounds hold for Presidio's PhoneRecognizer asking for valid numbers (leniency 1 or more)."""
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    return type(recognizer) is PhoneRecognizer and (recognizer.leniency or 0) >= 1


# ---------------------------------------------------------------------------------------------- fallbacks

_ANY_DIGIT = re.compile(r"\d")


class _Fallback:
    """A recognizer for structured values Presidio's own recognizers miss (tests/test_pii_benchmark_leaks.py):
    the shape of the value, a checksum where there is one, and a cue word in the text around it."""

    ENTITY = ""
    MIN_DIGITS = 0  # implied by the pattern: the pre-check
    SCORE = 0.6

    def may_match(self, text: str) -> bool:
        return len(_ANY_DIGIT.findall(text)) >= self.MIN_DIGITS

    def spans(self, text: str) -> list[tuple[int, int]]:
        raise NotImplementedError

    def analyze(self, text: str, entities: list[str], nlp_artifacts=None) -> list:
        from presidio_analyzer import AnalysisExplanation, RecognizerResult

        if entities and self.ENTITY not in entities:
            return []
        return [RecognizerResult(self.ENTITY, start, end, self.SCORE, analysis_explanation=AnalysisExplanation(
                    recognizer=type(self).__name__, original_score=self.SCORE,
                    textual_explanation=f"{self.ENTITY} by its shape and a cue word"))
                for start, end in self.spans(text)]


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


class CardNumberFallback(_Fallback):
    """Card numbers outside Presidio's pattern (Mastercard 2-series, 19-digit Visa, 12-19-digit Maestro, JCB
    2131/1800): a Luhn-valid run of 12-19 digits with an issuer prefix, after a card cue word."""

    ENTITY = "CREDIT_CARD"
    MIN_DIGITS = 12
    _RUN = re.compile(r"(?<![\w-])\d(?:[ -]?\d){11,18}(?![\w-])")
    _ISSUER = re.compile(r"4(?:\d{12}|\d{15}|\d{18})|5[1-5]\d{14}|2(?:2[2-9]\d|[3-6]\d\d|7[01]\d|720)\d{12}"
                         r"|3[47]\d{13}|3(?:0[0-5]|[689]\d)\d{11,16}|(?:2131|1800)\d{11}|(?:5[06-9]|6\d)\d{10,17}")
    _CUE = re.compile(r"(?i)\b(?:card|cc|credit|debit|visa|mastercard|amex|maestro|jcb|diners|discover|payment|"
                      r"charge[sd]?)\b")

    def spans(self, text: str) -> list[tuple[int, int]]:
        out = []
        for m in self._RUN.finditer(text):
            digits = re.sub(r"\D", "", m.group())
            if self._ISSUER.fullmatch(digits) and _luhn(digits) and self._CUE.search(text, max(0, m.start() - 60),
                                                                                     m.start()):
                out.append((m.start(), m.end()))
        return out


class PhoneFallback(_Fallback):
    """National phone numbers whose region Presidio does not try (or cannot validate): a run of 7-15 digits
    in phone punctuation right after a phone cue ("Phone:", "Mobile:", "call me on", "answering at") or
    before one ("... office", "...-Fax"), or written with a bracketed area code."""

    ENTITY = "PHONE_NUMBER"
    SCORE = 0.5
    MIN_DIGITS = 7
    _RUN = re.compile(r"(?<![\w+.])\+?(?:\(\d{1,4}\)|\d)(?:[ .-]?(?:\(0\)|\(\d{1,4}\)|\d))*\d(?:\s?x\d{1,5})?(?![\w])")
    _BEFORE = re.compile(r"(?i)\b(?:phone|tel|telephone|mobile|cell|desk|fax|office|call|calling|answering|"
                         r"messages?|registered|sms|whatsapp)\b(?:\s+(?:me|us|at|on|to|number|no\.?|is|my))*"
                         r"\s*[:#.]?\s*$")
    _AFTER = re.compile(r"(?i)\s*-?\s*(?:office|fax|mobile|cell|home|work|phone)\b")
    _BRACKETED = re.compile(r"\+?\(\d{2,4}\)[ .-]?\d")

    def spans(self, text: str) -> list[tuple[int, int]]:
        out = []
        for m in self._RUN.finditer(text):
            digits = sum(ch.isdigit() for ch in m.group().split("x")[0])
            if not 7 <= digits <= 15 or "\n" in m.group():
                continue
            if (self._BEFORE.search(text, max(0, m.start() - 40), m.start())
                    or self._AFTER.match(text, m.end()) or self._BRACKETED.match(m.group())):
                out.append((m.start(), m.end()))
        return out


def fallback_recognizers(language: str = "en") -> list:
    from presidio_analyzer import LocalRecognizer

    made = []
    for cls in (CardNumberFallback, PhoneFallback):
        impl = cls()

        class Recognizer(LocalRecognizer):
            fallback = impl

            def load(self) -> None:
                pass

            def may_match(self, text: str) -> bool:
                return self.fallback.may_match(text)

            def analyze(self, text, entities, nlp_artifacts=None):
                return self.fallback.analyze(text, entities, nlp_artifacts)

        Recognizer.__name__ = cls.__name__
        made.append(Recognizer(supported_entities=[cls.ENTITY], supported_language=language, context=[],
                               name=cls.__name__))
    return made


# ---------------------------------------------------------------------------------------------- the engine

class _Ent(NamedTuple):
    """What Presidio's SpacyRecognizer reads from an entity span."""

    label_: str
    start_char: int
    end_char: int


class _Step(NamedTuple):
    recognizer: Any
    run: Callable  # (text, entities, nlp_artifacts) -> results
    gate: Callable[[str], bool] | None


class _Plan(NamedTuple):
    entities: list[str]
    recognizers: list  # all selected ones, as AnalyzerEngine selects them
    steps: list[_Step]
    uses_ner: bool
    with_context: frozenset  # ids of recognizers that have context words
    custom_context: frozenset  # ids of recognizers with their own context enhancement


_ID = "recognizer_identifier"
_HARMLESS = {"doc.tensor", "token.tag", "token.pos", "token.morph", "token.lemma", "token.dep", "token.head",
             "token.is_sent_start", "doc.sents"}
_SENTENCES = {"token.is_sent_start", "doc.sents"}
_ENT_ATTRS = {"doc.ents", "token.ent_iob", "token.ent_type", "token.ent_kb_id", "token.norm"}


class Engine:
    """spaCy model, Presidio analyzer with the secrets recognizers, and the fast path around them."""

    def __init__(self, spacy_model: str, language: str, fallbacks: bool = True):
        import spacy
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
        from presidio_anonymizer import AnonymizerEngine
        from spacy.pipeline import AttributeRuler, Sentencizer

        logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)  # one warning per unused recognizer otherwise
        self.language = language
        self.nlp = spacy.load(spacy_model)
        self.ner_config = NerModelConfiguration(labels_to_ignore=IGNORED_NER_LABELS)
        self.nlp_engine = SpacyNlpEngine(models=[{"lang_code": language, "model_name": spacy_model}],
                                         ner_model_configuration=self.ner_config)
        self.nlp_engine.nlp = {language: self.nlp}
        self.analyzer = AnalyzerEngine(nlp_engine=self.nlp_engine, supported_languages=[language])
        for recognizer in [*secret_recognizers(language), *(fallback_recognizers(language) if fallbacks else [])]:
            self.analyzer.registry.add_recognizer(recognizer)
        self.anonymizer = AnonymizerEngine()
        self._plans: dict[tuple, _Plan] = {}

        # the components the NER needs: the ones it listens to and any that set entities or NORM before it
        names = self.nlp.pipe_names
        ner_at = names.index("ner") if "ner" in names else None
        needed, sentences, fallback = [], False, False
        for name in names[:ner_at] if ner_at is not None else []:
            proc, assigns = self.nlp.get_pipe(name), set(self.nlp.get_pipe_meta(name).assigns)
            if "ner" in (getattr(proc, "listening_components", None) or []) or assigns & _ENT_ATTRS:
                needed.append(name)
            elif isinstance(proc, AttributeRuler):
                if any(set(p["attrs"]) & {"NORM", "ENT_IOB", "ENT_TYPE"} for p in proc.patterns):
                    fallback = True
            elif assigns and assigns <= _HARMLESS:
                sentences = sentences or bool(assigns & _SENTENCES)
            else:
                fallback = True  # a component we cannot see through: run everything before the NER
        if ner_at is None:
            ner_names: list[str] = []
        elif fallback:
            ner_names, sentences = names[: ner_at + 1], False
        else:
            ner_names = needed + ["ner"]
        if ner_at is not None:  # components after the NER that still change entities
            ner_names += [n for n in names[ner_at + 1:] if set(self.nlp.get_pipe_meta(n).assigns) & _ENT_ATTRS]
        self.ner_pipes = [(n, self.nlp.get_pipe(n)) for n in ner_names]
        self.sentencizer = Sentencizer() if sentences else None
        # Presidio's lemmas come from everything else (the attribute ruler reads the parser's dependencies), run
        # on a fresh doc: sentence starts the sentencizer set would constrain the parser
        self.lemma_pipes = [(n, self.nlp.get_pipe(n)) for n in names
                            if n != "ner" and not set(self.nlp.get_pipe_meta(n).assigns) & _ENT_ATTRS]

    # -- recognizers

    def plan(self, entities: list[str]) -> _Plan:
        key = tuple(entities)
        if key not in self._plans:
            from presidio_analyzer import EntityRecognizer
            from presidio_analyzer.predefined_recognizers import SpacyRecognizer

            recognizers = self.analyzer.registry.get_recognizers(language=self.language, entities=list(entities))
            steps = []
            for r in recognizers:
                if not r.is_loaded:
                    r.load()
                    r.is_loaded = True
                if _phone_gate_applies(r):
                    steps.append(_Step(r, PhoneGate(r).analyze, None))
                else:
                    steps.append(_Step(r, r.analyze, _gate_for(r)))
            uses_ner = any(isinstance(r, SpacyRecognizer) for r in recognizers)
            own = frozenset(r.id for r in recognizers
                            if type(r).enhance_using_context is not EntityRecognizer.enhance_using_context)
            self._plans[key] = _Plan(list(entities), recognizers, steps, uses_ner,
                                     frozenset(r.id for r in recognizers if r.context), own)
        return self._plans[key]

    # -- spaCy

    def ner_docs(self, texts: list[str], settings: PiiSettings):
        """Docs with the NER's entities, in batches of at most ``batch_size`` texts and ``batch_chars`` characters."""
        for batch in _batches(texts, settings.batch_size, settings.batch_chars):
            docs = [self.nlp.make_doc(t) for t in batch]
            if self.sentencizer is not None:
                docs = [self.sentencizer(doc) for doc in docs]
            for _, proc in self.ner_pipes:
                docs = list(proc.pipe(docs, batch_size=len(docs)) if hasattr(proc, "pipe") else map(proc, docs))
            yield from docs

    def lemma_docs(self, texts: list[str]) -> list:
        """Docs of ``texts`` with tokens and lemmas as the whole pipeline gives them."""
        docs = [self.nlp.make_doc(t) for t in texts]
        for _, proc in self.lemma_pipes:
            docs = list(proc.pipe(docs, batch_size=len(docs)) if hasattr(proc, "pipe") else map(proc, docs))
        return docs

    def entities(self, doc) -> tuple[list[_Ent], list[float]]:
        """doc.ents as Presidio's SpacyNlpEngine reports them: labels mapped, ignored labels left out."""
        cfg = self.ner_config
        mapping, ignore = cfg.model_to_presidio_entity_mapping, cfg.labels_to_ignore
        ents, scores = [], []
        for e in doc.ents:
            label = e.label_
            if label in ignore:
                continue
            label = mapping.get(label, label)
            if label in ignore:
                continue
            score = cfg.default_score
            if label in cfg.low_score_entity_names:
                score *= cfg.low_confidence_score_multiplier
            ents.append(_Ent(label, e.start_char, e.end_char))
            scores.append(score)
        return ents, scores

    def artifacts(self, doc, ents, scores, lemmas: bool):
        from presidio_analyzer.nlp_engine import NlpArtifacts

        if not lemmas:
            return NlpArtifacts(entities=ents, tokens=doc, tokens_indices=[], lemmas=[], nlp_engine=None,
                                language=self.language, scores=scores)
        return NlpArtifacts(entities=ents, tokens=doc, tokens_indices=[t.idx for t in doc],
                            lemmas=[t.lemma_ for t in doc], nlp_engine=self.nlp_engine, language=self.language,
                            scores=scores)

    # -- analysis

    def analyze_fast(self, texts: list[str], settings: PiiSettings) -> list[list]:
        """Presidio's findings for each text (see the module docstring for what is skipped, and why it may be)."""
        from presidio_analyzer import EntityRecognizer

        plan = self.plan(settings.entities)
        threshold = settings.score_threshold
        enhancer = self.analyzer.context_aware_enhancer
        boost = (enhancer.context_similarity_factor, enhancer.min_score_with_context_similarity)
        if plan.uses_ner:
            docs: Iterable = self.ner_docs(texts, settings)
        else:
            docs = (self.nlp.make_doc(t) for t in texts)
        raw: list[list] = []
        pending: dict[int, Any] = {}  # text index -> entities and scores, for texts that need lemmas
        for i, (text, doc) in enumerate(zip(texts, docs)):
            ents, scores = self.entities(doc) if plan.uses_ner else ([], [])
            artifacts = self.artifacts(doc, ents, scores, lemmas=False)
            results = []
            for step in plan.steps:
                if step.gate is not None and not step.gate(text):
                    continue
                found = step.run(text, plan.entities, artifacts)
                for r in found:
                    meta = r.recognition_metadata or {}
                    meta.setdefault(_ID, step.recognizer.id)
                    meta.setdefault("recognizer_name", step.recognizer.name)
                    r.recognition_metadata = meta
                results.extend(found)
            raw.append(results)
            if _needs_context(results, plan, threshold, boost):
                pending[i] = (ents, scores)
        if pending:
            idx = list(pending)
            lemma_docs = [doc for batch in _batches([texts[i] for i in idx], settings.batch_size, settings.batch_chars)
                          for doc in self.lemma_docs(batch)]
            for i, doc in zip(idx, lemma_docs):
                ents, scores = pending[i]
                artifacts = self.artifacts(doc, ents, scores, lemmas=True)
                raw[i] = self.analyzer._enhance_using_context(texts[i], raw[i], artifacts, plan.recognizers, None)
        return [EntityRecognizer.remove_duplicates([r for r in results if r.score >= threshold]) if results else []
                for results in raw]

    def analyze_presidio(self, texts: list[str], settings: PiiSettings) -> list[list]:
        from presidio_analyzer import BatchAnalyzerEngine

        batch = BatchAnalyzerEngine(self.analyzer)
        return [list(r) for r in batch.analyze_iterator(texts, language=settings.language, entities=settings.entities,
                                                          score_threshold=settings.score_threshold,
                                                          batch_size=settings.batch_size)]

    # -- anonymization

    def anonymize(self, text: str, results: list, operators: Operators) -> tuple[str, Counter]:
        """AnonymizerEngine.anonymize's output text and items, built in one pass over the text."""
        from presidio_anonymizer.entities import ConflictResolutionStrategy

        if not results:
            return text, Counter()
        an = self.anonymizer
        items = an._copy_recognizer_results(results)
        items.sort(key=lambda x: (x.start, x.end))
        items = an._remove_conflicts_and_get_text_manipulation_data(
            items, ConflictResolutionStrategy.MERGE_SIMILAR_OR_CONTAINED)
        items = an._merge_entities_with_spaces_between(text, items)
        items.sort(key=lambda x: x.start)
        parts, pos = [], 0
        for k, item in enumerate(items):
            # Presidio replaces from the end backwards and cuts each span where the next one starts
            end = item.end if k + 1 == len(items) else min(item.end, items[k + 1].start)
            parts.append(text[pos : item.start])
            parts.append(operators(item.entity_type, text[item.start : item.end]))
            pos = max(pos, end)
        parts.append(text[pos:])
        return "".join(parts), Counter(item.entity_type for item in items)


def _batches(texts: list[str], max_texts: int, max_chars: int) -> Iterable[list[str]]:
    batch: list[str] = []
    chars = 0
    for t in texts:
        if batch and (len(batch) >= max_texts or chars + len(t) > max_chars):
            yield batch
            batch, chars = [], 0
        batch.append(t)
        chars += len(t)
    if batch:
        yield batch


def _needs_context(results: list, plan: "_Plan", threshold: float, boost: tuple[float, float]) -> bool:
    """Whether Presidio's context words could change the scrubbed text or the counts.

    Context only raises scores (by ``boost[0]``, to at least ``boost[1]``, at most 1). A raised score changes
    the text only where it lifts a result over the threshold; it changes a label only where results of
    different types share one span (the anonymizer keeps the highest score). Elsewhere the outcome is the
    same (same-type overlaps merge into one replacement whatever their scores).
    """
    if not results:
        return False
    ids = [r.recognition_metadata.get(_ID) for r in results]
    if any(i in plan.custom_context for i in ids):
        return True
    contextual = [i in plan.with_context for i in ids]
    if not any(contextual):
        return False
    if any(c and r.score < threshold for r, c in zip(results, contextual)):
        return True
    factor, floor = boost
    # what reaches the anonymizer, with its same-type overlaps merged as it merges them: span -> type -> (score
    # now, highest score context could give)
    by_type: dict[str, list] = {}
    for r, c in zip(results, contextual):
        if r.score >= threshold:
            top = min(1.0, max(r.score + factor, floor)) if c else r.score
            by_type.setdefault(r.entity_type, []).append([r.start, r.end, r.score, top])
    spans: dict[tuple[int, int], list] = {}
    for entity, items in by_type.items():
        items.sort()
        merged = [items[0]]
        for start, end, score, top in items[1:]:
            last = merged[-1]
            if start < last[1]:  # intersecting: one replacement with the union and the highest score
                last[1], last[2], last[3] = max(last[1], end), max(last[2], score), max(last[3], top)
            else:
                merged.append([start, end, score, top])
        for start, end, score, top in merged:
            spans.setdefault((start, end), []).append((score, top))
    for group in spans.values():
        if len(group) < 2:
            continue
        best = max(score for score, _ in group)
        if sum(score == best for score, _ in group) > 1:
            return True  # a tie now: context could break it
        if any(score < best <= top for score, top in group):
            return True  # context could make another type the label
    return False


@lru_cache(maxsize=4)
def _engine(spacy_model: str, language: str, fallbacks: bool = True) -> Engine:
    return Engine(spacy_model, language, fallbacks)


# ---------------------------------------------------------------------------------------------- batch API

def propagated_spans(texts: list[str], analyses: list[list], settings: PiiSettings) -> list[list]:
    """Extra results for every other occurrence of a multi-word entity string found anywhere in ``texts``.

    Linear in the total text length however many strings were found: each word start is looked up in a table
    of the strings that begin with that word.
    """
    from presidio_analyzer import RecognizerResult

    found: dict[str, str] = {}
    for text, results in zip(texts, analyses):
        for r in results:
            value = text[r.start : r.end].strip()
            if r.entity_type in settings.propagate and len(value.split()) >= 2:
                found.setdefault(value, r.entity_type)
    if not found:
        return [[] for _ in texts]
    by_first: dict[str, list[str]] = {}
    odd = []  # strings that do not start with a word character
    for value in sorted(found, key=len, reverse=True):
        m = _WORD.match(value)
        (by_first.setdefault(m.group(), []) if m else odd).append(value)
    odd_pattern = re.compile(r"\b(" + "|".join(re.escape(v) for v in odd) + r")\b") if odd else None
    extra = []
    for text, results in zip(texts, analyses):
        covered = [(r.start, r.end) for r in results]
        spans, pos = [], 0
        for w in _WORD.finditer(text):
            if w.start() < pos:
                continue
            for value in by_first.get(w.group(), ()):
                end = w.start() + len(value)
                if text.startswith(value, w.start()) and _boundary(text, end):
                    spans.append((w.start(), end, found[value]))
                    pos = end
                    break
        if odd_pattern is not None:
            spans += [(m.start(), m.end(), found[m.group(1)]) for m in odd_pattern.finditer(text)]
        extra.append([RecognizerResult(entity, s, e, 0.85) for s, e, entity in spans
                      if not any(a <= s < b or a < e <= b for a, b in covered)])
    return extra


_WORD = re.compile(r"\w+")


def _boundary(text: str, i: int) -> bool:
    """Whether regex \\b holds at position i."""
    before = i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")
    after = i < len(text) and (text[i].isalnum() or text[i] == "_")
    return before != after


def _outside_placeholders(text: str, results: list) -> list:
    """Results outside the ``<TYPE>`` placeholders a previous scrub left.

    A result inside a placeholder is dropped; one that starts or ends inside a placeholder (the NER may take
    "PHONE_NUMBER>" and the word after it for a name) is trimmed to the part outside it, and dropped when
    nothing but spaces and punctuation is left: otherwise its replacement would cut the placeholder
    ("call <PHONE_NUMBER>xyz" became "call <<PERSON>"). A result that spans a whole placeholder is kept.
    """
    if "<" not in text:
        return results
    spots = [(m.start(), m.end()) for m in PLACEHOLDER.finditer(text)]
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
    engine = _engine(settings.spacy_model, settings.language, settings.structured_fallbacks)
    operators = Operators(settings)  # fails early, before any work, on a missing or unusable key or salt

    # long texts in pieces; each distinct piece analysed once
    pieces_of = [_pieces(t, settings.chunk_chars) for t in texts]
    flat = [p for ps in pieces_of for p in ps]
    unique = list(dict.fromkeys(flat))
    analyze = engine.analyze_fast if settings.engine == "fast" else engine.analyze_presidio
    by_text = dict(zip(unique, analyze(unique, settings)))
    analyses = [_outside_placeholders(p, by_text[p]) for p in flat]
    if settings.propagate:
        analyses = [a + e for a, e in zip(analyses, propagated_spans(flat, analyses, settings))]

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

    The whole list is analysed together, so a name found in one document is scrubbed in the others too.
    ``found`` counts entities by type; each document gets a ``pii_found`` column with its own counts.
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


def _scrub_shard(shard: str, settings: PiiSettings):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(shard)
    found: Counter = Counter()
    rows = scrub_documents(table.to_pylist(), settings, found)
    schema = table.schema if "pii_found" in table.schema.names else table.schema.append(pa.field("pii_found", pa.string()))
    return pa.Table.from_pylist(rows, schema=schema), found


def scrub_snapshot(ref, settings: PiiSettings, dask_settings, store):
    """The snapshot of ``ref`` with PII scrubbed, one Dask task per shard; counts entities by type."""
    from tasks.executor import shardwise_snapshot

    return shardwise_snapshot(
        ref, "pii", _scrub_shard, settings, dask_settings, store,
        params=settings.model_dump(exclude={"encrypt_key_env", "hash_salt_env"}), code_version=CODE_VERSION,
        summarize=lambda total: {"pii_entities": dict(sorted(total.items())), "pii_total": sum(total.values())},
    )


@task(name="scrub-pii", cache_policy=NO_CACHE)
def scrub_task(ref, settings: PiiSettings, dask_settings, store: str):
    return scrub_snapshot(ref, settings, dask_settings, store) if settings.enabled else ref
