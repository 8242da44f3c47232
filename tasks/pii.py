"""PII scrubbing with Presidio's analyzer and anonymizer, offline.

The spaCy model comes from a registry package pinned by hash (``en_core_web_sm``, see infra/); entities,
score threshold and the operator per entity are configurable. The default replaces each entity with
``<TYPE>``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from functools import lru_cache
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, field_validator

CODE_VERSION = "pii-2"
DEFAULT_ENTITIES = [
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "US_SSN",
    "IBAN_CODE",
    "IP_ADDRESS",
    "LOCATION",
]
# spaCy labels that map to no Presidio entity: left out instead of logged once per document
IGNORED_NER_LABELS = ["CARDINAL", "ORDINAL", "QUANTITY", "MONEY", "PERCENT", "WORK_OF_ART", "LAW", "LANGUAGE",
                      "EVENT", "PRODUCT"]
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
    propagate: list[str] = Field(
        default_factory=lambda: ["PERSON"],
        description="entity types whose multi-word strings, once found, are scrubbed wherever else they occur "
        "in the same shard (the NER model misses names in some contexts it finds in others)",
    )

    @field_validator("entities")
    @classmethod
    def _upper(cls, v: list[str]) -> list[str]:
        return [e.strip().upper() for e in v]


@lru_cache(maxsize=4)
def _engines(spacy_model: str, language: str):
    from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_anonymizer import AnonymizerEngine

    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)  # one warning per unused recognizer otherwise
    provider = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": language, "model_name": spacy_model}],
            "ner_model_configuration": {"labels_to_ignore": IGNORED_NER_LABELS},
        }
    )
    analyzer = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=[language])
    return BatchAnalyzerEngine(analyzer), AnonymizerEngine()


def _operator_config(name: str, entity: str, settings: PiiSettings):
    from presidio_anonymizer.entities import OperatorConfig

    if name == "replace":
        return OperatorConfig("replace", {"new_value": f"<{entity}>"})
    if name == "mask":
        return OperatorConfig("mask", {"masking_char": "*", "chars_to_mask": 10_000, "from_end": False})
    if name == "hash":
        return OperatorConfig("hash", {"hash_type": "sha256"})
    if name == "encrypt":
        key = os.environ.get(settings.encrypt_key_env)
        if not key:
            raise ValueError(f"pii operator 'encrypt' needs a key in ${settings.encrypt_key_env}")
        return OperatorConfig("encrypt", {"key": key})
    return OperatorConfig("redact", {})


def operators_for(settings: PiiSettings) -> dict[str, Any]:
    ops = {e: _operator_config(settings.operators.get(e, settings.operator), e, settings) for e in settings.entities}
    ops["DEFAULT"] = _operator_config(settings.operator, "PII", settings)
    return ops


def propagated_spans(texts: list[str], analyses: list[list], settings: PiiSettings) -> list[list]:
    """Extra results for every other occurrence of a multi-word entity string found anywhere in ``texts``."""
    from presidio_analyzer import RecognizerResult

    found = {}
    for text, results in zip(texts, analyses):
        for r in results:
            value = text[r.start : r.end].strip()
            if r.entity_type in settings.propagate and len(value.split()) >= 2:
                found.setdefault(value, r.entity_type)
    if not found:
        return [[] for _ in texts]
    pattern = re.compile(r"\b(" + "|".join(re.escape(v) for v in sorted(found, key=len, reverse=True)) + r")\b")
    extra = []
    for text, results in zip(texts, analyses):
        covered = [(r.start, r.end) for r in results]
        spans = [
            RecognizerResult(found[m.group(1)], m.start(), m.end(), 0.85)
            for m in pattern.finditer(text)
            if not any(a <= m.start() < b or a < m.end() <= b for a, b in covered)
        ]
        extra.append(spans)
    return extra


def scrub_texts(texts: list[str], settings: PiiSettings) -> list[tuple[str, Counter]]:
    """(scrubbed text, entities found by type) for each text, analysed in batches."""
    batch_analyzer, anonymizer = _engines(settings.spacy_model, settings.language)
    operators = operators_for(settings)
    analyses = [
        list(r)
        for r in batch_analyzer.analyze_iterator(
            texts,
            language=settings.language,
            entities=settings.entities,
            score_threshold=settings.score_threshold,
            batch_size=settings.batch_size,
        )
    ]
    if settings.propagate:
        analyses = [a + e for a, e in zip(analyses, propagated_spans(texts, analyses, settings))]
    out = []
    for text, results in zip(texts, analyses):
        if not results:
            out.append((text, Counter()))
            continue
        scrubbed = anonymizer.anonymize(text=text, analyzer_results=results, operators=operators)
        found = Counter(item.entity_type for item in scrubbed.items)
        out.append((scrubbed.text, found))
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

    params = settings.model_dump(exclude={"encrypt_key_env"})
    return snapshot.materialize(store, "pii", input_fingerprint=ref.fingerprint, params=params,
                                code_version=CODE_VERSION, produce=produce)


@task(name="scrub-pii", cache_policy=NO_CACHE)
def scrub_task(ref, settings: PiiSettings, dask_settings, store: str):
    return scrub_snapshot(ref, settings, dask_settings, store) if settings.enabled else ref
