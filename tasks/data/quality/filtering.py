"""Running the quality filters: which ones a text fails, and a batch of documents with the actions applied."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from tasks.data.quality.measures import TextView
from tasks.data.quality.settings import FILTER_NAMES, QualitySettings


def check_text(text: str, settings: QualitySettings) -> list[str]:
    """The names of the enabled filters ``text`` fails, in ``FILTER_NAMES`` order; ``[]`` when it passes all.

    The action (drop or flag) does not matter here; ``filter_documents`` applies it.
    """
    if not settings.enabled:
        return []
    view = TextView(text)
    return [name for name in FILTER_NAMES if (f := getattr(settings, name)).enabled and f.fails(view)]


def filter_documents(docs: Iterable[dict[str, Any]], settings: QualitySettings, counts: Counter) -> Iterator[dict]:
    """The documents that fail no "drop" filter, each with ``quality_flags`` (a JSON list of the "flag"
    filters it fails, ``"[]"`` when none).

    A dropped document counts once, as ``dropped_<name>`` of the first "drop" filter it fails in
    ``FILTER_NAMES`` order, so the ``dropped_*`` counts add up to the number dropped. A kept document counts
    ``flagged_<name>`` for every "flag" filter it fails. ``counts`` gets nothing else.
    """
    for doc in docs:
        failed = check_text(doc.get("text") or "", settings)
        drops = [name for name in failed if getattr(settings, name).action == "drop"]
        if drops:
            counts[f"dropped_{drops[0]}"] += 1
            continue
        for name in failed:
            counts[f"flagged_{name}"] += 1
        yield {**doc, "quality_flags": json.dumps(failed)}
