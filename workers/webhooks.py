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
the URL's name); redirects are not followed. Requests go through ``workers.webhook_http``, a
small h11 client (a quarter of httpx's CPU per POST), one per sender task.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import random
import secrets
import socket
import ssl
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import trio

from ringside.domain import webhook_targets, webhooks
from ringside.services import Services
from ringside.settings import Settings
from ringside.store import webhooks as store
from ringside.store.bridge import TRANSIENT_ERRORS, InterfaceError, PostgresError
from ringside.store.webhooks import AttemptResult, ClaimedDelivery
from workers.webhook_http import SendError, WebhookHttp

log = logging.getLogger("ringside.workers.webhooks")

_BATCH_MAX = 500
_READ_LIMIT = 64 * 1024  # of a receiver's answer, read only so the connection can be reused
_RECORD_WITHIN_S = 5.0  # a bound on each write made while stopping
_DB_ERRORS = (*TRANSIENT_ERRORS, PostgresError, InterfaceError)
_CONNECTIONS_PER_SENDER = 4  # kept alive by each sender task (one client each: no pool scans)
_SIGNATURE = webhooks.SIGNATURE_HEADER.encode()
_EVENT_ID = webhooks.EVENT_ID_HEADER.encode()


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


_USER_AGENT = b"Ringside-Webhooks/1"


def webhook_tls() -> ssl.SSLContext:
    """The TLS context every sender shares (loading the CA bundle costs ~10 ms of CPU): the
    certifi bundle, host names checked, as httpx does without ``trust_env``."""
    return httpx.create_ssl_context(trust_env=False)


# Parsing is pure and endpoints are few: an attempt parses its URL once per endpoint, not per
# attempt (the address is still resolved and checked every time).
_parse_url = functools.lru_cache(maxsize=4096)(webhook_targets.parse_url)


async def _post(http: WebhookHttp, claimed: ClaimedDelivery, settings: Settings) -> Outcome:
    """One signed POST to the checked address; never raises for what the receiver does."""
    started = time.monotonic()
    target = await webhook_targets.check_target(
        _parse_url(claimed.url), allow_private=settings.webhooks_allow_private
    )
    body = webhooks.event_body(
        claimed.event_id, claimed.event_type, claimed.event_created_at, claimed.data
    )
    headers = [
        (b"User-Agent", _USER_AGENT),
        (b"Content-Type", b"application/json"),
        (_SIGNATURE, webhooks.sign(claimed.secret, int(time.time()), body).encode()),
        (_EVENT_ID, claimed.event_id.encode()),
    ]
    try:
        status = await http.post(target, headers, body, _READ_LIMIT)
    except SendError as exc:
        return Outcome(None, int((time.monotonic() - started) * 1000), str(exc))
    error = None if 200 <= status < 300 else f"HTTP {status}"
    return Outcome(status, int((time.monotonic() - started) * 1000), error)


async def attempt(
    http: WebhookHttp, claimed: ClaimedDelivery, settings: Settings, rng: random.Random
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
    tls: ssl.SSLContext,
    rng: random.Random,
    claims: trio.MemoryReceiveChannel[ClaimedDelivery],
    results: trio.MemorySendChannel[AttemptResult],
) -> None:
    http = WebhookHttp(tls, keep=_CONNECTIONS_PER_SENDER)
    try:
        async with claims, results:
            async for claimed in claims:
                # A stopping worker lets the attempt it took finish (bounded by the request
                # timeout) and report, rather than leave it to the lease.
                with trio.CancelScope(shield=True):
                    results.send_nowait(await attempt(http, claimed, settings, rng))
    finally:
        http.close()


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
                    except (trio.WouldBlock, trio.EndOfChannel):  # (the last sender is gone:
                        break  # this batch is written, then the loop ends)
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
    tls = webhook_tls()
    batch = min(settings.webhook_concurrency, _BATCH_MAX)
    claims_in, claims_out = trio.open_memory_channel[ClaimedDelivery](0)
    results_in, results_out = trio.open_memory_channel[AttemptResult](math.inf)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_record_results, svc, results_out)
        async with claims_out, results_in:
            for _ in range(settings.webhook_concurrency):
                nursery.start_soon(
                    _send_claims, settings, tls, rng, claims_out.clone(), results_in.clone()
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
