"""``/v1/customers``: a developer's end-customers (developer API key only)."""

from __future__ import annotations

from quart import Blueprint, Response, request

from ringside import validation
from ringside.api.common import json_response, read_json, request_log, services
from ringside.domain import customers
from ringside.domain.auth import Caller
from ringside.pagination import PageRequest, list_json

customers_bp = Blueprint("customers", __name__)


async def developer_caller() -> Caller:
    caller = await services().auth.caller_from(request.headers)
    request_log().developer_id = caller.developer_id
    return caller


@customers_bp.post("/v1/customers")
async def create_customer() -> Response:
    caller = await developer_caller()
    changes = customers.parse_fields(await read_json(exact=True))
    row = await customers.create_customer(services().db, caller.developer_id, changes)
    return json_response(customers.customer_json(row))


@customers_bp.get("/v1/customers")
async def list_customers() -> Response:
    caller = await developer_caller()
    page = PageRequest.from_args(request.args)
    external_id = validation.optional_text(
        request.args.get("external_id"), "external_id", max_len=256
    )
    rows, has_more = await customers.list_customers(
        services().db, caller.developer_id, page, external_id=external_id
    )
    return json_response(list_json([customers.customer_json(r) for r in rows], has_more))


@customers_bp.get("/v1/customers/<customer_id>")
async def get_customer(customer_id: str) -> Response:
    caller = await developer_caller()
    row = await customers.get_customer(services().db, caller.developer_id, customer_id)
    return json_response(customers.customer_json(row))


@customers_bp.patch("/v1/customers/<customer_id>")
async def update_customer(customer_id: str) -> Response:
    caller = await developer_caller()
    changes = customers.parse_fields(await read_json(exact=True))
    row = await customers.update_customer(services().db, caller.developer_id, customer_id, changes)
    return json_response(customers.customer_json(row))


@customers_bp.delete("/v1/customers/<customer_id>")
async def delete_customer(customer_id: str) -> Response:
    caller = await developer_caller()
    row = await customers.delete_customer(services().db, caller.developer_id, customer_id)
    return json_response({"id": row.id, "object": "customer.deleted", "deleted": True})
