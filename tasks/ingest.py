"""Ingest: every input becomes documents, or a quarantine row saying why not.

Inputs
  * files and folders under the data paths (``discover``), read by suffix through ``FORMATS``:
    txt, md, html, xml, csv, tsv, eml, msg, docx, pdf through ``unstructured`` (offline; PDF with the
    ``fast`` strategy, which needs no hub weights); pptx, xlsx/xls, epub, rtf, odt, rst, org, doc and
    ppt through ``unstructured`` too, when their extra dependencies are installed (otherwise each file
    is quarantined as "unsupported type" with a detail naming the missing package);
  * JSONL with a text field, and local Hugging Face ``datasets`` (Parquet / JSON files, saved-to-disk
    folders);
  * Hugging Face hub datasets named in ``ingest.hub_datasets`` (``owner/name[:config][@revision]``).
    They need a network: the revision is resolved to a commit before anything is read, and that commit
    is part of the input fingerprint. Offline (``HF_HUB_OFFLINE=1``) ingest stops at once with one line
    naming the dataset and the setting (``HubDatasetUnavailable``). Hub datasets are a setting and not a
    ``data.paths`` entry because data paths are local paths (resolved against the config's folder).

Decisions
  * Text files (txt, md, html, csv, tsv, rst, org) are decoded here, not by ``unstructured``: byte-order
    mark, then strict UTF-8, then (HTML) a declared charset, then statistical detection. When detection
    lands on a Latin single-byte code page and the bytes read as plain Western text in windows-1252,
    windows-1252 wins (the WHATWG default; detectors often pick cp1250 for short French/Spanish text).
    Text that is mostly valid UTF-8 with a few bad bytes is read as UTF-8 with U+FFFD replacements.
  * Encrypted PDFs are read when their user password is empty (what every viewer does; the owner
    password only sets permissions) and quarantined as "encrypted PDF" when a password is needed.
    Copy-protected PDFs (extraction not allowed by their permissions) are read unless
    ``ingest.pdf_copy_protected`` is "quarantine"; either way the metadata says ``copy_protected``.
  * Email attachments are partitioned only when every MIME part is text or mail (unstructured would
    send images and scanned PDFs to layout models from the hub); otherwise their names are listed as
    ``attachments_not_read``. Outlook .msg attachments are not read. PGP/S-MIME mail is quarantined.
  * A symlinked folder is never descended unless ``ingest.follow_symlinks`` is set and it leads outside
    the data root (inside the root its target is read where it lies); it is quarantined otherwise.

Quarantine reasons are the fixed strings in ``QUARANTINE_REASONS``; the detail says more (the file's
missing dependency, the parser's error, the setting at fault).
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import importlib.util
import json
import os
import re
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.records import make_document

CODE_VERSION = "ingest-2"

QUARANTINE_REASONS = frozenset({
    "empty file",
    "file too large",
    "unsupported type",              # unknown suffix, or a format whose dependency is not installed
    "symlink outside the data root",
    "symlinked folder",
    "binary content in a text file",
    "encrypted PDF",
    "copy-protected PDF",            # only with ingest.pdf_copy_protected = "quarantine"
    "corrupt PDF",
    "encrypted email",
    "unreadable",                    # the parser failed, or the file is not what its suffix says
    "no text extracted",
    "broken JSON line",
    "missing text field",
    "non-string text field",
    "unreadable dataset",
})


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
TEXT_READERS = {"text", "md", "html", "csv", "tsv"}  # decoded here (see the module's docstring)
DATASET_FILES = {".parquet": "parquet", ".json": "json"}
HUB_PREFIX = "hf://datasets/"
# kept for callers of the first version
UNSTRUCTURED_TYPES = {suffix: fmt.mime for suffix, fmt in FORMATS.items()}
TEXT_LIKE = {s for s, f in FORMATS.items() if f.reader in TEXT_READERS | {"eml"}} | {".jsonl"}

_HUB_SPEC = re.compile(r"^(?P<repo>[\w.-]+(?:/[\w.-]+)?)(?::(?P<config>[\w.-]+))?(?:@(?P<revision>[\w./-]+))?$")


class IngestSettings(BaseModel):
    """How raw files become documents."""

    model_config = ConfigDict(extra="forbid")

    pdf_strategy: Literal["fast", "auto", "hi_res", "ocr_only"] = Field(
        "fast", description="unstructured's PDF strategy; only 'fast' works without hub weights"
    )
    pdf_copy_protected: Literal["read", "quarantine"] = Field(
        "read", description="PDFs whose permissions forbid text extraction: read them, or quarantine them"
    )
    text_field: str = Field("text", min_length=1, description="field holding the text in JSONL/datasets")
    max_file_mb: float = Field(64.0, gt=0, description="larger files are quarantined")
    shard_size: int = Field(2000, ge=1, description="documents per Parquet shard")
    follow_symlinks: bool = Field(False, description="read symlinks that point outside the data root")
    hub_datasets: list[str] = Field(
        default_factory=list,
        description="Hugging Face hub datasets to ingest, 'owner/name[:config][@revision]'; need a network",
    )
    hub_split: str | None = Field(None, description="the split of each hub dataset to read; null: all splits")

    @field_validator("hub_datasets")
    @classmethod
    def _hub_ids(cls, value: list[str]) -> list[str]:
        out = []
        for spec in value:
            spec = spec.strip().removeprefix(HUB_PREFIX)
            if not _HUB_SPEC.match(spec):
                raise ValueError(f"{spec!r} is not a hub dataset id (owner/name[:config][@revision])")
            out.append(spec)
        return out


class Quarantined(Exception):
    """A file (or line) that cannot be ingested, with the reason."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


