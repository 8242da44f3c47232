"""Corpora written by others for the drift calibration (../shared/eval, SOURCES.md there), as lists of documents,
and the drops drawn from them. Shared by bench/drift_calibration.py and tests/test_drift_calibration.py.

- wikitext: WikiText-2 test paragraphs (encyclopaedia prose, CC BY-SA), 50+ characters;
- instructions: self-instruct's seed and user-oriented tasks, instruction + input + output as one text (Apache-2.0);
- shakespeare: tinyshakespeare, consecutive speeches joined into passages of 300+ characters (public domain);
- pii: presidio-research's synth_dataset_v2 sentences, five joined per document (MIT): short texts full of
  names, addresses and numbers.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

EVAL = Path(__file__).resolve().parents[2] / "shared" / "eval"
CORPORA = EVAL / "corpora"
WIKITEXT = CORPORA / "wikitext-2-raw" / "wiki.test.raw"
INSTRUCTIONS = CORPORA / "instructions"
SHAKESPEARE = CORPORA / "tinyshakespeare" / "input.txt"
PII_SYNTH = EVAL / "pii" / "presidio-research" / "synth_dataset_v2.json"
NEEDED = (WIKITEXT, INSTRUCTIONS, SHAKESPEARE, PII_SYNTH)


def missing() -> list[str]:
    return [str(p) for p in NEEDED if not p.exists()]


def wikitext() -> list[str]:
    lines = WIKITEXT.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if len(ln.strip()) >= 50 and not ln.strip().startswith("=")]


def instructions() -> list[str]:
    out = []
    for path in sorted(INSTRUCTIONS.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            for inst in record.get("instances") or [{}]:
                text = "\n\n".join(x for x in (record.get("instruction"), inst.get("input"), inst.get("output")) if x)
                if len(text) >= 50:
                    out.append(text)
    return out


def shakespeare(least: int = 300) -> list[str]:
    out, passage = [], []
    for speech in SHAKESPEARE.read_text(encoding="utf-8").split("\n\n"):
        passage.append(speech.strip())
        if sum(map(len, passage)) >= least:
            out.append("\n\n".join(passage))
            passage = []
    return out


def pii(per_document: int = 5) -> list[str]:
    texts = [s["full_text"] for s in json.loads(PII_SYNTH.read_text(encoding="utf-8"))]
    return [" ".join(texts[i : i + per_document]) for i in range(0, len(texts) - per_document + 1, per_document)]


KINDS = {"wikitext": wikitext, "instructions": instructions, "shakespeare": shakespeare, "pii": pii}


def split(docs: list[str], reference: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """A seeded shuffle cut into the reference (``reference`` documents) and the held-out rest."""
    docs = list(docs)
    random.Random(seed).shuffle(docs)
    return docs[:reference], docs[reference:]


def drops(pool: list[str], count: int, sizes: tuple[int, ...], seed: int) -> list[list[str]]:
    """``count`` drops drawn from ``pool`` without replacement within a drop, sizes cycling through ``sizes``."""
    rng = random.Random(seed)
    return [rng.sample(pool, min(sizes[i % len(sizes)], len(pool))) for i in range(count)]
