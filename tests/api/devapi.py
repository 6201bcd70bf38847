"""A developer with its API key, calling the gateway over plain HTTP (for the endpoints the
openai SDK has no method for: customers, wallets, usage)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from tests.gateway import RunningGateway


@dataclass
class DevApi:
    gw: RunningGateway
    id: str
    key: str
    key_id: str

    async def __call__(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}", **kw.pop("headers", {})}
        return await self.gw.http.request(method, path, headers=headers, **kw)

    async def ok(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        r = await self(method, path, **kw)
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def customer(self, **fields: Any) -> dict[str, Any]:
        return await self.ok("POST", "/v1/customers", json=fields)


async def new_dev(gw: RunningGateway, name: str = "acme") -> DevApi:
    dev = await gw.new_developer(name)
    return DevApi(gw, dev["id"], dev["api_key"]["key"], dev["api_key"]["id"])


def assert_error(r: httpx.Response, status: int, code: str, param: str | None = None) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code, error
    assert error["request_id"] == r.headers["x-request-id"]
    if param is not None:
        assert error["param"] == param, error
