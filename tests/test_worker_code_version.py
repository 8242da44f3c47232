"""A Dask worker that imported other code than the client cannot fill the client's snapshot key (issue 15, item 6).

A real two-worker LocalCluster; its worker processes (and only they) are made to run another code version the
way a long-lived ``dask worker`` started before a change would: the stage module's ``CODE_VERSION`` as the
worker's imported module sees it. The stage must fail naming the worker, the stage and both versions, and leave
nothing under the key; restarting the workers (the remedy the message names) makes it pass again.
"""

from __future__ import annotations

import logging

import pytest

from tasks.core import snapshot
from tasks.core.executor import DaskSettings, StaleWorkerError, close_client
from tasks.core.records import make_document, to_table
from tasks.data import clean
from tasks.data.clean import CleanSettings, clean_snapshot
from tasks.data.quality.settings import QualitySettings

STALE = "clean-0-before-the-change"
SETTINGS = CleanSettings(min_chars=40, quality=QualitySettings(enabled=False))


def _pretend_started_before_the_change() -> str:
    """Run in the worker processes only: their imported clean module carries an older version."""
    import tasks.data.clean as worker_clean

    worker_clean.CODE_VERSION = STALE
    return worker_clean.CODE_VERSION


def _pretend_other_source() -> None:
    """Run in the worker processes only: same versions, other tasks/ source."""
    from tasks.core import executor

    executor.SOURCE_FINGERPRINT = "0" * 16


def _worker_versions() -> str:
    import tasks.data.clean as worker_clean

    return worker_clean.CODE_VERSION


def _raw(root):
    docs = [make_document("s", i, f"  document   number {i} " + "word " * (i % 30), "text/plain", {}) for i in range(48)]
    return snapshot.write(root, "ingest", "k", [to_table(docs[i : i + 8]) for i in range(0, 48, 8)], parent=None,
                          params={}, stats={})


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    local = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1",
                         memory_limit="2GiB", silence_logs=logging.WARNING)
    client = Client(local, set_as_default=False)
    try:
        yield client
    finally:
        close_client(local.scheduler_address)
        client.close()
        local.close()


def _entries(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_stale_worker_fails_the_stage_and_leaves_no_snapshot(cluster, tmp_path):
    raw = _raw(tmp_path / "raw")
    dask = DaskSettings(address=cluster.scheduler.address, in_flight=1)
    fresh = clean_snapshot(raw, SETTINGS, dask, tmp_path / "fresh")  # the normal path, on this cluster
    assert fresh.rows > 0 and not fresh.reused
    assert fresh.fingerprint == clean_snapshot(raw, SETTINGS, DaskSettings(scheduler="sync"), tmp_path / "s").fingerprint

    stale = cluster.run(_pretend_started_before_the_change)
    assert set(stale.values()) == {STALE} and len(stale) == 2
    assert clean.CODE_VERSION != STALE  # this process keeps the current code

    store = tmp_path / "stale"
    with pytest.raises(StaleWorkerError) as failed:
        clean_snapshot(raw, SETTINGS, dask, store)
    message = str(failed.value)
    assert "stage 'clean'" in message
    assert f"tasks.data.clean.CODE_VERSION = {STALE!r}" in message
    assert f"this process has tasks.data.clean.CODE_VERSION = {clean.CODE_VERSION!r}" in message
    assert any(f"Dask worker {address} " in message for address in stale), message
    assert "QUALITY" not in message  # only what differs
    assert _entries(store / "clean") == []  # no snapshot under the key, no temporary folder left

    cluster.restart()  # what the message says to do: the workers import the current code
    assert set(cluster.run(_worker_versions).values()) == {clean.CODE_VERSION}
    again = clean_snapshot(raw, SETTINGS, dask, store)
    assert again.fingerprint == fresh.fingerprint and not again.reused


def test_other_source_with_equal_versions_is_only_logged(cluster, tmp_path, caplog):
    raw = _raw(tmp_path / "raw")
    cluster.run(_pretend_other_source)
    with caplog.at_level(logging.WARNING, logger="tunegate"):
        ref = clean_snapshot(raw, SETTINGS, DaskSettings(address=cluster.scheduler.address), tmp_path / "c")
    assert ref.rows > 0
    warned = [r.getMessage() for r in caplog.records if "other tasks/ source" in r.getMessage()]
    assert warned and "stage 'clean'" in warned[0] and "0" * 16 in warned[0]
