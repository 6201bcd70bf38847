"""Admin API (``/admin/v1``), enabled by ``RINGSIDE_ADMIN_KEY``: developers, their keys, pricing
and wallets."""

from __future__ import annotations

from quart import Blueprint, Response, request

from ringside.api.common import json_response, read_json, request_log, services
from ringside.domain import developers, provider_keys, wallets
from ringside.domain.auth import check_admin
from ringside.errors import NotFound
from ringside.pagination import PageRequest

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


@admin_bp.patch("/developers/<developer_id>")
async def update_developer(developer_id: str) -> Response:
    svc = services()
    changes = developers.parse_developer_changes(await read_json(exact=True))
    dev = await developers.update_developer(svc.db, developer_id, changes)
    # Cached key lookups carry the developer's tier and pricing: this process forgets them at
    # once, every other one within its key-cache TTL.
    svc.auth.forget_all()
    return json_response(developers.developer_json(dev))


@admin_bp.get("/developers/<developer_id>/wallet")
async def get_wallet(developer_id: str) -> Response:
    page = PageRequest.from_args(request.args)
    view = await wallets.view(services().db, wallets.of_developer(developer_id), page)
    return json_response(wallets.wallet_json(view))


@admin_bp.post("/developers/<developer_id>/wallet/topup")
async def topup_wallet(developer_id: str) -> Response:
    movement = wallets.parse_topup(await read_json(exact=True))
    tx = await wallets.topup(
        services().db, wallets.of_developer(developer_id), movement, request_log().request_id
    )
    return json_response(wallets.transaction_json(tx))


@admin_bp.post("/developers/<developer_id>/wallet/adjust")
async def adjust_wallet(developer_id: str) -> Response:
    movement = wallets.parse_adjust(await read_json(exact=True))
    tx = await wallets.adjust(
        services().db, wallets.of_developer(developer_id), movement, request_log().request_id
    )
    return json_response(wallets.transaction_json(tx))


@admin_bp.post("/developers/<developer_id>/wallet/refund")
async def refund_wallet(developer_id: str) -> Response:
    spec = wallets.parse_refund(await read_json(exact=True))
    tx = await wallets.refund(services().db, wallets.of_developer(developer_id), spec)
    return json_response(wallets.transaction_json(tx))


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


@admin_bp.get("/providers")
async def list_providers() -> Response:
    """The providers, and their keys' state in the process that answers (masked)."""
    data = provider_keys.status(services().upstreams)
    return json_response({"object": "list", "data": data})


@admin_bp.get("/providers/<name>")
async def get_provider(name: str) -> Response:
    return json_response(provider_keys.provider_status(services().upstreams, name))


@admin_bp.post("/providers/<name>/keys/reset")
async def reset_provider_keys(name: str) -> Response:
    """Operator action: the provider's refused (401) and resting (429) keys usable again, in
    every process."""
    svc = services()
    await provider_keys.reset(svc.db, svc.upstreams, name)
    return json_response(provider_keys.provider_status(svc.upstreams, name))
