"""Rate limits: per IP, per client token, per developer and per customer, each in requests and
tokens per window (a minute unless configured); the lowest limit wins.

**Algorithm: GCRA** (the generic cell rate algorithm, a leaky bucket kept as one timestamp per
bucket; see ``store/rate_limits.py``) rather than a two-bucket sliding window, because it needs
one key per bucket instead of two, it has no boundary where two windows' worth can pass at
once, its answer to a refusal is exact (``Retry-After`` is the time until the call would fit,
not a guess from an interpolated count), and a settlement is plain arithmetic on the same
number (give back unused tokens, or push the bucket into debt), never a question of which
window the reservation went into.

**One round trip per call.** Every bucket of every layer is checked and advanced by one Lua
script (EVALSHA, EVAL when Redis does not know it yet), atomic in Redis, so N gateway
processes share each limit exactly. A refused call consumes nothing, reaches no provider and
holds no money (the check runs before ``billing.reserve``). The web process sends the scripts
over its own pipelined Trio connection (``store/resp.py``, ~0.1 ms of CPU per call against
~0.6 ms through redis-py and the trio-asyncio bridge).

**Tokens** are reserved before the call, at an estimate: the prompt (the body's bytes / 4) plus
the output (``max_tokens``, capped at ``output_tokens_estimate``, 4,096 by default, times
``n``) — the worst case billing reserves would hold a 128k-context model's whole output
against the limit for every call without ``max_tokens``. A reservation larger than a layer's
whole limit takes that limit (the call waits for a full bucket instead of being refused for
ever). When the call ends, the actual usage settles the difference: unused tokens come back,
extra tokens become debt the next calls wait for. Settlements are queued and sent by one task
per process, off the request's path, together every ``settle_linger_s`` (50 ms): many per
round trip under load. One lost (the process dies first) is at most one call's estimate, and
a bucket drains by itself within the window anyway.

**Redis unavailable**: fail open by default (``on_redis_error = "open"``) for all layers — the
layers share one script, so they stand or fall together — because budgets and wallets are
enforced in PostgreSQL, and refusing every call while a counter store is down would turn a
Redis outage into a full outage. ``"closed"`` answers ``503 service_unavailable`` instead.
Either way, after a failure the limiter stays away from Redis for ``redis_retry_s`` (one
second), so calls do not each wait ``redis_timeout_s`` for it.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import trio

from ringside.errors import RateLimited, ServiceUnavailable
from ringside.limits import IPNetwork, LimitPolicy, Rate
from ringside.store import rate_limits as store
from ringside.store.bridge import Cache, Conn, Database, RedisError
from ringside.store.customers import CustomerLimits, select_customer_limits
from ringside.store.resp import NativeRedis, RedisAddress, RedisReplyError

log = logging.getLogger("ringside.rate_limits")

_REQUESTS, _TOKENS = "r", "t"
_SETTLE_BATCH = 512
_REDIS_ERRORS = (RedisError, RedisReplyError, OSError)
_MAX_CACHED = 50_000
_CODES = {"customer": "customer_rate_limit_exceeded"}
_WHO = {
    "ip": "this IP address",
    "client_token": "this client token",
    "developer": "your account",
    "customer": "customer {id}",
}


@dataclass(frozen=True)
class Subject:
    """Who a call counts against. ``ip`` is the caller's address as ``client_ip`` gives it;
    ``client_token_id`` is set only when the caller authenticated with a client token."""

    ip: str | None
    client_token_id: str | None
    developer_id: str
    tier: str
    customer_ref: str | None


@dataclass(frozen=True)
class _Slot:
    layer: str
    id: str
    metric: str
    bucket: store.Bucket


@dataclass
class Admission:
    """What a call holds once admitted (its token reservations, to settle) and its headers;
    a refused call holds nothing and carries its 429 in ``refused``."""

    slots: tuple[_Slot, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    refused: RateLimited | None = None
    settled: bool = False

    def check(self) -> None:
        if self.refused is not None:
            raise self.refused


def estimate_tokens(prompt_bytes: int, max_output: int | None, choices: int, cap: int) -> int:
    """What a call reserves against token limits (see the module docstring)."""
    output = cap if max_output is None else min(max_output, cap)
    return (prompt_bytes + 3) // 4 + output * choices


class RateLimiter:
    """The per-process handle: ``admit`` before a call, ``settle_soon`` after it; ``serve``
    (in the web process's service nursery) sends the settlements."""

    def __init__(
        self, policy: LimitPolicy, db: Database, cache: Cache, *, redis_url: str | None = None
    ) -> None:
        self.policy = policy
        self._db = db
        self._cache = cache
        # While ``serve`` runs, the scripts go over a native Trio connection to ``redis_url``
        # (``store/resp.py``: a sixth of the bridged client's CPU per call); before it
        # starts, or for a URL it does not speak, through the bridged client.
        self._address = RedisAddress.parse(redis_url) if redis_url else None
        self._native: NativeRedis | None = None
        self._period_us = round(policy.window_s * 1_000_000)
        self._down_until = -math.inf
        self._customers: dict[tuple[str, str], tuple[float, CustomerLimits | None]] = {}
        self._pending: dict[tuple[str, str], trio.Event] = {}
        self._send, self._receive = trio.open_memory_channel[tuple[_Slot, int]](10_000)
        self._unsettled = 0
        self._idle = trio.Event()
        self._idle.set()

    async def admit(self, subject: Subject, tokens: int, conn: Conn | None = None) -> Admission:
        """Count the call against every layer, or refuse it (``Admission.refused``: nothing
        is counted then). ``conn``: a caller inside a transaction looks the customer up on
        its own connection (a second pooled one could wait for connections that requests
        queued behind the transaction's locks are holding)."""
        if not self.policy.enabled:
            return Admission()
        slots = self._slots(await self._layers(subject, conn), tokens)
        if not slots:
            return Admission()
        if trio.current_time() < self._down_until:
            return self._unavailable(None)
        verdict: store.Verdict | None = None
        redis = self._native or self._cache
        with trio.move_on_after(self.policy.redis_timeout_s):
            try:
                verdict = await store.admit(redis, [s.bucket for s in slots], self._period_us)
            except _REDIS_ERRORS as exc:
                return self._unavailable(exc)
        if verdict is None:
            if self._native is not None:
                self._native.reset()  # a stuck connection is not waited on again
            return self._unavailable(TimeoutError("Redis did not answer in time"))
        if verdict.refused is not None:
            return self._refusal(slots, verdict)
        return Admission(slots, self._headers(slots, verdict.after_us))

    def settle_soon(self, admission: Admission, used_tokens: int) -> None:
        """Queue the token buckets' correction (actual - reserved) for the settling task;
        only the first settlement of an admission counts."""
        if admission.settled:
            return
        admission.settled = True
        for slot in admission.slots:
            delta = used_tokens - slot.bucket.cost
            if slot.metric != _TOKENS or delta == 0:
                continue
            try:
                self._send.send_nowait((slot, delta))
            except trio.WouldBlock:
                log.warning("rate-limit settlements are backing up; one dropped")
                continue
            self._unsettled += 1
            if self._idle.is_set():
                self._idle = trio.Event()

    async def wait_settled(self) -> None:
        """Until every queued settlement has been sent (for tests and shutdown)."""
        await self._idle.wait()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            if self._address is not None:
                self._native = await nursery.start(NativeRedis.serve, self._address)
            task_status.started()
            try:
                await self._settle_forever()
            finally:
                self._native = None

    async def _settle_forever(self) -> None:
        while True:
            batch = [await self._receive.receive()]
            await trio.sleep(self.policy.settle_linger_s)
            while len(batch) < _SETTLE_BATCH:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            await self._flush(batch)
            self._unsettled -= len(batch)
            if self._unsettled == 0:
                self._idle.set()

    async def _flush(self, batch: Iterable[tuple[_Slot, int]]) -> None:
        merged: dict[str, store.Bucket] = {}
        for slot, delta in batch:
            b = slot.bucket
            seen = merged.get(b.key)
            merged[b.key] = store.Bucket(b.key, b.limit, delta + (seen.cost if seen else 0))
        buckets = [b for b in merged.values() if b.cost]
        with trio.move_on_after(max(1.0, self.policy.redis_timeout_s)) as scope:
            try:
                await store.settle(self._native or self._cache, buckets, self._period_us)
            except _REDIS_ERRORS as exc:
                log.warning("rate-limit settlement failed (%d buckets): %s", len(buckets), exc)
        if scope.cancelled_caught:
            log.warning("rate-limit settlement timed out (%d buckets)", len(buckets))

    def _unavailable(self, exc: BaseException | None) -> Admission:
        if exc is not None:
            self._down_until = trio.current_time() + self.policy.redis_retry_s
            log.warning(
                "rate limits unavailable (%s); failing %s for %gs",
                exc,
                "open" if self.policy.fail_open else "closed",
                self.policy.redis_retry_s,
            )
        if self.policy.fail_open:
            return Admission()
        raise ServiceUnavailable(
            "Rate limits cannot be checked right now; retry shortly.", retry_after_seconds=1
        )

    async def _layers(self, subject: Subject, conn: Conn | None) -> list[tuple[str, str, Rate]]:
        policy = self.policy
        layers: list[tuple[str, str, Rate]] = []
        if subject.ip is not None:
            layers.append(("ip", subject.ip, policy.ip))
        if subject.client_token_id is not None:
            layers.append(("client_token", subject.client_token_id, policy.client_token))
        layers.append(("developer", subject.developer_id, policy.tier(subject.tier)))
        if subject.customer_ref is not None:
            customer = await self._customer(subject.developer_id, subject.customer_ref, conn)
            if customer is not None:
                rate = Rate(customer.rpm_limit, customer.tpm_limit)
                layers.append(("customer", customer.id, rate))
        return layers

    def _slots(self, layers: Sequence[tuple[str, str, Rate]], tokens: int) -> tuple[_Slot, ...]:
        prefix = f"{self.policy.key_prefix}rl:"
        slots = []
        for layer, id, rate in layers:
            for metric, limit, cost in ((_REQUESTS, rate.rpm, 1), (_TOKENS, rate.tpm, tokens)):
                if limit:
                    key = f"{prefix}{layer}:{id}:{metric}"
                    slots.append(
                        _Slot(layer, id, metric, store.Bucket(key, limit, min(cost, limit)))
                    )
        return tuple(slots)

    async def _customer(
        self, developer_id: str, ref: str, conn: Conn | None
    ) -> CustomerLimits | None:
        # Cached per process for a fraction of a second (a changed limit is live within it),
        # and single-flight: an expiry under load costs one query, as for API keys.
        cache_key = (developer_id, ref)
        while True:
            hit = self._customers.get(cache_key)
            if hit is not None and hit[0] > trio.current_time():
                return hit[1]
            pending = self._pending.get(cache_key)
            if pending is None:
                break
            await pending.wait()
        done = self._pending[cache_key] = trio.Event()
        try:
            found = await select_customer_limits(conn or self._db, developer_id, ref)
            if len(self._customers) >= _MAX_CACHED:
                self._customers.clear()
            expires = trio.current_time() + self.policy.customer_cache_ttl_s
            self._customers[cache_key] = (expires, found)
            return found
        finally:
            del self._pending[cache_key]
            done.set()

    def _refusal(self, slots: Sequence[_Slot], verdict: store.Verdict) -> Admission:
        assert verdict.refused is not None
        slot = slots[verdict.refused]
        retry = max(1, math.ceil(verdict.wait_us / 1_000_000))
        # Nothing was counted: the headers say where the buckets stand without this call.
        before = [
            after - s.bucket.cost * self._period_us // s.bucket.limit
            for s, after in zip(slots, verdict.after_us, strict=True)
        ]
        unit = "requests" if slot.metric == _REQUESTS else "tokens"
        counted = f" (this call counts {slot.bucket.cost} tokens)" if unit == "tokens" else ""
        error = RateLimited(
            f"Rate limit reached for {_WHO[slot.layer].format(id=slot.id)}:"
            f" {slot.bucket.limit} {unit} per {self.policy.window_s:g} s{counted}."
            f" Retry after {retry} s.",
            code=_CODES.get(slot.layer, "rate_limited"),
            retry_after_seconds=retry,
        )
        return Admission(headers=self._headers(slots, before), refused=error)

    def _headers(self, slots: Sequence[_Slot], after_us: Sequence[int]) -> dict[str, str]:
        """The tightest request bucket (and token bucket) of all layers."""
        period = self._period_us
        best: dict[str, tuple[int, int, int]] = {}
        for slot, ahead in zip(slots, after_us, strict=True):
            limit = slot.bucket.limit
            remaining = max(0, min(limit, (period - ahead) * limit // period))
            reset = max(0, math.ceil(ahead / 1_000_000))
            seen = best.get(slot.metric)
            if seen is None or (remaining, limit) < seen[:2]:
                best[slot.metric] = (remaining, limit, reset)
        headers = {}
        for metric, suffix in ((_REQUESTS, ""), (_TOKENS, "-Tokens")):
            if metric in best:
                remaining, limit, reset = best[metric]
                headers[f"X-RateLimit-Limit{suffix}"] = str(limit)
                headers[f"X-RateLimit-Remaining{suffix}"] = str(remaining)
                headers[f"X-RateLimit-Reset{suffix}"] = str(reset)
        return headers


def peer_address(
    peer: str | None, forwarded_for: Iterable[str], trusted: Sequence[IPNetwork]
) -> str | None:
    """The caller's address: the direct peer, or — only when the peer is a trusted proxy — the
    right-most ``X-Forwarded-For`` entry that is not a trusted proxy (entries to its left are
    whatever the client chose to send)."""
    addr = _peer(peer, forwarded_for, trusted)
    return (peer or None) if addr is None else str(addr)


def client_ip(
    peer: str | None, forwarded_for: Iterable[str], trusted: Sequence[IPNetwork]
) -> str | None:
    """The address a call counts against (``peer_address``); IPv6 addresses count per /64,
    the smallest network a host is usually given."""
    addr = _peer(peer, forwarded_for, trusted)
    if addr is None:
        return peer or None
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network(f"{addr}/64", strict=False))
    return str(addr)


def _peer(
    peer: str | None, forwarded_for: Iterable[str], trusted: Sequence[IPNetwork]
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    addr = _parse(peer)
    if addr is None:
        return None
    if _trusted(addr, trusted):
        hops = [hop for value in forwarded_for for hop in value.split(",")]
        for hop in reversed(hops):
            ip = _parse(hop)
            if ip is None:
                break  # not an address: stay with the nearest trusted hop
            addr = ip
            if not _trusted(ip, trusted):
                break
    return addr


def _trusted(
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: Sequence[IPNetwork]
) -> bool:
    return any(addr in net for net in trusted)


def _parse(raw: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not raw:
        return None
    text = raw.strip()
    if text.startswith("["):  # [v6]:port
        text = text[1 : text.find("]")] if "]" in text else text
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr
