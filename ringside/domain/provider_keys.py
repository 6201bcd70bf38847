"""Provider key pools, operated: every web process keeps its own key ring per provider
(``upstream/keys.py``); a reset (an operator bringing refused or resting keys back) is applied
locally and announced with ``NOTIFY``, so every process applies it within milliseconds."""

from __future__ import annotations

from typing import Any

import trio

from ringside.errors import NotFound
from ringside.store.bridge import Database
from ringside.store.listener import listen_forever
from ringside.upstream.upstreams import Upstreams

RESET_CHANNEL = "ringside_provider_keys"
_ALL = "*"


def status(upstreams: Upstreams) -> list[dict[str, Any]]:
    """Each provider's configuration and its keys' state in this process (masked)."""
    out = []
    for name, cfg in upstreams.providers.items():
        out.append(
            {
                "object": "provider",
                "id": name,
                "name": cfg.spec.display,
                "wire": cfg.spec.wire.value,
                "base_url": cfg.base_url,
                "configured": cfg.configured,
                "keys": upstreams.rings[name].status(),
            }
        )
    return out


def provider_status(upstreams: Upstreams, name: str) -> dict[str, Any]:
    for entry in status(upstreams):
        if entry["id"] == name:
            return entry
    raise NotFound(f"No provider {name!r}.", param="provider")


async def reset(db: Database, upstreams: Upstreams, provider: str | None) -> None:
    """Every set-aside or resting key of ``provider`` (None: of every provider) usable again,
    in this process now and in the others on their NOTIFY."""
    if provider is not None and provider not in upstreams.providers:
        raise NotFound(f"No provider {provider!r}.", param="provider")
    upstreams.reset_keys(provider)
    await db.execute("SELECT pg_notify($1, $2)", RESET_CHANNEL, provider or _ALL)


async def serve_resets(
    db: Database,
    upstreams: Upstreams,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Apply the resets other processes announce, until cancelled."""

    def apply(provider: str) -> None:
        upstreams.reset_keys(None if provider == _ALL else provider)

    await listen_forever(db, RESET_CHANNEL, apply, task_status=task_status)
