"""Drift statistics on synthetic inputs, the thresholds file, and the champion reference found through the
registry and the state folder (real stages, real MLflow; no training)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import company_documents
from helpers.drift_data import drifted_texts, undrifted_texts, write_jsonl
from tasks.data import drift_stats
from tasks.data.drift_stats import DriftThresholds, Side


def side(lengths, tokens, oov=0.1, pii=1.0) -> Side:
    return Side(documents=len(lengths), lengths=list(lengths), token_counts=dict(Counter(tokens)), oov_rate=oov,
                pii_per_document=pii)


# ------------------------------------------------------------------------------------------ statistics


def test_identical_samples_show_no_drift():
    rng = np.random.default_rng(0)
    lengths = rng.lognormal(7, 0.5, 300).astype(int)
    tokens = rng.zipf(1.5, 5000) % 500
    s = side(lengths, tokens.tolist())
    result = drift_stats.compare(s, s, DriftThresholds(), duplicate=0.0)
    assert result.decision == "no drift" and not result.drift
    assert result.statistics["length_psi"] == pytest.approx(0.0, abs=1e-9)
    assert result.statistics["length_ks"] == 0.0 and result.statistics["length_ks_pvalue"] == 1.0
    assert result.statistics["token_js"] == pytest.approx(0.0, abs=1e-9)
    assert not any(c.drifted for c in result.checks)


def test_samples_of_one_distribution_stay_under_the_thresholds():
    rng = np.random.default_rng(1)
    ref = side(rng.lognormal(7, 0.5, 400).astype(int), (rng.zipf(1.5, 20000) % 300).tolist())
    new = side(rng.lognormal(7, 0.5, 200).astype(int), (rng.zipf(1.5, 10000) % 300).tolist())
    result = drift_stats.compare(ref, new, DriftThresholds(), duplicate=0.0)
    assert result.decision == "no drift", [c.describe() for c in result.checks]


def test_shifted_lengths_push_psi_and_ks_over_threshold():
    rng = np.random.default_rng(2)
    tokens = (rng.zipf(1.5, 5000) % 300).tolist()
    ref = side(rng.lognormal(7, 0.5, 300).astype(int), tokens)
    new = side(rng.lognormal(8, 0.5, 100).astype(int), tokens)  # e^1: documents ~2.7x longer
    t = DriftThresholds()
    result = drift_stats.compare(ref, new, t, duplicate=0.0)
    fired = {c.name for c in result.checks if c.drifted}
    assert {"length_psi", "length_ks"} <= fired and "token_js" not in fired
    assert result.statistics["length_psi"] > t.length_psi
    assert result.statistics["length_ks"] > t.length_ks and result.statistics["length_ks_pvalue"] < t.length_ks_pvalue
    assert result.drift and result.decision == "drift"


def test_different_vocabulary_pushes_js_and_oov_over_threshold():
    rng = random.Random(3)
    ref_vocab = [f"w{i}" for i in range(200)]
    new_vocab = ref_vocab[:40] + [f"x{i}" for i in range(160)]
    ref_words = Counter(rng.choice(ref_vocab) for _ in range(5000))
    new_words = Counter(rng.choice(new_vocab) for _ in range(5000))
    known = set(ref_vocab)
    ref_oov, new_oov = drift_stats.oov_rate(ref_words, known), drift_stats.oov_rate(new_words, known)
    assert ref_oov == 0.0 and new_oov > 0.7
    lengths = [1000] * 50
    ref = Side(documents=50, lengths=lengths, token_counts=dict(ref_words), oov_rate=ref_oov, pii_per_document=0.0)
    new = Side(documents=50, lengths=lengths, token_counts=dict(new_words), oov_rate=new_oov, pii_per_document=0.0)
    t = DriftThresholds()
    result = drift_stats.compare(ref, new, t, duplicate=0.0)
    fired = {c.name for c in result.checks if c.drifted}
    assert fired == {"token_js", "oov_rate_increase"}
    assert result.statistics["token_js"] > t.token_js


def test_js_divergence_bounds_and_ks_matches_scipy():
    assert drift_stats.js_divergence({"a": 1}, {"b": 1}) == pytest.approx(1.0)
    assert drift_stats.js_divergence({"a": 2, "b": 2}, {"a": 5, "b": 5}) == pytest.approx(0.0, abs=1e-12)
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(4)
    a, b = rng.normal(0, 1, 120), rng.normal(0.4, 1, 80)
    d, p = drift_stats.ks_2samp(a, b)
    ref = stats.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(ref.statistic, abs=1e-12)
    assert p == pytest.approx(ref.pvalue, rel=0.25)


def test_pii_change_duplicates_and_too_little_data():
    lengths = [500] * 20
    ref = side(lengths, ["a", "b"] * 50, pii=0.2)
    t = DriftThresholds()
    more_pii = drift_stats.compare(ref, side(lengths, ["a", "b"] * 50, pii=2.0), t, duplicate=0.0)
    assert [c.name for c in more_pii.checks if c.drifted] == ["pii_rate_change"]
    # a drop already in the reference brings nothing new: no drift, whatever the statistics say
    seen = drift_stats.compare(ref, side(lengths, ["a", "b"] * 50, pii=2.0), t,
                               duplicate=drift_stats.duplicate_rate(["k1", "k2"], {"k1", "k2", "k3"}))
    assert seen.decision == "nothing new" and not seen.drift
    few = drift_stats.compare(ref, side([5000] * 3, ["z"] * 10, pii=9.0), t, duplicate=0.0)
    assert few.decision == "too little data" and not few.drift and not any(c.drifted for c in few.checks)


def test_thresholds_file_loads_and_names_a_bad_key(tmp_path):
    t = drift_stats.load_thresholds()
    assert t.length_psi and t.token_js and t.oov_rate_increase and t.pii_rate_change
    bad = tmp_path / "drift.yaml"
    bad.write_text("length_psi: 0.2\nlenght_ks: 0.3\n")
    with pytest.raises(ValueError, match="lenght_ks: unknown setting"):
        drift_stats.load_thresholds(bad)
    off = tmp_path / "off.yaml"
    off.write_text("token_js: null\n")
    assert drift_stats.load_thresholds(off).token_js is None


# ------------------------------------------------------------------------------------------ the champion


@pytest.fixture(scope="module")
def champion_home(tmp_path_factory):
    """A state folder whose registry has a @champion tagged with a real curated snapshot and tokenizer,
    made by the real stages on the company documents (the model itself is not trained: drift needs none)."""
    from flows.config import PipelineConfig
    from tasks.registry.store import client
    from tasks.data.clean import clean_snapshot
    from tasks.data.dedup.stage import dedup_snapshot
    from tasks.data.ingest.ingest import ingest_to_snapshot
    from tasks.data.pii.scrub import scrub_snapshot
    from tasks.core.state import StatePaths
    from tasks.train.tokenizer import prepare

    home = tmp_path_factory.mktemp("drift-state")
    state = StatePaths(home)
    config = PipelineConfig.model_validate({"dask": {"scheduler": "sync"}, "tokenizer": {"vocab_size": 1024},
                                            "registry": {"model_name": "drift-test"}})
    raw = ingest_to_snapshot(company_documents(), config.ingest, config.dask, state.snapshots)
    deduped = dedup_snapshot(clean_snapshot(raw, config.clean, config.dask, state.snapshots), config.dedup, state.snapshots)
    curated = scrub_snapshot(deduped, config.pii, config.dask, state.snapshots)
    tok = prepare(curated, config.tokenizer, None, state.tokenizers)
    c = client(state.mlflow_uri())
    c.create_registered_model("drift-test")
    (home / "model").mkdir()
    mv = c.create_model_version("drift-test", source=str(home / "model"),
                                tags={"snapshot_fingerprint": curated.fingerprint, "tokenizer_hash": tok.content_hash})
    c.set_registered_model_alias("drift-test", "champion", mv.version)
    return state, config, curated, deduped, tok


def test_champion_reference_is_its_pre_scrub_training_snapshot(champion_home, tmp_path):
    from tasks.drift.reference import champion_reference

    state, config, curated, deduped, tok = champion_home
    ref = champion_reference(config.registry, state, tmp_path)
    assert ref.kind == "champion" and ref.version == "1" and ref.fingerprint == curated.fingerprint
    assert ref.texts_snapshot == deduped.path and not ref.scrubbed  # compared before scrubbing, like the drop
    assert ref.pii_snapshot == curated.path
    assert ref.tokenizer == tok.path and "champion" in ref.tokenizer_source


def test_drop_against_champion_drifts_only_when_it_differs(champion_home, tmp_path):
    from tasks.drift.measure import compare_sides, read_drop
    from tasks.drift.reference import champion_reference

    from tasks.core import snapshot

    state, config, _, deduped, _ = champion_home
    ref = champion_reference(config.registry, state, tmp_path)
    t = drift_stats.load_thresholds()
    trained_on = snapshot.read_table(deduped.path).column("text").to_pylist()
    results = {}
    for name, texts in (("same", undrifted_texts(trained_on)), ("ops", drifted_texts())):
        drop = read_drop(str(write_jsonl(tmp_path / f"{name}.jsonl", texts)), config.ingest, config.clean, config.dask,
                         str(state.snapshots))
        results[name] = compare_sides(ref, drop["snapshot"], ref.tokenizer, config.pii, t)
    same, ops = results["same"], results["ops"]
    assert same.decision == "no drift", [c.describe() for c in same.checks]
    assert same.statistics["duplicate_rate"] == 0.0  # new documents, not copies
    assert ops.drift and ops.decision == "drift"
    fired = {c.name for c in ops.checks if c.drifted}
    assert {"length_ks", "token_js", "oov_rate_increase"} <= fired, [c.describe() for c in ops.checks]


# ------------------------------------------------------------------------------------------ the flow


@pytest.fixture(scope="module")
def prefect_api():
    """A throwaway Prefect API (temporary SQLite) for the flows run in this process."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def config_file(config, folder: Path) -> Path:
    import yaml

    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude={"contract", "gates"})))
    return path


