"""``POST /v1/chat/completions``."""

from __future__ import annotations

import orjson
import trio
from quart import Blueprint, Response, request

from ringside.api import rate_limits
from ringside.api.client_tokens import attributed_customer, inference_caller
from ringside.api.common import (
    json_response,
    read_json,
    replay_response,
    request_log,
    services,
)
from ringside.domain import cascade, chat, idempotency
from ringside.domain.auth import Caller
from ringside.domain.chat_request import ChatRequest
from ringside.domain.metering import CallContext
from ringside.domain.rate_limits import Admission, estimate_tokens
from ringside.errors import ResponseSchemaValidationFailed
from ringside.log import RequestLog
from ringside.services import Services
from ringside.tokens import TokenUsage

chat_bp = Blueprint("chat", __name__)

_SSE = "text/event-stream; charset=utf-8"
_JSON = "application/json"


@chat_bp.post("/v1/chat/completions")
async def create_chat_completion() -> Response:
    svc = services()
    log = request_log()
    caller = await inference_caller()
    log.developer_id = caller.developer_id
    body = await read_json(allow_nul=True)
    req = ChatRequest.parse(body, request.content_length)
    log.model = req.model if isinstance(req.model, str) else ",".join(req.model)
    attempts = chat.plan(svc, req)
    ctx = CallContext(
        request_id=log.request_id,
        developer_id=caller.developer_id,
        api_key_id=caller.key_id,
        customer_ref=attributed_customer(caller, request.headers.get("FC-Customer"), req.user),
        model_requested=log.model,
        stream=req.stream,
        started=log.started,
    )
    started = await idempotency.begin_for_request(
        svc.db,
        header=request.headers.get("Idempotency-Key"),
        models=len(attempts.targets),
        developer_id=caller.developer_id,
        path=request.path,
        body=body,
        request_id=log.request_id,
        process_id=svc.process_id,
    )
    if started is None:
        return await _serve(svc, caller, ctx, req, attempts, log, None)
    if isinstance(started, idempotency.Replay):
        return replay_response(started)
    try:
        return await _serve(svc, caller, ctx, req, attempts, log, started)
    except BaseException:
        await started.release()  # nothing was billed: a retry runs afresh
        raise


async def _serve(
    svc: Services,
    caller: Caller,
    ctx: CallContext,
    req: ChatRequest,
    attempts: cascade.Attempts,
    log: RequestLog,
    claim: idempotency.Claim | None,
) -> Response:
    cap = svc.limits.policy.output_tokens_estimate
    tokens = estimate_tokens(req.size, req.max_output_tokens, req.choices, cap)
    admission = await rate_limits.admit(svc, caller, ctx.customer_ref, tokens)
    try:
        return await _call(svc, caller, ctx, req, attempts, log, claim, admission)
    except BaseException:
        svc.limits.settle_soon(admission, 0)  # it used nothing (a no-op once settled)
        raise


async def _call(
    svc: Services,
    caller: Caller,
    ctx: CallContext,
    req: ChatRequest,
    attempts: cascade.Attempts,
    log: RequestLog,
    claim: idempotency.Claim | None,
    admission: Admission,
) -> Response:
    if not req.stream:
        try:
            done = await chat.complete(svc, caller, ctx, req, attempts)
        except ResponseSchemaValidationFailed as exc:
            # Every attempt was billed: an idempotent retry replays this answer, never bills
            # again (the claim's release then finds nothing in flight).
            svc.limits.settle_soon(admission, exc.billed_tokens)
            if claim is not None:
                body = orjson.dumps(exc.envelope(ctx.request_id))
                await claim.store(exc.status, {**exc.headers, "Content-Type": _JSON}, body)
            raise
        svc.limits.settle_soon(admission, done.usage.total)
        log.resolved = done.resolved
        log.input_tokens, log.output_tokens = done.usage.input, done.usage.output
        if claim is not None:
            await claim.store(200, {**done.headers, "Content-Type": _JSON}, done.body)
        return json_response(done.body, headers=done.headers)

    def finished(outcome: str, status: int, usage: TokenUsage) -> None:
        log.outcome, log.status = outcome, status
        log.input_tokens, log.output_tokens = usage.input, usage.output
        log.emit(trio.current_time())
        svc.limits.settle_soon(admission, usage.total)

    streaming = await chat.open_stream(svc, caller, ctx, req, attempts, finished)
    if claim is not None:
        kept = {**streaming.headers, "Content-Type": _SSE}
        streaming.relay.record(lambda sent: claim.store(200, kept, sent))
    log.resolved = streaming.resolved
    log.deferred = True
    response = Response(
        streaming.relay,
        headers={**streaming.headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        content_type=_SSE,
    )
    response.timeout = None  # a stream may outlive Quart's response timeout
    return response
