from __future__ import annotations

from tests.gateway import RunningGateway


async def test_healthz_and_readyz(gateway: RunningGateway) -> None:
    r = await gateway.http.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    r = await gateway.http.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": {"postgres": "ok", "redis": "ok"}}
