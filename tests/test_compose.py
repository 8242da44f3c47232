"""docker-compose.yml: valid for Compose, every published port on 127.0.0.1, no secret committed."""

from __future__ import annotations

import os
import shutil
import subprocess

import yaml

from conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"


def _example_env() -> dict[str, str]:
    """The variables .env.example sets (what `cp .env.example .env` gives Compose)."""
    pairs = [ln.split("=", 1) for ln in (ROOT / ".env.example").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    return {k.strip(): v.strip() for k, v in pairs}


def _compose_config(env: dict[str, str]) -> subprocess.CompletedProcess:
    tool = shutil.which("docker-compose")
    assert tool, ("docker-compose is not installed, so docker-compose.yml cannot be validated: install it "
                  "(Debian/Ubuntu: apt-get install docker-compose; .ci/run does) and run the test again")
    # Debian's docker-compose 1.29 validates without an engine
    return subprocess.run([tool, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, cwd=ROOT,
                          env={"PATH": os.environ["PATH"], **env})


def test_compose_file_validates():
    proc = _compose_config(_example_env())
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert {"postgres", "prefect-server", "mlflow", "dask-scheduler", "dask-worker-1", "dask-worker-2",
            "prefect-worker", "gateway", "prometheus", "grafana"} <= set(services)
    for name in ("postgres", "prefect-server", "mlflow", "dask-scheduler", "gateway", "prometheus", "grafana"):
        assert "healthcheck" in services[name], name


def test_monitoring_services():
    """The gateway (project image) behind MLflow, scraped by Prometheus, charted by Grafana (tests/test_dashboard.py
    checks the dashboard and the provisioning files)."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    gateway = services["gateway"]
    assert gateway["image"] == services["mlflow"]["image"] and gateway["build"] == services["mlflow"]["build"]
    assert gateway["command"].startswith("tunegate gateway ")
    assert gateway["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert gateway["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert "http://localhost:8000/healthz" in gateway["healthcheck"]["test"]
    for name, image in (("prometheus", "prom/prometheus:"), ("grafana", "grafana/grafana:")):
        assert services[name]["image"].startswith(image) and not services[name]["image"].endswith(":latest"), name
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_ports_bind_to_loopback_only():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    published = [(name, p) for name, svc in services.items() for p in svc.get("ports", [])]
    assert published
    for name, port in published:
        assert str(port).startswith("127.0.0.1:"), (name, port)


def test_no_credentials_committed():
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT).stdout.split()
    assert ".env" not in tracked and ".env.example" in tracked
    text = COMPOSE.read_text()
    assert "PASSWORD: ${POSTGRES_PASSWORD" in text  # from .env, never written in the file
    assert "GF_SECURITY_ADMIN_PASSWORD: ${GRAFANA_ADMIN_PASSWORD" in text
    example = (ROOT / ".env.example").read_text()
    assert "POSTGRES_PASSWORD=" in example and "GRAFANA_ADMIN_PASSWORD=" in example


def test_access_settings_come_from_env_and_fail_closed():
    """Issue 16: MLflow's basic-auth app and Prefect's API auth string, set from .env; the stack's clients carry the
    same credentials; a secret left unset is empty, and empty fails closed (MLflow refuses to start without its admin
    password or CSRF key, tests/test_access.py; Prefect refuses every call but the health check); only services with a
    published port leave the internal network."""
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    mlflow, prefect = services["mlflow"], services["prefect-server"]
    assert "--app-name basic-auth" in mlflow["command"]
    assert mlflow["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"] == "${MLFLOW_TRACKING_PASSWORD:-}"
    assert mlflow["environment"]["MLFLOW_FLASK_SERVER_SECRET_KEY"] == "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}"
    ini = mlflow["environment"]["MLFLOW_AUTH_CONFIG_PATH"]
    assert ini == "/opt/tunegate/infra/mlflow/basic_auth.ini" and (ROOT / "infra/mlflow/basic_auth.ini").is_file()
    assert "COPY infra ./infra" in (ROOT / "infra/Dockerfile").read_text()
    assert prefect["environment"]["PREFECT_SERVER_API_AUTH_STRING"] == "${PREFECT_API_AUTH_STRING:-}"
    for name in ("prefect-worker", "gateway"):  # the clients of MLflow (and Prefect)
        env = services[name]["environment"]
        assert env["MLFLOW_TRACKING_PASSWORD"] == "${MLFLOW_TRACKING_PASSWORD:-}", name
        assert env["MLFLOW_TRACKING_USERNAME"] == mlflow["environment"]["MLFLOW_AUTH_ADMIN_USERNAME"], name
    assert services["prefect-worker"]["environment"]["PREFECT_API_AUTH_STRING"] == "${PREFECT_API_AUTH_STRING:-}"
    example = _example_env()
    for key in ("PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert example.get(key), key
    assert len(example["MLFLOW_TRACKING_PASSWORD"]) >= 12  # MLflow refuses shorter admin passwords
    without_env = _compose_config({})  # as a check of the file alone runs it
    assert without_env.returncode == 0, without_env.stderr
    assert compose["networks"]["backend"]["internal"] is True
    for name, svc in services.items():
        networks = set(svc.get("networks", []))
        assert networks, name
        assert ("frontend" in networks) == bool(svc.get("ports")), name  # internal-only unless it publishes a port
    assert services["postgres"]["networks"] == ["backend"]
