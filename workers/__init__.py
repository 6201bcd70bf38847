"""Background workers: plain Trio programs, each a ``serve_<name>(svc, *, task_status)`` loop
of *claim a batch with SKIP LOCKED → act → sleep*, safe to run in several processes at once.

They never live in the web process (Hypercorn ``--workers N`` would run N copies).
``WORKERS`` maps a name to its ``serve_*`` function; ``python -m workers [NAME...]`` runs the
named ones, or all of them, in one nursery (:func:`serve_workers`): a worker that crashes is
logged and restarted with back-off, and SIGTERM or SIGINT stops them all, letting in-flight
work finish first (each worker bounds its own: a webhook attempt by its request timeout).
``settlement`` settles the holds of calls whose gateway process died; ``webhooks`` delivers
signed webhook events; ``runs`` expires overdue Assistants runs (and finishes cancels that no
live process will). File ingest lands here with the feature that needs it.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Protocol

import trio

from ringside.services import Services
from workers.runs import serve_runs
from workers.settlement import serve_settlement
from workers.webhooks import serve_webhooks

log = logging.getLogger("ringside.workers")

# A restarted worker waits 1 s, then twice as long after each crash, up to a minute; one that
# ran for a minute before crashing starts again from 1 s.
_RESTART_FIRST_S = 1.0
_RESTART_MAX_S = 60.0
_HEALTHY_AFTER_S = 60.0


class Worker(Protocol):
    def __call__(
        self, svc: Services, *, task_status: trio.TaskStatus[None] = ...
    ) -> Awaitable[None]: ...


WORKERS: Mapping[str, Worker] = {
    "settlement": serve_settlement,
    "webhooks": serve_webhooks,
    "runs": serve_runs,
}


async def supervise(
    name: str,
    serve: Worker,
    svc: Services,
    *,
    first_delay_s: float = _RESTART_FIRST_S,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one worker until cancelled, restarting it with back-off whenever it fails."""
    delay = first_delay_s
    started = False
    while True:
        began = time.monotonic()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(serve, svc)
                if not started:
                    started = True
                    task_status.started()
        # The one broad catch: a supervisor exists to outlive its worker's bugs. Cancellation
        # (a BaseException) still goes through.
        except Exception:
            log.exception("worker %s crashed; restarting in %.1f s", name, delay)
        else:
            log.error("worker %s returned; restarting in %.1f s", name, delay)
        if time.monotonic() - began >= _HEALTHY_AFTER_S:
            delay = first_delay_s
        await trio.sleep(delay)
        delay = min(delay * 2, _RESTART_MAX_S)


async def serve_workers(
    svc: Services,
    names: Sequence[str],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the named workers in one nursery until SIGTERM or SIGINT, then stop them."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            for name in names:
                await nursery.start(supervise, name, WORKERS[name], svc)
            log.info("workers running: %s", ", ".join(names))
            task_status.started()
            async for signum in signals:
                log.info("%s: stopping the workers", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
