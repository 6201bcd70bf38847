"""Chat completions: resolve the model, hold the call's worst case, call the provider, relay
the answer, settle the call.

Every call that passed its reservation is settled exactly once, whatever happens: success,
upstream error, timeout, or a client that went away (``client_aborted``, with whatever usage
was seen); the settlement writes its one usage event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import httpx
import trio

from ringside.domain import billing, cascade
from ringside.domain.auth import Caller
from ringside.domain.chat_request import ChatRequest
from ringside.domain.metering import CallContext
from ringside.domain.modelrefs import ResolvedModel, resolve_all
from ringside.domain.stream_relay import Finished, StreamRelay
from ringside.errors import (
    InvalidRequest,
    RingsideError,
    UpstreamTimeout,
)
from ringside.services import Services
from ringside.tokens import TokenUsage
from ringside.upstream import openai_compat

T = TypeVar("T")


# Errors after which a cascade moves on to its next model.
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
    if req.stream and isinstance(req.model, list) and len(req.model) > 1:
        raise InvalidRequest(
            "A model cascade (model: [...]) cannot be combined with stream: true.",
            code="fallback_with_stream_unsupported",
            param="model",
        )
    return cascade.Attempts(resolve_all(svc.catalog, req.model, svc.slots))


async def complete(
    svc: Services, caller: Caller, ctx: CallContext, req: ChatRequest, attempts: cascade.Attempts
) -> Completion:
    """Non-streaming completion, walking the cascade on provider failures; the call is held
    before the first provider is contacted and settled once, however it ends."""
    hold = await _reserve(svc, caller, ctx, req, attempts)
    outcome: billing.Outcome | None = None
    try:
        target, reply = await cascade.walk(
            attempts, lambda t: _call_once(svc, t, req, ctx.request_id)
        )
        raw_usage = reply.data.get("usage")
        if isinstance(raw_usage, dict):
            usage, source = TokenUsage.from_openai(raw_usage), "upstream"
        else:
            chars = openai_compat.choices_text_chars(reply.data.get("choices"), "message")
            usage, source = req.counted_usage(chars), "counted"
        outcome = billing.Outcome(target, usage, source, "ok", 200)
    except RingsideError as exc:
        outcome = cascade.failed(attempts, exc)
        raise
    except Exception:
        outcome = cascade.broken(attempts)  # a bug: recorded as such, never as the client's leaving
        raise
    finally:
        charged = await billing.settle(
            svc.db, svc.pricing, hold, outcome or cascade.aborted(attempts)
        )
    headers = {**attempts.headers(), **charged.headers(hold)}
    return Completion(reply.body, headers, usage, target.ref)


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
        target, response = await cascade.walk(
            attempts, lambda t: open_upstream_stream(svc, t, req, ctx.request_id)
        )
        relay = StreamRelay(svc, ctx, req, target, response, on_finish, hold)
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
    bounds = billing.CallBounds(req.size, req.max_output_tokens, req.choices)
    return await billing.reserve(
        svc.db, svc.pricing, svc.process_id, caller, ctx, attempts.targets, bounds
    )


async def _call_once(
    svc: Services, target: ResolvedModel, req: ChatRequest, request_id: str
) -> openai_compat.JsonReply:
    cfg = cascade.provider_for(svc, target)
    request = openai_compat.build_chat_request(
        svc.http, cfg, target.model.model, req.body, False, request_id=request_id
    )
    with trio.move_on_after(svc.settings.upstream_timeout_s) as scope:
        return await openai_compat.send_chat(svc.http, cfg.spec.name, request)
    assert scope.cancelled_caught
    raise UpstreamTimeout(
        f"{cfg.spec.name} did not answer within {svc.settings.upstream_timeout_s:g}s."
    )


async def open_upstream_stream(
    svc: Services, target: ResolvedModel, req: ChatRequest, request_id: str
) -> httpx.Response:
    cfg = cascade.provider_for(svc, target)
    request = openai_compat.build_chat_request(
        svc.http,
        cfg,
        target.model.model,
        req.body,
        True,
        request_id=request_id,
        idle_timeout_s=svc.settings.stream_idle_timeout_s,
    )
    with trio.move_on_after(svc.settings.upstream_timeout_s) as scope:
        return await openai_compat.open_chat_stream(svc.http, cfg.spec.name, request)
    assert scope.cancelled_caught
    raise UpstreamTimeout(f"{cfg.spec.name} did not start streaming in time.")
