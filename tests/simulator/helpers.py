"""Request helpers for the simulator's own tests."""

from __future__ import annotations

from typing import Any

import httpx

from .openapi import validate
from .server import RunningSimulator

AUTH = {"authorization": "Bearer sk-test"}


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def chat(
    client: httpx.AsyncClient,
    running: RunningSimulator,
    provider: str = "openai",
    headers: dict[str, str] | None = None,
    **body: Any,
) -> httpx.Response:
    body.setdefault("model", "m-1")
    url = running.base_url(provider) + "/chat/completions"
    return await client.post(url, json=body, headers=AUTH if headers is None else headers)


def ok_body(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    validate(body, "CreateChatCompletionResponse")
    return body


def error_body(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    body: dict[str, Any] = resp.json()
    validate(body, "ErrorResponse")
    return body["error"]  # type: ignore[no-any-return]
