"""``POST /v1/embeddings``."""

from __future__ import annotations

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
from ringside.domain import embeddings, idempotency
from ringside.domain.metering import CallContext
from ringside.domain.rate_limits import estimate_tokens

embeddings_bp = Blueprint("embeddings", __name__)

_JSON = "application/json"


@embeddings_bp.post("/v1/embeddings")
async def create_embeddings() -> Response:
    svc = services()
    log = request_log()
    caller = await inference_caller()
    log.developer_id = caller.developer_id
    body = await read_json(allow_nul=True)
    req = embeddings.EmbeddingRequest.parse(body, request.content_length)
    log.model = req.model if isinstance(req.model, str) else ",".join(req.model)
    attempts = embeddings.plan(svc, req)
    ctx = CallContext(
        request_id=log.request_id,
        developer_id=caller.developer_id,
        api_key_id=caller.key_id,
        customer_ref=attributed_customer(caller, request.headers.get("FC-Customer"), req.user),
        model_requested=log.model,
        stream=False,
        started=log.started,
    )
    claim = await idempotency.begin_for_request(
        svc.db,
        header=request.headers.get("Idempotency-Key"),
        models=len(attempts.targets),
        developer_id=caller.developer_id,
        path=request.path,
        body=body,
        request_id=log.request_id,
        process_id=svc.process_id,
    )
    if isinstance(claim, idempotency.Replay):
        return replay_response(claim)
    try:
        # No output: an embedding reserves its input alone against token limits.
        tokens = estimate_tokens(req.size, 0, 1, 0)
        admission = await rate_limits.admit(svc, caller, ctx.customer_ref, tokens)
        try:
            done = await embeddings.create(svc, caller, ctx, req, attempts)
        except BaseException:
            svc.limits.settle_soon(admission, 0)  # it used nothing
            raise
        svc.limits.settle_soon(admission, done.usage.input)
    except BaseException:
        if claim is not None:
            await claim.release()  # nothing was billed: a retry runs afresh
        raise
    log.resolved = done.resolved
    log.input_tokens, log.output_tokens = done.usage.input, 0
    if claim is not None:
        await claim.store(200, {**done.headers, "Content-Type": _JSON}, done.body)
    return json_response(done.body, headers=done.headers)
