"""The stack's access story (issue 16): MLflow's server with its basic-auth app and Prefect's server with an API
auth string, both on loopback. A request without the credentials is refused, whatever it asks; `tunegate`
commands read the credentials from the environment (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD,
PREFECT_API_AUTH_STRING, as MLflow's and Prefect's own clients do) and run, train and register through both.
docker-compose.yml wires the same settings from .env (tests/test_compose.py checks it)."""

from __future__ import annotations

import os
import subprocess
import time

import httpx
import pytest

from conftest import ROOT, TUNEGATE
from helpers.processes import free_port, healthy, prefect_server, start_mlflow, stop, wait_for
from helpers.small_runs import tiny_config

USER, PASSWORD = "admin", "tunegate-test-password-1"  # MLflow wants 12 characters or more
PREFECT_AUTH = "tunegate:prefect-test-secret"
MODEL_CREATE = "/api/2.0/mlflow/registered-models/create"
VERSIONS = "/api/2.0/mlflow/model-versions/search"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("access")
    (tmp / "basic_auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp / 'basic_auth.db'}\nadmin_username = {USER}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    port = free_port()
    mlflow = start_mlflow(tmp, port, tmp / "mlflow.log", "--app-name", "basic-auth",
                          MLFLOW_AUTH_CONFIG_PATH=str(tmp / "basic_auth.ini"), MLFLOW_AUTH_ADMIN_PASSWORD=PASSWORD,
                          MLFLOW_FLASK_SERVER_SECRET_KEY="test-only-csrf-key")
    try:
        (tmp / "prefect").mkdir()
        with prefect_server(tmp / "prefect", PREFECT_SERVER_API_AUTH_STRING=PREFECT_AUTH) as api:
            mlflow_uri = f"http://127.0.0.1:{port}"
            wait_for(lambda: healthy(f"{mlflow_uri}/health"), 180, "the MLflow server", mlflow, tmp / "mlflow.log")
            yield {"tmp": tmp, "mlflow": mlflow_uri, "prefect": api}
    finally:
        stop(mlflow)


def _env(servers: dict, home, **credentials: str) -> dict:
    env = {**os.environ, "TUNEGATE_HOME": str(home), "MLFLOW_TRACKING_URI": servers["mlflow"],
           "PREFECT_API_URL": servers["prefect"], **credentials}
    for key in ("PREFECT_HOME", "MLFLOW_REGISTRY_URI", "TUNEGATE_DASK_ADDRESS", "MLFLOW_TRACKING_USERNAME",
                "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_AUTH_STRING"):
        if key not in credentials:
            env.pop(key, None)
    return env


def _run(servers: dict, run_id: str, **credentials: str) -> subprocess.CompletedProcess:
    tmp = servers["tmp"]
    config = tiny_config(tmp, [ROOT / "examples" / "corpus"], name=f"{run_id}.yaml")
    return subprocess.run([str(TUNEGATE), "run", "--config", str(config), "--run-id", run_id], cwd=ROOT,
                          env=_env(servers, tmp / "state", **credentials), capture_output=True, text=True, timeout=900)


def test_requests_without_credentials_are_refused(servers):
    uri, api = servers["mlflow"], servers["prefect"]
    for auth in (None, (USER, "wrong-password-123"), ("nobody", PASSWORD)):
        write = httpx.post(uri + MODEL_CREATE, json={"name": "planted"}, auth=auth, timeout=30)
        assert write.status_code == 401, (auth, write.text)
        assert httpx.get(uri + VERSIONS, auth=auth, timeout=30).status_code == 401, auth
        runs = httpx.post(f"{api}/flow_runs/filter", json={}, auth=auth, timeout=30)
        assert runs.status_code == 401, (auth, runs.text)
    assert httpx.get(uri + VERSIONS, auth=(USER, PASSWORD), timeout=30).json().get("model_versions", []) == []
    user, secret = PREFECT_AUTH.split(":")
    assert httpx.post(f"{api}/flow_runs/filter", json={}, auth=(user, secret), timeout=30).status_code == 200


def test_a_run_without_registry_credentials_fails_at_once_in_one_line(servers):
    started = time.monotonic()
    proc = _run(servers, "no-mlflow-credentials", PREFECT_API_AUTH_STRING=PREFECT_AUTH)
    took = time.monotonic() - started
    print(f"\nFIGURE a run without MLflow credentials failed after {took:.0f} s")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "not authenticated" in errors[0] and "MLFLOW_TRACKING_PASSWORD" in errors[0], errors
    assert not (servers["tmp"] / "state" / "runs" / "no-mlflow-credentials" / "train").exists()  # before training


def test_tunegate_run_with_the_credentials_trains_and_registers(servers):
    proc = _run(servers, "authenticated", PREFECT_API_AUTH_STRING=PREFECT_AUTH, MLFLOW_TRACKING_USERNAME=USER,
                MLFLOW_TRACKING_PASSWORD=PASSWORD)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    versions = httpx.get(servers["mlflow"] + VERSIONS, auth=(USER, PASSWORD), timeout=30).json()["model_versions"]
    assert [v["run_id"] for v in versions] and all(v["status"] == "READY" for v in versions), versions
    user, secret = PREFECT_AUTH.split(":")
    runs = httpx.post(f"{servers['prefect']}/flow_runs/filter", json={"flow_runs": {"name": {"any_": ["authenticated"]}}},
                      auth=(user, secret), timeout=30).json()
    assert [r["state_type"] for r in runs] == ["COMPLETED"], runs
    def models(**credentials: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(TUNEGATE), "models"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                              env=_env(servers, servers["tmp"] / "state", **credentials))

    listed = models(MLFLOW_TRACKING_USERNAME=USER, MLFLOW_TRACKING_PASSWORD=PASSWORD)
    assert listed.returncode == 0 and "@champion" in listed.stdout and "authenticated" in listed.stdout, listed
    refused = models()
    assert refused.returncode == 1 and "@champion" not in refused.stdout
    assert "not authenticated" in refused.stderr and "MLFLOW_TRACKING_USERNAME" in refused.stderr, refused.stderr


def test_mlflow_without_its_admin_password_does_not_start(tmp_path):
    """What the compose stack does with MLFLOW_TRACKING_PASSWORD unset (empty): the server refuses to start."""
    (tmp_path / "basic_auth.ini").write_text(
        f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{tmp_path / 'auth.db'}\nadmin_username = {USER}\n")
    log = tmp_path / "mlflow.log"
    proc = start_mlflow(tmp_path, free_port(), log, "--app-name", "basic-auth",
                        MLFLOW_AUTH_CONFIG_PATH=str(tmp_path / "basic_auth.ini"), MLFLOW_AUTH_ADMIN_PASSWORD="",
                        MLFLOW_FLASK_SERVER_SECRET_KEY="test-only-csrf-key")
    try:
        assert proc.wait(timeout=180) != 0
    finally:
        stop(proc)
    assert "needs a password to create the admin user" in log.read_text(errors="replace")
