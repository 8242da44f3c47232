"""PII and secrets scrubbing with Presidio's recognizers, offline, fast.

The spaCy model comes from a registry package pinned by hash (``en_core_web_sm``, see infra/); entities,
score threshold and the operator per entity are configurable. The default replaces each entity with
``<TYPE>``. Besides Presidio's entities, the secrets recognizers of tasks/secrets.py (API_KEY, PASSWORD,
PRIVATE_KEY, CONNECTION_STRING) are on by default.

Two engines give the same findings (bench/pii.py measures both against gold spans):

- ``presidio``: Presidio's BatchAnalyzerEngine, i.e. the whole spaCy pipeline and every selected
  recognizer on every text.
- ``fast`` (default): spaCy runs only the components its NER needs (en_core_web_sm's ner has its own
  tok2vec, so tok2vec, tagger, parser, attribute_ruler and lemmatizer are skipped; a rule-based
  sentencizer stands in for the parser's sentence boundaries, which the NER respects), batched with
  ``pipe``, each distinct text once. Each recognizer runs only when a sound pre-check says it can match
  (no '@', no e-mail; fewer than 13 digits in a row, no credit card; the phone matcher only for the regions
  whose shortest valid number fits the longest digit run). Lemmas, which only Presidio's context
  enhancement reads, are computed (tok2vec, tagger, attribute_ruler, lemmatizer) only for the texts where a
  context word could change the outcome: a result of a recognizer with context words below the score
  threshold, or overlapping results. The anonymizer's conflict rules are applied as Presidio applies them,
  then the text is rebuilt in one pass.

Where an entity was already replaced by a ``<TYPE>`` placeholder, nothing inside the placeholder is taken for
PII again, so scrubbing scrubbed text changes nothing.
"""

from __future__ import annotations

import copy
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

CODE_VERSION = "pii-3"
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
    batch_size: int = Field(32, ge=1)
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
                raise ValueError(f"pii operator 'hash': the salt in ${settings.hash_salt_env} must be at least 16 bytes")
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

_CREDIT_CARD_RUN = re.compile(r"\d(?:[- ]?\d){12}")  # the card pattern needs 13+ digits, single - or space between
_SSN_RUN = re.compile(r"[0-9](?:[- .]?[0-9]){8}")  # every SSN pattern: 9 digits, single - . or space between
_IBAN_START = re.compile(r"[^\W\d_]{2}[0-9]{2}")  # any two letters: the registry compiles IBAN case-insensitive
_IP_HINT = re.compile(r"[0-9]\.[0-9]|::|[0-9A-Fa-f]:")  # IPv4 dotted digits; every IPv6 form has :: or hex:


def _phone_run_pattern():
    from phonenumbers import phonenumbermatcher as pm
    from phonenumbers import phonenumberutil as pu

    # every character the matcher's candidate pattern (phonenumbermatcher._PATTERN) allows before an extension,
    # in a class written the way phonenumbers writes its own (its strings hold ranges and escapes)
    chars = pu._VALID_PUNCTUATION + pu._PLUS_CHARS + pm._OPENING_PARENS + pm._CLOSING_PARENS + "X\\d"
    return re.compile("[" + chars + "]+")


@lru_cache(maxsize=64)
def _phone_national_digits(region: str) -> int:
    """Fewest digits a number valid in ``region`` shows when written in national form.

    libphonenumber's validity check first requires the national significant number to have one of the
    lengths in the region's general description, and every digit of that number is a digit of the text
    (for these forms no transform rule inserts digits).
    """
    from phonenumbers.phonemetadata import PhoneMetadata

    meta = PhoneMetadata.metadata_for_region(region)
    if meta is None or not meta.general_desc or not meta.general_desc.possible_length:
        return 1
    return min(meta.general_desc.possible_length)


# Written after a plus sign, a valid number of any country shows at least 6 digits: country code and national
# number together, less any digits a transform rule inserts, are 6 or more for every country (AT, DE, IR).
_PHONE_MIN_WITH_PLUS = 6
# Written after an international dialling prefix (00, 011, 0(0|1..) ...: 2+ digits, always starting with 0).
_PHONE_MIN_WITH_IDD = 2 + _PHONE_MIN_WITH_PLUS


