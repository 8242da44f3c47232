"""`tunegate prepare`: the state folder made ready for a first run; a missing base model caught before any work."""

from __future__ import annotations

import yaml

from conftest import run_cli, tiny_config


def test_prepare_is_idempotent_and_builds_nothing_for_the_tiny_model(tmp_path):
    """The default (SmolLM2) is prepared in tests/test_retrain_e2e.py before its run."""
    home = tmp_path / "state"
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config()))
    for _ in range(2):
        proc = run_cli("prepare", "--config", str(config), home=home, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert (home / "prefect" / "prefect.db").stat().st_size > 0 and (home / "mlflow.db").is_file()
        assert "tiny model is built" in proc.stdout and "MLflow store: sqlite:///" in proc.stdout


def test_a_missing_base_model_file_is_named_with_what_to_do(tmp_path):
    config = tiny_config()
    config["model"]["base_model"] = str(tmp_path / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    for command in (("prepare",), ("run",)):
        proc = run_cli(*command, "--config", str(path), home=tmp_path / "state", timeout=120)
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 1 and last.startswith("error: model.base_model: no such file or folder:"), last
        assert "make install" in last
    assert not (tmp_path / "state" / "snapshots").exists()  # nothing started
