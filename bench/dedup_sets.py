"""The near-dedup evaluation sets: documents written by others, with planted near copies, exact copies and
negatives that share long passages with a document; shared by bench/dedup_study.py and bench/dedup.py.

Corpora (../shared/eval/corpora, read where they lie; SOURCES.md there names origin and licence):
WikiText-2 raw test split (CC BY-SA 3.0), Tiny Shakespeare (public domain; char-rnn's copy, MIT) and the
Self-Instruct human-written tasks (Apache-2.0). Five sets:

- ``wiki-short``: WikiText paragraphs of 40-400 words;  ``wiki-long``: articles cut at paragraph ends into
  documents of 400-2,500 words;
- ``shakespeare-short`` / ``shakespeare-long``: consecutive speeches (speaker lines included) joined into
  documents of 40-400 / 400-2,500 words;
- ``instruct``: Self-Instruct tasks (instruction, then each instance's input and output) of 40-400 words;
- ``wiki-short-subst``: wiki-short's documents with the hardest near copies: 8-10 % of the words substituted
  (a substitution costs the bag of words twice what an insertion or deletion does).

Originals that share 10 % or more of their word 4-grams with an earlier one are dropped first (the corpora's
own repeats: Shakespeare's refrains, Wikipedia's stock sentences), so that the only duplicates are planted.

Planted per set (counts are shares of the originals): near copies (40 %; long sets 100 %): 1-10 % of the
words (at least one; never more than 10 %) inserted, deleted or substituted (words drawn from the set's own
text), a fifth of them made from an earlier copy of the same original (chains); exact copies (5 %): case or
whitespace changed; hard negatives (20 %; long sets 50 %): 60-80 % of their words are one or two long
verbatim passages of an original, the rest running text from its neighbour in the corpus (same article or
play) or from another document: same opening and a different continuation, a passage inside other text, or a
passage replaced; far negatives (10 %): the same with 20-50 % (counted in ``\\w+`` words too: a URL is several
words, so a draw that shares more of them is redrawn); at most one negative per original. Truth: a near or
exact copy belongs to its original's cluster, every negative is alone.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ROOT.parent / "shared" / "eval" / "corpora"
SHORT, LONG = (40, 400), (400, 2500)
SET_NAMES = ("wiki-short", "shakespeare-short", "instruct", "wiki-long", "shakespeare-long", "wiki-short-subst")
_EDITS = {"wiki-short-subst": ("s", (0.08, 0.10))}  # set -> (edit operations, rate range); default ("ids", 1-10 %)
_WORD = re.compile(r"\w+", re.UNICODE)
_HEADING = re.compile(r"^= [^=].*[^=] =$")


@dataclass
class Planted:
    """A set's documents in snapshot order, each one's true cluster, and what was planted."""

    name: str
    docs: list[dict[str, str]]
    truth: dict[str, int]  # doc_id -> cluster id (negatives and unrelated originals have their own)
    kinds: Counter = field(default_factory=Counter)
    kind_of: dict[str, str] = field(default_factory=dict)  # doc_id -> original, near, exact, hard, far
    source_of: dict[str, str] = field(default_factory=dict)  # planted doc_id -> the doc_id it was made from
    dropped_originals: int = 0


# ----------------------------------------------------------------------------------------------- corpora


def _word_count(text: str) -> int:
    return len(_WORD.findall(text))


def _join_until(pieces: list[str], bounds: tuple[int, int], rng: random.Random, sep: str) -> list[str]:
    """Consecutive pieces joined into documents whose word counts are drawn from ``bounds`` (a piece is never
    cut; documents outside the bounds are dropped)."""
    out, current, words = [], [], 0
    target = rng.randint(*bounds)
    for piece in pieces:
        current.append(piece)
        words += _word_count(piece)
        if words >= target:
            if words <= bounds[1] * 1.25:
                out.append(sep.join(current))
            current, words, target = [], 0, rng.randint(*bounds)
    return out


def _wiki_articles(corpora: Path) -> list[list[str]]:
    articles: list[list[str]] = []
    for line in (corpora / "wikitext-2-raw" / "wiki.test.raw").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        if _HEADING.match(line):
            articles.append([])
        elif not line.startswith("=") and articles:
            articles[-1].append(line)
    return [a for a in articles if a]


def _speeches(corpora: Path) -> list[str]:
    text = (corpora / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    return [s.strip() for s in text.split("\n\n") if s.strip()]


def _instruct_tasks(corpora: Path) -> list[str]:
    out = []
    for name in ("self-instruct_user_oriented_instructions.jsonl", "self-instruct_seed_tasks.jsonl"):
        for line in (corpora / "instructions" / name).read_text(encoding="utf-8").splitlines():
            task = json.loads(line)
            parts = [task["instruction"]]
            for instance in task["instances"]:
                parts += [p for p in (instance.get("input", ""), instance.get("output", "")) if p]
            out.append("\n".join(parts))
    return out


def load_originals(name: str, corpora: Path = CORPORA, seed: int = 0) -> list[str]:
    """The set's documents before planting, in corpus order (neighbours come from the same article or play)."""
    rng = random.Random(f"{name}-{seed}")
    if name in ("wiki-short", "wiki-short-subst"):
        return [p for a in _wiki_articles(corpora) for p in a if SHORT[0] <= _word_count(p) <= SHORT[1]]
    if name == "wiki-long":
        return [d for a in _wiki_articles(corpora) for d in _join_until(a, LONG, rng, "\n")]
    if name == "shakespeare-short":
        return _join_until(_speeches(corpora), SHORT, rng, "\n\n")
    if name == "shakespeare-long":
        return _join_until(_speeches(corpora), LONG, rng, "\n\n")
    if name == "instruct":
        return [t for t in _instruct_tasks(corpora) if SHORT[0] <= _word_count(t) <= SHORT[1]]
    raise ValueError(f"unknown set {name!r}; sets: {', '.join(SET_NAMES)}")