class HubDatasetUnavailable(ConnectionError):
    """A dataset in ``ingest.hub_datasets`` cannot be reached; the message is one line naming it."""


def quarantine_row(source: str, reason: str, detail: str = "", position: int | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"source": source, "reason": reason, "detail": detail[:500]}
    if position is not None:
        row["position"] = position
    return row


# ---------------------------------------------------------------------------------------------- discover

def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file())


def discover(paths: list[str | Path], settings: IngestSettings) -> Iterator[tuple[Path, str, Path]]:
    """(file or dataset folder, source name, data root) for everything under ``paths``, sorted.

    A data path that does not exist raises FileNotFoundError naming it. Files are yielded whatever they
    are (``ingest_path`` quarantines what it cannot read), so nothing under a data path is dropped
    silently; symlinked folders are yielded as inputs too (quarantined) unless ``follow_symlinks`` lets
    the walk into one that leads outside the data root. Hidden files and folders (a name starting with
    '.', like .git or .DS_Store) under a data folder are skipped.
    """
    for raw in paths:
        root = Path(raw)
        if not root.exists():
            kind = "a broken symlink" if root.is_symlink() else "no such file or folder"
            raise FileNotFoundError(f"data path does not exist: {root} ({kind})")
        if root.is_file() or _is_saved_dataset(root):
            yield root, root.name, root.resolve()  # named explicitly: read even when it is a symlink
            continue
        real_root = root.resolve()
        yield from _walk(root, Path(root.name), real_root, settings, {real_root})


def _walk(folder: Path, name: Path, real_root: Path, settings: IngestSettings, seen: set[Path]):
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        rel = name / here.relative_to(folder)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for d in list(dirnames):
            sub = here / d
            if sub.is_symlink():
                dirnames.remove(d)
                target = sub.resolve()
                if settings.follow_symlinks and not target.is_relative_to(real_root) and target not in seen:
                    yield from _walk(sub, rel / d, real_root, settings, seen | {target})
                else:
                    yield sub, str(rel / d), real_root
            elif _is_saved_dataset(sub):
                dirnames.remove(d)
                yield sub, str(rel / d), real_root
        for fname in sorted(filenames):
            if fname.startswith("."):
                continue
            yield here / fname, str(rel / fname), real_root


def _hub_items(settings: IngestSettings) -> list[tuple[str, str, str]]:
    return [(HUB_PREFIX + spec, HUB_PREFIX + spec, "") for spec in settings.hub_datasets]


