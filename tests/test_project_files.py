"""The project's own files (tasks.core.paths): found in the checkout, and a config outside it that names one
of them by a relative path that leads nowhere gets the project's copy; the default config is the working
directory's configs/demo.yaml, else the project's. (tests/test_wheel.py does the same from an installed wheel.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT
from flows.config import ConfigError, PipelineConfig, default_config_path, load_config, load_config_or_default
from tasks.core import paths


def test_in_a_checkout_the_project_files_are_the_checkouts():
    assert paths.PROJECT_ROOT == ROOT and paths.IN_CHECKOUT
    assert paths.DATA_CONTRACTS == ROOT / "data_contracts" and paths.DEMO_CONFIG.is_file()
    assert (paths.DEEPSPEED_TEMPLATES / "zero2.json").is_file() and paths.PREFECT_YAML.is_file()
    assert not paths.shipped_root().exists()  # only a wheel has the copy


@pytest.mark.parametrize("value, expected", [
    ("data_contracts/gates.yaml", "data_contracts/gates.yaml"),
    ("../data_contracts/raw.json", "data_contracts/raw.json"),
    ("./../../infra/deepspeed/zero3.json", "infra/deepspeed/zero3.json"),
    ("configs/tiny.yaml", "configs/tiny.yaml"),
    ("prefect.yaml", "prefect.yaml"),
    ("data_contracts/nope.json", None),  # not a file the project has
    ("missing/curated.json", None),
    ("../examples/PLANTED.json", None),  # the checkout has it, but it is not one of the files tunegate ships
    ("infra/Dockerfile", None),
    ("data_contracts/../examples/PLANTED.json", None),
])
def test_a_relative_path_names_a_project_file_only_when_it_ships(value, expected):
    assert paths.project_file(value) == (ROOT / expected if expected else None)
    assert paths.project_file(ROOT / "data_contracts/raw.json") is None  # an absolute path is the user's


def test_a_config_elsewhere_finds_its_own_files_first_then_the_projects(tmp_path):
    (tmp_path / "data_contracts").mkdir()
    own = tmp_path / "data_contracts" / "curated.json"
    own.write_text((ROOT / "data_contracts/curated.json").read_text())
    config = tmp_path / "my.yaml"
    config.write_text("contract:\n  raw: data_contracts/raw.json\n  curated: data_contracts/curated.json\n"
                      "  training: elsewhere/training.json\ngates:\n  file: ../data_contracts/gates-tiny.yaml\n")
    cfg = load_config(config)
    assert cfg.contract.raw == ROOT / "data_contracts/raw.json"  # not next to the config: the project's
    assert cfg.contract.curated == own  # next to the config: that one
    assert cfg.contract.training == tmp_path / "elsewhere/training.json"  # not a project file: named as given
    assert cfg.gates.file == ROOT / "data_contracts/gates-tiny.yaml"


def test_the_default_config_is_the_working_directorys_else_the_projects(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_config_path() == paths.DEMO_CONFIG
    assert load_config_or_default().model_dump() == load_config(ROOT / "configs/demo.yaml").model_dump()
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "demo.yaml").write_text("train:\n  max_steps: 30\n")
    assert default_config_path() == Path("configs/demo.yaml")
    assert load_config_or_default().train.max_steps == 30 and load_config().train.max_steps == 30
    (tmp_path / "mine.yaml").write_text("train:\n  max_steps: -1\n")
    with pytest.raises(ConfigError, match="train.max_steps"):
        load_config_or_default("mine.yaml")
    monkeypatch.setattr("flows.config.DEMO_CONFIG", tmp_path / "none.yaml")
    (tmp_path / "configs" / "demo.yaml").unlink()
    assert default_config_path() is None and load_config_or_default() == PipelineConfig()
