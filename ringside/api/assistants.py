"""``/v1/assistants``: OpenAI Assistants v2 assistants (developer API key only; a client token
is refused). Updates are POSTs, as at OpenAI."""

from __future__ import annotations

from quart import Blueprint, Response, request

from ringside.api.common import json_response, read_json, services
from ringside.api.customers import developer_caller
from ringside.domain import assistants
from ringside.pagination import PageRequest, list_json

assistants_bp = Blueprint("assistants", __name__)


@assistants_bp.post("/v1/assistants")
async def create_assistant() -> Response:
    caller = await developer_caller()
    svc = services()
    changes = assistants.parse_fields(svc, await read_json(), create=True)
    row = await assistants.create_assistant(svc.db, caller.developer_id, changes)
    return json_response(assistants.assistant_json(row))


@assistants_bp.get("/v1/assistants")
async def list_assistants() -> Response:
    caller = await developer_caller()
    page = PageRequest.from_args(request.args)
    rows, has_more = await assistants.list_assistants(services().db, caller.developer_id, page)
    return json_response(list_json([assistants.assistant_json(r) for r in rows], has_more))


@assistants_bp.get("/v1/assistants/<assistant_id>")
async def get_assistant(assistant_id: str) -> Response:
    caller = await developer_caller()
    row = await assistants.get_assistant(services().db, caller.developer_id, assistant_id)
    return json_response(assistants.assistant_json(row))


@assistants_bp.post("/v1/assistants/<assistant_id>")
async def update_assistant(assistant_id: str) -> Response:
    caller = await developer_caller()
    svc = services()
    changes = assistants.parse_fields(svc, await read_json(), create=False)
    row = await assistants.update_assistant(svc.db, caller.developer_id, assistant_id, changes)
    return json_response(assistants.assistant_json(row))


@assistants_bp.delete("/v1/assistants/<assistant_id>")
async def delete_assistant(assistant_id: str) -> Response:
    caller = await developer_caller()
    await assistants.delete_assistant(services().db, caller.developer_id, assistant_id)
    return json_response({"id": assistant_id, "object": "assistant.deleted", "deleted": True})
