"""What the tests against a real Prefect server share: the environment of a client command, waiting for
`tunegate serve` to register, a drift-monitor run of the served deployment, the retrain runs the drift trigger
started, their drift reports; ``served`` is a dict with the server's "api", the serve process "proc" and its
"log"."""

from __future__ import annotations

import os
from pathlib import Path

from helpers.processes import SERVER_ENV, client, wait_for


def client_env(api_url: str, home: Path, **extra: str) -> dict:
    env = {**os.environ, **SERVER_ENV, "PREFECT_API_URL": api_url, "TUNEGATE_HOME": str(home), **extra}
    env.pop("PREFECT_HOME", None)
    return env


def wait_registered(server: str, proc, log: Path, parameter: str, value: str) -> None:
    """Until `tunegate serve` has registered the drift monitor with ``parameter`` set to ``value``."""
    def registered():
        with client(server) as c:
            try:
                d = c.read_deployment_by_name("drift-monitor/drift-monitor")
            except Exception:
                return None
            return d if d.parameters.get(parameter) == value else None

    wait_for(registered, 120, "tunegate serve to register its deployments", proc, log, every=1)


def run_monitor(served: dict, new_data: Path, timeout: float = 180):
    """A drift-monitor run of the served deployment, waited for until it is final."""
    with client(served["api"]) as c:
        d = c.read_deployment_by_name("drift-monitor/drift-monitor")
        run = c.create_flow_run_from_deployment(d.id, parameters={"dataset": "corpus", "new_data": str(new_data)})

    def final():
        with client(served["api"]) as c:
            fr = c.read_flow_run(run.id)
            return fr if fr.state and fr.state.is_final() else None

    return wait_for(final, timeout, f"the drift-monitor run on {new_data.name}", served["proc"], served["log"], every=1)


def retrain_runs_by_automation(api: str) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with client(api) as c:
        d = c.read_deployment_by_name("retrain/retrain")
        runs = c.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[d.id])))
    return [r for r in runs if r.created_by is not None and r.created_by.type == "AUTOMATION"]


def cancel(api: str, run) -> None:
    from prefect.states import Cancelled, Cancelling

    with client(api) as c:
        fr = c.read_flow_run(run.id)
        if not fr.state.is_final():
            c.set_flow_run_state(run.id, Cancelled() if fr.state.is_scheduled() else Cancelling(), force=True)


def drift_report(home: Path, flow_run) -> dict:
    import json

    reports = [json.loads(p.read_text()) for p in (home / "drift").glob("*/report.json")]
    [rep] = [r for r in reports if r["new_data"] == str(Path(flow_run.parameters["new_data"]).resolve())]
    return rep


def is_final(api: str, run) -> bool:
    with client(api) as c:
        return c.read_flow_run(run.id).state.is_final()


def stopped(api: str, run, log: Path) -> bool:
    """The cancelled run ended: a final state, or Cancelling with its flow process gone. The second is a Prefect 3.9
    race seen once: cancelled while Pending, its process started, found the run Cancelling before any user code ran
    and exited 1 ("Finished in state Cancelling()", UnfinishedRun), and the runner, seeing a process that exited by
    itself, never moved the run on to Cancelled."""
    with client(api) as c:
        state = c.read_flow_run(run.id).state
    if state.is_final():
        return True
    return state.name == "Cancelling" and f"Execution of flow run '{run.id}'" in Path(log).read_text(errors="replace")
