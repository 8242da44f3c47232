"""Named points where the fault matrix (bench/fault_matrix.py, tests/RELIABILITY.md) kills a run the way a power
cut or the OOM killer would: SIGKILL to the whole run, no cleanup, no report.

``TUNEGATE_FAILPOINT=<name>`` arms one point; the first process to reach it kills the run's process group (recorded
in ``TUNEGATE_FAILPOINT_GROUP`` by ``arm``, which `tunegate run` calls at start) and its own, after a line in the
file ``TUNEGATE_FAILPOINT_LOG`` names it. Unset, as always outside the fault matrix, a point costs one environment
lookup. The names: ``after:<stage>`` (a stage ended, see flows/retrain_run.py), ``<stage>:shard`` (a snapshot of
that stage has its first shard written, not yet published), ``train:checkpoint`` (the first checkpoint is
complete), ``evaluate:<model>`` (that model is scored: base, candidate, champion), ``register:logged`` (the model is
logged to MLflow, not registered), ``register:created`` (the version exists, without its alias),
``register:promote`` (registered, not yet promoted).
"""

from __future__ import annotations

import os
import signal
import sys

ENV, GROUP, LOG = "TUNEGATE_FAILPOINT", "TUNEGATE_FAILPOINT_GROUP", "TUNEGATE_FAILPOINT_LOG"


def arm() -> None:
    """Record this process's group as the run's (when a failpoint is armed)."""
    if os.environ.get(ENV):
        os.environ.setdefault(GROUP, str(os.getpgid(0)))


def reached(name: str) -> None:
    """Kill the run here when ``name`` is the armed failpoint."""
    if os.environ.get(ENV) != name:
        return
    sys.stdout.flush()
    sys.stderr.write(f"failpoint {name}: SIGKILL\n")
    sys.stderr.flush()
    if os.environ.get(LOG):  # where the fault matrix reads that the kill came here (stderr may be a pipe that dies)
        with open(os.environ[LOG], "a") as fh:
            fh.write(f"failpoint {name}: SIGKILL pid {os.getpid()}\n")
    group = os.environ.get(GROUP)
    if group and group.isdigit() and int(group) != os.getpgid(0):
        os.killpg(int(group), signal.SIGKILL)
    os.killpg(os.getpgid(0), signal.SIGKILL)
