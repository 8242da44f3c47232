"""The gateway's parts without a model: the rollout file (reread on change, a bad change refused), the canary
controller against a real MLflow registry (sticky hash routing, guards, rollback and promotion recorded on the
version), answer scrubbing (streamed = whole), and the traffic store (bounds, feedback, corrections)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from pathlib import Path

import pytest

from tasks.serve.answer_scrub import AnswerScrubber, sentences, split
from tasks.serve.canary import (PROMOTED, ROLLED_BACK, STEP, CanaryController, CanaryRegistry, Outcome, Window,
                                failed_guard)
from tasks.serve.rollout import CanarySettings, RolloutFile, bucket
from tasks.serve.traffic import TrafficSettings, TrafficStore, accepted_corrections, read_records

NAME = "canary-model"


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A real MLflow registry (sqlite) with versions 1 (@champion) and 2 (@challenger); the state folder (where
    alias moves are logged) in tmp_path."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("TUNEGATE_HOME", str(tmp_path))

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    c.create_registered_model(NAME)
    for k in (1, 2):
        src = tmp_path / f"v{k}"
        src.mkdir()
        c.create_model_version(NAME, str(src))
    c.set_registered_model_alias(NAME, "champion", "1")
    c.set_registered_model_alias(NAME, "challenger", "2")
    return uri, c


def _rollout(path: Path, **fields) -> None:
    import yaml

    path.write_text(yaml.safe_dump(fields))


def test_rollout_file_is_reread_on_change_and_a_bad_change_is_refused(tmp_path):
    path = tmp_path / "rollout.yaml"
    _rollout(path, version=1, strategy="blue-green")
    rollout = RolloutFile(path)
    seen = []
    rollout.listeners.append(lambda settings, digest: seen.append((settings and settings.strategy, digest)))
    assert rollout.settings.strategy == "blue-green" and not rollout.check()

    _rollout(path, version=2, strategy="canary", canary={"steps": [0.1, 0.5]})
    assert rollout.check() and rollout.settings.strategy == "canary" and rollout.settings.canary.steps == [0.1, 0.5]
    good = rollout.digest

    _rollout(path, version=3, strategy="canary", canary={"steps": [0.5, 0.1]})
    assert not rollout.check()
    assert rollout.settings.strategy == "canary" and rollout.digest == good  # the file in force stays
    assert "canary.steps" in rollout.errors[-1] and "increase" in rollout.errors[-1]
    _rollout(path, version=4, strategy="purple")
    assert not rollout.check() and "strategy" in rollout.errors[-1]
    assert [s for s, _ in seen] == ["canary", None, None]


def test_bucket_is_stable_and_uniform():
    assert bucket("user-1") == bucket("user-1") and 0 <= bucket("user-1") < 1
    draws = [bucket(f"2:user-{i}") for i in range(4000)]
    share = sum(d < 0.2 for d in draws) / len(draws)
    assert abs(share - 0.2) < 4 * math.sqrt(0.2 * 0.8 / len(draws))


def test_guards_compare_the_challenger_with_the_champion():
    settings = CanarySettings(min_requests=20)
    champion, challenger = Window(100), Window(100)
    for _ in range(50):
        champion.items.append(Outcome(True, 0.10, False))
    for _ in range(19):
        challenger.items.append(Outcome(False, 0.10, False))
    assert failed_guard(challenger, champion, settings) is None  # too few answers to judge
    challenger.items.append(Outcome(False, 0.10, False))
    assert failed_guard(challenger, champion, settings)[0] == "error_rate"

    slow = Window(100)
    for _ in range(30):
        slow.items.append(Outcome(True, 0.2, False))
    guard, reason = failed_guard(slow, champion, settings)
    assert guard == "latency_p95" and "2.00x" in reason
    scrubbed = Window(100)
    for i in range(30):
        scrubbed.items.append(Outcome(True, 0.1, i % 3 == 0))
    assert failed_guard(scrubbed, champion, settings)[0] == "guardrail_rate"
    fine = Window(100)
    for _ in range(30):
        fine.items.append(Outcome(True, 0.11, False))
    assert failed_guard(fine, champion, settings) is None


def test_canary_steps_up_then_promotes_through_the_registry(registry):
    from tasks.registry.versions import champion_history

    uri, c = registry
    canary = CanaryController(CanaryRegistry(uri, NAME))
    canary.configure(CanarySettings(steps=[0.2, 1.0], step_seconds=10, min_requests=5))
    t0 = time.time()
    canary.sync("2", "1", active=True, now=t0)
    assert canary.share() == 0.2 and float(c.get_model_version(NAME, "2").tags["tunegate.canary.started_at"]) > 0
    keys = [f"user-{i}" for i in range(500)]
    taken = {k for k in keys if canary.takes(k)}
    assert taken == {k for k in keys if bucket(f"2:{k}") < 0.2}  # sticky: the hash decides, on any replica

    for _ in range(5):
        canary.record_champion(Outcome(True, 0.1, False))
        canary.record("2", Outcome(True, 0.1, False))
    canary.sync("2", "1", active=True, now=t0 + 5)
    assert canary.share() == 0.2  # not yet: the step lasts 10 s
    canary.sync("2", "1", active=True, now=t0 + 11)
    assert canary.share() == 1.0 and json.loads(c.get_model_version(NAME, "2").tags[STEP])["step"] == 1
    assert {k for k in keys if canary.takes(k)} == set(keys)

    other = CanaryController(CanaryRegistry(uri, NAME))  # a second replica adopts the step from the registry
    other.configure(CanarySettings(steps=[0.2, 1.0], step_seconds=10, min_requests=5))
    other.sync("2", "1", active=True, now=t0 + 12)
    assert other.share() == 1.0

    for _ in range(5):
        canary.record("2", Outcome(True, 0.1, False))
    canary.sync("2", "1", active=True, now=t0 + 22)
    assert str(c.get_model_version_by_alias(NAME, "champion").version) == "2"
    assert champion_history(c, NAME) == ["1"] and PROMOTED in c.get_model_version(NAME, "2").tags
    assert canary.share() == 0.0
    from tasks.registry.alias_log import events

    moved = events(c, NAME)[-1]  # the alias history says what moved @champion and why
    assert (moved.alias, moved.previous, moved.version, moved.via) == ("champion", "1", "2", "gateway canary controller")
    assert moved.reason == "the canary held at every traffic step"


def test_a_failed_guard_rolls_back_without_moving_the_alias(registry):
    uri, c = registry
    canary = CanaryController(CanaryRegistry(uri, NAME))
    canary.configure(CanarySettings(steps=[0.5], min_requests=10))
    canary.sync("2", "1", active=True)
    for _ in range(20):
        canary.record_champion(Outcome(True, 0.1, False))
    for _ in range(10):
        canary.record("2", Outcome(True, 0.5, False))
    assert canary.share() == 0.0 and canary.state.rolled_back.startswith("latency_p95")
    canary.sync("2", "1", active=True)  # the registry thread writes the reason
    assert c.get_model_version(NAME, "2").tags[ROLLED_BACK].startswith("latency_p95")
    assert str(c.get_model_version_by_alias(NAME, "champion").version) == "1"
    replica = CanaryController(CanaryRegistry(uri, NAME))
    replica.sync("2", "1", active=True)
    assert replica.share() == 0.0 and replica.state.rolled_back.startswith("latency_p95")


def test_a_blocked_challenger_gets_no_traffic(registry):
    uri, c = registry
    c.set_model_version_tag(NAME, "2", "status", "blocked")
    c.set_model_version_tag(NAME, "2", "blocked_by", "gate rougeL >= 10")
    canary = CanaryController(CanaryRegistry(uri, NAME))
    canary.sync("2", "1", active=True)
    assert canary.share() == 0.0 and "rougeL" in canary.state.rolled_back


@pytest.fixture(scope="module")
def scrubber():
    from flows.config import PipelineConfig

    return AnswerScrubber(PipelineConfig().pii)


def test_answers_streamed_are_scrubbed_as_whole_ones(scrubber):
    text = ("Write to Maria Gonzalez at maria.gonzalez@example.org. Or call 415-555-0132 after 5pm!\n"
            "Her card 4111 1111 1111 1111 is on file. Regards, the support team")
    assert "".join(sentences(text)) == text and split("One. Two")[1] == "Two"
    (whole,), (found,) = scrubber.scrub([text])
    assert "maria.gonzalez" not in whole and "555-0132" not in whole and "4111" not in whole
    assert found["EMAIL_ADDRESS"] == 1 and found["PHONE_NUMBER"] == 1
    for size in (1, 4, 17):
        stream = scrubber.stream()
        out = "".join(stream.feed(text[i:i + size]) for i in range(0, len(text), size)) + stream.finish()
        assert out == whole and stream.found == found, size
    assert AnswerScrubber(None).scrub([text]) == ([text], [{}])


def test_traffic_store_scrubs_bounds_and_joins_corrections(tmp_path, scrubber):
    folder = tmp_path / "traffic"
    store = TrafficStore(folder, TrafficSettings(file_bytes=4096, max_bytes=2**16),
                         lambda texts: scrubber.scrub(texts)[0])
    store.start()
    store.add({"kind": "request", "id": "cmpl-1", "index": 0, "time": 1.0, "version": "3",
               "prompt": "My email is ann.lee@example.com, what is the K-20 torque?", "answer": "12 Nm"},
              scrub_fields=("prompt",))
    store.add({"kind": "feedback", "id": "fb-1", "time": 2.0, "response_id": "cmpl-1", "index": 0, "rating": -1.0,
               "correction": "14 Nm"}, scrub_fields=("correction",))
    store.add({"kind": "feedback", "id": "fb-2", "time": 3.0, "response_id": "cmpl-1", "index": 0, "rating": 1.0,
               "correction": "14 Nm (ask ann.lee@example.com)"}, scrub_fields=("correction",))
    assert store.drain()
    (request,) = read_records(folder, "request")
    assert "ann.lee" not in request["prompt"] and "<EMAIL_ADDRESS>" in request["prompt"]
    assert store.knows("cmpl-1") and not store.knows("cmpl-2")
    fresh = TrafficStore(folder, TrafficSettings(), lambda t: t)  # another replica finds it in the files
    assert fresh.knows("cmpl-1")
    (pair,) = accepted_corrections(folder)
    assert pair["response"] == "14 Nm (ask <EMAIL_ADDRESS>)" and pair["feedback_id"] == "fb-2"
    assert pair["response_id"] == "cmpl-1" and pair["version"] == "3" and "<EMAIL_ADDRESS>" in pair["instruction"]

    for i in range(200):  # rotation and the size bound: the folder never grows past max_bytes by more than a file
        store.add({"kind": "request", "id": f"cmpl-x{i}", "time": 4.0, "prompt": "", "answer": "x" * 900})
    assert store.drain()
    files = list(folder.glob("traffic-*.jsonl"))
    assert len(files) > 2 and sum(p.stat().st_size for p in files) <= 2**16 + 4096
    old = sorted(files)[0]  # the first written (names carry the time): never the file being written
    os.utime(old, (time.time() - 40 * 86400,) * 2)
    assert old in store.enforce_bounds() and not old.exists()


def test_the_vllm_engine_asked_for_where_it_cannot_run_fails_saying_why(tmp_path):
    """On a machine without vLLM or a GPU, `--engine vllm` stops at once with the reason (auto falls back to
    transformers: every other gateway test)."""
    from conftest import TUNEGATE
    from tasks.serve.vllm_versions import vllm_missing

    why = vllm_missing()
    if why is None:  # a GPU machine with vLLM: auto picks it
        from flows.cli.gateway import _versions
        from tasks.serve.vllm_versions import VllmVersions

        assert isinstance(_versions("auto", f"sqlite:///{tmp_path / 'm.db'}", NAME, tmp_path), VllmVersions)
        return
    env = {**os.environ, "TUNEGATE_HOME": str(tmp_path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([str(TUNEGATE), "gateway", "--engine", "vllm", "--port", "1"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and f"--engine vllm: {why}" in proc.stderr + proc.stdout
    bogus = subprocess.run([str(TUNEGATE), "gateway", "--engine", "tgi", "--port", "1"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert bogus.returncode == 1 and "choose auto, vllm or transformers" in bogus.stderr + bogus.stdout
