"""``POST /v1/chat/completions``."""

from __future__ import annotations

import trio
from quart import Blueprint, Response, request

from ringside.api.common import json_response, read_json, request_log, services
from ringside.domain import chat
from ringside.domain.chat_request import ChatRequest
from ringside.domain.metering import CallContext
from ringside.tokens import TokenUsage

chat_bp = Blueprint("chat", __name__)


@chat_bp.post("/v1/chat/completions")
async def create_chat_completion() -> Response:
    svc = services()
    log = request_log()
    caller = await svc.auth.caller_from(request.headers)
    log.developer_id = caller.developer_id
    req = ChatRequest.parse(await read_json(allow_nul=True))
    log.model = req.model if isinstance(req.model, str) else ",".join(req.model)
    attempts = chat.plan(svc, req)
    ctx = CallContext(
        request_id=log.request_id,
        developer_id=caller.developer_id,
        api_key_id=caller.key_id,
        customer_ref=chat.customer_ref(request.headers.get("FC-Customer"), req.user),
        model_requested=log.model,
        stream=req.stream,
        started=log.started,
    )
    if not req.stream:
        done = await chat.complete(svc, ctx, req, attempts)
        log.resolved = done.resolved
        log.input_tokens, log.output_tokens = done.usage.input, done.usage.output
        return json_response(done.body, headers=done.headers)

    def finished(outcome: str, status: int, usage: TokenUsage) -> None:
        log.outcome, log.status = outcome, status
        log.input_tokens, log.output_tokens = usage.input, usage.output
        log.emit(trio.current_time())

    streaming = await chat.open_stream(svc, ctx, req, attempts, finished)
    log.resolved = streaming.resolved
    log.deferred = True
    response = Response(
        streaming.relay,
        headers={**streaming.headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        content_type="text/event-stream; charset=utf-8",
    )
    response.timeout = None  # a stream may outlive Quart's response timeout
    return response
