"""What the soak and the fault matrix share: the smallest whole pipeline (configs/tiny.yaml, tinier), a Prefect
server for their runs, and the size of a folder."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def du(path: Path) -> int:
    from tasks.registry.state_gc import size_of  # what gc counts, counted the same way

    return size_of(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp: Path, data: Path, **sections: dict) -> Path:
    """configs/tiny.yaml with a tinier model (hidden 64, 2 layers, 10 steps) on ``data``, in-process data stages, the
    model-vs-model gates (a 10-step model passes them), and ``sections`` on top."""
    import yaml

    from flows.config import load_config

    config = load_config(ROOT / "configs" / "tiny.yaml").model_dump(mode="json")
    config["data"]["paths"] = [str(data)]
    config["model"]["tiny"] = {"hidden_size": 64, "layers": 2, "heads": 2, "intermediate_size": 172, "seed": 0}
    config["tokenizer"]["vocab_size"] = 1024
    config["train"].update(max_steps=10, warmup_steps=2, checkpoint_every=5, reuse=True)
    config["dask"] = {"scheduler": "sync"}
    gates = yaml.safe_load((ROOT / "data_contracts" / "gates-tiny.yaml").read_text())
    gates["gates"] = [g for g in gates["gates"] if g["name"] in ("perplexity_improves_on_base", "not_worse_than_champion")]
    (tmp / "gates.yaml").write_text(yaml.safe_dump(gates))
    config["gates"]["file"] = str(tmp / "gates.yaml")
    config.update(sections)
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def prefect_server(tmp: Path, env: dict) -> tuple[subprocess.Popen, str]:
    """`prefect server start` on a free port (its home in ``tmp``), shared by a bench's runs; (process, API URL)."""
    import httpx

    port = free_port()
    home = tmp / "prefect-server"
    home.mkdir()
    server_env = {**env, "PREFECT_HOME": str(home)}
    server_env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                             str(port)], env=server_env, stdout=open(home / "server.log", "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    for _ in range(240):
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the Prefect server did not start: {home / 'server.log'}")
