"""The settlement worker: settles the holds of calls whose gateway process died.

A web process beats in ``gateway_process`` while it serves; a hold whose process has been
silent for ``RINGSIDE_PROCESS_DEAD_AFTER_SECONDS`` (or deregistered with the hold open) is an
orphan. The process's view of the call (the usage it had seen) died with it, so an orphan is
settled at its reserved amount: the worst case the call was admitted at, recorded with
``status = 'interrupted'`` and ``usage_source = 'reserved'`` so it can be told apart (and
refunded) later. Settling is idempotent, so a process that was only slow loses nothing: its
own settlement finds the hold gone and does nothing.
"""

from __future__ import annotations

import logging

import trio

from ringside.domain import idempotency
from ringside.services import Services
from ringside.store import billing as store
from ringside.store import idempotency as idempotency_store
from ringside.store.bridge import TRANSIENT_ERRORS, InterfaceError, PostgresError

log = logging.getLogger("ringside.workers.settlement")

_BATCH = 100


async def settle_orphans(svc: Services) -> int:
    """Settle one batch of orphaned holds; return how many were settled."""
    settings = svc.settings
    async with svc.db.transaction() as conn:
        orphans = await store.claim_orphans(
            conn,
            dead_after_s=settings.process_dead_after_s,
            max_age_s=settings.hold_max_age_s,
            batch=_BATCH,
        )
        for hold in orphans:
            await store.settle(
                conn,
                store.SettleSpec(
                    request_id=hold.request_id,
                    status="interrupted",
                    http_status=0,
                    usage_source="reserved",
                    model_resolved=hold.model_resolved,
                    provider=hold.provider,
                    upstream_model=hold.upstream_model,
                    input_tokens=0,
                    cached_input_tokens=0,
                    output_tokens=0,
                    reasoning_tokens=0,
                    cost_usd=hold.cost_usd,
                    billable_usd=hold.amount_usd,
                    latency_ms=max(hold.created_age_ms, 0),
                ),
            )
        # A retry of an interrupted call must not run (and bill) it again: it replays an error.
        ids = [hold.request_id for hold in orphans]
        await idempotency_store.interrupt(
            conn, ids, 503, [idempotency.interrupted_body(i) for i in ids]
        )
        await store.forget_dead_processes(conn, dead_after_s=settings.process_dead_after_s)
    if orphans:
        log.info("settled %d orphaned holds", len(orphans))
    return len(orphans)


async def serve_settlement(
    svc: Services, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Sweep every ``RINGSIDE_SWEEP_INTERVAL_SECONDS`` until cancelled."""
    task_status.started()
    while True:
        try:
            while await settle_orphans(svc) == _BATCH:
                pass
        except (*TRANSIENT_ERRORS, PostgresError, InterfaceError) as exc:
            log.warning("settlement sweep failed: %s", exc)
        await trio.sleep(svc.settings.sweep_interval_s)
