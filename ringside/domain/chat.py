"""Chat completions: resolve the model, hold the call's worst case, call the provider, relay
the answer, settle the call. ``response_format`` is enforced on the models that cannot honour
it themselves (``structured_output``).

Every call that passed its reservation is settled exactly once, whatever happens: success,
upstream error, timeout, or a client that went away (``client_aborted``, with whatever usage
was seen); the settlement writes its one usage event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import trio

from ringside.domain import billing, cascade, structured_output
from ringside.domain.auth import Caller
from ringside.domain.chat_request import ChatRequest, check_capabilities, counted_usage
from ringside.domain.metering import CallContext
from ringside.domain.modelrefs import ResolvedModel, resolve_all
from ringside.domain.stream_relay import Finished, StreamRelay
from ringside.errors import (
    InvalidRequest,
    ResponseSchemaValidationFailed,
    RingsideError,
    UpstreamTimeout,
)
from ringside.services import Services
from ringside.tokens import TokenUsage
from ringside.upstream.adapter import JsonReply, UpstreamStream
from ringside.upstream.shapes import choices_text_chars

T = TypeVar("T")


@dataclass(frozen=True)
class Completion:
    body: bytes
    headers: dict[str, str]
    usage: TokenUsage
    resolved: str


@dataclass(frozen=True)
class StreamingCompletion:
    relay: StreamRelay
    headers: dict[str, str]
    resolved: str


def plan(svc: Services, req: ChatRequest) -> cascade.Attempts:
    """The models to try, once the request is known to be one they can all serve (a
    capability a model lacks is a 400 before any money moves or any provider is called)."""
    if req.stream and isinstance(req.model, list) and len(req.model) > 1:
        raise InvalidRequest(
            "A model cascade (model: [...]) cannot be combined with stream: true.",
            code="fallback_with_stream_unsupported",
            param="model",
        )
    attempts = cascade.Attempts(resolve_all(svc.catalog, req.model, svc.slots))
    check_capabilities(req, attempts.targets, svc.catalog)
    return attempts


async def complete(
    svc: Services, caller: Caller, ctx: CallContext, req: ChatRequest, attempts: cascade.Attempts
) -> Completion:
    """Non-streaming completion, walking the cascade on provider failures (and on answers
    that fail an enforced ``response_format``); the call is held before the first provider is
    contacted and settled once, however it ends, for every answer it had."""
    hold = await _reserve(svc, caller, ctx, req, attempts)
    spent = cascade.Spent()
    outcome: billing.Outcome | None = None
    try:
        target, reply = await cascade.walk(
            attempts, lambda t: _answer(svc, t, req, ctx.request_id, spent)
        )
        outcome = billing.Outcome(target, spent.usage, spent.source, "ok", 200, parts=spent.parts())
    except RingsideError as exc:
        outcome = cascade.failed(attempts, exc, spent)
        if isinstance(exc, ResponseSchemaValidationFailed):  # billed, unlike other failures
            exc.billed_tokens = spent.usage.total
            exc.headers = attempts.headers()
        raise
    except Exception:
        # A bug: recorded as such, never as the client's leaving.
        outcome = cascade.broken(attempts, spent)
        raise
    finally:
        charged = await billing.settle(
            svc.db, svc.pricing, hold, outcome or cascade.aborted(attempts, spent)
        )
    headers = {**attempts.headers(), **charged.headers(hold)}
    return Completion(reply.body, headers, spent.usage, target.ref)


async def open_stream(
    svc: Services,
    caller: Caller,
    ctx: CallContext,
    req: ChatRequest,
    attempts: cascade.Attempts,
    on_finish: Finished,
) -> StreamingCompletion:
    """Open the upstream stream (falling back while nothing has been sent) and hand back a
    relay that settles the call when it ends, however it ends."""
    hold = await _reserve(svc, caller, ctx, req, attempts)
    outcome: billing.Outcome | None = None
    handed_over = False
    try:
        target, upstream = await cascade.walk(
            attempts, lambda t: _open(svc, t, req, ctx.request_id)
        )
        check = structured_output.stream_check(req.output, target)
        relay = StreamRelay(svc, ctx, req, target, upstream, on_finish, hold, check)
        handed_over = True
    except RingsideError as exc:
        outcome = cascade.failed(attempts, exc)
        raise
    except Exception:
        outcome = cascade.broken(attempts)
        raise
    finally:
        if not handed_over:  # failed, or the client went away while a provider answered
            await billing.settle(svc.db, svc.pricing, hold, outcome or cascade.aborted(attempts))
    return StreamingCompletion(relay, {**attempts.headers(), **hold.headers()}, target.ref)


async def _reserve(
    svc: Services, caller: Caller, ctx: CallContext, req: ChatRequest, attempts: cascade.Attempts
) -> billing.Hold:
    if req.output is None:
        bounds = billing.CallBounds(req.size, req.max_output_tokens, req.choices)
    else:  # enforced targets may be called 1 + schema_retries times, each attempt billed
        bounds = structured_output.bounds(
            req.output,
            attempts.targets,
            req.size,
            req.max_output_tokens,
            req.choices,
            stream=req.stream,
        )
    return await billing.reserve(
        svc.db, svc.pricing, svc.process_id, caller, ctx, attempts.targets, bounds
    )


async def _answer(
    svc: Services, target: ResolvedModel, req: ChatRequest, request_id: str, spent: cascade.Spent
) -> JsonReply:
    """The target's answer, enforced if it cannot honour ``response_format`` itself; every
    attempt's usage goes to ``spent`` as soon as it is known."""

    def meter(reply: JsonReply, messages: Sequence[Any]) -> TokenUsage:
        raw_usage = reply.data.get("usage")
        if isinstance(raw_usage, dict):
            usage, source = TokenUsage.from_openai(raw_usage), "upstream"
        else:
            chars = choices_text_chars(reply.data.get("choices"), "message")
            usage, source = counted_usage(messages, chars), "counted"
        spent.add(target, usage, source)
        return usage

    how = structured_output.enforcement(req.output, target)
    if how is None:  # the fast path: the body as the client sent it
        reply = await _call_once(svc, target, req.upstream_body, request_id)
        meter(reply, req.body["messages"])
        return reply
    return await structured_output.enforce(
        how, req.body, lambda body: _call_once(svc, target, body, request_id), meter
    )


async def _call_once(
    svc: Services, target: ResolvedModel, body: dict[str, Any], request_id: str
) -> JsonReply:
    x = cascade.exchange(svc, target, request_id)
    with trio.move_on_at(x.deadline) as scope:
        return await x.adapter.complete(x, body)
    assert scope.cancelled_caught
    raise UpstreamTimeout(f"{x.name} did not answer within {x.timeout_s:g}s.")


async def _open(
    svc: Services, target: ResolvedModel, req: ChatRequest, request_id: str
) -> UpstreamStream:
    how = structured_output.enforcement(req.output, target)
    body = req.upstream_body if how is None else structured_output.instructed(req.body, how)
    return await open_upstream_stream(svc, target, req, request_id, body)


async def open_upstream_stream(
    svc: Services,
    target: ResolvedModel,
    req: ChatRequest,
    request_id: str,
    body: dict[str, Any] | None = None,
) -> UpstreamStream:
    """Open the target's stream with ``body`` (default: the client's, without Ringside's
    extension)."""
    x = cascade.exchange(svc, target, request_id, stream=True)
    with trio.move_on_at(x.deadline) as scope:
        return await x.adapter.open_stream(x, req.upstream_body if body is None else body)
    assert scope.cancelled_caught
    raise UpstreamTimeout(f"{x.name} did not start streaming in time.")
