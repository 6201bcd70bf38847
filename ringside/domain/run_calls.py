"""Reserving a run's model calls. Each call (the next *segment* of a run) is admitted by the
rate limits and reserved in the transaction that holds its run (inserted, or resumed after
tool outputs): a refusal, or any failure before commit, rolls the hold back with the run, and
the admissions are given back. The reserved call is executed by ``run_segment.execute``."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from ringside.domain import billing, cascade, run_prompt
from ringside.domain.auth import Caller
from ringside.domain.chat_request import ChatRequest
from ringside.domain.metering import CallContext
from ringside.domain.modelrefs import resolve_all
from ringside.domain.rate_limits import Admission, estimate_tokens
from ringside.domain.run_prompt import PromptMessage, RunSettings
from ringside.domain.threads import ThreadRow
from ringside.services import Services
from ringside.store import runs as store
from ringside.store.bridge import Conn
from ringside.store.run_steps import StepRow
from ringside.store.runs import RunRow


@dataclass(frozen=True)
class Origin:
    """The request that starts a call: its id becomes the call's (so the access log, the usage
    event and an Idempotency-Key's crash recovery all name the same request), and ``admit``
    counts the call against the rate limits (api/rate_limits.admit, bound to the request:
    (customer ref, tokens, the transaction's connection) -> Admission, raising
    RateLimited)."""

    request_id: str
    admit: Callable[[str | None, int, Conn], Awaitable[Admission]]


@dataclass(frozen=True)
class PromptInput:
    messages: list[PromptMessage]
    steps: list[StepRow]


@dataclass
class Call:
    """One reserved model call (``req`` None: the run's token budget is spent, so the run
    ends ``incomplete`` without calling, and nothing was reserved)."""

    ctx: CallContext
    caller: Caller  # billed: the run's API key
    req: ChatRequest | None
    incomplete: str | None
    attempts: cascade.Attempts | None
    hold: billing.Hold | None
    admission: Admission
    customer_id: str | None


@dataclass
class Segment:
    run: RunRow
    thread: ThreadRow
    call: Call
    # Events the starting request already knows (thread.created, run.created, ...).
    prelude: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


class Reservations:
    """The calls a request reserved, each in the transaction that holds its run: if the
    request fails, the rollback takes the hold away with the run, and ``reserving`` gives the
    rate-limit admissions back (nothing was called)."""

    def __init__(self, svc: Services) -> None:
        self._svc = svc
        self.calls: list[Call] = []

    async def reserve_call(
        self,
        conn: Conn,
        caller: Caller,
        api_key_id: str,
        customer_ref: str | None,
        settings: RunSettings,
        prompt: PromptInput,
        origin: Origin,
        *,
        stream: bool,
        used: tuple[int, int] = (0, 0),
    ) -> Call:
        svc = self._svc
        billed = dataclasses.replace(caller, key_id=api_key_id)
        ctx = CallContext(
            request_id=origin.request_id,
            developer_id=caller.developer_id,
            api_key_id=api_key_id,
            customer_ref=customer_ref,
            model_requested=settings.model,
            stream=stream,
            started=trio.current_time(),
        )
        attempts = cascade.Attempts(resolve_all(svc.catalog, settings.model, svc.slots))
        room = min(
            t.model.context_window - (t.model.max_output_tokens or 0) for t in attempts.targets
        )
        built = run_prompt.build(
            settings, prompt.messages, prompt.steps, used, context_tokens=room if room > 0 else None
        )
        if built.body is None:
            return Call(ctx, billed, None, built.incomplete, None, None, Admission(), customer_ref)
        req = ChatRequest.parse(built.body)
        cap = svc.limits.policy.output_tokens_estimate
        admission = await origin.admit(
            customer_ref, estimate_tokens(req.size, req.max_output_tokens, 1, cap), conn
        )
        call = Call(ctx, billed, req, None, attempts, None, admission, customer_ref)
        self.calls.append(call)
        bounds = billing.CallBounds(req.size, req.max_output_tokens, 1)
        # In the run's transaction (billing.reserve runs one statement on what it is given):
        # a refusal, or any failure before commit, leaves no hold and no run. Reserving on
        # another connection while this one holds the thread lock could wait for a pool
        # connection that the runs queued behind that lock are holding.
        call.hold = await billing.reserve(
            conn, svc.pricing, svc.process_id, billed, ctx, attempts.targets, bounds
        )
        call.customer_id = call.hold.customer_id
        return call

    async def reserve(
        self,
        conn: Conn,
        caller: Caller,
        run: RunRow,
        thread: ThreadRow,
        customer_ref: str | None,
        prompt: PromptInput,
        origin: Origin,
        *,
        stream: bool,
    ) -> Segment:
        """Reserve the next call of ``run`` (in the transaction that holds it)."""
        used = (run.prompt_tokens, run.completion_tokens)
        call = await self.reserve_call(
            conn,
            caller,
            run.api_key_id,
            customer_ref,
            run,
            prompt,
            origin,
            stream=stream,
            used=used,
        )
        if call.hold is not None and call.customer_id != run.customer_id:
            await store.set_customer(conn, run.id, call.customer_id)
            run = dataclasses.replace(run, customer_id=call.customer_id)
        return Segment(run, thread, call)

    def abandon(self) -> None:
        for call in self.calls:
            self._svc.limits.settle_soon(call.admission, 0)


@asynccontextmanager
async def reserving(svc: Services) -> AsyncIterator[Reservations]:
    reservations = Reservations(svc)
    try:
        yield reservations
    except BaseException:
        reservations.abandon()
        raise
