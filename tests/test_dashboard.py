"""Monitoring: the Grafana dashboard (infra/grafana/dashboards/) charts exactly what the gateway exports
(tasks/serve/metrics.py) — every metric it queries exists, with the labels it uses, and every metric the
gateway exports has a panel — and the Prometheus and Grafana provisioning files point at the right places."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client.metrics import MetricWrapperBase

from conftest import ROOT
from tasks.serve.metrics import GatewayMetrics

INFRA = ROOT / "infra"
DASHBOARDS = INFRA / "grafana" / "dashboards"
DASHBOARD = DASHBOARDS / "tunegate-gateway.json"
PROVISIONING = INFRA / "grafana" / "provisioning"
DATASOURCES = PROVISIONING / "datasources" / "prometheus.yml"
PROVIDERS = PROVISIONING / "dashboards" / "tunegate.yml"
PROMETHEUS = INFRA / "prometheus" / "prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"

DATASOURCE_UID = "tunegate-prometheus"
DASHBOARDS_IN_GRAFANA = "/var/lib/grafana/dashboards"
SCRAPE_LABELS = {"job", "instance"}  # Prometheus adds these to every scraped series
METRIC_NAME = re.compile(r"\btunegate_[A-Za-z0-9_:]*")
SELECTOR = re.compile(r"\b(tunegate_[A-Za-z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
RATE_OF = re.compile(r"\b(?:rate|irate|increase)\s*\(\s*(tunegate_[A-Za-z0-9_:]*)")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


class Sample:
    """One sample name the gateway's /metrics can show: its family, the family's type and its label names."""

    def __init__(self, family: str, kind: str, labels: set[str]):
        self.family, self.kind, self.labels = family, kind, labels


def exported() -> dict[str, Sample]:
    """Every sample name GatewayMetrics exposes (counter → ``_total``; histogram → ``_bucket``, ``_sum``,
    ``_count``; gauge → its name), from the families its registry collects."""
    metrics = GatewayMetrics()
    labelnames = {m._name: set(m._labelnames) for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}
    samples: dict[str, Sample] = {}
    for family in metrics.registry.collect():
        assert family.type in SUFFIXES, f"{family.name}: a {family.type} the dashboard test does not know"
        labels = labelnames[family.name]
        for suffix in SUFFIXES[family.type]:
            samples[family.name + suffix] = Sample(family.name, family.type,
                                                   labels | ({"le"} if suffix == "_bucket" else set()))
    return samples


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(items: list[dict]) -> list[dict]:
    """Every panel, rows' own panels included (a collapsed row holds its panels); rows themselves left out."""
    found = []
    for item in items:
        if item.get("type") == "row":
            found.extend(panels(item.get("panels", [])))
        else:
            found.append(item)
    return found


def queries() -> list[tuple[str, str, str]]:
    """(where, PromQL, legend) for every target of every panel and every query variable."""
    board = dashboard()
    found = [(f"panel {p.get('title')!r} target {t.get('refId')}", t.get("expr", ""), t.get("legendFormat", ""))
             for p in panels(board["panels"]) for t in p.get("targets", [])]
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]["query"] if isinstance(var.get("query"), dict) else var.get("query", "")
            found.append((f"variable ${var['name']}", query, ""))
    return found


def test_dashboard_parses_and_every_panel_queries_the_provisioned_datasource():
    board = dashboard()
    assert board["uid"] == "tunegate-gateway" and board["title"] and isinstance(board["schemaVersion"], int)
    assert board["schemaVersion"] >= 36  # datasources referenced by uid
    ids = [p["id"] for p in board["panels"]] + [p["id"] for r in board["panels"] for p in r.get("panels", [])]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    shown = panels(board["panels"])
    assert len(shown) >= 10
    for panel in shown:
        title = panel.get("title")
        assert title, panel
        assert panel.get("datasource") == {"type": "prometheus", "uid": DATASOURCE_UID}, title
        assert panel.get("targets"), f"panel {title!r} has no query"
        assert {"x", "y", "w", "h"} <= set(panel.get("gridPos", {})), title
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"panel {title!r}: a target without an expression"
            assert target.get("datasource", {"uid": DATASOURCE_UID})["uid"] == DATASOURCE_UID, title
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            assert var["datasource"]["uid"] == DATASOURCE_UID, var["name"]


def test_every_queried_metric_is_exported_by_the_gateway():
    samples = exported()
    missing = sorted({f"{name} ({where})" for where, expr, _ in queries() for name in METRIC_NAME.findall(expr)
                      if name not in samples})
    assert not missing, "the dashboard queries metrics the gateway does not export: " + ", ".join(missing)