def synthetic_originals(n: int = 400, seed: int = 0, bounds: tuple[int, int] = SHORT) -> list[str]:
    """``n`` documents of Zipf-distributed made-up words, for when the corpora are not there (tests)."""
    rng = random.Random(f"synthetic-{seed}")
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(20_000)]
    weights = [1 / (rank + 1) ** 1.1 for rank in range(len(vocab))]
    return [" ".join(rng.choices(vocab, weights, k=rng.randint(*bounds))) for _ in range(n)]


def drop_alike(texts: list[str], share: float = 0.10, k: int = 4) -> list[str]:
    """``texts`` without any that shares ``share`` or more of its word k-grams with an earlier kept one
    (plain Python sets: independent of the code under test)."""
    kept: list[str] = []
    owners: dict[tuple[str, ...], list[int]] = {}
    for text in texts:
        w = _WORD.findall(text.lower())
        grams = {tuple(w[i : i + k]) for i in range(max(1, len(w) - k + 1))}
        shared = Counter(j for g in grams for j in owners.get(g, ()))
        if shared and max(shared.values()) >= share * len(grams):
            continue
        for g in grams:
            owners.setdefault(g, []).append(len(kept))
        kept.append(text)
    return kept


# ---------------------------------------------------------------------------------------------- planting