class PhoneGate:
    """Runs a PhoneRecognizer only for the regions where a valid number could fit the text's digit runs.

    A run is a maximal stretch of the characters the phone matcher's candidates are made of (digits, its
    punctuation, plus signs and brackets); a candidate's digits are a contiguous part of one run's digits.
    """

    def __init__(self, recognizer):
        self.recognizer = recognizer
        self.regions = tuple(recognizer.supported_regions)
        self.national = {r: _phone_national_digits(r) for r in self.regions}
        self.runs = _phone_run_pattern()
        self.subsets: dict[tuple, Any] = {}

    def regions_for(self, text: str) -> tuple:
        longest = from_zero = with_plus = 0
        for m in self.runs.finditer(text):
            digits = [c for c in m.group() if c.isdecimal()]
            n = len(digits)
            if n < 4:
                continue
            longest = max(longest, n)
            for i, c in enumerate(digits):
                if unicodedata.decimal(c) == 0:
                    from_zero = max(from_zero, n - i)
                    break
            if "+" in m.group() or "\uff0b" in m.group():
                with_plus = max(with_plus, n)
        if with_plus >= _PHONE_MIN_WITH_PLUS or from_zero >= _PHONE_MIN_WITH_IDD:
            return self.regions
        return tuple(r for r in self.regions if longest >= self.national[r])

    def analyze(self, text: str, entities: list[str], nlp_artifacts) -> list:
        regions = self.regions_for(text)
        if not regions:
            return []
        if regions == self.regions:
            return self.recognizer.analyze(text, entities, nlp_artifacts)
        sub = self.subsets.get(regions)
        if sub is None:
            sub = copy.copy(self.recognizer)  # same id: context enhancement finds the original recognizer
            sub.supported_regions = regions
            self.subsets[regions] = sub
        return sub.analyze(text, entities, nlp_artifacts)


def _gate_for(recognizer) -> Callable[[str], bool] | None:
    """A cheap test that is true whenever ``recognizer`` could find something (None: always run it)."""
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        UsSsnRecognizer,
    )

    if isinstance(recognizer, SecretRecognizer):
        return recognizer.may_match
    gates = {
        EmailRecognizer: lambda t: "@" in t,
        CreditCardRecognizer: lambda t: _CREDIT_CARD_RUN.search(t) is not None,
        UsSsnRecognizer: lambda t: _SSN_RUN.search(t) is not None,
        IbanRecognizer: lambda t: _IBAN_START.search(t) is not None,
        IpRecognizer: lambda t: _IP_HINT.search(t) is not None,
    }
    gate = gates.get(type(recognizer))
    if gate is not None and getattr(recognizer, "deny_list", None):
        return None  # a deny list matches words, not these shapes
    return gate


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


_ID = "recognizer_identifier"
_HARMLESS = {"doc.tensor", "token.tag", "token.pos", "token.morph", "token.lemma", "token.dep", "token.head",
             "token.is_sent_start", "doc.sents"}
_SENTENCES = {"token.is_sent_start", "doc.sents"}
_ENT_ATTRS = {"doc.ents", "token.ent_iob", "token.ent_type", "token.ent_kb_id", "token.norm"}


class Engine:
    """spaCy model, Presidio analyzer with the secrets recognizers, and the fast path around them."""

    def __init__(self, spacy_model: str, language: str):
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
        for recognizer in secret_recognizers(language):
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
        # what Presidio's lemmas come from: the other components, less those that only parse
        parse_only = {"token.dep", "token.head"} | _SENTENCES
        self.lemma_pipes = []
        for n in names:
            assigns = set(self.nlp.get_pipe_meta(n).assigns)
            if n not in ner_names and not (assigns and assigns <= parse_only):
                self.lemma_pipes.append((n, self.nlp.get_pipe(n)))

    # -- recognizers

    def plan(self, entities: list[str]) -> _Plan:
        key = tuple(entities)
        if key not in self._plans:
            from presidio_analyzer.predefined_recognizers import PhoneRecognizer, SpacyRecognizer

            recognizers = self.analyzer.registry.get_recognizers(language=self.language, entities=list(entities))
            steps = []
            for r in recognizers:
                if not r.is_loaded:
                    r.load()
                    r.is_loaded = True
                if type(r) is PhoneRecognizer:
                    steps.append(_Step(r, PhoneGate(r).analyze, None))
                else:
                    steps.append(_Step(r, r.analyze, _gate_for(r)))
            uses_ner = any(isinstance(r, SpacyRecognizer) for r in recognizers)
            self._plans[key] = _Plan(list(entities), recognizers, steps, uses_ner,
                                     frozenset(r.id for r in recognizers if r.context))
        return self._plans[key]

    # -- spaCy

    def ner_docs(self, texts: Iterable[str], batch_size: int):
        docs = (self.nlp.make_doc(t) for t in texts)
        if self.sentencizer is not None:
            docs = self.sentencizer.pipe(docs, batch_size=batch_size)
        for _, proc in self.ner_pipes:
            docs = proc.pipe(docs, batch_size=batch_size) if hasattr(proc, "pipe") else map(proc, docs)
        return docs

    def add_lemmas(self, docs: list, batch_size: int) -> list:
        for _, proc in self.lemma_pipes:
            docs = list(proc.pipe(docs, batch_size=batch_size) if hasattr(proc, "pipe") else map(proc, docs))
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
        if plan.uses_ner:
            docs: Iterable = self.ner_docs(texts, settings.batch_size)
        else:
            docs = (self.nlp.make_doc(t) for t in texts)
        raw: list[list] = []
        pending: dict[int, Any] = {}  # text index -> doc, for texts that need lemmas
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
            if _needs_context(results, plan.with_context, threshold):
                pending[i] = (doc, ents, scores)
        if pending:
            idx = list(pending)
            lemma_docs = self.add_lemmas([pending[i][0] for i in idx], settings.batch_size)
            for i, doc in zip(idx, lemma_docs):
                _, ents, scores = pending[i]
                artifacts = self.artifacts(doc, ents, scores, lemmas=True)
                raw[i] = self.analyzer._enhance_using_context(texts[i], raw[i], artifacts, plan.recognizers, None)
        return [EntityRecognizer.remove_duplicates([r for r in results if r.score >= threshold]) for results in raw]

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


