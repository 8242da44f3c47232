"""Ingest on small inputs: every format read through unstructured, JSONL and datasets; bad files quarantined."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import CORPUS
from tasks.executor import DaskSettings
from tasks.ingest import IngestSettings, ingest_path, ingest_to_snapshot
from tasks import snapshot

SETTINGS = IngestSettings()


def ingest_one(path: Path, root: Path | None = None) -> list[dict]:
    return list(ingest_path(path, path.name, (root or path.parent).resolve(), SETTINGS))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("plays/passage-00.txt", "First Citizen"),
        ("notes/ops-note-0.md", "quarterly retraining review"),
        ("notes/page-0.html", "Passage 0"),
        ("mail/message-0.eml", "next retraining run starts on Friday"),
        ("office/reading-0.docx", "Reading 0"),
        ("office/handbook.pdf", "how the team retrains its language models"),
    ],
)
def test_unstructured_formats_give_text_and_metadata(name, expected):
    (doc,) = ingest_one(CORPUS / name)
    assert "quarantine" not in doc, doc
    assert expected in doc["text"]
    meta = json.loads(doc["metadata"])
    assert meta["filename"] == Path(name).name and meta["title"]
    assert len(doc["doc_id"]) == 20 and doc["mime_type"]


def test_pdf_metadata_has_pages():
    (doc,) = ingest_one(CORPUS / "office/handbook.pdf")
    assert json.loads(doc["metadata"])["pages"] == 1


def test_corrupt_pdf_is_quarantined_with_reason(tmp_path):
    bad = tmp_path / "cut.pdf"
    bad.write_bytes((CORPUS / "office/handbook.pdf").read_bytes()[:300])
    (item,) = ingest_one(bad)
    assert item["quarantine"]["reason"] == "corrupt PDF"


def test_binary_file_named_txt_is_quarantined(tmp_path):
    bad = tmp_path / "image.txt"
    bad.write_bytes(bytes(range(256)) * 40)
    (item,) = ingest_one(bad)
    assert item["quarantine"] == {"source": "image.txt", "reason": "binary content in a text file",
                                  "detail": item["quarantine"]["detail"]}


def test_empty_and_unsupported_files_are_quarantined(tmp_path):
    (tmp_path / "empty.md").write_bytes(b"")
    (tmp_path / "table.xyz").write_text("a,b\n1,2\n")
    assert ingest_one(tmp_path / "empty.md")[0]["quarantine"]["reason"] == "empty file"
    assert ingest_one(tmp_path / "table.xyz")[0]["quarantine"]["reason"] == "unsupported type"


def test_jsonl_carries_fields_and_quarantines_bad_lines(tmp_path):
    f = tmp_path / "data.jsonl"
    f.write_text('{"text": "hello there", "lang": "en"}\n{broken\n{"body": "no text"}\n\n{"text": "second"}\n')
    items = ingest_one(f)
    docs = [i for i in items if "quarantine" not in i]
    bad = [i["quarantine"] for i in items if "quarantine" in i]
    assert [d["text"] for d in docs] == ["hello there", "second"]
    assert json.loads(docs[0]["metadata"]) == {"lang": "en"}
    assert [(b["reason"], b["position"]) for b in bad] == [("broken JSON line", 2), ("missing text field 'text'", 3)]


def test_hf_datasets_parquet_and_saved_folder(tmp_path):
    import datasets

    (doc, _) = ingest_one(CORPUS / "records/archive.parquet")
    assert doc["text"].startswith("From the archive.") and json.loads(doc["metadata"])["kind"] == "archive"
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": ["one document here", "another one"], "n": [1, 2]}).save_to_disk(str(saved))
    docs = list(ingest_path(saved, "saved", tmp_path, SETTINGS))
    assert [d["text"] for d in docs] == ["one document here", "another one"]


def test_symlink_out_of_root_is_quarantined(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret " * 20)
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.txt").symlink_to(outside)
    (item,) = list(ingest_path(root / "link.txt", "root/link.txt", root.resolve(), SETTINGS))
    assert item["quarantine"]["reason"] == "symlink outside the data root"


def test_ingest_snapshot_counts_everything_and_is_reused(tmp_path, corpus_copy):
    store = tmp_path / "store"
    ref = ingest_to_snapshot([corpus_copy], SETTINGS, DaskSettings(), store)
    stats = ref.manifest()["stats"]
    files = sum(1 for p in corpus_copy.rglob("*") if p.is_file())
    assert stats["inputs"] == files and stats["quarantined"] == 1
    assert ref.rows == stats["documents"] >= files - 1
    again = ingest_to_snapshot([corpus_copy], SETTINGS, DaskSettings(), store)
    assert again.reused and again.fingerprint == ref.fingerprint
    (corpus_copy / "plays/passage-00.txt").write_text("Changed text of the first passage, long enough to keep.")
    changed = ingest_to_snapshot([corpus_copy], SETTINGS, DaskSettings(), store)
    assert not changed.reused and changed.path != ref.path