class _Maker:
    def __init__(self, stream: list[str], rng: random.Random) -> None:
        self.stream, self.rng = stream, rng

    def edit(self, words: list[str], rate: float, ops: str = "ids") -> list[str]:
        """``words`` with max(1, floor(rate * len)) random edits (never more than ``rate`` of the words, but
        one at least) drawn from ``ops``: insertions (i), deletions (d), substitutions (s)."""
        out = list(words)
        for _ in range(max(1, int(rate * len(words)))):
            op, i = self.rng.choice(ops), self.rng.randrange(len(out))
            if op == "i":
                out.insert(i, self.rng.choice(self.stream))
            elif op == "d" and len(out) > 2:
                del out[i]
            else:
                out[i] = self.rng.choice(self.stream)
        return out

    def respell(self, text: str) -> str:
        """The same normalised text: case and whitespace changed."""
        choice = self.rng.randrange(3)
        if choice == 0:
            return text.upper()
        if choice == 1:
            return "  " + text.replace(" ", "\n", 5) + "\n"
        return text.replace(" ", "  \t", 3).title()

    def share_passages(self, words: list[str], own_start: int, other_start: int,
                       share: float) -> tuple[list[str], float]:
        """A document of len(words) words of which ``share`` are verbatim passages of ``words`` (which start
        at ``own_start`` in the stream) and the rest is running text from the stream at a random point of the
        document that starts at ``other_start`` (and on into the documents after it, never into ``words``):
        same opening, other continuation / a passage inside other text / one passage of ``words`` replaced
        by other text. Also returns the share of its ``\\w+`` words that are passages of ``words``."""
        n, total = len(words), len(self.stream)
        keep = max(1, min(n - 1, round(share * n)))
        for _ in range(50):
            at = (other_start + self.rng.randrange(n)) % total
            if (own_start - at) % total >= n - keep and (at - own_start) % total >= n:
                break
        filler = (self.stream[at:] + self.stream[: max(0, at + n - keep - total)])[: n - keep]
        form = self.rng.randrange(3)
        if form == 0:
            return words[:keep] + filler, _share(words[:keep], filler)
        if form == 1:
            start, at = self.rng.randrange(n - keep + 1), self.rng.randrange(len(filler) + 1)
            return filler[:at] + words[start : start + keep] + filler[at:], _share(words[start : start + keep], filler)
        start = self.rng.randrange(1, keep) if keep > 1 else 0
        kept = words[:start] + words[start + n - keep :]
        return words[:start] + filler + words[start + n - keep :], _share(kept, filler)


def _share(shared: list[str], other: list[str]) -> float:
    """The share of ``\\w+`` words that come from ``shared`` (a token such as a URL holds several words)."""
    a, b = (sum(len(_WORD.findall(t)) for t in part) for part in (shared, other))
    return a / max(1, a + b)


def build_set(name: str, seed: int = 0, corpora: Path = CORPORA, near_share: float | None = None,
              exact_share: float = 0.05, hard_share: float | None = None, far_share: float = 0.10,
              limit: int | None = None, originals: list[str] | None = None) -> Planted:
    """One evaluation set, shuffled into snapshot order. ``limit``: at most this many originals;
    ``originals``: these instead of the corpus set's (e.g. ``synthetic_originals``). The long sets have few
    originals, so by default they get more near copies (100 %) and hard negatives (50 %)."""
    rng = random.Random(f"plant-{name}-{seed}")
    loaded = originals if originals is not None else load_originals(name, corpora, seed)
    originals = drop_alike(loaded)
    if limit is not None:
        originals = originals[:limit]
    stream = [w for text in originals for w in text.split()]
    starts = [0]
    for text in originals[:-1]:
        starts.append(starts[-1] + len(text.split()))
    make = _Maker(stream, rng)
    long = name.endswith("-long")
    near_share = near_share if near_share is not None else (1.0 if long else 0.4)
    hard_share = hard_share if hard_share is not None else (0.5 if long else 0.2)
    ops, rates = _EDITS.get(name, ("ids", (0.01, 0.10)))
    n = len(originals)
    docs: list[tuple[str, int, str, int]] = [(t, c, "original", c) for c, t in enumerate(originals)]
    family: dict[int, list[int]] = {}  # original -> its near copies (indices into docs)
    for _ in range(round(near_share * n)):
        c = rng.randrange(n)
        parent = rng.choice(family[c]) if family.get(c) and rng.random() < 0.2 else c
        text = " ".join(make.edit(docs[parent][0].split(), rng.uniform(*rates), ops))
        family.setdefault(c, []).append(len(docs))
        docs.append((text, c, "near", parent))
    for _ in range(round(exact_share * n)):
        c = rng.randrange(n)
        parent = rng.choice([c] + family.get(c, []))
        docs.append((make.respell(docs[parent][0]), c, "exact", parent))
    sources = rng.sample(range(n), min(n, round(hard_share * n) + round(far_share * n)))
    for kind, share, bounds in (("hard", hard_share, (0.6, 0.8)), ("far", far_share, (0.2, 0.5))):
        for _ in range(round(share * n)):
            if not sources:
                break
            c = sources.pop()  # one negative per original: two made from one original could be alike
            o = (c + 1) % n if rng.random() < 0.5 else rng.randrange(n)
            o = o if o != c else (c + 1) % n
            for _ in range(20):  # counted in whitespace tokens, the share of words may come out higher: redraw
                words, word_share = make.share_passages(originals[c].split(), starts[c], starts[o],
                                                        rng.uniform(*bounds))
                if word_share <= bounds[1]:
                    docs.append((" ".join(words), n + len(docs), kind, c))
                    break

    order = list(range(len(docs)))
    rng.shuffle(order)
    position = {i: p for p, i in enumerate(order)}
    planted = Planted(name=name, docs=[], truth={}, dropped_originals=len(loaded) - len(originals)
                      if limit is None else 0)
    for p, i in enumerate(order):
        text, cluster, kind, source = docs[i]
        doc_id = f"{name}-{p:06d}"
        planted.docs.append({"doc_id": doc_id, "text": text})
        planted.truth[doc_id] = cluster
        planted.kinds[kind] += 1
        planted.kind_of[doc_id] = kind
        if kind != "original":
            planted.source_of[doc_id] = f"{name}-{position[source]:06d}"
    return planted


