"""Name propagation in the PII scrub, measured: none, within a shard, or from a corpus-level name list.

    nice .venv/bin/python bench/pii_propagation.py                 # the three sets in ../shared/eval/pii

Propagation replaces every other occurrence of a multi-word PERSON string the NER found somewhere. Within a
shard (what ``scrub_documents`` did up to pii-5) a document's output depends on which documents share its
shard; from a name list built in a first pass over the whole corpus it does not. Measured here, on data
written by others (presidio-research's synth_dataset_v2 and generated_large, MIT; WNUT-17's annotated test
set, CC BY 4.0), each with the product's engine and default settings (one NER pass per set; the variants
differ only in the spans added afterwards):

- ``none``: no propagation (pii-6's default).
- ``shard N``: propagation within consecutive shards of N documents (pii-5), for several N.
- ``corpus``: propagation from the name list of the whole set, unguarded.
- ``corpus, guarded``: the same list without the strings that look like addresses: a name next to a number
  ("974 Via Roma 131"), a name with a digit, one the NER also labels with another type somewhere; and no
  occurrence next to a number is replaced.

PERSON leak rate: gold PERSON strings still present verbatim in the scrubbed text. Precision: replaced spans
(the analyzer's findings after the score threshold, plus the propagated ones) that overlap a gold span of any
type, over all replaced spans and over the PERSON ones; the propagated spans alone: how many lie on a gold PERSON
span (the others are places, streets or organisations taken for names). Shard dependence: documents whose
scrubbed text at shard size N differs from the text at shard size 1.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tasks  # noqa: E402,F401  (offline environment)
from tasks.data.pii.engine import engine_for  # noqa: E402
from tasks.data.pii.operators import Operators  # noqa: E402
from tasks.data.pii.scrub import _outside_placeholders, scrub_texts_with_spans  # noqa: E402
from tasks.data.pii.settings import PiiSettings, placeholder_pattern  # noqa: E402
from bench.pii import load_wnut  # noqa: E402  (WNUT's BIO columns, read as the PII bench reads them)

EVAL = ROOT.parent / "shared" / "eval" / "pii"
SETS = {
    "synth_dataset_v2": EVAL / "presidio-research" / "synth_dataset_v2.json",
    "generated_large": EVAL / "presidio-research" / "generated_large.json",
    "wnut17 test": EVAL / "wnut17" / "emerging.test.annotated",
}
PERSON_GOLD = {"PERSON", "person"}
_WORD = re.compile(r"\w+")


def load(path: Path) -> list[dict]:
    """[{text, spans: [(type, start, end, value)]}] from presidio-research's JSON or WNUT's BIO columns."""
    if path.suffix == ".json":
        return [{"text": s["full_text"], "spans": [(g["entity_type"], g["start_position"], g["end_position"],
                                                     g["entity_value"]) for g in s["spans"]]}
                for s in json.loads(path.read_text())]
    return load_wnut(path)


# ------------------------------------------------------------------------------------------ the variants

def _next_to_number(text: str, start: int, end: int) -> bool:
    before, after = text[:start].rstrip(), text[end:].lstrip()
    return bool(before) and before[-1].isdigit() or bool(after) and after[0].isdigit()


def names_of(texts: list[str], analyses: list[list], guarded: bool) -> dict[str, str]:
    """Multi-word PERSON strings found in ``texts`` -> PERSON; guarded: without the address-like ones."""
    found: dict[str, str] = {}
    other: set[str] = set()
    for text, results in zip(texts, analyses):
        for r in results:
            value = text[r.start : r.end].strip()
            if r.entity_type != "PERSON":
                other.add(value)
            elif len(value.split()) >= 2:
                if guarded and (any(c.isdigit() for c in value) or _next_to_number(text, r.start, r.end)):
                    other.add(value)
                else:
                    found.setdefault(value, "PERSON")
    return {v: t for v, t in found.items() if not (guarded and v in other)}


def propagated(texts: list[str], analyses: list[list], names: dict[str, str], guarded: bool) -> list[list]:
    """Extra results for every whole-word occurrence of ``names`` not covered by a finding (pii-5's matcher)."""
    from presidio_analyzer import RecognizerResult

    by_first: dict[str, list[str]] = {}
    for value in sorted(names, key=len, reverse=True):
        m = _WORD.match(value)
        if m:
            by_first.setdefault(m.group(), []).append(value)
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
                    if not (guarded and _next_to_number(text, w.start(), end)):
                        spans.append((w.start(), end, names[value]))
                    pos = end
                    break
        extra.append([RecognizerResult(e, s, t, 0.85) for s, t, e in spans
                      if not any(a <= s < b or a < t <= b for a, b in covered)])
    return extra


def _boundary(text: str, i: int) -> bool:
    before = i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")
    after = i < len(text) and (text[i].isalnum() or text[i] == "_")
    return before != after


def run_variant(texts, analyses, engine, operators, names_for_shard, shard: int | None, guarded: bool):
    """(scrubbed text, replaced spans) per text; ``names_for_shard(texts, analyses)`` gives the names applied."""
    n = shard or len(texts)
    out = []
    for i in range(0, len(texts), n):
        t, a = texts[i : i + n], analyses[i : i + n]
        names = names_for_shard(t, a)
        extra = propagated(t, a, names, guarded) if names else [[] for _ in t]
        for text, found, more in zip(t, a, extra):
            results = found + more
            scrubbed, _ = engine.anonymize(text, results, operators)
            out.append((scrubbed, [(r.entity_type, r.start, r.end, i >= len(found)) for i, r in enumerate(results)]))
    return out


def quality(samples: list[dict], outputs: list) -> dict:
    leaked = total = hit = n = p_hit = p_n = prop = prop_names = 0
    for sample, (scrubbed, spans) in zip(samples, outputs):
        gold = [(s, e) for _, s, e, _ in sample["spans"]]
        names = [(s, e) for kind, s, e, _ in sample["spans"] if kind in PERSON_GOLD]
        for kind, _, _, value in sample["spans"]:
            if kind in PERSON_GOLD:
                total += 1
                leaked += value in scrubbed
        for entity, start, end, propagated in spans:
            ok = any(start < b and a < end for a, b in gold)
            n, hit = n + 1, hit + ok
            if entity == "PERSON":
                p_n, p_hit = p_n + 1, p_hit + ok
            if propagated:
                prop, prop_names = prop + 1, prop_names + any(start < b and a < end for a, b in names)
    return {"person_leaked": leaked, "person_total": total, "replaced": n, "replaced_on_gold": hit,
            "person_replaced": p_n, "person_on_gold": p_hit, "propagated": prop,
            "propagated_on_gold_person": prop_names}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sample", type=int, default=0, help="documents per set, in order (0: all)")
    ap.add_argument("--shards", default="1,7,64,250", help="shard sizes for the within-shard variant")
    ap.add_argument("--set", action="append", choices=list(SETS), help="only this set (repeatable; default: all)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args()
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    shard_sizes = [int(s) for s in args.shards.split(",")]
    settings = PiiSettings()
    engine = engine_for(settings.spacy_model, settings.language, settings.structured_fallbacks)
    operators = Operators(settings)
    placeholders = placeholder_pattern(settings)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/pii_propagation.py", *sys.argv[1:]])
    print(f"Name propagation in the PII scrub\ncommand: {command}\ncommit: {commit} (+ working tree)")
    print(f"settings: default PiiSettings (entities {settings.entities}, threshold {settings.score_threshold})\n")
    header = f"{'set':<18}{'variant':<19}{'PERSON leak':>18}{'precision (all)':>19}{'precision (PERSON)':>20}" \
             f"{'propagated: on a name':>23}{'docs != shard 1':>17}"
    print(header)
    report = {"command": command, "commit": commit, "sets": {}}
    for name, path in SETS.items():
        if args.set and name not in args.set:
            continue
        samples = load(path)
        if args.sample:
            samples = samples[: args.sample]
        texts = [s["text"] for s in samples]
        found = engine.analyze_fast(texts, settings)
        analyses = [_outside_placeholders(t, a, placeholders) for t, a in zip(texts, found)]
        none = run_variant(texts, analyses, engine, operators, lambda t, a: {}, None, False)
        # the product's own output without propagation: must be the ``none`` row
        product = scrub_texts_with_spans(texts, settings.model_copy(update={"propagate": []}))
        assert [(t, sorted(s)) for t, _, s in product] == [(t, sorted(x[:3] for x in s)) for t, s in none], \
            "the bench's ``none`` row is not what scrub_texts_with_spans gives"
        variants = {"none": none}
        for size in shard_sizes + [None]:
            label = f"shard {size}" if size else "shard = whole set"
            variants[label] = run_variant(texts, analyses, engine, operators,
                                          lambda t, a: names_of(t, a, False), size, False)
        for guarded in (False, True):
            corpus = names_of(texts, analyses, guarded)
            variants["corpus, guarded" if guarded else "corpus"] = run_variant(
                texts, analyses, engine, operators, lambda t, a, c=corpus: c, None, guarded)
        base = variants["shard 1"]
        report["sets"][name] = {}
        for label, outputs in variants.items():
            q = quality(samples, outputs)
            differ = sum(a[0] != b[0] for a, b in zip(outputs, base)) if label.startswith("shard") else None
            q["differ_from_shard_1"] = differ
            report["sets"][name][label] = q
            leak = f"{q['person_leaked'] / q['person_total']:.1%} ({q['person_leaked']}/{q['person_total']})"
            prec = f"{q['replaced_on_gold'] / q['replaced']:.1%} of {q['replaced']}"
            pprec = f"{q['person_on_gold'] / max(1, q['person_replaced']):.1%} of {q['person_replaced']}"
            prop = f"{q['propagated_on_gold_person']} of {q['propagated']}" if q["propagated"] else "-"
            differ_text = "" if differ is None else str(differ)
            print(f"{name:<18}{label:<19}{leak:>18}{prec:>19}{pprec:>20}{prop:>23}{differ_text:>17}")
        print()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
