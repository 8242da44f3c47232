"""Load: 200,000 synthetic documents through the data stages with peak memory bounded (issue 7, item 6).

Runs bench/load.py as a user would (its own process, a Dask LocalCluster with the machine's cores as
workers) and reads the figures it prints: every document accounted for and the peak resident memory of
the whole process tree (this process and every Dask worker, sampled every 0.2 s) at most 4 GiB.
"""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT

DOCS = 200_000
LIMIT_GIB = 4.0


def test_200k_documents_through_the_data_stages_within_4_gib():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "load.py"), "--docs", str(DOCS), "--pii-docs", "500"],
        capture_output=True, text=True, timeout=1100, cwd=ROOT,
    )
    out = proc.stdout
    assert proc.returncode == 0, (out + proc.stderr)[-3000:]
    print(out)
    rows = {m["stage"]: int(m["rows"]) for m in re.finditer(r"^\s+(?P<stage>\w+)\s+(?P<rows>\d+) rows", out, re.M)}
    assert rows["ingest"] == DOCS, rows  # every generated document became one
    removed = re.search(r"dedup removed (\d+) exact and (\d+) near duplicates", out)
    assert rows["clean"] - rows["dedup"] == int(removed[1]) + int(removed[2]) > 0
    assert rows["pii"] == 500
    peak = re.search(r"whole tree ([\d.]+) GiB", out)
    assert peak, out
    assert float(peak[1]) <= LIMIT_GIB, f"peak RSS of the process tree {peak[1]} GiB > {LIMIT_GIB} GiB"
