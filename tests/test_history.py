"""Datasets with history (issue 18, item 1): a cumulative retrain's data is the @champion's training data plus the
new drop, deduplicated across both, within the retention window; lineage names the parent. Real stages, a real
MLflow registry; no training (tests/test_retrain_tiny.py and the operations test train)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import company_documents
from helpers.drift_data import drifted_texts, write_jsonl


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A state folder whose @champion (dataset corpus) was trained on the company documents' curated snapshot."""
    from flows.config import PipelineConfig
    from tasks.core.state import StatePaths
    from tasks.data.clean import clean_snapshot
    from tasks.data.dedup.stage import dedup_snapshot
    from tasks.data.ingest.ingest import ingest_to_snapshot
    from tasks.data.pii.scrub import scrub_snapshot
    from tasks.registry.store import client

    home = tmp_path_factory.mktemp("history-state")
    state = StatePaths(home)
    config = PipelineConfig.model_validate({"dask": {"scheduler": "sync"}, "registry": {"model_name": "hist"}})
    raw = ingest_to_snapshot(company_documents(), config.ingest, config.dask, state.snapshots)
    cleaned = clean_snapshot(raw, config.clean, config.dask, state.snapshots)
    curated = scrub_snapshot(dedup_snapshot(cleaned, config.dedup, state.snapshots), config.pii, config.dask,
                             state.snapshots)
    c = client(state.mlflow_uri())
    c.create_registered_model("hist")
    (home / "model").mkdir()
    mv = c.create_model_version("hist", source=str(home / "model"),
                                tags={"snapshot_fingerprint": curated.fingerprint, "dataset": "corpus"})
    c.set_registered_model_alias("hist", "champion", mv.version)
    return state, config, cleaned, curated


def drop(tmp_path, config, state, texts, name="drop.jsonl"):
    from tasks.data.clean import clean_snapshot
    from tasks.data.ingest.ingest import ingest_to_snapshot

    raw = ingest_to_snapshot([write_jsonl(tmp_path / name, texts)], config.ingest, config.dask, state.snapshots)
    return clean_snapshot(raw, config.clean, config.dask, state.snapshots)


def texts_of(ref) -> list[str]:
    from tasks.core import snapshot

    return snapshot.read_table(ref.path).column("text").to_pylist()


def test_a_cumulative_retrain_trains_on_the_champions_data_and_the_drop(champion, tmp_path):
    from tasks.data.dedup.stage import dedup_snapshot
    from tasks.data.history import with_history
    from tasks.drift.reference import champion_training

    state, config, cleaned, curated = champion
    parent = champion_training(config.registry, state)
    assert parent.version == "1" and parent.fingerprint == curated.fingerprint and parent.stage == "dedup"
    old = texts_of(cleaned)
    new_texts = drifted_texts(n=6, seed=11)
    new = drop(tmp_path, config, state, new_texts + old[:3])  # three documents the champion already saw
    merged, record = with_history(new, parent, config.data, state.snapshots)
    assert record["merged"] and merged.stage == "history" and record["parents"][0]["version"] == "1"
    assert record["parent_kept"] == record["parent_rows"] == parent.rows and record["new_rows"] == new.rows
    deduped = dedup_snapshot(merged, config.dedup, state.snapshots)
    trained_on = texts_of(deduped)
    assert set(texts_of(dedup_snapshot(cleaned, config.dedup, state.snapshots))) <= set(trained_on)
    assert all(any(t[:200] in x for x in trained_on) for t in new_texts)  # every new document is in
    assert len(trained_on) == parent.rows + 6  # the three seen before are not counted twice
    assert json.loads((Path(merged.path) / "manifest.json").read_text())["params"]["parent"] \
        == json.loads((Path(parent.snapshot) / "manifest.json").read_text())["fingerprint"]
    # the same inputs again: the history snapshot is reused
    again, _ = with_history(new, parent, config.data, state.snapshots)
    assert again.reused and again.fingerprint == merged.fingerprint


