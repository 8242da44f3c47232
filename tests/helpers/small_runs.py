"""The smallest whole pipeline a test can run: configs/tiny.yaml with a tinier model and 10 steps."""

from __future__ import annotations

from pathlib import Path

import yaml

import conftest
from conftest import ROOT

SLOW_START = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600"}


def tiny_config(tmp: Path, data: list[Path], name: str = "config.yaml", **sections) -> Path:
    """configs/tiny.yaml with a tiny model (hidden 64, 2 layers) and 10 training steps, on ``data``."""
    config = conftest.tiny_config()
    config["data"]["paths"] = [str(p) for p in data]
    config["contract"] = {k: str(ROOT / "data_contracts" / f"{k}.json") for k in ("raw", "curated", "training")}
    # the project's model-vs-model gates on perplexity and bits per byte: a 10-step tiny model passes them
    # (it does not pass the ROUGE gate), so these runs are promoted and the registry has something to show
    gates = yaml.safe_load((ROOT / "data_contracts/gates-tiny.yaml").read_text())
    gates["gates"] = [g for g in gates["gates"] if g["name"] in ("perplexity_improves_on_base", "not_worse_than_champion")]
    (tmp / "gates.yaml").write_text(yaml.safe_dump(gates))
    config["gates"]["file"] = str(tmp / "gates.yaml")
    config["model"]["tiny"] = {"hidden_size": 64, "layers": 2, "heads": 2, "intermediate_size": 172, "seed": 0}
    config["tokenizer"]["vocab_size"] = 1024
    config["train"].update(max_steps=10, warmup_steps=2, checkpoint_every=5, reuse=True)
    config["dask"] = {"scheduler": "sync"}  # demo-sized data: in-process (the cluster path is tested above)
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path = tmp / name
    path.write_text(yaml.safe_dump(config))
    return path
