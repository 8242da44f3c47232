"""One retrain per dataset at a time, across every worker and machine on one Prefect server.

The retrain deployment lets several runs go at once (its own concurrency limit, prefect.yaml); each run then holds
its dataset's slot, a Prefect global concurrency limit named ``dataset-<name>`` (limit 1, created the first time a
dataset is retrained; raise it in the UI to let that dataset's runs overlap), for the whole run, on a lease of
``LEASE_S`` seconds that the run renews while it lives: the slot of a run killed outright frees within that time.
A second run of the same dataset waits for the slot, with a line in its log; a run of another dataset does not.
Without a Prefect server (a plain `tunegate run` on its own temporary API, flows/temporary_api.py) no other run
could see the slot, so none is taken (the temporary server keeps leases in memory: a slot taken there by a run
killed with its server would stay taken in the database for good); the state folder's locks keep two such runs
from registering at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

SLOT_PREFIX = "dataset-"
LEASE_S = 60


def slot_name(dataset: str) -> str:
    return f"{SLOT_PREFIX}{dataset}"


def ensure_slot(dataset: str) -> None:
    """The dataset's global concurrency limit, created with limit 1 when missing (a limit set by hand is kept)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as c:
        try:
            c.read_global_concurrency_limit_by_name(slot_name(dataset))
        except ObjectNotFound:
            try:
                c.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=slot_name(dataset), limit=1))
            except ObjectAlreadyExists:  # created meanwhile by another run of the dataset
                pass


@contextmanager
def dataset_slot(dataset: str, log=print) -> Iterator[None]:
    """Hold the dataset's slot for the block; waits (saying so) while another run of the dataset holds it."""
    import time

    from prefect.concurrency.sync import concurrency

    from flows import temporary_api

    if temporary_api.in_use():
        yield
        return
    ensure_slot(dataset)
    log(f"dataset {dataset}: taking its retrain slot ({slot_name(dataset)})")
    started = time.perf_counter()
    with concurrency(slot_name(dataset), occupy=1, lease_duration=LEASE_S, strict=False,
                     raise_on_lease_renewal_failure=False):  # a renewal missed under load must not end a retrain
        waited = time.perf_counter() - started
        if waited > 1:
            log(f"dataset {dataset}: waited {waited:.0f} s for another run of the dataset to end")
        yield
