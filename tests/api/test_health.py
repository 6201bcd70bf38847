from __future__ import annotations

from pathlib import Path

from tests.gateway import RunningGateway, open_gateway
from tests.processes import free_port
from tests.simulator.server import RunningSimulator


async def test_healthz_and_readyz(gateway: RunningGateway) -> None:
    r = await gateway.http.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    r = await gateway.http.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": {"postgres": "ok", "redis": "ok"}}


async def test_readyz_reports_an_unreachable_redis(
    database_url: str, simulator: RunningSimulator, data_dir: Path
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}"
    async with open_gateway(database_url, dead, simulator, data_dir) as gw:
        r = await gw.http.get("/readyz")
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "unavailable"
        assert body["checks"]["postgres"] == "ok"
        assert body["checks"]["redis"].startswith("error")
        assert (await gw.http.get("/healthz")).status_code == 200