def fingerprint_inputs(paths: list[str | Path], settings: IngestSettings,
                       hub_commits: dict[str, str] | None = None) -> str:
    """Content hash of every input (name, bytes; hub datasets: the commit their revision resolves to)."""
    h = hashlib.sha256()
    for path, source, _root in discover(paths, settings):
        if path.is_symlink() and path.is_dir():  # a symlinked folder is quarantined, never read
            h.update(f"{source}\x00->{path.resolve()}\x00".encode())
            continue
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            h.update(f"{source}\x00{f.name}\x00".encode())
            try:
                if not stat.S_ISREG(f.stat().st_mode):  # a fifo or device would block or never end
                    h.update(b"not a regular file")
                    continue
                with open(f, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
            except OSError as exc:  # unreadable files are quarantined later; hash the error
                h.update(repr(exc).encode())
    for spec in settings.hub_datasets:
        commit = (hub_commits or {}).get(spec) or resolve_hub_revision(spec)
        h.update(f"{HUB_PREFIX}{spec}\x00{commit}\x00{settings.hub_split}".encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- checks

def check_file(path: Path, root: Path, settings: IngestSettings) -> dict[str, Any]:
    """Raise Quarantined for files that must not reach a parser; else what the checks learnt (metadata)."""
    if path.is_symlink() and not settings.follow_symlinks:
        target = path.resolve()
        if not target.is_relative_to(root):
            raise Quarantined("symlink outside the data root", f"{path.name} -> {target}")
    if not path.exists():
        raise Quarantined("unreadable", f"broken symlink -> {os.readlink(path)}")
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise Quarantined("unreadable", "not a regular file (a fifo, socket or device)")
    if st.st_size == 0:
        raise Quarantined("empty file")
    if st.st_size > settings.max_file_mb * 1024 * 1024:
        raise Quarantined("file too large", f"{st.st_size} bytes > ingest.max_file_mb={settings.max_file_mb}")
    suffix = path.suffix.lower()
    if suffix in {".eml", ".jsonl"}:
        with open(path, "rb") as fh:
            head = fh.read(8192)
        if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 has NULs
            raise Quarantined("binary content in a text file", f"NUL bytes in the first {len(head)} bytes")
    if suffix == ".eml":
        return _check_email(path)
    if suffix == ".pdf":
        return _check_pdf(path, settings)
    fmt = FORMATS.get(suffix)
    if fmt is not None and fmt.container:
        _check_container(path, suffix, fmt.container)
    return {}


def _check_pdf(path: Path, settings: IngestSettings) -> dict[str, Any]:
    """Page count, title and protection of a PDF; quarantine it when it is encrypted or broken."""
    from pdfminer.pdfdocument import PDFDocument, PDFEncryptionError, PDFPasswordIncorrect
    from pdfminer.pdfpage import PDFPage
    from pdfminer.pdfparser import PDFParser, PDFSyntaxError
    from pdfminer.pdftypes import resolve1
    from pdfminer.utils import decode_text as pdf_string

    try:
        with open(path, "rb") as fh:
            doc = PDFDocument(PDFParser(fh))  # the empty user password: raises when one is needed
            pages = sum(1 for _ in PDFPage.create_pages(doc))
            info = resolve1(doc.info[0]) if doc.info else {}
            title = resolve1(info.get("Title")) if isinstance(info, dict) else None
            encrypted, extractable = doc.encryption is not None, doc.is_extractable
    except PDFPasswordIncorrect as exc:
        raise Quarantined("encrypted PDF", "a user password is needed to read it") from exc
    except PDFEncryptionError as exc:
        raise Quarantined("encrypted PDF", f"unsupported encryption: {exc}") from exc
    except PDFSyntaxError as exc:
        raise Quarantined("corrupt PDF", str(exc)) from exc
    except Exception as exc:  # pdfminer raises many types on broken files
        raise Quarantined("corrupt PDF", f"{type(exc).__name__}: {exc}") from exc
    if pages == 0:
        raise Quarantined("corrupt PDF", "no pages in the page tree")
    if not extractable and settings.pdf_copy_protected == "quarantine":
        raise Quarantined("copy-protected PDF", "its permissions forbid text extraction "
                                                "(ingest.pdf_copy_protected=quarantine)")
    if isinstance(title, bytes):
        title = pdf_string(title)
    meta: dict[str, Any] = {"pages": pages}
    if isinstance(title, str) and title.strip("\x00 \t\r\n"):
        meta["title"] = title.strip("\x00 \t\r\n")
    if encrypted:
        meta["encrypted"] = True
    if not extractable:
        meta["copy_protected"] = True
    return meta


def _check_email(path: Path) -> dict[str, Any]:
    """Quarantine encrypted mail; the subject as title; the attachments, and whether they can be read."""
    from email import policy
    from email.parser import BytesParser

    try:
        msg = BytesParser(policy=policy.default).parsebytes(_email_bytes(path))
        ctype = msg.get_content_type()
        attachments = [a.get_filename() or a.get_content_type() for a in msg.iter_attachments()] \
            if msg.is_multipart() else []
        # attachments are read only when every part is text or mail: unstructured would send images
        # (and scanned PDFs) to layout models from the hub
        text_only = all(p.get_content_maintype() in {"text", "message", "multipart"} for p in msg.walk())
    except Exception:  # leave a malformed message to unstructured, which says more
        return {}
    if ctype == "multipart/encrypted" or ctype in {"application/pkcs7-mime", "application/x-pkcs7-mime"}:
        raise Quarantined("encrypted email", f"{ctype} (PGP/MIME or S/MIME): the body cannot be read")
    meta: dict[str, Any] = {}
    if msg.get("subject"):
        meta["title"] = str(msg["subject"]).strip()
    if attachments:
        meta["attachments" if text_only else "attachments_not_read"] = attachments
    return meta


def _email_bytes(path: Path) -> bytes:
    """A message's bytes; one saved as UTF-16/32 text (with a byte-order mark) is re-encoded as UTF-8."""
    data = path.read_bytes()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF8)):
        enc = "utf-8-sig" if data.startswith(codecs.BOM_UTF8) else "utf-16"
        try:
            return data.decode(enc).encode("utf-8")
        except UnicodeDecodeError as exc:
            raise Quarantined("unreadable", f"invalid {enc} after its byte-order mark at byte {exc.start}") from None
    return data


