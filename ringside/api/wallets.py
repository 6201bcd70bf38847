"""``/v1/customers/{id}/wallet``: a customer's prepaid wallet and its ledger (developer API key
only). The developer's own wallet is the operator's, under ``/admin/v1``."""

from __future__ import annotations

from quart import Blueprint, Response, request

from ringside.api.common import json_response, read_json, request_log, services
from ringside.api.customers import developer_caller
from ringside.domain import wallets
from ringside.pagination import PageRequest

wallets_bp = Blueprint("wallets", __name__)
_WALLET = "/v1/customers/<customer_id>/wallet"


@wallets_bp.get(_WALLET)
async def get_wallet(customer_id: str) -> Response:
    caller = await developer_caller()
    page = PageRequest.from_args(request.args)
    view = await wallets.view(
        services().db, wallets.of_customer(caller.developer_id, customer_id), page
    )
    return json_response(wallets.wallet_json(view))


@wallets_bp.post(f"{_WALLET}/topup")
async def topup(customer_id: str) -> Response:
    caller = await developer_caller()
    movement = wallets.parse_topup(await read_json(exact=True))
    tx = await wallets.topup(
        services().db,
        wallets.of_customer(caller.developer_id, customer_id),
        movement,
        request_log().request_id,
    )
    return json_response(wallets.transaction_json(tx))


@wallets_bp.post(f"{_WALLET}/adjust")
async def adjust(customer_id: str) -> Response:
    caller = await developer_caller()
    movement = wallets.parse_adjust(await read_json(exact=True))
    tx = await wallets.adjust(
        services().db,
        wallets.of_customer(caller.developer_id, customer_id),
        movement,
        request_log().request_id,
    )
    return json_response(wallets.transaction_json(tx))


@wallets_bp.post(f"{_WALLET}/refund")
async def refund(customer_id: str) -> Response:
    caller = await developer_caller()
    spec = wallets.parse_refund(await read_json(exact=True))
    tx = await wallets.refund(
        services().db, wallets.of_customer(caller.developer_id, customer_id), spec
    )
    return json_response(wallets.transaction_json(tx))
