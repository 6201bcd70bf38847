"""Rate limits across real processes: two Hypercorn workers share one developer's limit, so
exactly the limit's worth of a burst is served, whichever worker takes each call."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from tests.gateway import ADMIN_KEY, simulator_env
from tests.processes import run_cli, spawn_gateway
from tests.simulator.server import RunningSimulator

MODEL = "fc:openai/gpt-4o-mini"


async def test_two_workers_share_one_limit(
    database_url: str, redis_url: str, simulator: RunningSimulator, tmp_path: Path
) -> None:
    config = tmp_path / "ringside.toml"
    config.write_text("[limits.tiers.developer]\nrpm = 12\ntpm = 0\n")
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "RINGSIDE_ADMIN_KEY": ADMIN_KEY,
        "RINGSIDE_CONFIG": str(config),
        **simulator_env(simulator),
    }
    async with spawn_gateway(env, tmp_path, workers=2) as gw:
        dev = await run_cli(env, "developers", "create", "--name", "burst")
        headers = {"Authorization": f"Bearer {dev['api_key']['key']}"}
        statuses: list[int] = []
        remaining: list[int] = []
        limits = httpx.Limits(max_keepalive_connections=0)  # spread over both workers
        async with httpx.AsyncClient(base_url=gw.url, limits=limits, timeout=30) as client:

            async def call(i: int) -> None:
                body = {"model": MODEL, "messages": [{"role": "user", "content": f"c{i} #sim{{}}"}]}
                r = await client.post("/v1/chat/completions", json=body, headers=headers)
                statuses.append(r.status_code)
                if r.status_code == 200:
                    remaining.append(int(r.headers["x-ratelimit-remaining"]))
                else:
                    assert r.json()["error"]["code"] == "rate_limited"
                    assert int(r.headers["retry-after"]) >= 1

            async with trio.open_nursery() as nursery:
                for i in range(40):
                    nursery.start_soon(call, i)
        served = {line["pid"] for line in gw.log_lines() if line.get("status") in (200, 429)}
    assert len(served) == 2
    assert statuses.count(200) == 12
    assert statuses.count(429) == 28
    # Each admitted call saw its own place in the shared bucket.
    assert sorted(remaining) == list(range(12))