def test_a_new_version_of_a_document_replaces_the_old_one(champion):
    """A drop row with the id of a parent document (the same file re-ingested after an edit) replaces it."""
    import pyarrow as pa

    from tasks.core import snapshot
    from tasks.data.history import with_history
    from tasks.drift.reference import champion_training

    state, config, _, _ = champion
    parent = champion_training(config.registry, state)
    table = snapshot.read_table(parent.snapshot).slice(0, 1)
    old_text = table.column("text")[0].as_py()
    edited = table.set_column(table.column_names.index("text"), "text", pa.array([old_text + " Revised in 2027."]))
    new = snapshot.write(state.snapshots, "clean", "edited-doc", [edited], parent=None, params={}, stats={})
    merged, record = with_history(new, parent, config.data, state.snapshots)
    assert record["parent_replaced_by_new"] == 1 and merged.rows == parent.rows
    texts = texts_of(merged)
    assert old_text + " Revised in 2027." in texts and old_text not in texts


def test_retention_keeps_the_newest_parent_documents(champion, tmp_path):
    from tasks.data.history import with_history
    from tasks.drift.reference import champion_training

    state, config, _, _ = champion
    parent = champion_training(config.registry, state)
    new = drop(tmp_path, config, state, drifted_texts(n=4, seed=12))
    few = config.data.model_copy(update={"retention_documents": 3})
    merged, record = with_history(new, parent, few, state.snapshots)
    assert record["parent_kept"] == 3 and record["parent_over_size"] == parent.rows - 3
    assert merged.rows == 3 + new.rows
    # a window of days before the newest new document: the champion's documents were ingested minutes ago
    recent = config.data.model_copy(update={"retention_days": 1.0})
    _, record = with_history(new, parent, recent, state.snapshots)
    assert record["parent_kept"] == parent.rows and record["parent_older_than_window"] == 0


def test_nothing_to_merge(champion, tmp_path):
    from tasks.data.history import with_history
    from tasks.drift.reference import champion_training

    state, config, cleaned, _ = champion
    parent = champion_training(config.registry, state)
    # the champion's own cleaned data again: unchanged, so a rerun reuses every snapshot
    same, record = with_history(cleaned, parent, config.data, state.snapshots)
    assert same == cleaned and not record["merged"] and "nothing to add" in record["why"]
    new = drop(tmp_path, config, state, drifted_texts(n=4, seed=13))
    replaced, record = with_history(new, parent, config.data.model_copy(update={"history": "replace"}),
                                    state.snapshots)
    assert replaced == new and "replace" in record["why"]
    other, record = with_history(new, parent, config.data.model_copy(update={"dataset": "tickets"}), state.snapshots)
    assert other == new and "dataset 'corpus', not 'tickets'" in record["why"]
    assert with_history(new, None, config.data, state.snapshots)[1]["why"].startswith("no @champion")


def test_an_unreachable_registry_is_said_not_hidden(champion, tmp_path):
    """The tracking server down while the data stages run (it may be up again by registration): the new data
    alone, and the report's history says why."""
    from tasks.data.history import with_history
    from tasks.drift.reference import champion_training

    state, config, _, _ = champion
    down = config.registry.model_copy(update={"tracking_uri": "http://127.0.0.1:9"})
    parent = champion_training(down, state)
    assert parent is not None and parent.snapshot is None and "unreachable" in parent.note
    new = drop(tmp_path, config, state, drifted_texts(n=4, seed=14))
    same, record = with_history(new, parent, config.data, state.snapshots)
    assert same == new and not record["merged"] and "the registry is unreachable" in record["why"]


def test_config_names_a_bad_dataset_or_history():
    from flows.config import PipelineConfig

    with pytest.raises(ValueError, match="data.dataset"):
        PipelineConfig.model_validate({"data": {"dataset": "../x"}})
    with pytest.raises(ValueError, match="data.history"):
        PipelineConfig.model_validate({"data": {"history": "append"}})