def _check_container(path: Path, suffix: str, member: str) -> None:
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        raise Quarantined("unreadable", f"an OLE2 container, not the zip a {suffix} must be: a password-"
                                        "protected Office file, or a legacy binary format renamed")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise Quarantined("unreadable", f"not a valid {suffix} (zip container): {exc}") from exc
    if member not in names:
        shown = ", ".join(sorted(names)[:5]) or "nothing"
        raise Quarantined("unreadable", f"a zip without {member}, so not a {suffix} (it holds {shown})")


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


def _unsupported(path: Path) -> Quarantined:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return Quarantined("unsupported type", f"{suffix}: an image needs OCR (tesseract and layout models "
                                               "from the hub), not available offline")
    if suffix in FORMATS:
        return Quarantined("unsupported type", f"{suffix} needs " + "; ".join(missing_dependencies(suffix)))
    shown = f"unknown suffix {suffix!r}" if suffix else "no suffix"
    return Quarantined("unsupported type", f"{shown} ({path.name})")


# ---------------------------------------------------------------------------------------------- text

_HTML_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
_LATIN_FAMILY = {codecs.lookup(n).name for n in (
    "cp1250", "cp1252", "cp1254", "cp1257", "latin_1", "iso8859_2", "iso8859_3", "iso8859_4", "iso8859_9",
    "iso8859_10", "iso8859_13", "iso8859_14", "iso8859_15", "iso8859_16", "mac_roman", "mac_latin2", "cp850",
    "cp437", "ascii")}
_WESTERN_EXTRA = set("€£¥¢©®°±«»¡¿–—‘’‚“”„…•·§¶ªº×÷´¨ŒœŠšŽžŸƒˆ˜†‡‰‹›™ ")
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")  # C0 but tab/newlines/form feed, DEL, C1


def _codec(name: str) -> str | None:
    try:
        return codecs.lookup(name.strip().lower()).name
    except LookupError:
        return None


def _reads_as_western(data: bytes) -> bool:
    """True when the bytes decode in windows-1252 to letters and ordinary Western punctuation only."""
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        return False
    return all(ch.isascii() or ch in _WESTERN_EXTRA or (ch.isalpha() and ord(ch) < 0x250)
               for ch in set(text))