def _needs_context(results: list, with_context: frozenset, threshold: float) -> bool:
    """Whether Presidio's context words could change what is kept or how conflicts resolve."""
    if not with_context or not results:
        return False
    contextual = [r for r in results if r.recognition_metadata.get(_ID) in with_context]
    if not contextual:
        return False
    if any(r.score < threshold for r in contextual):
        return True  # a context word could lift it over the threshold
    last_end = -1
    for start, end in sorted((r.start, r.end) for r in results):
        if start < last_end:
            return True  # scores decide which of overlapping results survives
        last_end = max(last_end, end)
    return False


@lru_cache(maxsize=4)
def _engine(spacy_model: str, language: str) -> Engine:
    return Engine(spacy_model, language)


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
    """Results that do not lie inside a ``<TYPE>`` placeholder a previous scrub left."""
    if "<" not in text:
        return results
    spots = [(m.start(), m.end()) for m in PLACEHOLDER.finditer(text)]
    if not spots:
        return results
    return [r for r in results if not any(a <= r.start and r.end <= b for a, b in spots)]


def _pieces(text: str, limit: int) -> list[str]:
    """``text`` cut into pieces of at most ``limit`` characters, at a blank line, a line break or a space
    in the second half of each window where there is one, and never inside a private key block."""
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
        if begin > start and text.find("-----END", begin, cut) < 0:
            cut = begin
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out


def scrub_texts(texts: list[str], settings: PiiSettings) -> list[tuple[str, Counter]]:
    """(scrubbed text, entities found by type) for each text, analysed in batches."""
    engine = _engine(settings.spacy_model, settings.language)
    operators = Operators(settings)  # fails early, before any work, on a missing key or salt

    # long texts in pieces; each distinct piece analysed once
    pieces_of = [_pieces(t, settings.chunk_chars) for t in texts]
    flat = [p for ps in pieces_of for p in ps]
    unique = list(dict.fromkeys(flat))
    analyze = engine.analyze_fast if settings.engine == "fast" else engine.analyze_presidio
    by_text = dict(zip(unique, analyze(unique, settings)))
    analyses = [_outside_placeholders(p, by_text[p]) for p in flat]
    if settings.propagate:
        analyses = [a + e for a, e in zip(analyses, propagated_spans(flat, analyses, settings))]
    scrubbed = [engine.anonymize(p, results, operators) for p, results in zip(flat, analyses)]

    out, k = [], 0
    for ps in pieces_of:
        parts = scrubbed[k : k + len(ps)]
        k += len(ps)
        if len(parts) == 1:
            out.append(parts[0])
        else:
            total: Counter = Counter()
            for _, c in parts:
                total.update(c)
            out.append(("".join(t for t, _ in parts), total))
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
    from tasks import snapshot
    from tasks.executor import map_shards

    def produce(stats: dict, extra: dict):
        total: Counter = Counter()
        for table, found in map_shards(_scrub_shard, [str(p) for p in snapshot.shard_paths(ref)], dask_settings, settings):
            total.update(found)
            yield table
        stats.update(pii_entities=dict(sorted(total.items())), pii_total=sum(total.values()))

    params = settings.model_dump(exclude={"encrypt_key_env", "hash_salt_env"})
    return snapshot.materialize(store, "pii", input_fingerprint=ref.fingerprint, params=params,
                                code_version=CODE_VERSION, produce=produce)


@task(name="scrub-pii", cache_policy=NO_CACHE)
def scrub_task(ref, settings: PiiSettings, dask_settings, store: str):
    return scrub_snapshot(ref, settings, dask_settings, store) if settings.enabled else ref
