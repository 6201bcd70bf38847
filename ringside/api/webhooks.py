"""``/v1/webhooks``: a developer's webhook endpoints and their deliveries (developer API key
only)."""

from __future__ import annotations

from quart import Blueprint, Response, request

from ringside.api.common import json_response, read_json, services
from ringside.api.customers import developer_caller
from ringside.domain import webhooks
from ringside.pagination import PageRequest, list_json

webhooks_bp = Blueprint("webhooks", __name__)


@webhooks_bp.post("/v1/webhooks")
async def create_webhook() -> Response:
    caller = await developer_caller()
    svc = services()
    fields = await webhooks.parse_fields(await read_json(), svc.settings, create=True)
    row = await webhooks.create_endpoint(svc.db, caller.developer_id, fields)
    return json_response(webhooks.endpoint_json(row, with_secret=True))


@webhooks_bp.get("/v1/webhooks")
async def list_webhooks() -> Response:
    caller = await developer_caller()
    page = PageRequest.from_args(request.args)
    rows, has_more = await webhooks.list_endpoints(services().db, caller.developer_id, page)
    return json_response(list_json([webhooks.endpoint_json(r) for r in rows], has_more))


@webhooks_bp.get("/v1/webhooks/<endpoint_id>")
async def get_webhook(endpoint_id: str) -> Response:
    caller = await developer_caller()
    row = await webhooks.get_endpoint(services().db, caller.developer_id, endpoint_id)
    return json_response(webhooks.endpoint_json(row))


@webhooks_bp.patch("/v1/webhooks/<endpoint_id>")
async def update_webhook(endpoint_id: str) -> Response:
    caller = await developer_caller()
    svc = services()
    fields = await webhooks.parse_fields(await read_json(), svc.settings, create=False)
    row = await webhooks.update_endpoint(svc.db, caller.developer_id, endpoint_id, fields)
    return json_response(webhooks.endpoint_json(row))


@webhooks_bp.delete("/v1/webhooks/<endpoint_id>")
async def delete_webhook(endpoint_id: str) -> Response:
    caller = await developer_caller()
    await webhooks.delete_endpoint(services().db, caller.developer_id, endpoint_id)
    return json_response({"id": endpoint_id, "object": "webhook_endpoint.deleted", "deleted": True})


@webhooks_bp.post("/v1/webhooks/<endpoint_id>/roll_secret")
async def roll_webhook_secret(endpoint_id: str) -> Response:
    caller = await developer_caller()
    row = await webhooks.roll_secret(services().db, caller.developer_id, endpoint_id)
    return json_response(webhooks.endpoint_json(row, with_secret=True))


@webhooks_bp.post("/v1/webhooks/<endpoint_id>/test")
async def test_webhook(endpoint_id: str) -> Response:
    caller = await developer_caller()
    queued = await webhooks.send_test(services().db, caller.developer_id, endpoint_id)
    return json_response({"object": "webhook_endpoint.test", "type": webhooks.PING, **queued})


@webhooks_bp.get("/v1/webhooks/<endpoint_id>/deliveries")
async def list_webhook_deliveries(endpoint_id: str) -> Response:
    caller = await developer_caller()
    page = PageRequest.from_args(request.args)
    data, has_more = await webhooks.list_deliveries(
        services().db, caller.developer_id, endpoint_id, page
    )
    return json_response(list_json(data, has_more))


@webhooks_bp.post("/v1/webhooks/<endpoint_id>/deliveries/<delivery_id>/redeliver")
async def redeliver_webhook(endpoint_id: str, delivery_id: str) -> Response:
    caller = await developer_caller()
    body = await webhooks.redeliver(services().db, caller.developer_id, endpoint_id, delivery_id)
    return json_response(body)
