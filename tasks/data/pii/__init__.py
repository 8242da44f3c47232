"""PII and secrets scrubbing with Presidio's recognizers, offline, fast.

The spaCy model comes from a registry package pinned by hash (``en_core_web_md`` by default since pii-8, a third
fewer names left than ``en_core_web_sm`` at ~0.8x the speed; both installed, see infra/); entities,
score threshold and the operator per entity are configurable. The default replaces each entity with
``<TYPE>``. Besides Presidio's entities, the secrets recognizers of secrets.py (API_KEY, PASSWORD,
PRIVATE_KEY, CONNECTION_STRING) are on by default.

Two engines (bench/pii.py measures them against vanilla Presidio on gold spans):

- ``presidio``: Presidio's BatchAnalyzerEngine, i.e. the whole spaCy pipeline and every selected
  recognizer on every text.
- ``fast`` (default): spaCy runs only the components its NER needs (the sm and md pipelines' ner has its own
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

The address rules (``address_rules``, on by default; ``AddressFallback``) scrub postal addresses as LOCATION by
their shape: house number and street, unit, postal code after a cue word, and the short lines of an address
block below them. On the same benchmark they take the location leak rate from 62.9% to 19.1% at higher precision
(bench/RESULTS.md); dates, counts and product names in prose are left alone (tests/test_pii_addresses.py).

The name rules (``name_rules``, on by default; tasks/data/pii/names.py) scrub as PERSON the names the small spaCy
model leaves (most of them tagged ORG or nothing): capitalised words after a cue ("my name is", "Dear", "Mr.",
"my colleague", "said", "Directed by:", a letter's closing line) and a capitalised first name of the 1990 US
census list (common words such as "Will" or "Hope" only after a cue) with the capitalised words after it, never
inside what spaCy tagged as a place, nationality, date or number, after "San"/"Fort"/"USS", or before "Award",
"Street" and the like. ``social_handles`` (off) also takes @handles. Figures: bench/RESULTS.md.

Where an entity was already replaced by a placeholder the configured operators write (``<TYPE>`` for replace on
a configured entity), nothing inside the placeholder is taken for PII again: scrubbing scrubbed text finds nothing
new of the pattern types (the NER may still find a name it missed in the original's context). Anything else in
angle brackets is text like any other (an AWS access key id in angle brackets is an API key). Texts over ``chunk_chars`` are
scrubbed in pieces.

A text's scrubbed output depends on that text alone, never on the texts analysed with it, so a snapshot scrubs the
same at any shard size (tests/test_pii_sharding.py). Names found in one document are not propagated to others:
measured on gold data, that caught almost no more names and spread false positives ("974 Via Roma 131" became
"974 <PERSON> 131"; bench/pii_propagation.py).
"""
