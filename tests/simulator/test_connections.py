"""Time and connection behaviour: delays, dropped streams, client disconnects, hangs."""

from __future__ import annotations

import json

import httpx
import pytest
import trio

from .helpers import AUTH, chat, ok_body, user
from .providers import PROVIDER_BASES
from .server import RunningSimulator
from .sse import sse_chunks, streamed_text


async def test_delay_and_chunk_delay(running: RunningSimulator, client: httpx.AsyncClient) -> None:
    start = trio.current_time()
    ok_body(await chat(client, running, messages=user('#sim{"delay": 0.2}')))
    assert trio.current_time() - start >= 0.2
    start = trio.current_time()
    resp = await chat(client, running, messages=user('a b #sim{"chunk_delay": 0.05}'), stream=True)
    assert trio.current_time() - start >= 0.05 * 4
    assert streamed_text(sse_chunks(resp.content)) == "Echo: a b"
    assert running.sim.cancelled_streams == 0
    assert running.sim.open_streams == 0


async def test_stream_error_after_drops_the_connection(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    url = running.base_url("openai") + "/chat/completions"
    payload = {
        "model": "m",
        "stream": True,
        "messages": user('a b c d #sim{"stream_error_after": 2}'),
    }
    received = bytearray()

    async def read() -> None:
        async with client.stream("POST", url, json=payload, headers=AUTH) as resp:
            assert resp.status_code == 200
            async for part in resp.aiter_raw():
                received.extend(part)

    with pytest.raises(httpx.RemoteProtocolError):
        await read()
    assert received.count(b"data: ") == 3
    assert b"[DONE]" not in received
    assert running.sim.cancelled_streams == 0


async def test_client_disconnect_cancels_the_stream(running: RunningSimulator) -> None:
    words = " ".join(["w"] * 100)
    body = json.dumps(
        {"model": "m", "stream": True, "messages": user(words + ' #sim{"chunk_delay": 0.02}')}
    ).encode()
    host, port = running.url.removeprefix("http://").split(":")
    path = PROVIDER_BASES["openai"] + "/chat/completions"
    request = (
        f"POST {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer k\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body
    async with await trio.open_tcp_stream(host, int(port)) as conn:
        await conn.send_all(request)
        seen = b""
        while b"data: " not in seen:
            seen += await conn.receive_some()
        assert seen.startswith(b"HTTP/1.1 200")
        assert running.sim.open_streams == 1
    await running.sim.wait_until(lambda s: s.cancelled_streams == 1)
    assert running.sim.open_streams == 0
    assert running.sim.cancelled_requests == 1


async def test_hang_until_the_client_gives_up(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    with pytest.raises(httpx.ReadTimeout):
        await client.post(
            running.base_url("openai") + "/chat/completions",
            headers=AUTH,
            json={"model": "m", "messages": user('#sim{"hang": true}')},
            timeout=0.2,
        )
    await running.sim.wait_until(lambda s: s.cancelled_requests == 1)
    assert running.sim.cancelled_streams == 0
