"""Exposure: what tunegate starts listens on 127.0.0.1 only; compose publishes on 127.0.0.1; no credential
is committed.

- ``tunegate server`` (Prefect server + MLflow UI) and ``tunegate serve`` (the Prefect runner): tests/test_operations.py
  starts them as a user does and reads the listening sockets of their whole process trees
  (tests/helpers/sockets.py): every one is on 127.0.0.1, none on 0.0.0.0 / :: (all interfaces).
- The Dask LocalCluster of tasks/core/executor.py (scheduler, nanny, worker and its dashboard): the same.
- docker-compose.yml: every published port, in short or long syntax, names host 127.0.0.1; no service uses
  the host's network. (Inside the containers the servers bind 0.0.0.0, which only the published port reaches.)
- The files git tracks (and untracked ones not ignored, so new files count before their first commit) hold no
  private key, cloud key, token or password in a URL, except the allow-listed fakes below, each justified.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import yaml

from conftest import ROOT
from helpers.sockets import LOOPBACK, listening, process_tree


def test_dask_local_cluster_listens_on_loopback_only():
    from tasks.core import executor
    from tasks.core.executor import DaskSettings, client_for

    settings = DaskSettings(workers=1, memory_limit="1GiB")
    before = set(listening(process_tree(os.getpid())))
    client = client_for(settings)
    try:
        assert client.submit(sum, [1, 2]).result(timeout=120) == 3
        new = sorted(set(listening(process_tree(os.getpid()))) - before)
        print(f"\nDask LocalCluster listens on: {[(a, p) for _, a, p in new]}")
        assert len(new) >= 3, new  # scheduler, nanny, worker, and the dashboard when it runs
        assert all(addr in LOOPBACK for _, addr, _ in new), new
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        dashboard = client.cluster.scheduler.http_server
        if dashboard is not None:  # distributed starts it even with dashboard_address=None: loopback too
            assert {s.getsockname()[0] for s in dashboard._sockets.values()} <= LOOPBACK
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
        for key, c in list(executor._clients.items()):
            if c is client:
                del executor._clients[key]


# ------------------------------------------------------------------------------------------- compose

def _published(port) -> tuple[str | None, str]:
    """(host address or None for all interfaces, the port mapping as written) of one ports entry."""
    if isinstance(port, dict):  # long syntax
        return port.get("host_ip"), str(port)
    text = str(port)
    parts = text.rsplit("/", 1)[0]
    if parts.startswith("["):  # [::1]:8080:80
        host, _, rest = parts[1:].partition("]")
        return host, text
    pieces = parts.split(":")
    return (pieces[0] if len(pieces) == 3 else None), text


def test_compose_publishes_on_loopback_only():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    published = []
    for name, svc in services.items():
        assert svc.get("network_mode") != "host", f"{name} shares the host's network: its ports bypass publishing"
        for port in svc.get("ports", []) or []:
            host, written = _published(port)
            published.append((name, host, written))
    assert len(published) >= 4
    for name, host, written in published:
        assert host in LOOPBACK, f"{name} publishes {written} on {'all interfaces' if host is None else host}"


def test_compose_port_parser_sees_exposure():
    assert _published("8080:80")[0] is None and _published("80")[0] is None
    assert _published({"target": 80, "published": 8080})[0] is None
    assert _published("0.0.0.0:8080:80/tcp")[0] == "0.0.0.0" and _published("[::1]:8080:80")[0] == "::1"
    assert _published("127.0.0.1:4200:4200")[0] == "127.0.0.1"


# ------------------------------------------------------------------------------------------- credentials

SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret key": re.compile(r"(?i)aws_secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+=]{40}"),
    "token": re.compile(r"\b(?:ghp_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{40,}|xox[baprs]-[A-Za-z0-9-]{10,}"
                        r"|sk-(?:proj-)?[A-Za-z0-9_-]{20,}|AIza[0-9A-Za-z_-]{35}|hf_[A-Za-z0-9]{30,}"
                        r"|glpat-[A-Za-z0-9_-]{20})"),
    # user:password@ in a URL, unless the password is an interpolation (${VAR}, ${VAR:-})
    "password in a URL": re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://(?:\$\{[^}\s]*\}|[^/\s:@'\"$]+):(?!\$\{)"
                                    r"([^@\s/'\"]+)@"),
}
# in configuration files (not code, where `password=...` is mostly a parameter name): a literal password
CONFIG_SUFFIXES = {".yaml", ".yml", ".toml", ".ini", ".cfg", ".conf", ".env", ".json", ".properties"}
CONFIG_PASSWORD = re.compile(r"(?im)^[ \t]*[\w.-]*(?:password|passwd|secret|token|api_key)[\w.-]*[ \t]*[:=][ \t]*"
                             r"(?!(?:\$\{|<|null\b|none\b|\"\"|''|-?\d*\.\d+[ \t]*(?:#|$)))"  # a decimal (a threshold) is no secret
                             r"['\"]?[^\s'\"#]{4,}")

# Each entry: (file, kind) -> why the hit is not a credential.
ALLOWED = {
    ("tests/test_pii_fast.py", "private key"): "fake key blocks the PRIVATE_KEY recognizer must scrub",
    ("tests/test_pii_fast.py", "AWS access key id"): "AKIAIOSFODNN7EXAMPLE, AWS's documented example key id, "
                                                     "scrubbed by the API_KEY recognizer in the test",
    ("tests/test_pii_fast.py", "token"): "made-up GitHub/Slack/OpenAI-shaped tokens (ABCD…, 0123… sequences) the "
                                         "API_KEY recognizer must scrub",
    ("tests/test_pii_fast.py", "password in a URL"): "made-up connection strings (u:p4ss, app:pa55word) the "
                                                     "CONNECTION_STRING recognizer must scrub",
    ("tasks/data/pii/secrets.py", "password in a URL"): "docstring examples of what the recognizer matches (user:pass, "
                                               "user:token)",
    (".env.example", "password in a config file"): "POSTGRES_PASSWORD=change-me, the placeholder a user replaces "
                                                   "in their own (git-ignored) .env",
    ("tests/test_exposure.py", "private key"): "the planted samples that prove this scan finds what it looks for",
    ("tests/test_exposure.py", "AWS access key id"): "the same planted samples",
    ("tests/test_exposure.py", "password in a URL"): "the same planted samples",
}


def _repo_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return sorted({f for f in out.split("\0") if f and (ROOT / f).is_file()})


def find_secrets(files: list[str], base: Path = ROOT) -> list[tuple[str, str, str]]:
    """(file, kind, matched text) of every credential-shaped string in ``files`` (paths under ``base``)."""
    hits = []
    for name in files:
        path = base / name
        if path.stat().st_size > 5_000_000:
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        for kind, pattern in SECRET_PATTERNS.items():
            hits += [(name, kind, m.group(0)) for m in pattern.finditer(text)]
        if path.suffix in CONFIG_SUFFIXES or path.name.startswith((".env", "Dockerfile")) or path.suffix == ".sh":
            hits += [(name, "password in a config file", m.group(0).strip()) for m in CONFIG_PASSWORD.finditer(text)]
    return hits


def test_no_credential_is_committed():
    files = _repo_files()
    assert len(files) > 50 and "docker-compose.yml" in files
    hits = find_secrets(files)
    unexplained = [h for h in hits if (h[0], h[1]) not in ALLOWED]
    assert unexplained == [], "\n".join(map(repr, unexplained))
    assert ".env" not in files  # secrets for compose live in an ignored .env (.env.example has none)


def test_the_credential_scan_finds_planted_credentials(tmp_path):
    planted = {
        "id_rsa": "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n",
        "settings.yaml": "db:\n  password: s3cr3t-value\n",
        "app.py": 'URL = "postgresql://admin:hunter22@db:5432/app"\nKEY = "AKIAABCDEFGHIJKLMNOP"\n',
        "ok.yaml": "db:\n  password: ${DB_PASSWORD}\n  url: postgresql://u:${PW}@db/app\n",
    }
    for name, text in planted.items():
        (tmp_path / name).write_text(text)
    kinds = {(n, k) for n, k, _ in find_secrets(list(planted), base=tmp_path)}
    assert kinds == {("id_rsa", "private key"), ("settings.yaml", "password in a config file"),
                     ("app.py", "password in a URL"), ("app.py", "AWS access key id")}, kinds
