"""The "stack floor": the cheapest Quart-Trio + httpx relay, with no gateway logic at all.

``hypercorn -k trio --workers 1 bench.stack_floor:app`` with ``STACK_FLOOR_UPSTREAM`` set to an
OpenAI base URL (e.g. ``http://127.0.0.1:9100/openai/v1``). ``POST /v1/chat/completions``
forwards the body unchanged and relays the upstream answer (byte by byte as it arrives when the
request asks for ``"stream": true``). The gap between this and Ringside is the gateway's cost.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import httpx
import orjson
from quart import Response, request
from quart_trio import QuartTrio

UPSTREAM_ENV = "STACK_FLOOR_UPSTREAM"
KEY_ENV = "STACK_FLOOR_API_KEY"

app = QuartTrio("stack_floor")
app.config.update(RESPONSE_TIMEOUT=None, BODY_TIMEOUT=60)


def _client() -> httpx.AsyncClient:
    client: httpx.AsyncClient = app.extensions["floor_client"]
    return client


@app.before_serving
async def _open_client() -> None:
    upstream = os.environ[UPSTREAM_ENV].rstrip("/")
    # The same client settings as Ringside's upstream client, so only the gateway logic differs.
    app.extensions["floor_client"] = httpx.AsyncClient(
        base_url=upstream,
        headers={"Authorization": f"Bearer {os.environ.get(KEY_ENV, 'sk-bench')}"},
        timeout=httpx.Timeout(None, connect=10.0),
        limits=httpx.Limits(max_connections=2000, max_keepalive_connections=256),
        follow_redirects=False,
        trust_env=False,
    )


@app.after_serving
async def _close_client() -> None:
    await _client().aclose()


def _wants_stream(body: bytes) -> bool:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(parsed, dict) and parsed.get("stream") is True


@app.post("/v1/chat/completions")
async def chat_completions() -> Response:
    body = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    headers = {"Content-Type": "application/json"}
    client = _client()
    if not _wants_stream(body):
        answer = await client.post("/chat/completions", content=body, headers=headers)
        return Response(
            answer.content,
            status=answer.status_code,
            content_type=answer.headers.get("content-type", "application/json"),
        )
    upstream = client.build_request("POST", "/chat/completions", content=body, headers=headers)
    answer = await client.send(upstream, stream=True)

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in answer.aiter_raw():
                yield chunk
        finally:
            await answer.aclose()

    return Response(
        relay(),
        status=answer.status_code,
        content_type=answer.headers.get("content-type", "text/event-stream"),
    )
