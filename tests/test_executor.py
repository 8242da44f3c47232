"""Stages on a real Dask LocalCluster give the same snapshot as in-process, shard by shard, in order."""

from __future__ import annotations

import pyarrow as pa

from tasks.core import snapshot
from tasks.data.clean import CleanSettings, clean_snapshot
from tasks.core.executor import DaskSettings, map_shards
from tasks.data.quality.settings import QualitySettings
from tasks.core.records import make_document, to_table


def _square(x: int, add: int) -> int:
    return x * x + add


def test_map_shards_keeps_order_on_a_local_cluster():
    settings = DaskSettings(scheduler="local", workers=2, in_flight=1)
    assert list(map_shards(_square, list(range(9)), settings, 1)) == [x * x + 1 for x in range(9)]


def test_clean_on_cluster_matches_in_process(tmp_path):
    docs = [make_document("s", i, f"  document   number {i} " + "word " * (i % 30), "text/plain", {}) for i in range(60)]
    tables = [to_table(docs[i : i + 10]) for i in range(0, 60, 10)]
    raw = snapshot.write(tmp_path / "a", "ingest", "k", tables, parent=None, params={}, stats={})
    settings = CleanSettings(min_chars=40, quality=QualitySettings(enabled=False))
    on_cluster = clean_snapshot(raw, settings, DaskSettings(scheduler="local", workers=2), tmp_path / "c")
    in_process = clean_snapshot(raw, settings, DaskSettings(scheduler="sync"), tmp_path / "s")
    assert 0 < on_cluster.rows < 60
    assert on_cluster.fingerprint == in_process.fingerprint
    assert on_cluster.manifest()["stats"] == in_process.manifest()["stats"]
    assert len(snapshot.shard_paths(on_cluster)) == 6
    assert isinstance(snapshot.read_table(on_cluster), pa.Table)


def test_code_versions_are_the_stage_modules_constants():
    """What a shard result carries to say which code computed it (tests/test_worker_code_version.py runs the
    check on a cluster): the stage module's CODE_VERSION constants, looked up through ``OnShardTable``."""
    from tasks.core.executor import OnShardTable, code_versions
    from tasks.data import clean
    from tasks.data.quality import settings as quality

    assert code_versions(OnShardTable(getattr(clean, "_clean_shard"))) == {
        "tasks.data.clean.CODE_VERSION": clean.CODE_VERSION,
        "tasks.data.clean.QUALITY_CODE_VERSION": quality.CODE_VERSION,
    }
    assert code_versions(_square) == {}  # a module without any: nothing to compare