def test_monitor_emits_once_per_drop_and_reference(champion_home, prefect_api, tmp_path):
    from flows.drift import drift_monitor

    state, config, *_ = champion_home
    cfg = config_file(config, tmp_path)
    drop = write_jsonl(tmp_path / "ops.jsonl", drifted_texts(seed=7))
    first = drift_monitor("corpus", str(drop), config_file=str(cfg), home=str(state.home))
    assert first["drift"] and first["event"]["resource"] == "tunegate.dataset.corpus" and first["event"]["id"]
    md = Path(first["report"]).read_text()
    assert md == first["markdown"] and "— DRIFT" in md.splitlines()[0] and "| token_js |" in md
    assert json.loads(Path(first["report"]).with_name("report.json").read_text())["decision"] == "drift"
    # the same drop against the same champion: reported, but no second event (no retrain loop)
    again = drift_monitor("corpus", str(drop), config_file=str(cfg), home=str(state.home))
    assert again["drift"] and "event" not in again and first["drift_id"] in again["note"]
    forced = drift_monitor("corpus", str(drop), config_file=str(cfg), force=True, home=str(state.home))
    assert forced["event"]["id"] not in (None, first["event"]["id"])


def test_monitor_without_data_or_reference_decides_nothing(prefect_api, tmp_path):
    from flows.drift import drift_monitor

    home = tmp_path / "state"
    missing = drift_monitor("corpus", str(tmp_path / "incoming"), home=str(home))
    assert missing["decision"] == "no new data" and missing["report"] is None and not (home / "drift").exists()
    drop = write_jsonl(tmp_path / "ops.jsonl", drifted_texts(n=8))
    alone = drift_monitor("corpus", str(drop), home=str(home))
    assert alone["decision"] == "no reference" and not alone["drift"] and "no @champion" in alone["note"]
    assert "NO REFERENCE" in Path(alone["report"]).read_text()
    with pytest.raises(ValueError, match="not a valid name"):
        drift_monitor("no/such", str(drop), home=str(home))


def test_drift_command_names_a_missing_path(tmp_path):
    from conftest import run_cli

    proc = run_cli("drift", str(tmp_path / "nope.jsonl"), home=tmp_path / "state")
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: NEW_DATA: no such file or folder: {tmp_path / 'nope.jsonl'}"


def test_drift_command_on_an_empty_folder_says_so_in_one_line(tmp_path):
    from conftest import CORPUS, run_cli

    (tmp_path / "drop" / "empty-sub").mkdir(parents=True)
    proc = run_cli("drift", str(tmp_path / "drop"), "--reference", str(CORPUS), home=tmp_path / "state")
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: NEW_DATA: no input files under {tmp_path / 'drop'}"
