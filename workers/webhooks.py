"""The webhooks worker: delivers the ``webhook_delivery`` rows that the outbox fan-out (or a
ping, or a redelivery) made due, signed, at least once.

Each round claims up to as many due deliveries as there are free delivery slots in one
statement (``FOR UPDATE SKIP LOCKED``; the claim bumps the attempt number, logs the attempt
and moves ``next_attempt_at`` forward by the lease), so several worker processes never send one
attempt twice, and the claims of a worker killed mid-attempt fall due again once the lease
ends. New work is found by short polling (every ``RINGSIDE_WEBHOOK_POLL_SECONDS``, 0.5 s) —
plain, and safe across restarts and connection losses, which LISTEN/NOTIFY would not be on
its own. A 2xx is success; anything else (or a timeout, refused address, connection error) is
retried with exponential back-off and jitter until ``RINGSIDE_WEBHOOK_RETRY_FOR_SECONDS``
(24 h) after the event, then the delivery is ``failed``.

The target is resolved and checked (``ringside.domain.webhook_targets``) before every
attempt, and the request goes to the checked address (Host header and TLS server name keep
the URL's name); redirects are not followed.
"""

from __future__ import annotations

import logging
import math
import os
import random
import secrets
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import trio

from ringside.domain import webhook_targets, webhooks
from ringside.services import Services
from ringside.settings import Settings
from ringside.store import webhooks as store
from ringside.store.bridge import TRANSIENT_ERRORS, InterfaceError, PostgresError
from ringside.store.webhooks import AttemptResult, ClaimedDelivery

log = logging.getLogger("ringside.workers.webhooks")

_BATCH_MAX = 500
_READ_LIMIT = 64 * 1024  # of a receiver's answer, read only so the connection can be reused
_RECORD_WITHIN_S = 5.0  # a bound on each write made while stopping
_DB_ERRORS = (*TRANSIENT_ERRORS, PostgresError, InterfaceError)


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    latency_ms: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def backoff_s(attempt: int, settings: Settings, rng: random.Random) -> float:
    """The wait after failed attempt ``attempt`` (1-based): base · 2^(attempt-1), capped,
    times a jitter in [0.5, 1) so receivers coming back are not hit in lockstep."""
    base, cap = settings.webhook_backoff_base_s, settings.webhook_backoff_max_s
    delay = min(cap, base * 2 ** (attempt - 1))
    return float(delay * (0.5 + rng.random() / 2))


def next_state(
    claimed: ClaimedDelivery, outcome: Outcome, settings: Settings, rng: random.Random
) -> tuple[str, float]:
    if outcome.ok:
        return "succeeded", 0.0
    delay = backoff_s(claimed.attempt, settings, rng)
    if claimed.retry_age_s + delay > settings.webhook_retry_for_s:
        return "failed", 0.0
    return "pending", delay


# Each sender task has a client of its own with a few connections: httpcore's pool scans every
# connection for every request, which at one shared pool of 64 costs more than the request.
_CONNECTIONS_PER_SENDER = 4


@asynccontextmanager
async def open_webhook_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    # No proxies from the environment: the request must reach the address that was checked.
    n = _CONNECTIONS_PER_SENDER
    async with httpx.AsyncClient(
        timeout=settings.webhook_timeout_s,
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
        headers={"User-Agent": "Ringside-Webhooks/1"},
    ) as client:
        yield client


async def _post(http: httpx.AsyncClient, claimed: ClaimedDelivery, settings: Settings) -> Outcome:
    """One signed POST to the checked address; never raises for what the receiver does."""
    started = time.monotonic()

    def elapsed_ms() -> int:
        return int((time.monotonic() - started) * 1000)

    url = webhook_targets.parse_url(claimed.url)
    target = await webhook_targets.check_target(url, allow_private=settings.webhooks_allow_private)
    body = webhooks.event_body(
        claimed.event_id, claimed.event_type, claimed.event_created_at, claimed.data
    )
    headers = {
        "Host": url.netloc.decode("ascii"),
        "Content-Type": "application/json",
        webhooks.SIGNATURE_HEADER: webhooks.sign(claimed.secret, int(time.time()), body),
        webhooks.EVENT_ID_HEADER: claimed.event_id,
    }
    request = http.build_request(
        "POST",
        target.pinned_url(),
        content=body,
        headers=headers,
        extensions={"sni_hostname": target.host},
    )
    try:
        response = await http.send(request, stream=True)
        try:
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read > _READ_LIMIT:
                    break
        finally:
            await response.aclose()
    except httpx.HTTPError as exc:
        return Outcome(None, elapsed_ms(), f"{type(exc).__name__}: {exc}"[:500])
    error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
    return Outcome(response.status_code, elapsed_ms(), error)


