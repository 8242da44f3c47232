"""The blocklist: where its file is, its words and phrases (read once per process per path), its hash.

One entry per line; blank lines and lines starting with '#' are ignored. An entry of one word is matched
against the text's words; an entry of several is a phrase, matched with any whitespace between its words.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

from tasks.core.paths import PROJECT_ROOT
from tasks.data.quality.measures import WORD

DEFAULT_BLOCKLIST = Path("data_contracts/blocklist.txt")


def resolve_blocklist_path(path: Path | str) -> Path:
    """``path`` itself when absolute or present in the working directory, else inside the tunegate checkout."""
    path = Path(path)
    if path.is_absolute() or path.is_file():
        return path
    return PROJECT_ROOT / path


def _read(path: Path | str, read):
    """``read(resolved path)``, with a missing file reported as the config field that names it."""
    resolved = resolve_blocklist_path(path)
    try:
        return read(resolved)
    except FileNotFoundError:
        raise FileNotFoundError(f"quality.blocklist.path: word list not found: {resolved}") from None


@functools.lru_cache(maxsize=8)
def load_blocklist(path: str) -> tuple[frozenset[str], re.Pattern | None]:
    """The list at ``path``: single words (lower-cased) and one regex for the multi-word phrases.

    One entry per line; blank lines and lines starting with '#' are ignored. Read once per process per path.
    """
    lines = _read(path, lambda resolved: resolved.read_text(encoding="utf-8")).splitlines()
    words, phrases = set(), []
    for line in lines:
        entry = line.strip().lower()
        if not entry or entry.startswith("#"):
            continue
        tokens = WORD.findall(entry)
        if len(tokens) == 1 and tokens[0] == entry:
            words.add(entry)
        elif tokens:
            phrases.append(r"\s+".join(re.escape(t) for t in entry.split()))
    phrase_re = re.compile(r"(?<!\w)(?:" + "|".join(phrases) + r")(?!\w)") if phrases else None
    return frozenset(words), phrase_re


def blocklist_sha256(path: Path | str) -> str:
    """The sha256 of the list's content, read afresh (so an edited list gives a new hash)."""
    return hashlib.sha256(_read(path, Path.read_bytes)).hexdigest()


def count_hits(path: Path | str, words: list[str], lowered: str) -> int:
    """How many of ``words`` are on the list at ``path``, plus how many of its phrases occur in ``lowered``."""
    blocked, phrase_re = load_blocklist(str(path))
    hits = sum(1 for w in words if w in blocked) if blocked else 0
    if phrase_re is not None:
        hits += len(phrase_re.findall(lowered))
    return hits
