"""A registration that the network answered badly registers once (issue 16, races). MLflow's HTTP layer retries a
POST that failed with a 5xx; when the server had created the version before the answer was lost, the retry
creates a second one. Here a real MLflow server sits behind a proxy that forwards the first create request and
then answers 503: MLflow's own retry registers twice, tunegate's registration (no HTTP retry, look up by the
run's tag, create only when missing) once."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from helpers.processes import free_port, healthy, start_mlflow, stop, wait_for


class LosesTheFirstAnswer(BaseHTTPRequestHandler):
    """Forwards to the MLflow server; the first POST to model-versions/create with a given body is forwarded, then
    answered 503 as if a proxy had timed out."""

    upstream = ""
    lost: set[bytes] = set()

    def _forward(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        answer = httpx.request(self.command, self.upstream + self.path, content=body, timeout=30,
                               headers={k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")})
        if self.command == "POST" and self.path.endswith("/model-versions/create"):
            if body not in self.lost:
                self.lost.add(body)
                self.send_response(503)
                self.end_headers()
                return
        self.send_response(answer.status_code)
        self.send_header("Content-Type", answer.headers.get("content-type", "application/json"))
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = do_PATCH = do_DELETE = _forward

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def flaky_registry(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("registry-retry")
    port, log = free_port(), tmp / "mlflow.log"
    server = start_mlflow(tmp, port, log)
    proxy = None
    try:
        wait_for(lambda: healthy(f"http://127.0.0.1:{port}/health"), 300, "the MLflow server", server, log)
        LosesTheFirstAnswer.upstream = f"http://127.0.0.1:{port}"
        proxy = ThreadingHTTPServer(("127.0.0.1", free_port()), LosesTheFirstAnswer)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{proxy.server_address[1]}"
    finally:
        if proxy is not None:
            proxy.shutdown()
        stop(server)


def versions_of(c, name: str) -> list:
    return c.search_model_versions(f"name='{name}'")


def test_mlflows_own_retry_registers_twice(flaky_registry, monkeypatch):
    """The hazard, shown with MLflow's client as it comes: its retry of the answered-503 POST adds a version."""
    import mlflow

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    c = mlflow.MlflowClient(tracking_uri=flaky_registry, registry_uri=flaky_registry)
    c.create_registered_model("plain")
    c.create_model_version("plain", source="s3://tunegate-test/plain", tags={"tunegate.run_id": "r1"})
    assert len(versions_of(c, "plain")) == 2


def test_a_registration_whose_answer_was_lost_registers_once(flaky_registry, monkeypatch):
    import mlflow

    from tasks.registry.register import create_once
    from tasks.registry.versions import RUN_TAG

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # a user's setting: create_once turns it off
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    c = mlflow.MlflowClient(tracking_uri=flaky_registry, registry_uri=flaky_registry)
    c.create_registered_model("once")
    version = create_once(c, "once", "r1", lambda: c.create_model_version("once", source="s3://tunegate-test/once",
                                                                         tags={RUN_TAG: "r1"}))
    [only] = versions_of(c, "once")
    assert str(version.version) == str(only.version) and only.tags[RUN_TAG] == "r1"
