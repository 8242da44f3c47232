"""Snapshots (atomic, fingerprinted, cached), the pipeline config, and the gates."""

from __future__ import annotations

import pyarrow as pa
import pytest

from conftest import ROOT, run_cli
from flows.config import ConfigError, load_config
from tasks.core import snapshot
from tasks.evaluate.gates import Gate, check, load_gates


def table(texts):
    return pa.table({"doc_id": [str(i) for i in range(len(texts))], "text": texts})


def test_fingerprint_depends_on_rows_only(tmp_path):
    a = snapshot.write(tmp_path, "s", "k1", [table(["x", "y"])], parent=None, params={}, stats={})
    b = snapshot.write(tmp_path, "s", "k2", [table(["x"]), table(["y"]).set_column(0, "doc_id", pa.array(["1"]))],
                       parent=None, params={}, stats={})
    c = snapshot.write(tmp_path, "s", "k3", [table(["y", "x"])], parent=None, params={}, stats={})
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert a.manifest()["rows"] == 2 and a.manifest()["schema_version"] == snapshot.SCHEMA_VERSION


def test_failed_write_leaves_nothing_behind(tmp_path):
    def boom():
        yield table(["x"])
        raise RuntimeError("killed mid-stage")

    with pytest.raises(RuntimeError):
        snapshot.write(tmp_path, "s", "k", boom(), parent=None, params={}, stats={})
    assert list((tmp_path / "s").iterdir()) == []
    assert snapshot.find(tmp_path, "s", "k") is None


def test_materialize_reuses_by_cache_key(tmp_path):
    calls = []

    def produce(stats, extra):
        calls.append(1)
        stats["n"] = 1
        yield table(["x"])

    kw = dict(input_fingerprint="f", params={"a": 1}, code_version="v1", produce=produce)
    first = snapshot.materialize(tmp_path, "s", **kw)
    second = snapshot.materialize(tmp_path, "s", **kw)
    third = snapshot.materialize(tmp_path, "s", **{**kw, "params": {"a": 2}})
    assert len(calls) == 2 and second.reused and not first.reused and third.path != first.path
    assert second.manifest()["stats"] == {"n": 1} and first.manifest()["parent_fingerprint"] == "f"


def test_demo_config_loads_with_resolved_paths():
    cfg = load_config(ROOT / "configs/tiny.yaml")
    assert cfg.data.paths == [ROOT / "examples/corpus"]
    assert cfg.contract.curated == ROOT / "data_contracts/curated.json"
    assert cfg.contract.training == ROOT / "data_contracts/training.json"


@pytest.mark.parametrize(
    "yaml_text, field",
    [
        ("train:\n  max_steps: -5\n", "train.max_steps"),
        ("train:\n  learning_rate: fast\n", "train.learning_rate"),
        ("dedup:\n  threshold: 1.5\n", "dedup.threshold"),
        ("train:\n  zero_stage: 7\n", "train.zero_stage"),
        ("trian:\n  max_steps: 5\n", "trian"),
        ("pii:\n  operator: shred\n", "pii.operator"),
        ("model:\n  tiny: {hidden_size: 100, heads: 3}\n", "model.tiny"),
    ],
)
def test_bad_config_values_name_the_field(tmp_path, yaml_text, field):
    (tmp_path / "c.yaml").write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "c.yaml")
    assert field in str(err.value) and "c.yaml" in str(err.value)


def test_bad_config_value_exits_1_naming_the_field(tmp_path):
    (tmp_path / "c.yaml").write_text("data:\n  paths: [.]\ntrain:\n  micro_batch_size: 0\n")
    proc = run_cli("run", "--config", str(tmp_path / "c.yaml"), home=tmp_path / "state")
    assert proc.returncode == 1
    assert "train.micro_batch_size" in proc.stderr.strip().splitlines()[-1]


def test_unknown_command_option_is_usage_error(tmp_path):
    assert run_cli("run", "--no-such-flag", home=tmp_path).returncode == 2


@pytest.mark.parametrize("option", ["--run-id", "--resume"])
@pytest.mark.parametrize("bad", ["../x", "a/b", "..", ".hidden", "x" * 200, "run id"])
def test_a_run_id_must_name_a_folder_inside_runs(tmp_path, option, bad):
    """Issue 16: `--run-id ../x` escaped the state folder. Refused, in one line, before anything is written."""
    proc = run_cli("run", option, bad, home=tmp_path / "state")
    assert proc.returncode == 2 and proc.stderr.strip().startswith(f"error: {option}: run id "), proc.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "state" / "runs").exists()
    from tasks.core.state import StatePaths

    with pytest.raises(ValueError, match="run id"):  # the flow's own check (a deployment's parameter)
        StatePaths(tmp_path / "state").run_dir(bad)


def test_an_existing_run_id_is_refused_without_resume(tmp_path):
    """Issue 16: a reused id with another config resumed the old run's checkpoints and returned its model."""
    (tmp_path / "state" / "runs" / "taken").mkdir(parents=True)
    proc = run_cli("run", "--config", "configs/tiny.yaml", "--run-id", "taken", home=tmp_path / "state")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --run-id: run taken exists ({tmp_path / 'state' / 'runs' / 'taken'}): `tunegate run --resume taken` "
        "reruns it with its saved config; a new run needs a new id"]


def test_gates_relative_absolute_and_fallback_to_base():
    gates = [Gate(name="ppl", metric="perplexity", op="<", baseline="base"),
             Gate(name="champ", metric="bits_per_byte", op="<=", baseline="champion", tolerance=0.1),
             Gate(name="floor", metric="perplexity", op="<=", threshold=50.0),
             Gate(name="rouge", metric="rougeL", op=">=", baseline="champion", margin=1.0)]
    base = {"perplexity": 100.0, "bits_per_byte": 2.0, "rougeL": 10.0}
    results = check(gates, {"perplexity": 40.0, "bits_per_byte": 2.1, "rougeL": 9.5}, {"base": base})
    assert [r.passed for r in results] == [True, True, True, True]
    assert results[1].baseline == "champion, no champion yet → base" and results[1].threshold == pytest.approx(2.2)
    assert results[3].threshold == pytest.approx(9.0) and results[3].baseline_value == 10.0
    worse = check(gates, {"perplexity": 60.0, "bits_per_byte": 2.5, "rougeL": 18.9},
                  {"base": base, "champion": {"perplexity": 50.0, "bits_per_byte": 2.0, "rougeL": 20.0}})
    assert [r.passed for r in worse] == [True, False, False, False]
    assert worse[1].baseline == "champion" and "gate champ failed" in worse[1].describe()
    # a failed gate states the condition that did not hold ("18.9 >= 19" would read as a true statement)
    assert "rougeL 18.9, required >= 19 " in worse[3].describe() and ">= 19" not in worse[3].describe().split(",")[0]
    assert "perplexity 40 < " in results[0].describe()


def test_gates_file_loads_and_missing_file_names_path(tmp_path):
    assert [g.name for g in load_gates(ROOT / "data_contracts/gates-tiny.yaml")]
    with pytest.raises(FileNotFoundError, match="gates.yaml"):
        load_gates(tmp_path / "gates.yaml")