def test_every_exported_metric_has_a_panel():
    samples = exported()
    queried = {samples[name].family for _, expr, _ in queries() for name in METRIC_NAME.findall(expr)
               if name in samples}
    families = {s.family for s in samples.values()}
    unseen = sorted(families - queried)
    assert not unseen, "the gateway exports metrics no dashboard panel shows: " + ", ".join(unseen)


def test_queries_use_labels_the_metrics_have():
    samples = exported()
    problems = []
    for where, expr, legend in queries():
        names = [n for n in METRIC_NAME.findall(expr) if n in samples]
        available = set(SCRAPE_LABELS).union(*(samples[n].labels for n in names)) if names else set()
        for metric, matchers in SELECTOR.findall(expr):
            if metric in samples:
                for label in MATCHER.findall(matchers):
                    if label not in samples[metric].labels | SCRAPE_LABELS:
                        problems.append(f"{where}: {metric} has no label {label!r}")
        for grouping in GROUPING.findall(expr):
            for label in filter(None, (part.strip() for part in grouping.split(","))):
                if label not in available:
                    problems.append(f"{where}: groups by {label!r}, which none of {names} has")
        for label in LEGEND_LABEL.findall(legend):
            if label not in available:
                problems.append(f"{where}: legend shows {{{{{label}}}}}, which none of {names} has")
        for metric in RATE_OF.findall(expr):
            if metric in samples and samples[metric].kind == "gauge":
                problems.append(f"{where}: rate/increase of the gauge {metric}")
        if "histogram_quantile" in expr:
            if not any(n.endswith("_bucket") and samples[n].kind == "histogram" for n in names):
                problems.append(f"{where}: histogram_quantile without a histogram's _bucket")
            if not any("le" in (p.strip() for p in g.split(",")) for g in GROUPING.findall(expr)):
                problems.append(f"{where}: histogram_quantile over a sum that drops 'le'")
    assert not problems, "\n".join(problems)


def test_dashboard_checker_names_a_missing_metric():
    """The check above fails naming the metric (a renamed metric in the dashboard would be caught)."""
    samples = exported()
    expr = 'sum(rate(tunegate_gateway_requests_total[5m])) + sum(rate(tunegate_gateway_no_such_total[5m]))'
    assert [n for n in METRIC_NAME.findall(expr) if n not in samples] == ["tunegate_gateway_no_such_total"]
    assert "tunegate_gateway_requests" not in samples  # a counter is only exposed with _total
    assert {"tunegate_gateway_request_seconds_bucket", "tunegate_gateway_request_seconds_sum",
            "tunegate_gateway_request_seconds_count", "tunegate_gateway_canary_share"} <= set(samples)


def compose_services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def mounts(service: dict) -> dict[str, tuple[str, bool]]:
    """container path → (host path, read-only) for a service's short-syntax volumes."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        found[target] = (source, mode == ["ro"])
    return found


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards():
    sources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert [s["uid"] for s in sources] == [DATASOURCE_UID]
    source = sources[0]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert source["access"] == "proxy"

    providers = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == [DASHBOARDS_IN_GRAFANA]
    assert all(p["type"] == "file" for p in providers)

    grafana = compose_services()["grafana"]
    volumes = mounts(grafana)
    assert volumes["/etc/grafana/provisioning"] == ("./infra/grafana/provisioning", True)
    assert volumes[DASHBOARDS_IN_GRAFANA] == ("./infra/grafana/dashboards", True)
    assert (ROOT / volumes["/etc/grafana/provisioning"][0]).resolve() == PROVISIONING
    assert (ROOT / volumes[DASHBOARDS_IN_GRAFANA][0]).resolve() == DASHBOARDS
    env = grafana["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-}"  # from .env only
    assert str(env["GF_AUTH_ANONYMOUS_ENABLED"]).lower() == "false"
    home = Path(env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home.parent == Path(DASHBOARDS_IN_GRAFANA) and (DASHBOARDS / home.name).is_file()
    for path in DASHBOARDS.glob("*.json"):
        json.loads(path.read_text())  # Grafana skips a dashboard file it cannot parse


def test_prometheus_scrapes_the_gateway():
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    gateway = [job for job in jobs.values()
               if any("gateway:8000" in c.get("targets", []) for c in job.get("static_configs", []))]
    assert len(gateway) == 1, "prometheus.yml must scrape gateway:8000"
    assert gateway[0].get("metrics_path", "/metrics") == "/metrics"
    assert gateway[0].get("scrape_interval", config.get("global", {}).get("scrape_interval")) == "5s"

    services = compose_services()
    assert mounts(services["prometheus"])["/etc/prometheus/prometheus.yml"] == (
        "./infra/prometheus/prometheus.yml", True)
    assert "--port 8000" in services["gateway"]["command"] and "--host 0.0.0.0" in services["gateway"]["command"]
    assert services["grafana"]["depends_on"]["prometheus"]