async def attempt(
    http: httpx.AsyncClient, claimed: ClaimedDelivery, settings: Settings, rng: random.Random
) -> AttemptResult:
    """Send one claimed attempt, within the request timeout; say how it ended and what next."""
    started = time.monotonic()
    outcome = None
    with trio.move_on_after(settings.webhook_timeout_s):
        try:
            outcome = await _post(http, claimed, settings)
        except webhook_targets.TargetNotAllowed as exc:
            outcome = Outcome(None, None, exc.message)
    if outcome is None:
        ms = int((time.monotonic() - started) * 1000)
        outcome = Outcome(None, ms, f"timeout after {settings.webhook_timeout_s:g} s")
    state, retry_in = next_state(claimed, outcome, settings, rng)
    level = logging.DEBUG if outcome.ok else logging.INFO
    log.log(level, "webhook %s %s attempt %d: %s", claimed.id, claimed.event_type,
            claimed.attempt, outcome.error or outcome.status_code)  # fmt: skip
    return AttemptResult(
        delivery_id=claimed.id,
        attempt=claimed.attempt,
        state=state,
        retry_in_s=retry_in,
        status_code=outcome.status_code,
        latency_ms=outcome.latency_ms,
        error=outcome.error,
    )


async def _send_claims(
    settings: Settings,
    rng: random.Random,
    claims: trio.MemoryReceiveChannel[ClaimedDelivery],
    results: trio.MemorySendChannel[AttemptResult],
) -> None:
    async with open_webhook_client(settings) as http, claims, results:
        async for claimed in claims:
            # A stopping worker lets the attempt it took finish (bounded by the request
            # timeout) and report, rather than leave it to the lease.
            with trio.CancelScope(shield=True):
                results.send_nowait(await attempt(http, claimed, settings, rng))


async def _record_results(svc: Services, results: trio.MemoryReceiveChannel[AttemptResult]) -> None:
    """Write finished attempts in batches (one statement each) until every sender is gone;
    shielded, so what the senders finish while stopping is written too."""
    with trio.CancelScope(shield=True):
        async with results:
            async for first in results:
                batch = [first]
                while len(batch) < _BATCH_MAX:
                    try:
                        batch.append(results.receive_nowait())
                    except trio.WouldBlock:
                        break
                with trio.move_on_after(_RECORD_WITHIN_S):
                    try:
                        await store.record_attempts(svc.db, batch)
                    except _DB_ERRORS as exc:
                        # Their leases run out and they are attempted again: at least once.
                        log.warning("recording %d webhook attempts failed: %s", len(batch), exc)


async def _claim(svc: Services, batch: int, worker: str) -> list[ClaimedDelivery]:
    try:
        return await store.claim_due(
            svc.db, batch=batch, lease_s=svc.settings.webhook_lease_s, worker=worker
        )
    except _DB_ERRORS as exc:
        log.warning("webhook claim failed: %s", exc)
        return []


async def _release(svc: Services, held: Sequence[ClaimedDelivery]) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(_RECORD_WITHIN_S):
        try:
            await store.release_claims(svc.db, held)
        except _DB_ERRORS as exc:
            log.warning("releasing %d webhook claims failed (leases will expire): %s",
                        len(held), exc)  # fmt: skip


async def serve_webhooks(
    svc: Services, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Deliver due webhooks until cancelled: one claim loop hands claimed attempts to
    ``RINGSIDE_WEBHOOK_CONCURRENCY`` sender tasks, and one recorder writes their results."""
    settings = svc.settings
    worker = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
    rng = random.Random()
    batch = min(settings.webhook_concurrency, _BATCH_MAX)
    claims_in, claims_out = trio.open_memory_channel[ClaimedDelivery](0)
    results_in, results_out = trio.open_memory_channel[AttemptResult](math.inf)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_record_results, svc, results_out)
        async with claims_out, results_in:
            for _ in range(settings.webhook_concurrency):
                nursery.start_soon(
                    _send_claims, settings, rng, claims_out.clone(), results_in.clone()
                )
        task_status.started()
        async with claims_in:
            held: deque[ClaimedDelivery] = deque()
            try:
                while True:
                    held.extend(await _claim(svc, batch, worker))
                    claimed = len(held)
                    while held:
                        await claims_in.send(held[0])  # waits for a free sender
                        held.popleft()
                    if claimed < batch:
                        await trio.sleep(settings.webhook_poll_s)
            finally:
                if held:
                    await _release(svc, list(held))
