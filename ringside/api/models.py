"""``GET /v1/models`` and ``GET /v1/models/{id}``: the catalog in OpenAI's shape."""

from __future__ import annotations

from quart import Blueprint, Response, request

from ringside.api.client_tokens import inference_caller
from ringside.api.common import json_response, services
from ringside.catalog import CAPABILITIES
from ringside.domain.modelrefs import resolve
from ringside.errors import InvalidModelRef, InvalidRequest, NotFound

models_bp = Blueprint("models", __name__)


@models_bp.get("/v1/models")
async def list_models() -> Response:
    svc = services()
    await inference_caller()
    wanted = {s.strip() for s in request.args.get("supports", "").split(",") if s.strip()}
    unknown = wanted - CAPABILITIES
    if unknown:
        raise InvalidRequest(
            f"Unknown capability {sorted(unknown)[0]!r} in 'supports'; known: "
            + ", ".join(sorted(CAPABILITIES))
            + ".",
            param="supports",
        )
    provider = request.args.get("provider")
    data = [
        m.as_openai_json()
        for m in svc.catalog.all()
        if wanted <= m.capabilities and (provider is None or m.provider == provider)
    ]
    return json_response({"object": "list", "data": data})


@models_bp.get("/v1/models/<path:model_id>")
async def retrieve_model(model_id: str) -> Response:
    svc = services()
    await inference_caller()
    try:
        resolved = resolve(svc.catalog, model_id, svc.slots)
    except InvalidModelRef as exc:
        raise NotFound(f"No model {model_id!r}: {exc.message}", param="model") from exc
    return json_response(
        resolved[0].model.as_openai_json(),
        headers={"X-Ringside-Model-Resolved": resolved[0].ref},
    )
