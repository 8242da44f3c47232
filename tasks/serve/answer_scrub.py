"""Answers scrubbed by the project's own PII scrubber (tasks/data/pii/) before they leave the gateway.

An answer is scrubbed sentence by sentence: cut after the first whitespace that follows ``.``, ``!`` or ``?``
and after each line break. The cut points of a text's prefix are the cut points of the whole text, so a streamed
answer (scrubbed as each sentence completes) and the same answer whole come out identical.
"""

from __future__ import annotations

import re
from collections import Counter

from tasks.data.pii.settings import PiiSettings

_CUT = re.compile(r"(?<=[.!?])\s|\n")


def split(text: str) -> tuple[list[str], str]:
    """The complete sentences of ``text`` (each keeps the one whitespace that ends it) and the rest."""
    out, start = [], 0
    for m in _CUT.finditer(text):
        out.append(text[start:m.end()])
        start = m.end()
    return out, text[start:]


def sentences(text: str) -> list[str]:
    """``text`` cut into sentences that join back to it."""
    complete, rest = split(text)
    return complete + [rest] if rest else complete


class AnswerScrubber:
    """Scrubs answers with ``settings`` (the config's ``pii`` section); disabled settings pass text through."""

    def __init__(self, settings: PiiSettings | None) -> None:
        # each sentence on its own (no name propagation across sentences): a streamed answer, scrubbed as its
        # sentences complete, comes out as the whole one does
        self.settings = settings.model_copy(update={"propagate": []}) if settings and settings.enabled else None

    def warm(self) -> None:
        """Load the analyzer now (seconds) rather than on the first answer."""
        self.scrub(["Warm-up for Jane Doe at jane@example.com."])

    def scrub(self, texts: list[str]) -> tuple[list[str], list[Counter]]:
        """Each text scrubbed, and the entities replaced in it by type."""
        if self.settings is None:
            return list(texts), [Counter() for _ in texts]
        from tasks.data.pii.scrub import scrub_texts

        parts = [sentences(t) for t in texts]
        flat = [p for ps in parts for p in ps]
        done = iter(scrub_texts(flat, self.settings) if flat else [])
        out, counts = [], []
        for ps in parts:
            pieces = [next(done) for _ in ps]
            out.append("".join(text for text, _ in pieces))
            counts.append(sum((c for _, c in pieces), Counter()))
        return out, counts

    def stream(self) -> "StreamScrub":
        return StreamScrub(self)


class StreamScrub:
    """Scrubs a streamed answer: ``feed(piece)`` returns the scrubbed text of the sentences it completed (held
    back until then); ``finish()`` the rest. ``found`` adds up the entities replaced."""

    def __init__(self, scrubber: AnswerScrubber) -> None:
        self.scrubber, self.pending, self.found = scrubber, "", Counter()

    def feed(self, piece: str) -> str:
        self.pending += piece
        if self.scrubber.settings is None:
            out, self.pending = self.pending, ""
            return out
        complete, self.pending = split(self.pending)
        return self._scrub(complete) if complete else ""

    def finish(self) -> str:
        rest, self.pending = self.pending, ""
        return self._scrub(sentences(rest)) if rest else ""

    def _scrub(self, parts: list[str]) -> str:
        texts, counts = self.scrubber.scrub(parts)
        for c in counts:
            self.found.update(c)
        return "".join(texts)