def decode_text(data: bytes, suffix: str = "") -> tuple[str, str]:
    """(text, encoding) of a text file's bytes; Quarantined when they are not text. See the docstring."""
    for bom, enc in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                     (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                     (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            try:
                return _check_controls(data.decode(enc), enc), enc
            except UnicodeDecodeError as exc:
                raise Quarantined("unreadable", f"invalid {enc} after its byte-order mark: {exc.reason} "
                                                f"at byte {exc.start}") from None
    head = data[:8192]
    if b"\x00" in head:
        even, odd = head[0::2].count(0), head[1::2].count(0)
        half = max(1, len(head) // 2)
        enc = "utf-16-le" if odd > 0.3 * half and even < 0.02 * half else \
            "utf-16-be" if even > 0.3 * half and odd < 0.02 * half else None
        if enc:
            try:
                return _check_controls(data.decode(enc), enc), enc
            except UnicodeDecodeError:
                pass
        raise Quarantined("binary content in a text file", f"NUL bytes in the first {len(head)} bytes")
    try:
        return _check_controls(data.decode("utf-8"), "utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    replaced = data.decode("utf-8", errors="replace")
    bad = len(re.findall("\ufffd+", replaced))  # runs of bad bytes
    good = sum(1 for ch in replaced if ch > "\x7f" and ch != "\ufffd")
    if good > 0 and bad <= good:  # UTF-8 with a few broken bytes, not another encoding
        return _check_controls(replaced, "utf-8"), f"utf-8 ({bad} invalid byte sequences replaced)"
    declared = None
    if suffix in {".html", ".htm", ".xhtml"}:
        m = _HTML_CHARSET.search(head[:4096])
        declared = _codec(m.group(1).decode("ascii")) if m else None
        if declared in {"iso8859-1", "ascii"}:
            declared = "cp1252"  # as browsers do (WHATWG encoding standard)
    if declared and declared not in {"utf-8", "utf-16", "utf-32"}:
        return _check_controls(data.decode(declared, errors="replace"), declared), declared
    from charset_normalizer import from_bytes

    best = from_bytes(data[: 1 << 16], enable_fallback=False).best()
    if best is None:
        raise Quarantined("binary content in a text file", "no text encoding fits its bytes")
    enc = _codec(best.encoding) or best.encoding
    if enc in _LATIN_FAMILY and enc != "cp1252" and _reads_as_western(data):
        enc = "cp1252"
    return _check_controls(data.decode(enc, errors="replace"), enc), enc


def _check_controls(text: str, encoding: str) -> str:
    sample = text[:8192]
    controls = len(_CONTROL.findall(sample))
    if sample and controls > 0.05 * len(sample):
        raise Quarantined("binary content in a text file",
                          f"{controls} control characters in the first {len(sample)} characters ({encoding})")
    return text


# ---------------------------------------------------------------------------------------------- partition

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
        raise _unsupported(path)
    meta: dict[str, Any] = dict(known or {})
    kwargs: dict[str, Any] = {}
    if fmt.reader in TEXT_READERS:
        text, encoding = decode_text(path.read_bytes(), suffix)
        meta["encoding"] = encoding
        if not text.strip():
            raise Quarantined("no text extracted", f"only whitespace ({encoding})")
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
        kwargs = {"file": io.BytesIO(_email_bytes(path)), "metadata_filename": path.name,
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
    controls = len(_CONTROL.findall(sample))
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


# ---------------------------------------------------------------------------------------------- records

def read_jsonl(path: Path, source: str, settings: IngestSettings) -> Iterator[dict[str, Any]]:
    """Documents from a JSONL file; a broken line or a missing text field yields a quarantine row."""
    field = settings.text_field
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                yield {"quarantine": quarantine_row(source, "broken JSON line", str(exc), lineno)}
                continue
            if not isinstance(obj, dict) or field not in obj:
                yield {"quarantine": quarantine_row(source, "missing text field",
                                                    f"no '{field}' (ingest.text_field)", lineno)}
                continue
            if not isinstance(obj[field], str):
                yield {"quarantine": quarantine_row(source, "non-string text field",
                                                    f"'{field}' is {type(obj[field]).__name__}", lineno)}
                continue
            text = obj.pop(field)
            meta = {k: v for k, v in obj.items() if k not in {"doc_id", "source"}}
            yield make_document(source, lineno, text, "application/jsonl", meta)


def read_dataset(path: Path, source: str, settings: IngestSettings) -> Iterator[dict[str, Any]]:
    """Documents from a local Hugging Face dataset: Parquet/JSON files or a saved-to-disk folder."""
    import datasets

    try:
        if path.is_dir():
            loaded = datasets.load_from_disk(str(path))
        else:
            loaded = datasets.load_dataset(DATASET_FILES[path.suffix.lower()], data_files=str(path), split="train")
    except Exception as exc:
        raise Quarantined("unreadable dataset", f"{type(exc).__name__}: {exc}") from exc
    yield from _dataset_rows(loaded, source, settings, "application/x-hf-dataset")


def _dataset_rows(loaded, source: str, settings: IngestSettings, mime: str) -> Iterator[dict[str, Any]]:
    import datasets

    splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(getattr(loaded, "split", None)
                                                                                or "train", loaded)]
    field = settings.text_field
    for split, ds in splits:
        split = str(split)
        if field not in ds.column_names:
            raise Quarantined("missing text field", f"no '{field}' (ingest.text_field); columns: {ds.column_names}")
        for i, row in enumerate(ds):
            text = row.pop(field)
            if not isinstance(text, str):
                yield {"quarantine": quarantine_row(source, "non-string text field",
                                                    f"'{field}' is {type(text).__name__}", i)}
                continue
            yield make_document(source, f"{split}:{i}", text, mime, {"split": split, **row})


# ---------------------------------------------------------------------------------------------- hub

def _hub_offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return bool(constants.HF_HUB_OFFLINE) or env in {"1", "ON", "YES", "TRUE"}


def _parse_hub_spec(spec: str) -> tuple[str, str | None, str | None]:
    m = _HUB_SPEC.match(spec.removeprefix(HUB_PREFIX))
    if not m:
        raise ValueError(f"ingest.hub_datasets: {spec!r} is not a hub dataset id (owner/name[:config][@revision])")
    return m["repo"], m["config"], m["revision"]


def resolve_hub_revision(spec: str) -> str:
    """The commit that ``spec``'s revision points at now; HubDatasetUnavailable (one line) otherwise."""
    repo, _config, revision = _parse_hub_spec(spec)
    if _hub_offline():
        raise HubDatasetUnavailable(
            f"ingest.hub_datasets: cannot load Hugging Face dataset '{spec}': offline (HF_HUB_OFFLINE=1); "
            f"run with a network, or save it with datasets' save_to_disk and list that folder in data.paths")
    from huggingface_hub import HfApi

    try:
        return HfApi().dataset_info(repo, revision=revision).sha
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise HubDatasetUnavailable(
            f"ingest.hub_datasets: cannot reach Hugging Face dataset '{spec}': {type(exc).__name__}: {first}"
        ) from None


def read_hub_dataset(spec: str, settings: IngestSettings, commit: str | None = None) -> Iterator[dict[str, Any]]:
    """Documents from a hub dataset at ``commit`` (resolved by the caller for the fingerprint)."""
    import datasets

    repo, config, revision = _parse_hub_spec(spec)
    commit = commit or resolve_hub_revision(spec)
    source = HUB_PREFIX + spec
    try:
        loaded = datasets.load_dataset(repo, config, revision=commit, split=settings.hub_split)
    except Exception as exc:
        raise Quarantined("unreadable dataset", f"{type(exc).__name__}: {exc}") from exc
    yield from _dataset_rows(loaded, source, settings, "application/x-hf-dataset")


# ---------------------------------------------------------------------------------------------- ingest

def ingest_path(path: Path, source: str, root: Path, settings: IngestSettings) -> Iterator[dict[str, Any]]:
    """Documents (dicts of the record schema) or ``{"quarantine": row}`` items from one input.

    Never raises for a bad input: whatever goes wrong becomes a quarantine row naming the input.
    """
    try:
        if path.is_symlink() and path.is_dir():
            target = path.resolve()
            if not target.is_relative_to(root) and not settings.follow_symlinks:
                raise Quarantined("symlink outside the data root", f"{path.name} -> {target}")
            raise Quarantined("symlinked folder", f"not followed: {path.name} -> {target}"
                              + (" (read where it lies)" if target.is_relative_to(root) else ""))
        if path.is_dir():
            yield from read_dataset(path, source, settings)
            return
        known = check_file(path, root, settings)
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            yield from read_jsonl(path, source, settings)
        elif suffix in DATASET_FILES:
            yield from read_dataset(path, source, settings)
        else:
            text, metadata = partition_file(path, settings, known=known)
            yield make_document(source, 0, text, FORMATS[suffix].mime, metadata)
    except Quarantined as q:
        yield {"quarantine": quarantine_row(source, q.reason, q.detail)}
    except OSError as exc:
        yield {"quarantine": quarantine_row(source, "unreadable", f"{type(exc).__name__}: {exc}")}
    except Exception as exc:  # a parser bug must not end the batch
        yield {"quarantine": quarantine_row(source, "unreadable", f"{type(exc).__name__}: {exc}")}


def _ingest_batch(items: list[tuple[str, str, str]], settings: IngestSettings,
                  commits: dict[str, str] | None = None) -> tuple[list[dict], list[dict]]:
    """(documents, quarantine rows) for a batch of (path, source, root) inputs — one Dask task."""
    docs, bad = [], []
    for path, source, root in items:
        if path.startswith(HUB_PREFIX):
            spec = path.removeprefix(HUB_PREFIX)
            try:
                produced = list(read_hub_dataset(spec, settings, (commits or {}).get(spec)))
            except Quarantined as q:
                produced = [{"quarantine": quarantine_row(source, q.reason, q.detail)}]
        else:
            produced = ingest_path(Path(path), source, Path(root), settings)
        for item in produced:
            (bad.append(item["quarantine"]) if "quarantine" in item else docs.append(item))
    return docs, bad


def ingest_to_snapshot(paths: list[str | Path], settings: IngestSettings, dask_settings, store: Path):
    """Ingest everything under ``paths`` (and ``settings.hub_datasets``) into a documents snapshot.

    Reused when the inputs are unchanged. Raises FileNotFoundError for a data path that does not exist
    and HubDatasetUnavailable for a hub dataset that cannot be reached, both naming it in one line.
    """
    from tasks import snapshot
    from tasks.executor import map_shards
    from tasks.records import DOCUMENT_SCHEMA, to_table

    commits = {spec: resolve_hub_revision(spec) for spec in settings.hub_datasets}  # fails first, offline
    items = [(str(p), s, str(r)) for p, s, r in discover(paths, settings)] + _hub_items(settings)
    if not items:
        raise FileNotFoundError(f"no input files under {', '.join(map(str, paths)) or '(no data paths)'}")
    batch = max(1, min(64, len(items) // max(1, dask_settings.workers * 4) or 1))
    batches = [items[i : i + batch] for i in range(0, len(items), batch)]

    def produce(stats: dict, extra: dict):
        quarantined: list[dict] = []
        pending: list[dict] = []
        documents = 0
        for docs, bad in map_shards(_ingest_batch, batches, dask_settings, settings, commits):
            quarantined.extend(bad)
            pending.extend(docs)
            documents += len(docs)
            while len(pending) >= settings.shard_size:
                yield to_table(pending[: settings.shard_size])
                pending = pending[settings.shard_size :]
        if pending:
            yield to_table(pending)
        reasons: dict[str, int] = {}
        for q in quarantined:
            reasons[q["reason"]] = reasons.get(q["reason"], 0) + 1
        stats.update(inputs=len(items), documents=documents, quarantined=len(quarantined),
                     quarantined_by_reason=reasons)
        extra["quarantine.jsonl"] = "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in quarantined)

    return snapshot.materialize(
        store, "ingest", input_fingerprint=fingerprint_inputs(paths, settings, hub_commits=commits),
        params={"paths": [str(p) for p in paths], **settings.model_dump()}, code_version=CODE_VERSION,
        produce=produce, schema=DOCUMENT_SCHEMA,
    )


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(paths: list[str], settings: IngestSettings, dask_settings, store: str):
    return ingest_to_snapshot(paths, settings, dask_settings, Path(store))
