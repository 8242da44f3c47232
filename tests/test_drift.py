"""Drift statistics on synthetic inputs, the thresholds file, and the champion reference found through the
registry and the state folder (real stages, real MLflow; no training)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import company_documents
from helpers.drift_data import company_texts, drifted_texts, undrifted_texts, write_jsonl
from tasks.data import drift_stats
from tasks.data.drift_stats import DriftThresholds, Side


def side(lengths, docs, pii=None, words=None) -> Side:
    """A side of len(docs) sampled documents: ``docs`` are token lists per document (words too, unless given)."""
    tokens = [dict(Counter(d)) for d in docs]
    return Side(documents=len(lengths), lengths=list(lengths), sample_lengths=list(lengths)[: len(docs)],
                tokens=tokens, words=[dict(Counter(map(str, w))) for w in (words or docs)], pii=pii)


def zipf_docs(rng, n, vocab=300, per_doc=60, offset=0):
    return [((rng.zipf(1.5, per_doc) % vocab) + offset).tolist() for _ in range(n)]


def fired(result) -> set[str]:
    return {c.name for c in result.checks if c.drifted}


# ------------------------------------------------------------------------------------------ statistics


def test_identical_samples_show_no_drift():
    rng = np.random.default_rng(0)
    lengths = rng.lognormal(7, 0.5, 300).astype(int)
    s = side(lengths, zipf_docs(rng, 300), pii=[(0, 1)] * 300)
    result = drift_stats.compare(s, s, DriftThresholds(), duplicate=0.0)
    assert result.decision == "no drift" and not result.drift
    assert result.statistics["length_psi"] == pytest.approx(0.0, abs=1e-9)
    assert result.statistics["length_ks"] == 0.0 and result.statistics["length_ks_pvalue"] == 1.0
    assert result.statistics["token_js"] == pytest.approx(0.0, abs=1e-9)
    assert all(c.decided and c.p_value > c.alpha for c in result.checks)


def test_a_small_drop_of_the_same_kind_is_no_drift_where_a_fixed_threshold_fired():
    """Twelve documents of the reference's kind: the length PSI is far above the old fixed 0.25, but drops of
    twelve from the same documents reach it routinely, so the test does not fire."""
    rng = np.random.default_rng(1)
    ref = side(rng.lognormal(7, 0.8, 400).astype(int), zipf_docs(rng, 400))
    new = side(rng.lognormal(7, 0.8, 12).astype(int), zipf_docs(rng, 12))
    result = drift_stats.compare(ref, new, DriftThresholds(), duplicate=0.0)
    assert result.statistics["length_psi"] > 0.25
    assert result.decision == "no drift", [c.describe() for c in result.checks]


def test_shifted_lengths_fire_the_length_test_only():
    rng = np.random.default_rng(2)
    ref = side(rng.lognormal(7, 0.5, 300).astype(int), zipf_docs(rng, 300))
    new = side(rng.lognormal(8, 0.5, 60).astype(int), zipf_docs(rng, 60))  # e^1: documents ~2.7x longer
    result = drift_stats.compare(ref, new, DriftThresholds(), duplicate=0.0)
    assert fired(result) == {"length_ks"} and result.drift and result.decision == "drift"
    check = {c.name: c for c in result.checks}["length_ks"]
    assert check.p_value <= check.alpha == pytest.approx(0.02 / 3)  # three tests ran: no PII measured
    assert check.value == result.statistics["length_ks"] > 0.5


def test_another_vocabulary_fires_the_token_and_unseen_word_tests():
    rng = np.random.default_rng(3)
    lengths = [1000] * 80
    ref = side(lengths, zipf_docs(rng, 80))
    new = side(lengths[:30], [d[:20] + [t + 1000 for t in d[20:]] for d in zipf_docs(rng, 30)])
    result = drift_stats.compare(ref, new, DriftThresholds(), duplicate=0.0)
    assert fired(result) == {"token_js", "unseen_words"}


def test_pii_counts_structured_values_apart_from_names():
    rng = np.random.default_rng(4)
    lengths, docs = [500] * 60, zipf_docs(rng, 60)
    ref = side(lengths, docs, pii=[(0, int(rng.integers(0, 3))) for _ in range(60)])
    cards = side(lengths[:30], docs[:30], pii=[(2, int(rng.integers(0, 3))) for _ in range(30)])
    result = drift_stats.compare(ref, cards, DriftThresholds(), duplicate=0.0)
    assert fired(result) == {"pii_structured_change"}
    assert result.statistics["pii_structured_new"] == 2.0 and result.statistics["pii_structured_reference"] == 0.0
    # a few documents: the PII tests decide nothing, the others still run
    few = drift_stats.compare(ref, side(lengths[:12], docs[:12], pii=[(3, 0)] * 12), DriftThresholds(), duplicate=0.0)
    pii_checks = [c for c in few.checks if c.name.startswith("pii")]
    assert pii_checks and all(not c.decided and "too little data" in c.detail for c in pii_checks)
    assert few.decision in ("drift", "no drift") and "pii_structured_change" not in fired(few)


def test_duplicates_and_too_little_data():
    rng = np.random.default_rng(5)
    ref = side([500] * 20, zipf_docs(rng, 20))
    t = DriftThresholds()
    # a drop already in the reference brings nothing new: no drift, whatever the statistics say
    seen = drift_stats.compare(ref, side([5000] * 20, zipf_docs(rng, 20, offset=999)), t,
                               duplicate=drift_stats.duplicate_rate(["k1", "k2"], {"k1", "k2", "k3"}))
    assert seen.decision == "nothing new" and not seen.drift
    few = drift_stats.compare(ref, side([5000] * 3, [["z"] * 10] * 3), t, duplicate=0.0)
    assert few.decision == "too little data" and not few.drift and not any(c.decided for c in few.checks)


def test_permutation_p_values_are_calibrated_and_early_stopping_keeps_the_decision():
    """Drops drawn from the reference's own distribution: p <= 0.05 about 5% of the time, at any size."""
    from tasks.data import drift_tests

    rng = np.random.default_rng(6)
    small = 0
    for _ in range(200):
        ref, new = rng.lognormal(7, 0.6, 60), rng.lognormal(7, 0.6, int(rng.integers(5, 40)))
        small += drift_tests.length_test(ref, new, 99, 0.05, rng).p_value <= 0.05
    assert 2 <= small <= 20  # 10 expected
    ref, new = rng.lognormal(7, 0.6, 200), rng.lognormal(7.8, 0.6, 30)
    full = drift_tests.length_test(ref, new, 999, 0.004, np.random.default_rng(7))
    assert full.p_value == pytest.approx(1 / 1000) and full.critical is not None
    same = drift_tests.length_test(ref, rng.lognormal(7, 0.6, 30), 999, 0.004, np.random.default_rng(7))
    assert same.p_value > 0.004 and same.critical is None  # stopped early: could no longer be significant


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


