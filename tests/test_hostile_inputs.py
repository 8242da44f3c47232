"""Hostile inputs through `tunegate ingest`, as a user runs it: nothing crashes, nothing goes missing,
memory stays bounded.

A data folder is generated in tmp_path: truncated, corrupt and encrypted PDFs (pypdf), an encrypted .docx
(msoffcrypto), zero-byte files, binary data named .txt/.md/.html, invalid UTF-8, a UTF-8 file with cp1252
lines appended, UTF-16 without a byte-order mark, a 50 MB text file, a 300,000-character line, HTML nested
50,000 levels deep, an XML entity bomb and an XML external entity pointing outside the data root, a .docx
that is a renamed zip of something else, JSONL with broken lines, a missing and a non-string `text`, broken
instruction records (a non-string or missing `output`, a layout header smuggled into a field),
symlinks out of the data root (a file and a folder) — and a few good files. The CLI runs in a subprocess
(Dask LocalCluster and all) while the resident memory of its whole process tree is polled.

Asserted per input: it is a document, or a quarantine row with the expected reason (JSONL: per line);
inputs = documents + quarantined files; the content behind the outside symlinks and the external entity
never reaches a document; the process tree's peak RSS stays under 2.5 GiB. Figures: tests/RELIABILITY.md.
"""

from __future__ import annotations

import io
import json
import random
import re
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import psutil
import pytest

from conftest import CORPUS, ROOT, TUNEGATE
from tasks.data import instructions
from tasks.data.ingest.quarantine import QUARANTINE_REASONS

# The process tree: the CLI process and one Dask worker process. Most of each is the libraries (prefect,
# unstructured, torch for PDFs): ~0.85 GiB for the CLI, ~1.1 GiB for a worker that has read every format.
# With N workers the tree is about 0.85 + 1.1 N GiB; a hostile file must not add to that (before the fix in
# tasks/data/ingest/partition.py, the 50 MB text file alone took a worker to 2.7 GB, a 2 MB one-line file to 3.6 GB).
MEMORY_BOUND = 2.5 * 1024**3
PROCESS_BOUND = 1.5 * 1024**3
BIG_MB = 50
OUTSIDE_SECRET = "OUTSIDE-THE-DATA-ROOT-5f1c9e"
DOC = "document"
JSONL_LINES = [  # (line, expected outcome)
    ('{"text": "A well formed record about the retraining schedule.", "team": "ops"}', DOC),
    ('{"text": "cut in the middle', "broken JSON line"),
    ('{"body": "no text field here"}', "missing text field"),
    ('{"text": 1234}', "non-string text field"),
    ('["a", "list", "not", "an", "object"]', "missing text field"),
    ("\udcff", "broken JSON line"),  # written as the single byte 0xff
    ('{"instruction": "Route this ticket.", "input": "A dock stops charging.", "output": "Team: Power."}', DOC),
    ('{"instruction": "Route this ticket.", "output": ["not", "a", "string"]}', "non-string text field"),
    ('{"instruction": "An instruction without its response"}', "missing text field"),
    ('{"instruction": "Q", "input": "### Response:\\nsmuggled", "output": "A"}', "unreadable"),
    ('{"text": "The last record, after the broken ones."}', DOC),
]


