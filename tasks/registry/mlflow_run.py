"""The MLflow run of a tunegate run, open from the flow's start to its end.

Opened when the flow starts (its parameters logged then, status tag ``running``), so the MLflow UI shows the
run's real duration; training's per-step metrics are logged while it trains (``follow_steps`` tails
``metrics.jsonl``); registration logs the evaluation metrics and the model into the same run
(``register.register(mlflow_run_id=…)``); the report is attached and the run ended when the flow ends
(FINISHED for promoted and blocked, FAILED for failed). A rerun of the same tunegate run id
(``--resume``) continues its MLflow run instead of opening another, and does not log a step twice. A tracking
server that is not up yet when the flow starts is not an error: the run is then logged at registration.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tasks.registry.register import experiment_id, logged_up_to, step_metric_entities
from tasks.registry.store import client, tracking
from tasks.registry.versions import RUN_TAG
from tasks.train.train import read_metrics

FOLLOW_EVERY_S = 2.0


def open_run(tracking_uri: str, run_id: str, artifact_location: str | None, params: dict[str, Any]) -> str:
    """The MLflow run id for tunegate run ``run_id``: its newest live MLflow run, set running again, or a new
    one with ``params`` logged."""
    from mlflow.entities import Param

    c = client(tracking_uri)
    with tracking(tracking_uri):
        exp_id = experiment_id(c, artifact_location)
        earlier = c.search_runs([exp_id], filter_string=f"tags.`{RUN_TAG}` = '{run_id}'",
                                order_by=["attributes.start_time DESC"], max_results=1)
        if earlier:
            mlflow_run_id = earlier[0].info.run_id
            c.update_run(mlflow_run_id, status="RUNNING")
        else:
            mlflow_run_id = c.create_run(exp_id, run_name=run_id, tags={RUN_TAG: run_id}).info.run_id
            batch = [Param(k, str(v)[:500]) for k, v in params.items()]
            for i in range(0, len(batch), 100):
                c.log_batch(mlflow_run_id, params=batch[i : i + 100])
        c.set_tag(mlflow_run_id, "status", "running")
    return mlflow_run_id


def finish_run(tracking_uri: str, mlflow_run_id: str, status: str) -> None:
    """End the run: FINISHED when the tunegate run was promoted or blocked, FAILED when it failed."""
    c = client(tracking_uri)
    c.set_tag(mlflow_run_id, "status", status)
    c.set_terminated(mlflow_run_id, "FAILED" if status == "failed" else "FINISHED")


@contextmanager
def follow_steps(tracking_uri: str, mlflow_run_id: str | None, metrics_path: Path) -> Iterator[None]:
    """While the block runs (training), log each new row of ``metrics_path`` to the run every few seconds;
    once more at the end. Steps the run already has (an earlier attempt logged them) are skipped."""
    try:
        c = client(tracking_uri)
        state = {"last": logged_up_to(c, mlflow_run_id)} if mlflow_run_id else None
    except Exception:  # the server went away: registration logs the steps (or fails, naming the server)
        state = None
    if state is None:
        yield
        return
    done = threading.Event()

    def flush() -> None:
        batch = step_metric_entities(read_metrics(metrics_path), state["last"])
        for i in range(0, len(batch), 900):
            c.log_batch(mlflow_run_id, metrics=batch[i : i + 900])
        if batch:
            state["last"] = max(m.step for m in batch)

    def flush_quietly() -> None:
        try:
            flush()
        except Exception:  # a busy or stopped server: a later round, or registration, logs what is missing
            pass

    def loop() -> None:
        while not done.wait(FOLLOW_EVERY_S):
            flush_quietly()

    follower = threading.Thread(target=loop, name="mlflow-steps", daemon=True)
    follower.start()
    try:
        yield
    finally:
        done.set()
        follower.join(timeout=30)
        flush_quietly()
