"""Decoding the bytes of text files (txt, md, html, csv, tsv, rst, org) here, not by ``unstructured``.

Byte-order mark, then strict UTF-8, then (HTML) a declared charset, then statistical detection. When
detection lands on a Latin single-byte code page and the bytes read as plain Western text in
windows-1252, windows-1252 wins (the WHATWG default; detectors often pick cp1250 for short
French/Spanish text). Text that is mostly valid UTF-8 with a few bad bytes is read as UTF-8 with U+FFFD
replacements. When no single encoding fits (a UTF-8 file with lines appended in a legacy code page), the
bytes that are not UTF-8 are read as windows-1252. Bytes that are not text (NULs, or more than 5% control
characters) are quarantined as "binary content in a text file".
"""

from __future__ import annotations

import codecs
import re

from tasks.data.ingest.quarantine import Quarantined

_HTML_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
_LATIN_FAMILY = {codecs.lookup(n).name for n in (
    "cp1250", "cp1252", "cp1254", "cp1257", "latin_1", "iso8859_2", "iso8859_3", "iso8859_4", "iso8859_9",
    "iso8859_10", "iso8859_13", "iso8859_14", "iso8859_15", "iso8859_16", "mac_roman", "mac_latin2", "cp850",
    "cp437", "ascii")}
_WESTERN_EXTRA = set("€£¥¢©®°±«»¡¿–—‘’‚“”„…•·§¶ªº×÷´¨ŒœŠšŽžŸƒˆ˜†‡‰‹›™ ")
CONTROL_CHARS = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")  # C0 but tab/newlines/form feed, DEL, C1


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
    if best is None:  # no single encoding fits: UTF-8 with legacy parts, or binary (then control characters)
        text = data.decode("utf-8", errors=_MIXED)
        return _check_controls(text, "utf-8 with cp1252"), f"utf-8 with cp1252 ({bad} byte sequences)"
    enc = _codec(best.encoding) or best.encoding
    if enc in _LATIN_FAMILY and enc != "cp1252" and _reads_as_western(data):
        enc = "cp1252"
    return _check_controls(data.decode(enc, errors="replace"), enc), enc


def _cp1252_fallback(exc: UnicodeError) -> tuple[str, int]:
    """A codecs error handler: bytes that are not UTF-8 read as windows-1252 (the mixed-file repair)."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return exc.object[exc.start : exc.end].decode("cp1252", errors="replace"), exc.end


_MIXED = "tunegate.utf8-cp1252"
codecs.register_error(_MIXED, _cp1252_fallback)


def _check_controls(text: str, encoding: str) -> str:
    sample = text[:8192]
    controls = len(CONTROL_CHARS.findall(sample))
    if sample and controls > 0.05 * len(sample):
        raise Quarantined("binary content in a text file",
                          f"{controls} control characters in the first {len(sample)} characters ({encoding})")
    return text
