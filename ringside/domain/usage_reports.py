"""Usage reports for a developer and for one customer, over a range of UTC days.

Costs are exact to 12 decimals internally (``usage_daily.cost_usd``) and shown rounded to 6
(half up); billable amounts are what was charged, already in micro-dollars, so the report's
total is exactly what the customer paid for the range.

The developer's breakdown (per day, model and customer) and its report by customer are paged:
``limit`` rows (1 to 10,000, default 1,000) after the opaque cursor ``after`` (the
``next_after`` of the page before), with ``has_more``; ``total_billable_usd`` is always over
the whole range.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from ringside.errors import InvalidRequest
from ringside.money import ZERO, charge, format_usd
from ringside.store import usage_reports as store
from ringside.store.bridge import Database
from ringside.store.usage_reports import GROUPINGS, PAGED, BreakdownKey, UsageRow

MAX_DAYS = 366
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000
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


@dataclass(frozen=True)
class Page:
    limit: int = DEFAULT_LIMIT
    after: BreakdownKey | str | None = None


def parse_page(args: Mapping[str, str], group_by: str | None) -> Page:
    """``limit`` and ``after`` for the paged reports (ignored by the others)."""
    if group_by not in PAGED:
        return Page()
    limit = DEFAULT_LIMIT
    raw_limit = args.get("limit")
    if raw_limit is not None:
        text = raw_limit.strip()
        if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
            raise InvalidRequest(
                f"'limit' must be an integer from 1 to {MAX_LIMIT}.", param="limit"
            )
        limit = int(text)
    raw_after = args.get("after")
    if raw_after is None:
        return Page(limit)
    return Page(limit, _decode_after(raw_after, group_by))


def _encode_after(row: UsageRow, group_by: str | None) -> str:
    key: list[str] = (
        [row.day.isoformat() if row.day else "", row.model or "", row.customer_id or ""]
        if group_by is None
        else [row.customer_id or ""]
    )
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def _decode_after(raw: str, group_by: str | None) -> BreakdownKey | str:
    try:
        key = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if not isinstance(key, list) or not all(isinstance(k, str) for k in key):
            raise ValueError(raw)
        if group_by is None:
            day, model, customer = key
            if not _DATE.fullmatch(day):
                raise ValueError(raw)
            return (date.fromisoformat(day), model, customer)
        (customer,) = key
        return str(customer)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest(
            "'after' is not a cursor of this report; pass a 'next_after' it returned.",
            param="after",
        ) from None


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
    db: Database,
    developer_id: str,
    span: DateRange,
    group_by: str | None,
    page: Page | None = None,
) -> dict[str, Any]:
    """All of a developer's usage, deleted customers included, grouped by customer, model or
    day, or broken down by (day, model, customer). The breakdown and the report by customer
    are paged; the total is over the whole range either way."""
    page = page or Page()
    paged = group_by in PAGED
    rows = await store.select_developer_usage(
        db, developer_id, span.first, span.last, group_by, after=page.after, fetch=page.limit + 1
    )
    has_more = paged and len(rows) > page.limit
    if has_more:
        rows = rows[: page.limit]
    total = await store.select_developer_total(db, developer_id, span.first, span.last)
    report: dict[str, Any] = {
        "object": "developer.usage",
        "from": span.first.isoformat(),
        "to": span.last.isoformat(),
        "group_by": group_by,
        "total_billable_usd": format_usd(total),
        "data": [_row_json(r, _KEYS[group_by]) for r in rows],
    }
    if paged:
        report["has_more"] = has_more
        report["next_after"] = _encode_after(rows[-1], group_by) if has_more else None
    return report
