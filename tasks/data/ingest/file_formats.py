"""The file formats ingest reads: each suffix's MIME type, reader and what that reader needs installed.

txt, md, html, xml, csv, tsv, eml, msg, docx and pdf are read through ``unstructured`` with its base
install; pptx, xlsx/xls, epub, rtf, odt, rst, org, doc and ppt need extra dependencies
(``missing_dependencies``); without them each such file is quarantined as "unsupported type" with a
detail naming what to install.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from tasks.data.ingest.quarantine import Quarantined

@dataclass(frozen=True)
class Format:
    """How one file suffix is read: its MIME type, the reader, and what the reader needs installed."""

    mime: str
    reader: str
    needs: tuple[str, ...] = ()
    container: str | None = None  # the member a zip container of this type must hold


_PANDOC = ("pandoc",)
FORMATS: dict[str, Format] = {
    ".txt": Format("text/plain", "text"),
    ".text": Format("text/plain", "text"),
    ".log": Format("text/plain", "text"),
    ".md": Format("text/markdown", "md"),
    ".markdown": Format("text/markdown", "md"),
    ".html": Format("text/html", "html"),
    ".htm": Format("text/html", "html"),
    ".xhtml": Format("text/html", "html"),
    ".xml": Format("application/xml", "xml"),
    ".csv": Format("text/csv", "csv", ("pandas",)),
    ".tsv": Format("text/tab-separated-values", "tsv", ("pandas",)),
    ".eml": Format("message/rfc822", "eml"),
    ".msg": Format("application/vnd.ms-outlook", "msg", ("oxmsg",)),
    ".docx": Format("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx",
                    ("docx",), "word/document.xml"),
    ".pdf": Format("application/pdf", "pdf", ("pdfminer",)),
    ".pptx": Format("application/vnd.openxmlformats-officedocument.presentationml.presentation", "pptx",
                    ("pptx",), "ppt/presentation.xml"),
    ".xlsx": Format("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx",
                    ("openpyxl", "xlrd", "msoffcrypto", "pandas"), "xl/workbook.xml"),
    ".xls": Format("application/vnd.ms-excel", "xlsx", ("openpyxl", "xlrd", "msoffcrypto", "pandas")),
    ".epub": Format("application/epub+zip", "pandoc", _PANDOC, "META-INF/container.xml"),
    ".rtf": Format("application/rtf", "pandoc", _PANDOC),
    ".rst": Format("text/x-rst", "pandoc", _PANDOC),
    ".org": Format("text/org", "pandoc", _PANDOC),
    ".odt": Format("application/vnd.oasis.opendocument.text", "odt", (*_PANDOC, "docx"), "content.xml"),
    ".doc": Format("application/msword", "doc", ("soffice", "docx")),
    ".ppt": Format("application/vnd.ms-powerpoint", "ppt", ("soffice", "pptx")),
}
# what to install for each piece a reader needs (pip names, or the system program)
INSTALL_HINTS = {
    "pandas": "pip package pandas",
    "oxmsg": "pip package python-oxmsg",
    "docx": "pip package python-docx",
    "pdfminer": "pip package pdfminer.six",
    "pptx": "pip package python-pptx",
    "openpyxl": "pip package openpyxl",
    "xlrd": "pip package xlrd",
    "msoffcrypto": "pip package msoffcrypto-tool",
    "pypandoc": "pip package pypandoc-binary (the pypandoc module with pandoc bundled)",
    "pandoc": "a pandoc binary (pip package pypandoc-binary, or the system's pandoc beside pypandoc)",
    "soffice": "LibreOffice (soffice on PATH)",
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".heic", ".webp"}
TEXT_READERS = {"text", "md", "html", "csv", "tsv"}  # decoded by tasks.data.ingest.text_decoding, not unstructured
# kept for callers of the first version
UNSTRUCTURED_TYPES = {suffix: fmt.mime for suffix, fmt in FORMATS.items()}
TEXT_LIKE = {s for s, f in FORMATS.items() if f.reader in TEXT_READERS | {"eml"}} | {".jsonl"}


@functools.cache
def _missing(piece: str) -> str | None:
    """Why ``piece`` (a Python module, or 'pandoc' / 'soffice') cannot be used; None when it can."""
    import shutil

    if piece == "pandoc":
        if importlib.util.find_spec("pypandoc") is None:
            return INSTALL_HINTS["pypandoc"]
        try:
            import pypandoc

            pypandoc.get_pandoc_version()  # looks for a binary; never downloads one
            return None
        except Exception:  # pypandoc raises OSError when it finds no binary
            return INSTALL_HINTS["pandoc"]
    if piece == "soffice":
        return None if shutil.which("soffice") or shutil.which("libreoffice") else INSTALL_HINTS["soffice"]
    try:
        found = importlib.util.find_spec(piece) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else INSTALL_HINTS.get(piece, f"Python module {piece}")


def missing_dependencies(suffix: str) -> list[str]:
    """What must be installed before files with this suffix can be read (empty: nothing)."""
    fmt = FORMATS.get(suffix.lower())
    if fmt is None:
        return []
    return list(dict.fromkeys(m for m in map(_missing, fmt.needs) if m))


def unsupported(path: Path) -> Quarantined:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return Quarantined("unsupported type", f"{suffix}: an image needs OCR (tesseract and layout models "
                                               "from the hub), not available offline")
    if suffix in FORMATS:
        return Quarantined("unsupported type", f"{suffix} needs " + "; ".join(missing_dependencies(suffix)))
    shown = f"unknown suffix {suffix!r}" if suffix else "no suffix"
    return Quarantined("unsupported type", f"{shown} ({path.name})")
