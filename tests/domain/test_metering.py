"""The meter writes every event exactly once and survives a row PostgreSQL refuses."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import trio

from ringside.domain.developers import create_developer
from ringside.runtime import open_services
from ringside.settings import Settings
from ringside.store.usage import UsageEventRow, select_usage_event


def event(request_id: str, developer_id: str, key_id: str) -> UsageEventRow:
    return UsageEventRow(
        request_id=request_id, developer_id=developer_id, api_key_id=key_id,
        customer_ref="cus_1", model_requested="fc:openai/gpt-4o-mini",
        model_resolved="fc:openai/gpt-4o-mini", provider="openai", upstream_model="gpt-4o-mini",
        stream=False, input_tokens=10, cached_input_tokens=0, output_tokens=5,
        reasoning_tokens=0, usage_source="upstream", cost_usd=Decimal("0.0000045"),
        latency_ms=12, status="ok", http_status=200,
    )  # fmt: skip


async def test_a_refused_row_costs_only_itself(settings: Settings) -> None:
    async with open_services(settings) as svc:
        dev, key = await create_developer(svc.db, "meter", "developer")
        good = event("req_good_1", dev.id, key.row.id)
        svc.meter.record(good)
        svc.meter.record(replace(good, request_id="req_bad", customer_ref="nul\x00byte"))
        svc.meter.record(replace(good, request_id="req_good_2"))
        svc.meter.record(good)  # the same request id again: metered once
        with trio.fail_after(5):
            while True:
                if await select_usage_event(svc.db, "req_good_2") is not None:
                    break
                await trio.sleep(0.05)
        stored = await select_usage_event(svc.db, "req_good_1")
        assert stored == good
        assert await select_usage_event(svc.db, "req_bad") is None
        assert await svc.db.fetchval("SELECT count(*) FROM usage_event") == 2
