"""A document file's text and metadata through ``unstructured``'s partitioners, one per format.

Offline: PDF with the ``fast`` strategy by default, which needs no hub weights. Text formats are
decoded by ``tasks.data.ingest.text_decoding`` first; what ``check_file`` learnt (PDF pages and title, email
subject and attachments) comes in as ``known``.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.data.ingest.file_formats import FORMATS, TEXT_READERS, Format, unsupported, missing_dependencies
from tasks.data.ingest.checks import email_bytes
from tasks.data.ingest.quarantine import Quarantined
from tasks.data.ingest.text_decoding import CONTROL_CHARS, decode_text

if TYPE_CHECKING:
    from tasks.data.ingest.settings import IngestSettings


def _partitioner(reader: str, settings: IngestSettings):
    """unstructured's partition function for a reader (imported lazily: they are slow to import)."""
    if reader == "text":
        from unstructured.partition.text import partition_text as part
    elif reader == "md":
        from unstructured.partition.md import partition_md as part
    elif reader == "html":
        from unstructured.partition.html import partition_html as part
    elif reader == "xml":
        from unstructured.partition.xml import partition_xml as part
    elif reader == "csv":
        from unstructured.partition.csv import partition_csv as part
    elif reader == "tsv":
        from unstructured.partition.tsv import partition_tsv as part
    elif reader == "eml":
        from unstructured.partition.email import partition_email as part
    elif reader == "msg":
        from unstructured.partition.msg import partition_msg

        part = functools.partial(partition_msg, process_attachments=False)
    elif reader == "docx":
        from unstructured.partition.docx import partition_docx as part
    elif reader == "pdf":
        from unstructured.partition.pdf import partition_pdf

        part = functools.partial(partition_pdf, strategy=settings.pdf_strategy, languages=["eng"])
    elif reader == "pptx":
        from unstructured.partition.pptx import partition_pptx as part
    elif reader == "xlsx":
        from unstructured.partition.xlsx import partition_xlsx as part
    elif reader == "odt":
        from unstructured.partition.odt import partition_odt as part
    elif reader == "doc":
        from unstructured.partition.doc import partition_doc as part
    elif reader == "ppt":
        from unstructured.partition.ppt import partition_ppt as part
    else:
        raise KeyError(reader)
    return part


def _pandoc_partitioner(suffix: str):
    if suffix == ".epub":
        from unstructured.partition.epub import partition_epub as part
    elif suffix == ".rtf":
        from unstructured.partition.rtf import partition_rtf as part
    elif suffix == ".rst":
        from unstructured.partition.rst import partition_rst as part
    else:
        from unstructured.partition.org import partition_org as part
    return part


_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)


