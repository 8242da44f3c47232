"""The Prefect event a retrain emits when it moves @champion, so what follows the registry (the serving
gateway, an automation) can act at once instead of at its next poll:

    tunegate.model.promoted   resource tunegate.model.<NAME>   payload {name, version, previous, run_id}
"""

from __future__ import annotations

import logging

PROMOTED_EVENT = "tunegate.model.promoted"
RESOURCE_PREFIX = "tunegate.model."
log = logging.getLogger("tunegate.registry")


def model_resource(name: str) -> dict[str, str]:
    return {"prefect.resource.id": f"{RESOURCE_PREFIX}{name}", "prefect.resource.name": name}


def emit_promoted(name: str, version: str, previous: str | None, run_id: str | None = None) -> str | None:
    """Emit the promotion event; its id, or None when no event could be sent (the alias moved all the same)."""
    from prefect.events import emit_event

    try:
        event = emit_event(event=PROMOTED_EVENT, resource=model_resource(name),
                           payload={"name": name, "version": str(version), "previous": previous, "run_id": run_id})
    except Exception as exc:  # events are a courtesy to followers: polling still finds the move
        log.warning("promotion event not emitted: %s", exc)
        return None
    return str(event.id) if event else None
