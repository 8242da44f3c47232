"""The sample corpus (examples/make_corpus.py -> examples/corpus/, examples/PLANTED.json): fast checks, no flow.

The generator is deterministic; the planted secrets sit in the raw tickets after their lead-in; the instruction
records parse, are about evenly split between their kinds, carry no planted PII and answer in the house formats;
nothing but the planted values looks like the structured PII the curated contract looks for; the planted
duplicates are (near) duplicates and nothing else is. The stages themselves run on the corpus in
test_stage_cli.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter

import pytest

from conftest import CORPUS, PLANTED, ROOT
from tasks.data import instructions
from tasks.data.contracts import RESIDUAL_PII

TEXT_SUFFIXES = {".jsonl", ".md", ".txt", ".html", ".eml", ".pdf"}  # written byte for byte the same every run
TEAMS = "Drive Systems|Navigation|Power|Gripper & Vision|Fleet Software|Billing"
OUTPUT_FORMS = {
    "triage": re.compile(rf"Team: (?:{TEAMS})\. Priority: P[123]\."),
    "extract": re.compile(r"(?:KR-[A-Za-z]+ \d+|FleetView), error E\d{3}\."),
    "summary": re.compile(r"Site KS\d\d reports (?:KR-[A-Za-z]+ \d+|FleetView) [a-z].* with E\d{3} after [^.]+\."),
}


def load_generator():
    spec = importlib.util.spec_from_file_location("make_corpus", ROOT / "examples" / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def planted() -> dict:
    return json.loads(PLANTED.read_text())


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return [json.loads(line) for line in (CORPUS / "records/assistant.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tickets() -> list[dict]:
    return [json.loads(line) for line in (CORPUS / "records/tickets.jsonl").read_text().splitlines()]


def shingles(text: str, n: int = 5) -> set:
    words = re.findall(r"\w+", text.lower())  # as tasks/data/dedup/minhash.py tokenises
    return {tuple(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b)


def test_generator_is_deterministic(tmp_path):
    import pyarrow.parquet as pq

    gen = load_generator()
    again = gen.main(tmp_path / "corpus", tmp_path / "PLANTED.json")
    assert (tmp_path / "PLANTED.json").read_bytes() == PLANTED.read_bytes() and again == json.loads(PLANTED.read_text())
    committed = sorted(p.relative_to(CORPUS) for p in CORPUS.rglob("*") if p.is_file())
    assert sorted(p.relative_to(tmp_path / "corpus") for p in (tmp_path / "corpus").rglob("*") if p.is_file()) \
        == committed
    for rel in committed:
        mine, theirs = tmp_path / "corpus" / rel, CORPUS / rel
        if rel.suffix in TEXT_SUFFIXES:
            assert mine.read_bytes() == theirs.read_bytes(), rel
        elif rel.suffix == ".docx":  # a zip: its entries carry the time they were written
            assert gen.docx_text(mine) == gen.docx_text(theirs), rel
        elif rel.suffix == ".parquet":
            assert pq.read_table(mine).to_pylist() == pq.read_table(theirs).to_pylist(), rel
        else:
            pytest.fail(f"no comparison for {rel}")


def test_corpus_has_every_format_and_what_planted_names(planted):
    suffixes = {p.suffix for p in CORPUS.rglob("*") if p.is_file()}
    assert {".txt", ".md", ".html", ".eml", ".docx", ".pdf", ".jsonl", ".parquet"} <= suffixes
    named = [planted["instructions"]["source"]] + [e["source"] for e in planted["extraction"]] + [
        d[k] for group in ("exact_duplicates", "near_duplicates") for d in planted[group] for k in ("source", "of")
    ] + [q["source"] for q in planted["quarantined"]]
    for source in named:
        assert (CORPUS.parent / source).is_file(), source
    assert planted["quarantined"] == [{"source": "corpus/office/broken.pdf", "reason": "corrupt PDF"}]


def test_extraction_secrets_follow_their_lead_in(planted, tickets):
    texts = [t["text"] for t in tickets]
    assert len(tickets) >= 35 and all(isinstance(t["ticket"], int) and t["channel"] for t in tickets)
    types = Counter(e["type"] for e in planted["extraction"])
    assert {"PHONE_NUMBER", "EMAIL_ADDRESS", "CREDIT_CARD", "API_KEY", "PASSWORD"} <= set(types)
    for e in planted["extraction"]:
        assert e["source"] == "corpus/records/tickets.jsonl" and e["value"] in planted["pii"]
        holding = [t for t in texts if e["value"] in t]
        assert 2 <= len(holding) <= 4, e
        for t in holding:  # every occurrence right after the same lead-in
            assert t.count(e["value"]) == t.count(f"{e['lead_in']} {e['value']}"), (e, t)
    assert len({e["lead_in"] for e in planted["extraction"]}) == len(planted["extraction"])


def test_instruction_records_parse_and_kinds_are_balanced(planted, records):
    assert len(records) == planted["instructions"]["count"] >= 200
    kinds = Counter(r["kind"] for r in records)
    assert kinds == planted["instructions"]["kinds"] and set(kinds) == {"triage", "extract", "summary", "runbook"}
    assert max(kinds.values()) - min(kinds.values()) <= 0.1 * len(records) / 4
    for r in records:
        assert set(r) == {"instruction", "input", "output", "kind"}
        assert all(isinstance(v, str) and v for v in r.values()), r
        parsed = instructions.parse(instructions.to_text(r["instruction"], r["output"], r["input"]))
        assert parsed == (r["instruction"], r["input"], r["output"]), r
    for kind in ("triage", "extract", "summary", "runbook"):
        asks = {r["instruction"] for r in records if r["kind"] == kind}
        assert len(asks) >= (20 if kind == "runbook" else 5), (kind, asks)  # varied wording


def test_answers_follow_the_house_formats_and_the_input(records):
    for r in records:
        if r["kind"] == "runbook":
            assert r["output"] in r["input"] and r["output"].endswith("."), r  # a sentence of the excerpt
            continue
        assert OUTPUT_FORMS[r["kind"]].fullmatch(r["output"]), r
        codes = re.findall(r"\bE\d{3}\b", r["input"])
        if r["kind"] == "extract":
            product, code = re.fullmatch(r"(.+), error (E\d{3})\.", r["output"]).groups()
            assert product in r["input"] and codes == [code], r
        elif r["kind"] == "summary":
            site, code = re.search(r"Site (KS\d\d) .* with (E\d{3}) after", r["output"]).groups()
            assert f"site {site}".lower() in r["input"].lower() and codes == [code], r
        elif codes:  # triage: the code's family names the team
            team = {"1": "Drive Systems", "2": "Navigation", "3": "Power", "4": "Gripper & Vision",
                    "5": "Fleet Software"}[codes[0][1]]
            assert r["output"].startswith(f"Team: {team}."), r
    triage = Counter(re.search(r"P[123]", r["output"])[0] for r in records if r["kind"] == "triage")
    assert min(triage.values()) >= 10, triage


def test_instruction_records_carry_no_planted_pii(planted, records):
    text = "\n".join(v for r in records for v in r.values())
    assert [p for p in planted["pii"] if p in text] == []


def test_nothing_but_planted_values_looks_like_structured_pii(planted):
    """The curated contract fails on e-mail, phone, card, SSN or IPv4 look-alikes: serial, order and version
    numbers and error codes must not look like one, in any document."""
    gen = load_generator()
    import pyarrow.parquet as pq

    texts = {}
    for p in CORPUS.rglob("*"):
        if p.suffix in {".jsonl", ".md", ".txt", ".html", ".eml"}:
            texts[p] = p.read_text(encoding="utf-8")
        elif p.suffix == ".docx":
            texts[p] = gen.docx_text(p)
        elif p.suffix == ".parquet":
            texts[p] = "\n".join(map(str, pq.read_table(p).column("text").to_pylist()))
    pdfs = {p: " ".join(para for _, para in sections) for p, sections in (
        (CORPUS / "office/handbook.pdf", gen.handbook_sections()), (CORPUS / "office/safety-guide.pdf",
                                                                   gen.safety_sections()))}
    for path, text in {**texts, **pdfs}.items():
        if path.suffix == ".jsonl":
            text = "\n".join(" ".join(str(v) for v in json.loads(line).values()) for line in text.splitlines())
        for value in sorted(planted["pii"], key=len, reverse=True):
            text = text.replace(value, " ")
        assert RESIDUAL_PII.findall(text) == [], path


def test_planted_duplicates_and_nothing_else_alike(planted, records, tickets):
    def norm(path: str) -> str:
        return " ".join((CORPUS.parent / path).read_text().lower().split())

    for d in planted["exact_duplicates"]:
        assert norm(d["source"]) == norm(d["of"]) and (CORPUS.parent / d["source"]).read_bytes() != \
            (CORPUS.parent / d["of"]).read_bytes()
    for d in planted["near_duplicates"]:
        assert 0.8 < jaccard(shingles(norm(d["source"])), shingles(norm(d["of"]))) < 1.0, d
    # the records and tickets are far apart, so near dedup (threshold 0.8) keeps every one of them
    texts = [instructions.to_text(r["instruction"], r["output"], r["input"]) for r in records]
    texts += [t["text"] for t in tickets]
    sets = [shingles(t) for t in texts]
    worst = max(jaccard(a, sets[j]) for i, a in enumerate(sets) for j in range(i + 1, len(sets)))
    assert worst < 0.6, worst


def test_instruction_records_ingest_and_pass_cleaning(planted):
    from tasks.data.clean import CleanSettings, clean_documents, quality_filter
    from tasks.data.ingest.ingest import IngestSettings, ingest_path

    path = CORPUS / "records/assistant.jsonl"
    docs = list(ingest_path(path, "corpus/records/assistant.jsonl", CORPUS.parent, IngestSettings()))
    assert len(docs) == planted["instructions"]["count"]
    assert all(d["mime_type"] == instructions.MIME_TYPE and json.loads(d["metadata"])["kind"] for d in docs)
    counts, qcounts = Counter(), Counter()
    settings = CleanSettings()
    kept = list(quality_filter(clean_documents(docs, settings, counts), settings.quality, qcounts))
    assert len(kept) == qcounts["instructions"] == len(docs)
    assert all(json.loads(d["quality_flags"]) == [] and instructions.parse(d["text"]) for d in kept)
