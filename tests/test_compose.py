"""docker-compose.yml: valid for Compose, every published port on 127.0.0.1, no secret committed."""

from __future__ import annotations

import shutil
import subprocess

import yaml

from conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"


def test_compose_file_validates():
    tool = shutil.which("docker-compose")
    if tool:  # Debian's docker-compose 1.29 validates without an engine (.ci/run installs it)
        proc = subprocess.run([tool, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, cwd=ROOT)
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
