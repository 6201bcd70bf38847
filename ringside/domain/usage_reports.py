"""Usage reports for a developer and for one customer, over a range of UTC days.

Costs are exact to 12 decimals internally (``usage_daily.cost_usd``) and shown rounded to 6
(half up); billable amounts are what was charged, already in micro-dollars, so the report's
total is exactly what the customer paid for the range.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from ringside.errors import InvalidRequest
from ringside.money import ZERO, charge, format_usd
from ringside.store import usage_reports as store
from ringside.store.bridge import Database
from ringside.store.usage_reports import GROUPINGS, UsageRow

MAX_DAYS = 366
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class DateRange:
    first: date
    last: date


def _date(args: Mapping[str, str], name: str) -> date | None:
    raw = args.get(name)
    if raw is None:
        return None
    try:
        if not _DATE.fullmatch(raw):
            raise ValueError(raw)
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(f"'{name}' must be a date as YYYY-MM-DD (UTC).", param=name) from None


def parse_range(args: Mapping[str, str], today: date | None = None) -> DateRange:
    """``from`` and ``to``, both inclusive. Defaults: ``to`` today (UTC), ``from`` the first
    day of ``to``'s month."""
    last = _date(args, "to") or today or datetime.now(UTC).date()
    first = _date(args, "from") or last.replace(day=1)
    if first > last:
        raise InvalidRequest("'from' is after 'to'.", param="from")
    if (last - first).days + 1 > MAX_DAYS:
        raise InvalidRequest(
            f"The range from 'from' to 'to' covers more than {MAX_DAYS} days.", param="to"
        )
    return DateRange(first, last)


def parse_group_by(args: Mapping[str, str]) -> str | None:
    group_by = args.get("group_by")
    if group_by is not None and group_by not in GROUPINGS:
        raise InvalidRequest(f"'group_by' must be one of {', '.join(GROUPINGS)}.", param="group_by")
    return group_by


def _row_json(row: UsageRow, keys: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "date" in keys:
        out["date"] = row.day.isoformat() if row.day else None
    if "model" in keys:
        out["model"] = row.model
    if "customer_id" in keys:
        out["customer_id"] = row.customer_id or None
    out.update(
        requests=row.requests,
        input_tokens=row.input_tokens,
        cached_input_tokens=row.cached_input_tokens,
        output_tokens=row.output_tokens,
        reasoning_tokens=row.reasoning_tokens,
        cost_usd=format_usd(charge(row.cost_usd)),
        billable_amount_usd=format_usd(row.billable_usd),
    )
    return out


def _total(rows: list[UsageRow]) -> str | None:
    return format_usd(sum((r.billable_usd for r in rows), ZERO))


_KEYS: dict[str | None, tuple[str, ...]] = {
    None: ("date", "model", "customer_id"),
    "customer": ("customer_id",),
    "model": ("model",),
    "day": ("date",),
}


async def customer_report(
    db: Database, developer_id: str, customer_id: str, span: DateRange
) -> dict[str, Any]:
    """One customer's usage per day and model (the customer already resolved and live)."""
    rows = await store.select_customer_usage(db, developer_id, customer_id, span.first, span.last)
    return {
        "object": "customer.usage",
        "customer_id": customer_id,
        "from": span.first.isoformat(),
        "to": span.last.isoformat(),
        "total_billable_usd": _total(rows),
        "data": [_row_json(r, ("date", "model")) for r in rows],
    }


async def developer_report(
    db: Database, developer_id: str, span: DateRange, group_by: str | None
) -> dict[str, Any]:
    """All of a developer's usage, deleted customers included, grouped by customer, model or
    day, or broken down by (day, model, customer)."""
    rows = await store.select_developer_usage(db, developer_id, span.first, span.last, group_by)
    return {
        "object": "developer.usage",
        "from": span.first.isoformat(),
        "to": span.last.isoformat(),
        "group_by": group_by,
        "total_billable_usd": _total(rows),
        "data": [_row_json(r, _KEYS[group_by]) for r in rows],
    }
