"""A real webhook receiver for tests: a raw ASGI app on Hypercorn at 127.0.0.1 that checks
every request's ``X-FC-Signature`` like the README's receiver (HMAC-SHA256 of ``"<t>.<body>"``,
at most 5 minutes old), records it, and answers as told (fail the first N attempts of an
event, or take a while)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import orjson
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

TOLERANCE_S = 300


def verify(secret: str, header: str, body: bytes, now: float | None = None) -> bool:
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > TOLERANCE_S:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


@dataclass
class Received:
    event_id: str
    headers: dict[str, str]
    body: bytes
    verified: bool

    @property
    def event(self) -> dict[str, Any]:
        return cast(dict[str, Any], orjson.loads(self.body))


@dataclass
class Receiver:
    url: str = ""
    secrets: list[str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    fail_first: int = 0  # answer 500 to the first N attempts of each event
    delay_s: float = 0.0
    status: int = 200
    arrived: trio.Event = field(default_factory=trio.Event)
    _changed: trio.Event = field(default_factory=trio.Event)
    _attempts: dict[str, int] = field(default_factory=dict)

    def events(self) -> dict[str, list[Received]]:
        out: dict[str, list[Received]] = {}
        for r in self.received:
            out.setdefault(r.event_id, []).append(r)
        return out

    async def wait_for(self, count: int, within: float = 10.0) -> None:
        """Until ``count`` distinct events have been answered with a 2xx."""
        await self.wait_until(lambda: len(self.succeeded()) >= count, within)

    async def wait_until(self, done: Callable[[], bool], within: float = 10.0) -> None:
        with trio.fail_after(within):
            while not done():
                await self._changed.wait()

    def succeeded(self) -> set[str]:
        return {r.event_id for r in self.received if r.headers.get("x-answer") == "200"}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        event_id = headers.get("x-fc-event-id", "")
        signature = headers.get("x-fc-signature", "")
        verified = any(verify(s, signature, body) for s in self.secrets)
        seen = self._attempts[event_id] = self._attempts.get(event_id, 0) + 1
        self.arrived.set()
        if self.delay_s:
            await trio.sleep(self.delay_s)
        status = 500 if seen <= self.fail_first else self.status
        if not verified:
            status = 400
        headers["x-answer"] = str(status)
        self.received.append(Received(event_id, headers, body, verified))
        self._changed.set()
        self._changed = trio.Event()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def open_receiver(**kw: Any) -> AsyncIterator[Receiver]:
    receiver = Receiver(**kw)
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.loglevel = "WARNING"
    config.graceful_timeout = 0.5
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(serve, cast(Any, receiver), config, shutdown_trigger=stop.wait)
        )
        receiver.url = f"{binds[0]}/hooks"
        try:
            yield receiver
        finally:
            stop.set()
