"""``POST /v1/embeddings``."""

from __future__ import annotations

from quart import Blueprint, Response, request

from ringside.api.common import json_response, read_json, request_log, services
from ringside.domain import chat, embeddings, idempotency
from ringside.domain.metering import CallContext
from ringside.errors import InvalidRequest

embeddings_bp = Blueprint("embeddings", __name__)

_JSON = "application/json"


@embeddings_bp.post("/v1/embeddings")
async def create_embeddings() -> Response:
    svc = services()
    log = request_log()
    caller = await svc.auth.caller_from(request.headers)
    log.developer_id = caller.developer_id
    body = await read_json(allow_nul=True)
    req = embeddings.EmbeddingRequest.parse(body, request.content_length)
    log.model = req.model if isinstance(req.model, str) else ",".join(req.model)
    attempts = embeddings.plan(svc, req)
    ctx = CallContext(
        request_id=log.request_id,
        developer_id=caller.developer_id,
        api_key_id=caller.key_id,
        customer_ref=chat.customer_ref(request.headers.get("FC-Customer"), req.user),
        model_requested=log.model,
        stream=False,
        started=log.started,
    )
    key = idempotency.parse_key(request.headers.get("Idempotency-Key"))
    claim: idempotency.Claim | None = None
    if key is not None:
        if len(attempts.targets) > 1:
            raise InvalidRequest(
                "A model cascade cannot be combined with an Idempotency-Key (which model would "
                "a retry replay?); name one model.",
                code="fallback_with_idempotency_unsupported",
                param="model",
            )
        started = await idempotency.begin(
            svc.db,
            developer_id=caller.developer_id,
            key=key,
            digest=idempotency.request_hash(request.path, body),
            request_id=log.request_id,
            process_id=svc.process_id,
        )
        if isinstance(started, idempotency.Replay):
            headers = {**started.headers, "Idempotent-Replayed": "true"}
            return Response(started.body, status=started.status, headers=headers)
        claim = started
    try:
        done = await embeddings.create(svc, caller, ctx, req, attempts)
    except BaseException:
        if claim is not None:
            await claim.release()  # nothing was billed: a retry runs afresh
        raise
    log.resolved = done.resolved
    log.input_tokens, log.output_tokens = done.usage.input, 0
    if claim is not None:
        await claim.store(200, {**done.headers, "Content-Type": _JSON}, done.body)
    return json_response(done.body, headers=done.headers)
