"""What must be refused before a parser sees a file, and what those checks learn on the way.

  * Encrypted PDFs are read when their user password is empty (what every viewer does; the owner
    password only sets permissions) and quarantined as "encrypted PDF" when a password is needed.
    Copy-protected PDFs (extraction not allowed by their permissions) are read unless
    ``ingest.pdf_copy_protected`` is "quarantine"; either way the metadata says ``copy_protected``.
  * Email attachments are partitioned only when every MIME part is text or mail (unstructured would
    send images and scanned PDFs to layout models from the hub); otherwise their names are listed as
    ``attachments_not_read``. Outlook .msg attachments are not read. PGP/S-MIME mail is quarantined.
  * Office/ODF/EPUB files must be the zip container their suffix says, holding its main member.
"""

from __future__ import annotations

import codecs
import os
import stat
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.data.ingest.file_formats import FORMATS
from tasks.data.ingest.quarantine import Quarantined

if TYPE_CHECKING:
    from tasks.data.ingest.settings import IngestSettings


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
        msg = BytesParser(policy=policy.default).parsebytes(email_bytes(path))
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


def email_bytes(path: Path) -> bytes:
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
