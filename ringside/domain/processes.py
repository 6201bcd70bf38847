"""The registry of live web processes: each one beats while it serves, so the settlement worker
can tell the open holds of a live process from those of one that died (SIGKILL, OOM, a lost
machine) and settle the latter."""

from __future__ import annotations

import logging
import os
import socket

import trio

from ringside.services import Services
from ringside.store import billing as store
from ringside.store.bridge import TRANSIENT_ERRORS, InterfaceError, PostgresError

log = logging.getLogger("ringside.processes")


async def serve_heartbeat(
    svc: Services, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Register this process, then beat every ``heartbeat_interval_s`` until cancelled; on the
    way out, deregister (holds still open then are settled by the worker)."""
    pid, host = os.getpid(), socket.gethostname()
    await store.heartbeat(svc.db, svc.process_id, pid, host)  # before the first hold exists
    task_status.started()
    try:
        while True:
            await trio.sleep(svc.settings.heartbeat_interval_s)
            try:
                await store.heartbeat(svc.db, svc.process_id, pid, host)
            except (*TRANSIENT_ERRORS, PostgresError, InterfaceError) as exc:
                log.warning("heartbeat failed: %s", exc)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            try:
                await store.forget_process(svc.db, svc.process_id)
            except (*TRANSIENT_ERRORS, PostgresError, InterfaceError) as exc:
                log.warning("could not deregister process %s: %s", svc.process_id, exc)