# ------------------------------------------------------------------------------------------------ scoring


def bag_jaccard(a: str, b: str) -> float:
    """Jaccard of the two bags of ``\\w+`` words of the lower-cased texts (sum of min over sum of max counts)."""
    ca, cb = Counter(_WORD.findall(a.lower())), Counter(_WORD.findall(b.lower()))
    union = sum((ca | cb).values())
    return sum((ca & cb).values()) / union if union else 1.0


def shingle_jaccard(a: str, b: str, size: int = 5) -> float:
    """Jaccard of the two sets of word ``size``-grams (``\\w+`` words of the lower-cased texts)."""
    def grams(t: str) -> set[tuple[str, ...]]:
        w = _WORD.findall(t.lower())
        return {tuple(w[i : i + size]) for i in range(max(1, len(w) - size + 1))} if w else set()

    sa, sb = grams(a), grams(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def clusters_from_removed(doc_ids: list[str], removed: dict[str, dict]) -> dict[str, str]:
    """doc_id -> the kept doc_id it was folded into (itself when kept), following chains to the end."""
    label = {}
    for d in doc_ids:
        seen, x = {d}, d
        while x in removed:
            x = removed[x]["of"]
            if x in seen:
                break
            seen.add(x)
        label[d] = x
    return label


def pair_counts(truth: dict[str, int], predicted: dict[str, object]) -> tuple[int, int, int]:
    """(pairs in both, true pairs, predicted pairs) of ``predicted`` clusters against ``truth``."""
    def pairs(sizes) -> int:
        return sum(s * (s - 1) // 2 for s in sizes)

    return (pairs(Counter((truth[d], predicted[d]) for d in truth).values()),
            pairs(Counter(truth.values()).values()), pairs(Counter(predicted.values()).values()))


def scores(both: int, true_pairs: int, pred_pairs: int) -> dict[str, float]:
    """Pairwise precision, recall and F1 from ``pair_counts`` (summed over seeds, if several)."""
    precision = both / pred_pairs if pred_pairs else 1.0
    recall = both / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "pairs": true_pairs, "found_pairs": pred_pairs}


def pair_scores(truth: dict[str, int], predicted: dict[str, object]) -> dict[str, float]:
    """Pairwise precision, recall and F1 of ``predicted`` clusters against ``truth``."""
    return scores(*pair_counts(truth, predicted))


def negatives_removed(planted: Planted, removed: dict[str, dict]) -> Counter:
    """How many hard and far negatives were wrongly removed (or had a document removed into them)."""
    label = clusters_from_removed([d["doc_id"] for d in planted.docs], removed)
    sizes = Counter(label.values())
    return Counter(planted.kind_of[d] for d in planted.truth
                   if planted.kind_of[d] in ("hard", "far") and sizes[label[d]] > 1)
