"""Chat completions: resolve the model, call the provider, relay the answer, meter the call.

Exactly one usage event is recorded per request, whatever happens: success, upstream error,
timeout, or a client that went away (``client_aborted``, with whatever usage was seen).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import httpx
import trio

from ringside.domain.chat_request import ChatRequest
from ringside.domain.metering import CallContext, usage_event
from ringside.domain.modelrefs import ResolvedModel, resolve_all
from ringside.domain.stream_relay import Finished, StreamRelay
from ringside.errors import (
    InvalidRequest,
    ModelUnavailable,
    NoActiveProviderKeys,
    RateLimited,
    RingsideError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ringside.services import Services
from ringside.tokens import TokenUsage
from ringside.upstream import openai_compat
from ringside.upstream.providers import ProviderConfig, Wire

T = TypeVar("T")

# Errors after which a cascade moves on to its next model.
_FALLBACK_ON = (
    UpstreamUnavailable,
    UpstreamTimeout,
    ModelUnavailable,
    NoActiveProviderKeys,
    RateLimited,
)


@dataclass
class Attempts:
    targets: list[ResolvedModel]
    tried: list[ResolvedModel] = field(default_factory=list)

    def headers(self) -> dict[str, str]:
        served = self.tried[-1]
        return {
            "X-Ringside-Model-Resolved": served.ref,
            "X-Ringside-Model-Used": served.ref,
            "X-Ringside-Models-Tried": ",".join(t.ref for t in self.tried),
            "X-Ringside-Fallback-Triggered": "true" if len(self.tried) > 1 else "false",
        }


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


def _provider(svc: Services, target: ResolvedModel) -> ProviderConfig:
    cfg = svc.settings.providers[target.model.provider]
    if cfg.spec.wire is Wire.NATIVE:
        raise ModelUnavailable(
            f"{target.ref}: the {cfg.spec.display} adapter is not available in this build; "
            "only OpenAI-wire providers are served so far."
        )
    return cfg


def plan(svc: Services, req: ChatRequest) -> Attempts:
    if req.stream and isinstance(req.model, list) and len(req.model) > 1:
        raise InvalidRequest(
            "A model cascade (model: [...]) cannot be combined with stream: true.",
            code="fallback_with_stream_unsupported",
            param="model",
        )
    return Attempts(resolve_all(svc.catalog, req.model, svc.slots))


def customer_ref(header: str | None, user: str | None) -> str | None:
    """The end-customer a call is attributed to: the ``FC-Customer`` header, else ``user``."""
    ref = header if header is not None else user
    if ref is None or ref == "":
        return None
    if len(ref) > 256 or not ref.isprintable():
        param = "FC-Customer" if header is not None else "user"
        raise InvalidRequest("A customer id is 1 to 256 printable characters.", param=param)
    return ref


async def complete(
    svc: Services, ctx: CallContext, req: ChatRequest, attempts: Attempts
) -> Completion:
    """Non-streaming completion, walking the cascade on provider failures."""
    target, reply = await _walk(svc, ctx, attempts, lambda t: _call_once(svc, t, req))
    raw_usage = reply.data.get("usage")
    if isinstance(raw_usage, dict):
        usage, source = TokenUsage.from_openai(raw_usage), "upstream"
    else:
        chars = openai_compat.choices_text_chars(reply.data.get("choices"), "message")
        usage, source = req.counted_usage(chars), "counted"
    svc.meter.record(
        usage_event(ctx, target, usage, usage_source=source, status="ok", http_status=200)
    )
    return Completion(reply.body, attempts.headers(), usage, target.ref)


async def open_stream(
    svc: Services, ctx: CallContext, req: ChatRequest, attempts: Attempts, on_finish: Finished
) -> StreamingCompletion:
    """Open the upstream stream (falling back while nothing has been sent) and hand back a
    relay that meters the call when it ends, however it ends."""
    target, response = await _walk(svc, ctx, attempts, lambda t: _open_once(svc, t, req))
    relay = StreamRelay(svc, ctx, req, target, response, on_finish)
    return StreamingCompletion(relay, attempts.headers(), target.ref)


async def _walk(
    svc: Services,
    ctx: CallContext,
    attempts: Attempts,
    attempt: Callable[[ResolvedModel], Awaitable[T]],
) -> tuple[ResolvedModel, T]:
    """Try the cascade's models in order, moving on after provider failures. A request that
    fails here is metered here (the last model tried, no tokens), and so is one whose client
    went away meanwhile (``client_aborted``); on success the caller meters."""
    handed_over = False
    last_error: RingsideError | None = None
    try:
        for target in attempts.targets:
            attempts.tried.append(target)
            try:
                result = await attempt(target)
            except _FALLBACK_ON as exc:
                last_error = exc
                continue
            handed_over = True
            return target, result
        assert last_error is not None
        raise last_error
    except RingsideError as exc:
        handed_over = True
        status = "timeout" if isinstance(exc, UpstreamTimeout) else "upstream_error"
        _record(svc, ctx, attempts, status, exc.status)
        raise
    finally:
        if not handed_over:  # cancelled: the client disconnected while a provider answered
            _record(svc, ctx, attempts, "client_aborted", 499)


def _record(svc: Services, ctx: CallContext, attempts: Attempts, status: str, http: int) -> None:
    if attempts.tried:
        event = usage_event(
            ctx, attempts.tried[-1], TokenUsage(), usage_source="none", status=status,
            http_status=http,
        )  # fmt: skip
        svc.meter.record(event)


async def _call_once(
    svc: Services, target: ResolvedModel, req: ChatRequest
) -> openai_compat.JsonReply:
    cfg = _provider(svc, target)
    request = openai_compat.build_chat_request(svc.http, cfg, target.model.model, req.body, False)
    with trio.move_on_after(svc.settings.upstream_timeout_s) as scope:
        return await openai_compat.send_chat(svc.http, cfg.spec.name, request)
    assert scope.cancelled_caught
    raise UpstreamTimeout(
        f"{cfg.spec.name} did not answer within {svc.settings.upstream_timeout_s:g}s."
    )


async def _open_once(svc: Services, target: ResolvedModel, req: ChatRequest) -> httpx.Response:
    cfg = _provider(svc, target)
    request = openai_compat.build_chat_request(
        svc.http,
        cfg,
        target.model.model,
        req.body,
        True,
        idle_timeout_s=svc.settings.stream_idle_timeout_s,
    )
    with trio.move_on_after(svc.settings.upstream_timeout_s) as scope:
        return await openai_compat.open_chat_stream(svc.http, cfg.spec.name, request)
    assert scope.cancelled_caught
    raise UpstreamTimeout(f"{cfg.spec.name} did not start streaming in time.")
