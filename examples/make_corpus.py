"""Writes examples/corpus/: the demo's sample documents, with planted duplicates and fake PII.

The literary text is from Shakespeare (public domain), taken from the tiny-shakespeare file
(karpathy/char-rnn, MIT), read from ../shared/eval/corpora/ when this script is run. Everything else
(operations notes, e-mails, the fake people and numbers in them) was written for this project; every
name, address, phone and card number is invented (card numbers are the networks' published test
numbers). PLANTED.json lists what the pipeline must remove. Rerun: python examples/make_corpus.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
OUT = HERE / "corpus"
SOURCE = HERE.parent.parent / "shared/eval/corpora/tinyshakespeare/input.txt"

PEOPLE = [
    # (name, email, phone, card)
    ("Maria Gonzalez", "maria.gonzalez@example.org", "+1 415-555-0132", "4111 1111 1111 1111"),
    ("Thomas Whitfield", "t.whitfield@example.net", "(212) 555-0199", "5500 0000 0000 0004"),
    ("Priya Raman", "priya.raman@example.com", "+1 646-555-0171", "3400 0000 0000 009"),
    ("Jonas Becker", "jonas.becker@example.de", "(312) 555-0148", "6011 0000 0000 0004"),
]


def shakespeare_passages(n_docs: int, chars: int) -> list[str]:
    text = SOURCE.read_text()
    blocks = [b.strip() for b in text.split("\n\n") if b.strip()]
    docs, cur = [], []
    for block in blocks:
        cur.append(block)
        if sum(len(c) for c in cur) >= chars:
            docs.append("\n\n".join(cur))
            cur = []
            if len(docs) == n_docs:
                break
    return docs


def near_duplicate(text: str) -> str:
    """The same passage with a few words changed: a near duplicate (Jaccard of 5-gram shingles > 0.8)."""
    words = text.split(" ")
    for i in range(len(words) // 9, len(words), max(1, len(words) // 6)):
        words[i] = words[i].upper()  # case changes are invisible after lower-casing; add real edits too
    words.insert(len(words) // 2, "indeed")
    return " ".join(words).replace(" the ", " thee ", 1)


def ops_note(i: int, person) -> str:
    name, email, phone, card = person
    return (
        f"Operations note {i}. The quarterly retraining review was held on Tuesday. "
        f"The data owner for this corpus is {name}; questions about access go to {email} or by phone to {phone}. "
        f"A customer ticket quoted the card number {card} in free text, which is exactly the kind of string "
        "that must never reach a training set. The team agreed that every new data drop passes through the "
        "contract checks before training, that evaluation gates compare the candidate with the current "
        "champion on the same held-out split, and that a rollback must be possible in one command."
    )


def write_pdf(path: Path, title: str, lines: list[str]) -> None:
    """A minimal one-page PDF with a text layer (Helvetica), enough for pdfminer to read."""
    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    ops = ["BT", "/F1 16 Tf", "72 740 Td", f"({esc(title)}) Tj", "/F1 10 Tf", "0 -24 Td"]
    for line in lines:
        ops += [f"({esc(line)}) Tj", "0 -14 Td"]
    ops.append("ET")
    stream = "\n".join(ops).encode("latin-1", "replace")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Title (" + esc(title).encode("latin-1") + b") >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))


def wrap(text: str, width: int = 95) -> list[str]:
    lines, cur = [], ""
    for word in text.split():
        if len(cur) + len(word) + 1 > width:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}".strip()
    return lines + ([cur] if cur else [])


def main() -> None:
    import docx  # python-docx, installed with unstructured[docx]
    import pyarrow as pa
    import pyarrow.parquet as pq

    passages = shakespeare_passages(42, 3000)
    for sub in ("plays", "notes", "mail", "office", "records", "reposts"):
        (OUT / sub).mkdir(parents=True, exist_ok=True)
    planted = {"pii": [], "exact_duplicates": [], "near_duplicates": [], "quarantined": []}

    for i, p in enumerate(passages[:24]):
        (OUT / "plays" / f"passage-{i:02d}.txt").write_text(p + "\n")
    # exact duplicate: passage 3 again, with different whitespace
    # (copies live in reposts/, read after plays/: the original is the one kept)
    (OUT / "reposts" / "passage-03-copy.txt").write_text("  " + passages[3].replace("\n\n", "\n\n\n") + "\n\n")
    planted["exact_duplicates"].append({"source": "corpus/reposts/passage-03-copy.txt", "of": "corpus/plays/passage-03.txt"})
    # near duplicates: passages 5 and 7 lightly edited
    for i in (5, 7):
        (OUT / "reposts" / f"passage-{i:02d}-edited.txt").write_text(near_duplicate(passages[i]) + "\n")
        planted["near_duplicates"].append({"source": f"corpus/reposts/passage-{i:02d}-edited.txt",
                                           "of": f"corpus/plays/passage-{i:02d}.txt"})

    for i, p in enumerate(passages[24:30]):
        title = p.split("\n", 1)[0].rstrip(":")
        (OUT / "notes" / f"scene-{i}.md").write_text(f"# {title}\n\n" + p.replace("\n\n", "\n\n> ") + "\n")
    for i, person in enumerate(PEOPLE):
        (OUT / "notes" / f"ops-note-{i}.md").write_text(f"# Operations note {i}\n\n{ops_note(i, person)}\n")
        planted["pii"] += [person[0], person[1], person[2], person[3]]

    for i, p in enumerate(passages[30:34]):
        body = "".join(f"<p>{para.replace(chr(10), '<br/>')}</p>\n" for para in p.split("\n\n"))
        (OUT / "notes" / f"page-{i}.html").write_text(
            f"<html><head><title>Passage {i}</title></head><body><h1>Passage {i}</h1>\n{body}</body></html>\n")

    for i, (name, email, phone, _card) in enumerate(PEOPLE[:2]):
        other = PEOPLE[(i + 1) % len(PEOPLE)]
        (OUT / "mail" / f"message-{i}.eml").write_text(
            f"From: {name} <{email}>\nTo: {other[0]} <{other[1]}>\nSubject: Retraining schedule {i}\n"
            "Date: Mon, 02 Nov 2026 09:30:00 +0000\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n"
            f"Hello {other[0].split()[0]},\n\nThe next retraining run starts on Friday. If the contract fails again, "
            f"call me at {phone} before anything is promoted. The held-out split stays the same so the champion "
            "comparison is fair.\n\n" + passages[34 + i][:1200] + f"\n\nBest regards,\n{name}\n")

    for i, p in enumerate(passages[36:38]):
        d = docx.Document()
        d.add_heading(f"Reading {i}", level=1)
        for para in p.split("\n\n"):
            d.add_paragraph(para)
        d.save(OUT / "office" / f"reading-{i}.docx")
    write_pdf(OUT / "office" / "handbook.pdf", "Retraining handbook",
              wrap("This handbook describes how the team retrains its language models. " + passages[38][:1500]))
    (OUT / "office" / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n% truncated")
    planted["quarantined"].append({"source": "corpus/office/broken.pdf", "reason": "corrupt PDF"})

    with open(OUT / "records" / "tickets.jsonl", "w") as fh:
        for i, (name, email, phone, card) in enumerate(PEOPLE):
            fh.write(json.dumps({"text": f"Ticket {i}: {name} wrote from {email} asking why the model repeated "
                                         f"a number like {card}. Call back on {phone}. " + passages[39][i * 300:(i + 1) * 300],
                                 "ticket": i, "channel": "web"}) + "\n")
    rows = [{"text": "From the archive. " + passages[i], "kind": "archive"} for i in (40, 41)]
    pq.write_table(pa.Table.from_pylist(rows), OUT / "records" / "archive.parquet")

    (OUT.parent / "PLANTED.json").write_text(json.dumps(planted, indent=2) + "\n")
    print(f"wrote {sum(1 for p in OUT.rglob('*') if p.is_file())} files under {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
