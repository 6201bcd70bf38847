"""The runs sweeper: ends the Assistants runs nobody else will end.

Every ``RINGSIDE_SWEEP_INTERVAL_SECONDS`` it flips active runs (``queued``, ``in_progress``,
``requires_action``, ``cancelling``) past their ``expires_at`` to ``expired``, and
``cancelling`` runs whose executing process is gone (never picked up, or silent for
``RINGSIDE_PROCESS_DEAD_AFTER_SECONDS``) to ``cancelled``, and ``in_progress`` runs whose
executing process is gone to ``failed``. Each batch is one transaction: the
runs leave the active states (releasing their thread's lock), their in-progress step and
message are closed, a ``run.failed`` event (reason ``expired``, ``cancelled`` or ``error``) goes
into the
webhook outbox, and ``NOTIFY ringside_run_cancel`` tells a process still executing one of them
to stop (the notification is delivered at commit). A gateway that crashed mid-run therefore
never locks a thread past the run's expiry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from ringside.services import Services
from ringside.store import run_expiry as store
from ringside.store.bridge import TRANSIENT_ERRORS, Database, InterfaceError, PostgresError

log = logging.getLogger("ringside.workers.runs")

_BATCH = 500


@dataclass(frozen=True)
class Swept:
    expired: list[str]
    cancelled: list[str]
    failed: list[str]
    batch: int

    @property
    def full(self) -> bool:
        """A batch came back full: there may be more waiting."""
        return max(len(self.expired), len(self.cancelled), len(self.failed)) >= self.batch


async def sweep_runs(db: Database, *, dead_after_s: float, batch: int = _BATCH) -> Swept:
    """End one batch of overdue runs and one of orphaned cancels, in one transaction."""
    async with db.transaction() as conn:
        expired = await store.expire_due(conn, batch=batch)
        await store.close_out(
            conn, expired, status="expired", reason="expired", message_reason="run_expired"
        )
        cancelled = await store.cancel_orphaned(conn, dead_after_s=dead_after_s, batch=batch)
        await store.close_out(
            conn, cancelled, status="cancelled", reason="cancelled", message_reason="run_cancelled"
        )
        failed = await store.fail_orphaned(conn, dead_after_s=dead_after_s, batch=batch)
        await store.close_out(
            conn, failed, status="failed", reason="error", message_reason="run_failed"
        )
    if expired or cancelled or failed:
        log.info(
            "runs swept: %d expired, %d cancelled, %d failed",
            len(expired),
            len(cancelled),
            len(failed),
        )
    return Swept(expired, cancelled, failed, batch)


async def serve_runs(
    svc: Services, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Sweep every ``RINGSIDE_SWEEP_INTERVAL_SECONDS`` until cancelled."""
    task_status.started()
    while True:
        try:
            while (await sweep_runs(svc.db, dead_after_s=svc.settings.process_dead_after_s)).full:
                pass
        except (*TRANSIENT_ERRORS, PostgresError, InterfaceError) as exc:
            log.warning("runs sweep failed: %s", exc)
        await trio.sleep(svc.settings.sweep_interval_s)