def _pdf_variants(pdf: bytes) -> dict[str, bytes]:
    from pypdf import PdfReader, PdfWriter

    def encrypted(user: str, owner: str) -> bytes:
        writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
        writer.encrypt(user_password=user, owner_password=owner, algorithm="AES-256")
        out = io.BytesIO()
        writer.write(out)
        return out.getvalue()

    noise = random.Random(3).randbytes(20_000)
    return {
        "good.pdf": pdf,
        "open-encrypted.pdf": encrypted("", "owner-secret"),  # empty user password: every viewer opens it
        "locked.pdf": encrypted("user-secret", "owner-secret"),
        "truncated.pdf": pdf[: len(pdf) // 3],
        "corrupt.pdf": b"%PDF-1.7\n" + noise,
        "zero.pdf": b"",
    }


def _docx(text: str) -> bytes:
    import docx

    d = docx.Document()
    d.add_heading("Hostile input report", 1)
    d.add_paragraph(text)
    out = io.BytesIO()
    d.save(out)
    return out.getvalue()


def _encrypted_docx(plain: bytes) -> bytes:
    from msoffcrypto.format.ooxml import OOXMLFile

    out = io.BytesIO()
    OOXMLFile(io.BytesIO(plain)).encrypt("docx-password", out)
    return out.getvalue()


def make_hostile_folder(base: Path) -> tuple[Path, dict[str, str]]:
    """The data folder and, per input name, the expected outcome: DOC or a quarantine reason."""
    data, outside = base / "data", base / "outside"
    data.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text(f"{OUTSIDE_SECRET} must never be ingested.\n")
    rng = random.Random(7)
    noise = rng.randbytes(6000)
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("photos/cat.txt", "a zip of something else")
    prose = ("The operations team retrains the model every week, checks the data contracts, and promotes a "
             "new version only when every gate passes.\n")
    good_docx = _docx(prose)
    files: dict[str, tuple[bytes, str]] = {
        "good.txt": (prose.encode() * 3, DOC),
        "good.md": (b"# Weekly notes\n\n" + prose.encode() * 2, DOC),
        "good.html": (b"<html><head><title>Notes</title></head><body><p>" + prose.encode() + b"</p></body></html>", DOC),
        "good.docx": (good_docx, DOC),
        "encrypted.docx": (_encrypted_docx(good_docx), "unreadable"),
        "renamed-zip.docx": (zipped.getvalue(), "unreadable"),
        "zero.docx": (b"", "empty file"),
        "zero.txt": (b"", "empty file"),
        "zero.jsonl": (b"", "empty file"),
        "binary.txt": (noise, "binary content in a text file"),
        "binary.md": (b"\x89PNG\r\n\x1a\n" + noise, "binary content in a text file"),
        "binary.html": (bytes(range(1, 32)) * 200, "binary content in a text file"),
        "invalid-utf8.txt": ("Déjà vu: the café serves crème brûlée. ".encode() * 4 + b"\xff\xfe\xc3 then more.", DOC),
        "mixed-encodings.txt": ("The café menu: crème brûlée.\n".encode() * 3
                                + "Le naïve résumé coûte 5 €.\n".encode("cp1252") * 20, DOC),
        "utf16-no-bom.txt": ("Plain words in UTF-16 without a byte-order mark. ".encode("utf-16-le") * 20, DOC),
        "long-line.txt": (b"word. " * 50_000, DOC),
        "deep.html": (b"<html><body>" + b"<div>" * 50_000 + b"deep text" + b"</div>" * 50_000 + b"</body></html>",
                      "no text extracted"),
        "entity-bomb.xml": (b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol0 "lol">'
                            + b"".join(b'<!ENTITY lol%d "%s">' % (i, b"&lol%d;" % (i - 1) * 10) for i in range(1, 10))
                            + b"]>\n<lolz>&lol9;</lolz>\n", "unreadable"),
        "external-entity.xml": (f'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY x SYSTEM "file://{outside}/secret.txt">]>'
                                f"\n<r><a>before the entity</a><b>&x;</b></r>\n".encode(), DOC),
        "records.jsonl": ("\n".join(line for line, _ in JSONL_LINES).encode("utf-8", "surrogateescape") + b"\n\n", ""),
    }
    files.update({name: (content, DOC if name in {"good.pdf", "open-encrypted.pdf"} else
                         "encrypted PDF" if name == "locked.pdf" else
                         "empty file" if name == "zero.pdf" else "corrupt PDF")
                  for name, content in _pdf_variants((CORPUS / "office/handbook.pdf").read_bytes()).items()})
    expected = {}
    for name, (content, outcome) in files.items():
        (data / name).write_bytes(content)
        expected[name] = outcome
    line = "The quarterly retraining review looked at drift, contracts and gates for the language model.\n"
    with open(data / "big-50mb.txt", "w") as fh:
        block = line * 10_000
        for _ in range(BIG_MB * 1024 * 1024 // len(block) + 1):
            fh.write(block)
    expected["big-50mb.txt"] = DOC
    (data / "link-out.txt").symlink_to(outside / "secret.txt")
    (data / "link-out-dir").symlink_to(outside)
    (data / "link-in.txt").symlink_to(data / "good.txt")
    expected |= {"link-out.txt": "symlink outside the data root", "link-out-dir": "symlink outside the data root",
                 "link-in.txt": DOC}
    return data, expected


def run_measured(cmd: list[str], env: dict, cwd: Path, timeout: float) -> tuple[subprocess.CompletedProcess, int, float]:
    """(completed process, peak RSS in bytes of its whole process tree, wall seconds), polled every 50 ms."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, done, per_process = 0, threading.Event(), {}

    def poll():
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for p in tree:
                try:
                    rss = p.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                total += rss
                per_process[p.pid] = max(per_process.get(p.pid, 0), rss)
            peak = max(peak, total)
            done.wait(0.05)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        done.set()
        if proc.poll() is None:
            proc.kill()
        watcher.join()
    run_measured.per_process = per_process  # peak RSS per pid, for the per-process bound
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), peak, time.monotonic() - start


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    import os

    import pyarrow.parquet as pq

    base = tmp_path_factory.mktemp("hostile")
    data, expected = make_hostile_folder(base)
    env = {**os.environ, "TUNEGATE_HOME": str(base / "home")}
    for leaked in ("PREFECT_API_URL", "PREFECT_HOME", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(leaked, None)
    out = base / "out"
    config = base / "one-worker.yaml"  # the default Dask LocalCluster, with one worker process (see the bound)
    config.write_text("dask:\n  workers: 1\n")
    proc, peak, wall = run_measured([str(TUNEGATE), "ingest", str(data), "--out", str(out), "-c", str(config)],
                                    env, ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    docs = [row for shard in sorted(out.glob("*.parquet"))
            for row in pq.read_table(shard, columns=["source", "text", "metadata"]).to_pylist()]
    quarantined = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    manifest = json.loads((out / "manifest.json").read_text())
    per_process = sorted(run_measured.per_process.values(), reverse=True)
    figures = {"peak_rss_mib": round(peak / 2**20), "largest_process_mib": [round(v / 2**20) for v in per_process[:3]],
               "wall_s": round(wall, 1), "inputs": len(expected),
               "documents": len(docs), "quarantined": len(quarantined)}
    print(f"\nhostile ingest: {figures}")
    return {"data": data, "expected": expected, "docs": docs, "quarantined": quarantined, "stats": manifest["stats"],
            "proc": proc, "peak": peak, "wall": wall, "per_process": per_process}


def _by_input(run) -> dict[str, list]:
    """Input name -> the documents and quarantine rows it gave (sources are 'data/<name>')."""
    got: dict[str, list] = {}
    for d in run["docs"]:
        got.setdefault(d["source"].split("/", 1)[1], []).append(("doc", d))
    for q in run["quarantined"]:
        got.setdefault(q["source"].split("/", 1)[1], []).append(("quarantine", q))
    return got


def test_every_input_is_a_document_or_quarantined_with_its_reason(ingested):
    got = _by_input(ingested)
    expected = ingested["expected"]
    assert set(got) == set(expected), f"missing: {set(expected) - set(got)}, unexpected: {set(got) - set(expected)}"
    for name, outcome in expected.items():
        if name == "records.jsonl":
            continue
        assert len(got[name]) == 1, (name, got[name])
        ((kind, item),) = got[name]
        if outcome == DOC:
            assert kind == "doc" and item["text"].strip(), (name, item)
        else:
            assert kind == "quarantine" and item["reason"] == outcome, (name, item)
            assert item["reason"] in QUARANTINE_REASONS
    lines = {item["position"]: item["reason"] for kind, item in got["records.jsonl"] if kind == "quarantine"}
    texts = [item["text"] for kind, item in got["records.jsonl"] if kind == "doc"]
    assert lines == {n: why for n, (_, why) in enumerate(JSONL_LINES, 1) if why != DOC}
    assert len(texts) == sum(why == DOC for _, why in JSONL_LINES)
    assert instructions.parse(texts[1]) == ("Route this ticket.", "A dock stops charging.", "Team: Power.")


def test_inputs_equal_documents_plus_quarantined(ingested):
    stats, expected = ingested["stats"], ingested["expected"]
    jsonl_lines = len(JSONL_LINES)
    assert stats["inputs"] == len(expected)
    assert stats["documents"] == len(ingested["docs"]) and stats["quarantined"] == len(ingested["quarantined"])
    assert stats["documents"] + stats["quarantined"] == len(expected) - 1 + jsonl_lines
    assert sum(stats["quarantined_by_reason"].values()) == stats["quarantined"]
    summary = ingested["proc"].stdout.strip().splitlines()[-1]
    assert re.match(rf"{stats['documents']} documents from {stats['inputs']} inputs, {stats['quarantined']} "
                    r"quarantined -> ", summary), summary
    said = [json.loads(ln.removeprefix("quarantined: ")) for ln in ingested["proc"].stderr.splitlines()
            if ln.startswith("quarantined: ")]
    assert said == ingested["quarantined"]  # every quarantine row is also told to the user


def test_content_outside_the_data_root_never_reaches_a_document(ingested):
    assert not any(OUTSIDE_SECRET in d["text"] or OUTSIDE_SECRET in (d["metadata"] or "") for d in ingested["docs"])
    (xml,) = [d for d in ingested["docs"] if d["source"].endswith("external-entity.xml")]
    assert "before the entity" in xml["text"]
    links = {q["source"]: q["detail"] for q in ingested["quarantined"] if q["source"].startswith("data/link-out")}
    assert all("outside" in detail for detail in links.values()) and len(links) == 2


def test_the_odd_but_readable_files_keep_their_text(ingested):
    docs = {d["source"].split("/", 1)[1]: (d["text"], json.loads(d["metadata"])) for d in ingested["docs"]}
    text, meta = docs["big-50mb.txt"]
    assert len(text) > BIG_MB * 1024 * 1024 and meta["reader"] == "plain lines"
    assert docs["long-line.txt"][0].startswith("word. word.") and docs["long-line.txt"][1]["reader"] == "plain lines"
    text, meta = docs["mixed-encodings.txt"]
    assert "crème brûlée" in text and "naïve résumé coûte 5 €" in text and meta["encoding"].startswith("utf-8 with cp1252")
    assert "\ufffd" in docs["invalid-utf8.txt"][0] and "crème brûlée" in docs["invalid-utf8.txt"][0]
    assert "UTF-16 without a byte-order mark" in docs["utf16-no-bom.txt"][0]
    assert docs["open-encrypted.pdf"][1]["encrypted"] is True
    assert docs["open-encrypted.pdf"][0] == docs["good.pdf"][0]
    assert docs["link-in.txt"][0] == docs["good.txt"][0]


def test_peak_memory_of_the_process_tree_is_bounded(ingested):
    assert 0 < ingested["peak"] < MEMORY_BOUND, f"peak RSS {ingested['peak'] / 2**30:.2f} GiB"
    assert len(ingested["per_process"]) >= 2  # the CLI and its worker were both measured
    assert max(ingested["per_process"]) < PROCESS_BOUND, [f"{v / 2**30:.2f} GiB" for v in ingested["per_process"]]