def test_thresholds_file_loads_and_names_a_bad_key(tmp_path):
    t = drift_stats.load_thresholds()
    assert t.length_ks and t.token_js and t.unseen_words and t.pii_structured_change and t.false_alarm_rate
    bad = tmp_path / "drift.yaml"
    bad.write_text("length_ks: 0.2\nlenght_ks: 0.3\n")
    with pytest.raises(ValueError, match="lenght_ks: unknown setting"):
        drift_stats.load_thresholds(bad)
    off = tmp_path / "off.yaml"
    off.write_text("token_js: null\n")
    assert drift_stats.load_thresholds(off).token_js is None
    coarse = tmp_path / "coarse.yaml"
    coarse.write_text("resamples: 99\nfalse_alarm_rate: 0.01\n")
    with pytest.raises(ValueError, match="resamples"):
        drift_stats.load_thresholds(coarse)


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
    assert {"length_ks", "token_js", "unseen_words"} <= fired, [c.describe() for c in ops.checks]


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


def test_drift_command_exit_status_and_a_recheck(tmp_path):
    """The CLI contract: 4 when the drop drifted (and the event was emitted), the same drop again repeats the
    earlier result in one line (exit 4 again, no second event, no traceback). Exit 0 without drift:
    test_prompt_drift's command test."""
    from conftest import run_cli

    home = tmp_path / "state"
    reference = write_jsonl(tmp_path / "reference.jsonl", company_texts())
    drop = write_jsonl(tmp_path / "ops.jsonl", drifted_texts(n=20, seed=5))
    first = run_cli("drift", str(drop), "--dataset", "ops", "--reference", str(reference), home=home, timeout=600)
    assert first.returncode == 4, first.stdout[-1500:] + first.stderr[-3000:]
    [said] = [ln for ln in first.stdout.splitlines() if ln.startswith("drift in ops: ")]
    assert "event tunegate.data.drift emitted" in said
    again = run_cli("drift", str(drop), "--dataset", "ops", "--reference", str(reference), home=home, timeout=600)
    assert again.returncode == 4 and "Traceback" not in again.stderr, again.stderr[-3000:]
    [said] = [ln for ln in again.stdout.splitlines() if ln.startswith("drift in ops: ")]
    assert "is repeated; no new event" in said and "emitted" not in said
    reports = [json.loads(p.read_text()) for p in (home / "drift").glob("*/report.json")]
    assert len(reports) == 2 and sum("event" in r for r in reports) == 1
