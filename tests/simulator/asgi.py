"""ASGI plumbing shared by the simulator's providers: guarded answers (a client leaving is
counted), JSON answers, extra headers from directives."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import trio

from .completion import rand_id

if TYPE_CHECKING:
    from .app import Simulator

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_HEADER: Final = (b"content-type", b"application/json")
SSE_HEADERS: Final = (
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
)
# Directives that make an answer "guarded" (run beside a disconnect watcher).
GUARDED_KEYS: Final = frozenset({"delay", "hang", "status", "headers"})


class Flow:
    """One guarded answer; ``finish()`` is called just before its last message is sent."""

    __slots__ = ("done", "sim", "stream")

    def __init__(self, sim: Simulator, stream: bool) -> None:
        self.sim = sim
        self.stream = stream
        self.done = False
        if stream:
            sim.open_streams += 1

    def finish(self) -> None:
        if not self.done:
            self.done = True
            if self.stream:
                self.sim.open_streams -= 1

    def abandon(self) -> None:
        """The client went away (or the task was cancelled) before the end."""
        if not self.done:
            self.finish()
            self.sim.cancelled_requests += 1
            if self.stream:
                self.sim.cancelled_streams += 1


async def watch_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


def request_id() -> tuple[bytes, bytes]:
    return (b"x-request-id", rand_id("req_").encode())


async def send_json(
    send: Send, status: int, body: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    headers = [JSON_HEADER, (b"content-length", str(len(body)).encode()), request_id(), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def extra_headers(d: dict[str, Any]) -> tuple[tuple[bytes, bytes], ...]:
    extra: dict[str, str] = {}
    if int(d.get("status") or 0) == 429:
        extra["retry-after"] = "1"
    given = d.get("headers")
    if isinstance(given, dict):
        extra.update({str(k).lower(): str(v) for k, v in given.items()})
    return tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items())
