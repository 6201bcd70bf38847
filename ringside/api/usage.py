"""Usage reports: ``GET /v1/usage`` (the developer's) and ``GET /v1/customers/{id}/usage``."""

from __future__ import annotations

from quart import Blueprint, Response, request

from ringside.api.common import json_response, services
from ringside.api.customers import developer_caller
from ringside.domain import customers, usage_reports

usage_bp = Blueprint("usage", __name__)


@usage_bp.get("/v1/usage")
async def developer_usage() -> Response:
    caller = await developer_caller()
    span = usage_reports.parse_range(request.args)
    group_by = usage_reports.parse_group_by(request.args)
    page = usage_reports.parse_page(request.args, group_by)
    report = await usage_reports.developer_report(
        services().db, caller.developer_id, span, group_by, page
    )
    return json_response(report)


@usage_bp.get("/v1/customers/<customer_id>/usage")
async def customer_usage(customer_id: str) -> Response:
    caller = await developer_caller()
    span = usage_reports.parse_range(request.args)
    svc = services()
    customer = await customers.get_customer(svc.db, caller.developer_id, customer_id)
    report = await usage_reports.customer_report(svc.db, caller.developer_id, customer.id, span)
    return json_response(report)
