"""The gateway listens for the promotion event a retrain emits (tasks/registry/events.py) on the Prefect server
named by PREFECT_API_URL, and reads the aliases at once instead of at its next poll. Without a Prefect server it
follows by polling alone."""

from __future__ import annotations

import asyncio
import logging
import threading

from tasks.registry.events import PROMOTED_EVENT, RESOURCE_PREFIX

log = logging.getLogger("tunegate.gateway")


def prefect_api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def follow_promotions(model_name: str, wake: threading.Event, stop: threading.Event, retry_s: float = 5.0) -> None:
    """Set ``wake`` on each promotion event of ``model_name`` until ``stop`` (run on a thread of its own); a
    server that goes away is reconnected to every ``retry_s`` seconds."""
    from prefect.events.clients import get_events_subscriber
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    wanted = EventFilter(event=EventNameFilter(name=[PROMOTED_EVENT]),
                         resource=EventResourceFilter(id=[f"{RESOURCE_PREFIX}{model_name}"]))

    async def listen() -> None:
        while not stop.is_set():
            try:
                async with get_events_subscriber(filter=wanted) as events:
                    log.info("following %s events for %s", PROMOTED_EVENT, model_name)
                    async for event in events:
                        log.info("promotion event: %s v%s", model_name, event.payload.get("version"))
                        wake.set()
                        if stop.is_set():
                            return
            except Exception as exc:
                log.warning("promotion events not followed (%s); the aliases are still polled", exc)
                await asyncio.sleep(retry_s)

    asyncio.run(listen())
