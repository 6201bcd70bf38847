"""Metering: one usage event per upstream call, written off the request path in batches.

Handlers hand finished events to ``Meter.record`` (never blocks, never fails the request);
``Meter.serve`` drains them into PostgreSQL in batches. ``usage_event.request_id`` is unique,
so a batch retried after a lost commit acknowledgement cannot meter a call twice.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from ringside.domain.modelrefs import ResolvedModel
from ringside.store.bridge import TRANSIENT_ERRORS, Database, InterfaceError, PostgresError
from ringside.store.usage import UsageEventRow, insert_usage_events
from ringside.tokens import TokenUsage

log = logging.getLogger("ringside.metering")

_BATCH = 500
# How long the writer lets events gather after the first one: batches stay large under light
# load too, at the price of usage rows landing up to this much later.
_LINGER_S = 0.2
_RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True)
class CallContext:
    """Who made a call and what they asked for; fixed before the upstream is contacted."""

    request_id: str
    developer_id: str
    api_key_id: str
    customer_ref: str | None
    model_requested: str
    stream: bool
    started: float  # trio.current_time()


def usage_event(
    ctx: CallContext,
    target: ResolvedModel,
    usage: TokenUsage,
    *,
    usage_source: str,
    status: str,
    http_status: int,
) -> UsageEventRow:
    model = target.model
    return UsageEventRow(
        request_id=ctx.request_id,
        developer_id=ctx.developer_id,
        api_key_id=ctx.api_key_id,
        customer_ref=ctx.customer_ref,
        model_requested=ctx.model_requested,
        model_resolved=model.ref,
        provider=model.provider,
        upstream_model=model.model,
        stream=ctx.stream,
        input_tokens=usage.input,
        cached_input_tokens=usage.cached_input,
        output_tokens=usage.output,
        reasoning_tokens=usage.reasoning,
        usage_source=usage_source,
        cost_usd=model.cost(
            input=usage.input,
            cached_input=usage.cached_input,
            output=usage.output,
            reasoning=usage.reasoning,
        ),
        latency_ms=max(0, round((trio.current_time() - ctx.started) * 1000)),
        status=status,
        http_status=http_status,
    )


class Meter:
    def __init__(self, send: trio.MemorySendChannel[UsageEventRow]) -> None:
        self._send = send
        self._drained = trio.Event()

    def record(self, event: UsageEventRow) -> None:
        """Queue an event. Synchronous on purpose: it runs in ``finally`` blocks of cancelled
        streams, where awaiting is not possible."""
        try:
            self._send.send_nowait(event)
        except trio.ClosedResourceError:
            log.error("usage event after meter shutdown, request_id=%s", event.request_id)

    async def aclose(self) -> None:
        """Stop accepting events and wait until every queued one is written."""
        self._send.close()
        await self._drained.wait()

    @classmethod
    async def serve(
        cls, db: Database, *, task_status: trio.TaskStatus[Meter] = trio.TASK_STATUS_IGNORED
    ) -> None:
        # Unbounded so that recording never blocks a request; it only grows while PostgreSQL
        # is unreachable, and the writer keeps retrying.
        send, receive = trio.open_memory_channel[UsageEventRow](math.inf)
        meter = cls(send)
        task_status.started(meter)
        try:
            async with receive:
                async for first in receive:
                    await trio.sleep(_LINGER_S)
                    batch = [first]
                    while len(batch) < _BATCH:
                        try:
                            batch.append(receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    await _write(db, batch)
        finally:
            meter._drained.set()


async def _write(db: Database, batch: Sequence[UsageEventRow]) -> None:
    """Write a batch. While PostgreSQL is unreachable, retry until it takes it: usage is money,
    so it is never dropped while the process lives. A batch the database refuses (a bad row)
    is written row by row, so one bad row costs only itself, and is logged."""
    attempt = 0
    while True:
        try:
            await insert_usage_events(db, batch)
            return
        except TRANSIENT_ERRORS as exc:
            delay = _RETRY_DELAYS[min(attempt, len(_RETRY_DELAYS) - 1)]
            attempt += 1
            log.warning(
                "usage write of %d events failed (%s); retry %d in %.1fs",
                len(batch),
                exc,
                attempt,
                delay,
            )
            await trio.sleep(delay)
        except (PostgresError, InterfaceError) as exc:
            if len(batch) > 1:
                for event in batch:
                    await _write(db, [event])
                return
            log.error("usage event refused, request_id=%s: %s", batch[0].request_id, exc)
            return
