"""Ingest every file of ../shared/eval/documents where it lies (read-only): real documents in many formats.

Unstructured's example documents and py-pdf's sample PDFs, whose files.json gives each PDF's page count
and whether it is encrypted. Every file is either ingested with its text and metadata or quarantined
with one of the known reasons; nothing is dropped, nothing crashes.

Encrypted PDFs: read when their user password is empty (copy-protected.pdf), quarantined as
"encrypted PDF" when one is needed (password.pdf, libreoffice-writer-password.pdf).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from conftest import SHARED_EVAL
from tasks.data.ingest.ingest import FORMATS, QUARANTINE_REASONS, IngestSettings, discover, ingest_path, missing_dependencies

DOCUMENTS = SHARED_EVAL / "documents"
PYPDF = DOCUMENTS / "py-pdf-sample-files"
EXAMPLES = DOCUMENTS / "unstructured-example-docs"
SETTINGS = IngestSettings()


@pytest.fixture(scope="module")
def outcome() -> dict[str, list[dict]]:
    """source (relative to the documents folder) -> what ingesting it gave."""
    out = {}
    for path, source, root in discover([DOCUMENTS], SETTINGS):
        out[str(Path(source).relative_to(DOCUMENTS.name))] = list(ingest_path(path, source, root, SETTINGS))
    return out


def doc(outcome, rel: str) -> dict:
    (item,) = outcome[rel]
    assert "quarantine" not in item, item
    item = dict(item)
    item["meta"] = json.loads(item["metadata"])
    return item


def reason(outcome, rel: str) -> tuple[str, str]:
    (item,) = outcome[rel]
    assert "quarantine" in item, f"{rel} was ingested"
    return item["quarantine"]["reason"], item["quarantine"]["detail"]


def test_every_file_is_ingested_or_quarantined_with_a_known_reason(outcome):
    files = sorted(str(p.relative_to(DOCUMENTS)) for p in DOCUMENTS.rglob("*")
                   if p.is_file() and not p.name.startswith("."))
    assert sorted(outcome) == files  # inputs: every file, nothing skipped
    ingested = {rel for rel, items in outcome.items() if any("quarantine" not in i for i in items)}
    quarantined = {rel for rel, items in outcome.items() if all("quarantine" in i for i in items)}
    assert len(ingested) + len(quarantined) == len(files) and not ingested & quarantined
    reasons = Counter(i["quarantine"]["reason"] for items in outcome.values() for i in items if "quarantine" in i)
    assert set(reasons) <= QUARANTINE_REASONS, reasons
    for items in outcome.values():
        for item in items:
            if "quarantine" in item:
                assert item["quarantine"]["detail"] or item["quarantine"]["reason"] == "empty file", item
    assert len(ingested) >= 70, f"only {len(ingested)} of {len(files)} ingested"


def test_ingested_documents_carry_text_title_and_source_path(outcome):
    for rel, items in outcome.items():
        for item in items:
            if "quarantine" in item:
                continue
            meta = json.loads(item["metadata"])
            assert item["text"].strip() and item["mime_type"], rel
            if Path(rel).suffix.lower() in FORMATS:
                assert meta["title"] and item["source"] == f"documents/{rel}", (rel, meta)
                assert meta["filename"] == Path(rel).name


def test_pdf_page_counts_and_encryption_match_files_json(outcome):
    truth = json.loads((PYPDF / "files.json").read_text())["data"]
    checked = 0
    for entry in truth:
        rel = f"py-pdf-sample-files/{entry['path']}"
        if rel not in outcome:  # left out of the snapshot (over 500 kB), see SOURCES.md
            continue
        (item,) = outcome[rel]
        if "quarantine" in item:
            why = item["quarantine"]["reason"]
            if entry["encrypted"]:
                assert why == "encrypted PDF", (rel, item)
            else:
                assert why == "no text extracted" and "no text layer" in item["quarantine"]["detail"], (rel, item)
            continue
        meta = json.loads(item["metadata"])
        assert meta["pages"] == entry["pages"], (rel, meta["pages"], entry["pages"])
        assert max(meta["page_numbers"]) <= entry["pages"]
        assert meta.get("encrypted", False) == entry["encrypted"], rel
        checked += 1
    assert checked >= 20
    assert reason(outcome, "py-pdf-sample-files/005-libreoffice-writer-password/libreoffice-writer-password.pdf")[0] \
        == "encrypted PDF"


def test_encrypted_pdf_needs_password_but_copy_protected_one_is_read(outcome):
    assert reason(outcome, "unstructured-example-docs/pdf/password.pdf") == (
        "encrypted PDF", "a user password is needed to read it")
    protected = doc(outcome, "unstructured-example-docs/pdf/copy-protected.pdf")
    assert protected["meta"]["encrypted"] and protected["meta"]["copy_protected"] and protected["meta"]["pages"] == 2
    assert len(protected["text"]) > 1000


def test_copy_protected_pdf_can_be_quarantined_by_setting():
    path = EXAMPLES / "pdf/copy-protected.pdf"
    (item,) = ingest_path(path, path.name, path.parent, IngestSettings(pdf_copy_protected="quarantine"))
    assert item["quarantine"]["reason"] == "copy-protected PDF"
    assert "ingest.pdf_copy_protected" in item["quarantine"]["detail"]


def test_pdf_title_and_scanned_pdf(outcome):
    assert doc(outcome, "unstructured-example-docs/pdf/reliance.pdf")["meta"]["pages"] == 3
    why, detail = reason(outcome, "unstructured-example-docs/pdf/single_table.pdf")
    assert why == "no text extracted" and "scanned or image-only" in detail


def test_text_encodings_are_decoded(outcome):
    utf16 = doc(outcome, "unstructured-example-docs/fake-text-utf-16.txt")
    assert "Hamburgers are delicious" in utf16["text"] and utf16["meta"]["encoding"] == "utf-16"
    cp1252 = doc(outcome, "unstructured-example-docs/fake-html-cp1252.html")
    for word in ("très", "señora", "köstlich", "João", "15,50 €"):
        assert word in cp1252["text"], word
    assert cp1252["meta"]["encoding"] == "cp1252"
    latin = doc(outcome, "unstructured-example-docs/umlauts-non-utf8.md")
    assert "können" in latin["text"] and "äöüß" in latin["text"]
    assert doc(outcome, "unstructured-example-docs/umlauts-utf8.md")["text"] == latin["text"]
    mail16 = doc(outcome, "unstructured-example-docs/eml/fake-email-utf-16.eml")
    assert "Roses are red" in mail16["text"] and mail16["meta"]["title"] == "Test Email"
    hebrew = doc(outcome, "unstructured-example-docs/eml/email-no-utf8-2008-07-16.062410.eml")
    assert "שלום" in hebrew["meta"]["title"] and "היקר" in hebrew["text"]


def test_email_subjects_attachments_and_encrypted_mail(outcome):
    mail = doc(outcome, "unstructured-example-docs/eml/fake-email-attachment.eml")
    assert mail["meta"]["attachments"] == ["fake-attachment.txt"] and "fake attachment" in mail["text"]
    digest = doc(outcome, "unstructured-example-docs/eml/mime-multipart-digest.eml")
    assert "third message in the digest" in digest["text"]
    images = doc(outcome, "unstructured-example-docs/eml/email-no-utf8-2014-03-17.111517.eml")
    assert images["meta"]["attachments_not_read"] == ["google.png", "profilephoto.png"]
    assert reason(outcome, "unstructured-example-docs/eml/fake-encrypted.eml")[0] == "encrypted email"
    assert reason(outcome, "unstructured-example-docs/eml/empty.eml") == ("no text extracted",
                                                                          "the message has no body text")
    assert doc(outcome, "unstructured-example-docs/fake-email.msg")["meta"]["title"] == "Test Email"


@pytest.mark.parametrize(
    "rel, word",
    [
        ("stanley-cups.csv", "Maple Leafs"),
        ("factbook.xml", "Washington, DC"),
        ("fake-email.msg", "This is a test email to use for unit tests."),
        ("fake-power-point.pptx", "Adding a Bullet Slide"),
        ("stanley-cups.xlsx", "Maple Leafs"),
        ("winter-sports.epub", "Winter Sports"),
        ("fake-doc.rtf", "My First Heading"),
        ("fake.odt", "Lorem ipsum"),
        ("README.rst", "Example Docs"),
        ("README.org", "Example Docs"),
    ],
)
def test_each_format_is_read_or_names_its_missing_dependency(outcome, rel, word):
    suffix = Path(rel).suffix
    missing = missing_dependencies(suffix)
    if missing:
        why, detail = reason(outcome, f"unstructured-example-docs/{rel}")
        assert why == "unsupported type" and detail.startswith(f"{suffix} needs ") and "pip package" in detail
        assert all(m in detail for m in missing)
    else:
        assert word.lower() in doc(outcome, f"unstructured-example-docs/{rel}")["text"].lower()


def test_files_without_a_known_suffix_are_unsupported(outcome):
    why, detail = reason(outcome, "py-pdf-sample-files/LICENSE.CC-BY-SA-4.0")
    assert why == "unsupported type" and "LICENSE.CC-BY-SA-4.0" in detail
    assert reason(outcome, "py-pdf-sample-files/files.json")[0] == "missing text field"
