"""Stream bodies that never started, closed after a grace period (see ``UnstartedStreams``)."""

from __future__ import annotations

from typing import Protocol

import trio


class _Closable(Protocol):
    async def aclose(self) -> None: ...


class UnstartedStreams:
    """Relays handed to Quart whose body never started. Quart sends the response's headers
    before it enters the body (``async with response.response``): a client that leaves in
    between cancels the request before the body is iterated or closed, and nothing would ever
    settle its hold or close its upstream stream. A relay is listed from its creation to its
    first read (or its close); ``serve`` closes the ones still listed after ``grace_s`` (a
    body starts within milliseconds when the client stays), which settles them
    ``client_aborted``. Per stream this costs two dict operations."""

    def __init__(self, grace_s: float = 30.0) -> None:
        self.grace_s = grace_s
        self._waiting: dict[_Closable, float] = {}

    def add(self, relay: _Closable) -> None:
        self._waiting[relay] = trio.current_time()

    def discard(self, relay: _Closable) -> None:
        self._waiting.pop(relay, None)

    def __len__(self) -> int:
        return len(self._waiting)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self.grace_s / 4)
            cutoff = trio.current_time() - self.grace_s
            for relay in [r for r, since in self._waiting.items() if since <= cutoff]:
                self._waiting.pop(relay, None)
                await relay.aclose()