def partition_file(path: Path, settings: IngestSettings, *,
                   known: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """Text and metadata of one document file through unstructured.

    ``known`` is what ``check_file`` learnt (PDF pages and title, email subject). The metadata holds
    ``title``, ``filename``, ``pages`` and ``page_numbers`` (pages with text) where the format has
    pages, ``encoding`` for text files, ``languages``; the source path is the record's ``source``.
    """
    import html
    import io

    suffix = path.suffix.lower()
    fmt = FORMATS.get(suffix)
    if fmt is None or missing_dependencies(suffix):
        raise unsupported(path)
    meta: dict[str, Any] = dict(known or {})
    kwargs: dict[str, Any] = {}
    if fmt.reader in TEXT_READERS:
        text, encoding = decode_text(path.read_bytes(), suffix)
        meta["encoding"] = encoding
        if not text.strip():
            raise Quarantined("no text extracted", f"only whitespace ({encoding})")
        if fmt.reader == "text" and (path.stat().st_size > settings.plain_text_mb * 1024 * 1024
                                     or max(map(len, _LINES.findall(text)), default=0) > PLAIN_LINE_CHARS):
            return _plain_text(path, text, meta)
        if fmt.reader in {"csv", "tsv"}:
            kwargs = {"file": io.BytesIO(text.encode("utf-8"))}
            if fmt.reader == "csv":
                kwargs["encoding"] = "utf-8"
        else:
            kwargs = {"text": text}
        if fmt.reader == "html" and "title" not in meta:
            m = _HTML_TITLE.search(text[:65536])
            if m and m.group(1).strip():
                meta["title"] = " ".join(html.unescape(m.group(1)).split())
    part = _pandoc_partitioner(suffix) if fmt.reader == "pandoc" else _partitioner(fmt.reader, settings)
    if fmt.reader == "eml":
        kwargs = {"file": io.BytesIO(email_bytes(path)), "metadata_filename": path.name,
                  "process_attachments": "attachments" in meta}
    try:
        elements = part(**kwargs) if kwargs else part(filename=str(path))
    except Quarantined:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise Quarantined("unreadable", f"{type(exc).__name__}: {first}".rstrip(": ")) from exc
    texts = [str(e.text).strip() for e in elements if getattr(e, "text", None) and str(e.text).strip()]
    if not texts:
        raise Quarantined("no text extracted", _why_no_text(path, fmt, elements, meta, settings))
    joined = "\n\n".join(texts)
    sample = joined[:8192]
    controls = len(CONTROL_CHARS.findall(sample))
    if controls > 0.05 * len(sample):
        raise Quarantined("unreadable", f"the extracted text is {100 * controls // len(sample)}% control "
                                        "characters (a wrong encoding or a binary file)")
    title = next((str(e.text).strip() for e in elements if e.category == "Title" and str(e.text).strip()), None)
    subject = next((e.metadata.subject for e in elements if getattr(e.metadata, "subject", None)), None)
    page_numbers = sorted({e.metadata.page_number for e in elements if getattr(e.metadata, "page_number", None)})
    sheets = list(dict.fromkeys(e.metadata.page_name for e in elements if getattr(e.metadata, "page_name", None)))
    languages = sorted({lang for e in elements for lang in (getattr(e.metadata, "languages", None) or [])})
    meta.update(filename=path.name, elements=len(elements))
    meta["title"] = meta.get("title") or subject or title or path.stem
    if page_numbers:
        meta["page_numbers"] = page_numbers
        meta.setdefault("pages", max(page_numbers))
    if sheets:
        meta["sheets"] = sheets
    if languages:
        meta["languages"] = languages
    return joined, meta


# unstructured's partition_text spends ~0.2 ms per character of a long line (a 50,000-character line: 10 s,
# a 200,000-character one: 48 s and 1.7 GB): text files with a line longer than this are split here
PLAIN_LINE_CHARS = 5_000
_LINES = re.compile(r"[^\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]+")  # str.splitlines()'s line breaks


def _plain_text(path: Path, text: str, meta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A large plain text file's non-blank lines, stripped and joined by blank lines, as unstructured's
    partition_text joins its one-element-per-line output (less its bullet stripping and element types).

    Used for text files over ``ingest.plain_text_mb`` or with a line over ``PLAIN_LINE_CHARS``: unstructured
    classifies every line (title, list item, narrative) and keeps an element object for each, at ~80 KB/s
    for short lines and ~5 KB/s for long ones (a 50 MB file took 84 s and 2.7 GB of memory, a 2 MB
    single-line file 169 s and 3.6 GB); this takes ~1 s for 50 MB and a few copies of the text.
    """
    joined = "\n\n".join(m.group().strip() for m in _LINES.finditer(text) if not m.group().isspace())
    if not joined:
        raise Quarantined("no text extracted", "only whitespace and line breaks")
    meta.update(filename=path.name, title=meta.get("title") or path.stem, elements=joined.count("\n\n") + 1,
                reader="plain lines")
    return joined, meta


def _why_no_text(path: Path, fmt: Format, elements: list, meta: dict, settings: IngestSettings) -> str:
    if fmt.reader == "pdf":
        return (f"no text layer in {meta.get('pages', '?')} page(s): scanned or image-only; OCR needs "
                f"ingest.pdf_strategy 'hi_res' or 'ocr_only' and their models (now {settings.pdf_strategy!r})")
    if fmt.reader == "html":
        from lxml import etree

        parser = etree.HTMLParser()
        try:
            etree.fromstring(path.read_bytes()[: 1 << 20], parser)
        except Exception:
            pass
        if any("depth" in str(err.message).lower() for err in parser.error_log):
            return "HTML nested deeper than the parser's limit (256 levels)"
    if fmt.reader in {"eml", "msg"}:
        return "the message has no body text" + (" (attachments not read)" if "attachments_not_read" in meta else "")
    return f"{len(elements)} elements, none with text"
