"""A LISTEN that outlives its connection: the payloads of a channel's notifications handed to
a callback, the connection re-opened after a failure, for as long as the task runs."""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from ringside.store.bridge import TRANSIENT_ERRORS, Database, InterfaceError, PostgresError

log = logging.getLogger(__name__)


async def listen_forever(
    db: Database,
    channel: str,
    on_note: Callable[[str], None],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Call ``on_note(payload)`` for every notification on ``channel`` until cancelled;
    started once the first LISTEN is in place (or has failed: it is retried every second)."""
    started = False
    while True:
        try:
            async with db.listen(channel) as notes:
                if not started:
                    started = True
                    task_status.started()
                async for payload in notes:
                    on_note(payload)
        except (*TRANSIENT_ERRORS, PostgresError, InterfaceError) as exc:
            log.warning("listener on %s failed, retrying: %s", channel, exc)
        if not started:
            started = True
            task_status.started()
        await trio.sleep(1.0)
