"""Admin API (``/admin/v1``), enabled by ``RINGSIDE_ADMIN_KEY``: developers and their keys."""

from __future__ import annotations

from quart import Blueprint, Response, request

from ringside.api.common import json_response, read_json, services
from ringside.domain import developers
from ringside.domain.auth import check_admin
from ringside.errors import NotFound

admin_bp = Blueprint("admin", __name__, url_prefix="/admin/v1")


@admin_bp.before_request
async def _require_admin() -> None:
    admin_key = services().settings.admin_key
    if admin_key is None:
        raise NotFound("The admin API is disabled (set RINGSIDE_ADMIN_KEY to enable it).")
    check_admin(request.headers, admin_key)


@admin_bp.post("/developers")
async def create_developer() -> Response:
    name, tier = developers.parse_developer_spec(await read_json())
    dev, key = await developers.create_developer(services().db, name, tier)
    return json_response({**developers.developer_json(dev), "api_key": key.as_json()}, 201)


@admin_bp.get("/developers/<developer_id>")
async def get_developer(developer_id: str) -> Response:
    dev = await developers.get_developer(services().db, developer_id)
    return json_response(developers.developer_json(dev))


@admin_bp.get("/developers/<developer_id>/api_keys")
async def list_keys(developer_id: str) -> Response:
    rows = await developers.list_keys(services().db, developer_id)
    data = [developers.key_json(r) for r in rows]
    return json_response(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": False,
        }
    )


@admin_bp.post("/developers/<developer_id>/api_keys")
async def add_key(developer_id: str) -> Response:
    name = developers.parse_key_name(await read_json(optional=True))
    key = await developers.add_key(services().db, developer_id, name)
    return json_response(key.as_json(), 201)


@admin_bp.delete("/developers/<developer_id>/api_keys/<key_id>")
async def revoke_key(developer_id: str, key_id: str) -> Response:
    svc = services()
    row = await developers.revoke_key(svc.db, developer_id, key_id)
    # This process forgets at once; every other process within its key-cache TTL.
    svc.auth.forget_all()
    return json_response(developers.key_json(row))
