"""The analyzer engines: ``fast`` (NER-only spaCy, pre-checked recognizers, context only where it could
change the outcome) and ``presidio`` (Presidio's BatchAnalyzerEngine), with the same findings.
"""

from __future__ import annotations

import logging
from collections import Counter
from functools import lru_cache
from typing import Any, Callable, Iterable, NamedTuple

from tasks.data.pii.fallbacks import fallback_recognizers
from tasks.data.pii.operators import Operators
from tasks.data.pii.prechecks import PhoneGate, gate_for, phone_gate_applies
from tasks.data.pii.secrets import secret_recognizers
from tasks.data.pii.settings import IGNORED_NER_LABELS, PiiSettings


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

    def __init__(self, spacy_model: str, language: str, fallbacks: bool = True, addresses: bool = False,
                 names: bool = False, handles: bool = False):
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
        for recognizer in [*secret_recognizers(language), *fallback_recognizers(language, fallbacks, addresses, names,
                                                                                               handles)]:
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
                if phone_gate_applies(r):
                    steps.append(_Step(r, PhoneGate(r).analyze, None))
                else:
                    steps.append(_Step(r, r.analyze, gate_for(r)))
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


@lru_cache(maxsize=8)  # bench/pii.py compares five settings' engines in one process; 4 made it reload models
def engine_for(spacy_model: str, language: str, fallbacks: bool = True, addresses: bool = False,
               names: bool = False, handles: bool = False) -> Engine:
    return Engine(spacy_model, language, fallbacks, addresses, names, handles)
