"""Screenshots of the Prefect and MLflow UIs on a state folder, taken by headless Chromium (Debian's
`chromium` package), to look at what a user sees after a run without opening a browser.

    TUNEGATE_HOME=.tunegate .venv/bin/python infra/screenshot_uis.py OUT_DIR [--prefect-port 4310 --mlflow-port 5310]

Starts `tunegate server` on the state folder, finds the newest flow run (Prefect API) and MLflow run, and
writes OUT_DIR/prefect-runs.png, prefect-flow-run.png, prefect-report.png (the report artifact, full length),
mlflow-run.png, mlflow-metrics.png, mlflow-model.png; prints what it opened. Not a test: it needs Chromium, which the project does not install.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import requests

BIN = Path(sys.executable).parent


def wait(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(url, timeout=5).status == 200:
                return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"{url} did not answer in {timeout:.0f} s")


def shoot(chromium: str, url: str, out: Path, wait_ms: int = 15000, height: int = 1000) -> None:
    subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size=1440,{height}", f"--virtual-time-budget={wait_ms}", f"--screenshot={out}", url],
                   check=True, capture_output=True, timeout=180)
    print(f"{out.name:22} {url}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--prefect-port", type=int, default=4310)
    parser.add_argument("--mlflow-port", type=int, default=5310)
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("no chromium: apt-get install chromium")
    args.out.mkdir(parents=True, exist_ok=True)
    prefect, mlflow_ui = f"http://127.0.0.1:{args.prefect_port}", f"http://127.0.0.1:{args.mlflow_port}"
    server = subprocess.Popen([str(BIN / "tunegate"), "server", "--prefect-port", str(args.prefect_port),
                               "--mlflow-port", str(args.mlflow_port)], start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait(f"{prefect}/api/health")
        wait(f"{mlflow_ui}/health")
        runs = requests.post(f"{prefect}/api/flow_runs/filter", json={"sort": "START_TIME_DESC", "limit": 1},
                             timeout=30).json()
        shoot(chromium, f"{prefect}/runs", args.out / "prefect-runs.png")
        if runs:
            shoot(chromium, f"{prefect}/runs/flow-run/{runs[0]['id']}", args.out / "prefect-flow-run.png")
            artifacts = requests.post(f"{prefect}/api/artifacts/filter", json={"artifacts": {"flow_run_id": {
                "any_": [runs[0]["id"]]}}}, timeout=30).json()
            if artifacts:
                # the report with its plots inline is large (about 140 kB): the UI needs a while to render it
                shoot(chromium, f"{prefect}/artifacts/artifact/{artifacts[0]['id']}", args.out / "prefect-report.png",
                      wait_ms=40000, height=7000)
        import mlflow

        uri = f"sqlite:///{Path(os.environ.get('TUNEGATE_HOME', '.tunegate')).absolute() / 'mlflow.db'}"
        c = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        exp = c.get_experiment_by_name("tunegate")
        if exp is not None:
            [run] = c.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
            shoot(chromium, f"{mlflow_ui}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}",
                  args.out / "mlflow-run.png")
            shoot(chromium, f"{mlflow_ui}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}/model-metrics",
                  args.out / "mlflow-metrics.png")
            models = c.search_registered_models(max_results=1)
            if models:
                shoot(chromium, f"{mlflow_ui}/#/models/{models[0].name}", args.out / "mlflow-model.png")
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
