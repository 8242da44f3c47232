"""The deployments of prefect.yaml as Python objects, for serving them from one process (``tunegate serve``).

prefect.yaml is the one place where the schedules, parameters, the drift trigger and the concurrency
limit are written; ``prefect deploy --all`` reads it for a work pool, and ``runner_deployments`` reads it
here for ``prefect.serve``. Relative paths in the parameters are resolved against the checkout (the
folder of prefect.yaml; in an installed wheel, the copy of the project's files it carries), so a served run
does not depend on the folder ``tunegate serve`` started in.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Any

import yaml

from tasks.core.paths import PREFECT_YAML, PROJECT_ROOT

SERVED = ("retrain", "drift-monitor")


class DeploymentSpecError(ValueError):
    """prefect.yaml lacks something serving needs; one line naming it."""


def load_project(path: Path = PREFECT_YAML) -> dict[str, Any]:
    if not Path(path).is_file():
        raise DeploymentSpecError(f"deployments file not found: {path}")
    try:
        project = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise DeploymentSpecError(f"{path} is not valid YAML: {exc}".replace("\n", " ")) from exc
    if not isinstance(project.get("deployments"), list):
        raise DeploymentSpecError(f"{path}: no `deployments:` list")
    return project


def deployment_spec(project: dict[str, Any], name: str) -> dict[str, Any]:
    for spec in project["deployments"]:
        if spec.get("name") == name:
            return copy.deepcopy(spec)
    raise DeploymentSpecError(f"prefect.yaml has no deployment named {name!r}")


def work_pool_names(project: dict[str, Any]) -> list[str]:
    names = [(d.get("work_pool") or {}).get("name") for d in project["deployments"]]
    return sorted({n for n in names if n})


def load_entrypoint(entrypoint: str):
    """The flow behind ``path/to/module.py:function`` (imported as a module of this checkout)."""
    path, _, attr = entrypoint.partition(":")
    module = path.removesuffix(".py").replace("/", ".")
    return getattr(importlib.import_module(module), attr)


def pipeline_config(raw: dict[str, Any] | None, base: Path = PROJECT_ROOT, config_file: Path | None = None) -> dict[str, Any]:
    """The retrain config as JSON: ``config_file`` when given, else ``raw`` (from prefect.yaml) with its
    relative paths resolved against ``base``."""
    from flows.config import PipelineConfig, load_config, resolve_paths

    if config_file is not None:
        cfg = load_config(config_file)
    else:
        cfg = resolve_paths(PipelineConfig.model_validate(raw or {}), base)
    return cfg.model_dump(mode="json")


def _resolve(value: str | None, base: Path = PROJECT_ROOT) -> str | None:
    if value is None:
        return None
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _schedules(spec: dict[str, Any]):
    from prefect.schedules import Cron

    out = []
    for s in spec.get("schedules") or []:
        if "cron" not in s:
            raise DeploymentSpecError(f"deployment {spec['name']!r}: only cron schedules are served ({s})")
        out.append(Cron(s["cron"], timezone=s.get("timezone"), active=s.get("active", True),
                        parameters=s.get("parameters") or None))
    return out


def _concurrency(spec: dict[str, Any]):
    from prefect.client.schemas.objects import ConcurrencyLimitConfig

    limit = spec.get("concurrency_limit")
    if isinstance(limit, dict):
        return ConcurrencyLimitConfig(**limit)
    return limit


def _triggers(spec: dict[str, Any], config: dict[str, Any] | None):
    """The deployment's triggers; a trigger that passes ``config`` gets the served config, keeping the
    trigger's own ``data`` section (the templated path of the new data)."""
    from pydantic import TypeAdapter

    from prefect.events import DeploymentTriggerTypes

    adapter = TypeAdapter(DeploymentTriggerTypes)
    out = []
    for i, t in enumerate(spec.get("triggers") or [], start=1):
        t = copy.deepcopy(t)
        t.setdefault("name", f"{spec['name']}__automation_{i}")
        params = t.get("parameters") or {}
        if config is not None and isinstance(params.get("config"), dict):
            params["config"] = {**config, "data": params["config"].get("data", config.get("data"))}
        out.append(adapter.validate_python(t))
    return out


def runner_deployments(
    config_file: Path | None = None,
    dataset: str | None = None,
    new_data: str | None = None,
    reference: str | None = None,
    prefect_yaml: Path = PREFECT_YAML,
) -> list:
    """``flow.to_deployment(...)`` for retrain and drift-monitor, as prefect.yaml declares them.

    ``config_file`` replaces the retrain config (schedule, UI and trigger) and is the drift monitor's
    config; ``dataset``, ``new_data`` and ``reference`` replace the drift monitor's parameters.
    """
    from prefect.deployments.runner import EntrypointType

    project = load_project(prefect_yaml)
    base = Path(prefect_yaml).resolve().parent
    out = []
    for name in SERVED:
        spec = deployment_spec(project, name)
        flow = load_entrypoint(spec["entrypoint"])
        params = copy.deepcopy(spec.get("parameters") or {})
        config = None
        if "config" in params:
            config = pipeline_config(params["config"], base, config_file)
            params["config"] = config
        if name == "drift-monitor":
            params.update({k: v for k, v in {"dataset": dataset, "new_data": new_data, "reference": reference}.items()
                           if v is not None})
            if config_file is not None:
                params["config_file"] = str(Path(config_file).resolve())
            for key in ("new_data", "reference", "config_file", "thresholds_file"):
                if params.get(key):
                    params[key] = _resolve(params[key], base)
        out.append(flow.to_deployment(
            name=spec["name"],
            description=spec.get("description"),
            tags=spec.get("tags"),
            schedules=_schedules(spec),
            parameters=params,
            triggers=_triggers(spec, config),
            concurrency_limit=_concurrency(spec),
            enforce_parameter_schema=spec.get("enforce_parameter_schema", True),
            entrypoint_type=EntrypointType.MODULE_PATH,
        ))
    return out
