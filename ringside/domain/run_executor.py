"""The RunExecutor: where this web process executes run segments, and how it is told to
cancel one.

One executor per web process, served in the process's service nursery (``runtime``). Every
segment runs in the executor's nursery inside a cancel scope kept by run id: a polled run's
request answers at once, and a streaming run's response body reads the segment's events from
a memory channel (``EventStream``), cancelling the segment when the client goes away. A
``cancel`` from any process reaches the executing one through PostgreSQL
(``NOTIFY ringside_run_cancel, '<run id>'``), on a connection that LISTENs for as long as
the executor serves. At shutdown the nursery is cancelled and each segment ends its run
``failed`` in a bounded shield.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ringside.domain.run_events import DONE, frame
from ringside.domain.unstarted_streams import UnstartedStreams
from ringside.store.bridge import Database
from ringside.store.listener import listen_forever
from ringside.store.runs import CANCEL_CHANNEL

log = logging.getLogger("ringside.runs")

Register = Callable[[trio.CancelScope], None]
Work = Callable[[Register], Awaitable[Any]]

# How long a closed stream waits for its cancelled segment to have ended its run, so that the
# thread is free by the time the client could try again.
_CLOSE_WAIT_S = 5.0


class RunExecutor:
    def __init__(self, starts: int = 1) -> None:
        self._nursery: trio.Nursery | None = None
        self._scopes: dict[str, trio.CancelScope] = {}
        self._pending: set[str] = set()  # started, scope not registered yet
        self._cancelled: set[str] = set()  # of those, cancelled already
        # Segment starts admitted at once (the API's run creations and tool outputs): under a
        # burst, the runs waiting to start wait for a slot, not the ones executing for CPU.
        self.starts = trio.CapacityLimiter(starts)

    @property
    def in_flight(self) -> int:
        return len(self._scopes)

    async def serve(
        self, db: Database, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen for cancels and host the segments until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(listen_forever, db, CANCEL_CHANNEL, self.cancel)
            task_status.started()

    def start(self, run_id: str, work: Work) -> trio.Event:
        """Run ``work(register)`` in the executor's nursery; ``register`` binds the segment's
        cancel scope to ``run_id``. The event is set once the work has ended."""
        assert self._nursery is not None, "the executor is not serving"
        done = trio.Event()
        self._pending.add(run_id)
        self._nursery.start_soon(self._run, run_id, work, done)
        return done

    async def _run(self, run_id: str, work: Work, done: trio.Event) -> None:
        def register(scope: trio.CancelScope) -> None:
            self._scopes[run_id] = scope
            self._pending.discard(run_id)
            if run_id in self._cancelled:  # told before the segment got going
                scope.cancel()

        try:
            await work(register)
        except Exception:  # a bug: logged, never allowed to take the executor down
            log.exception("run segment crashed, run_id=%s", run_id)
        finally:
            self._scopes.pop(run_id, None)
            self._pending.discard(run_id)
            self._cancelled.discard(run_id)
            done.set()

    def cancel(self, run_id: str) -> bool:
        """Cancel the segment of ``run_id`` if it executes here."""
        scope = self._scopes.get(run_id)
        if scope is None:
            if run_id in self._pending:
                self._cancelled.add(run_id)
                return True
            return False
        scope.cancel()
        return True


class EventStream:
    """A streaming run's response body: the SSE frames of its segment's events, then
    ``event: done``. Quart closes the body when the client goes away; that cancels the
    segment, whose run ends ``cancelled`` (partial usage billed, the thread free at once)."""

    def __init__(
        self, executor: RunExecutor, run_id: str, unstarted: UnstartedStreams | None = None
    ) -> None:
        self._executor = executor
        self._run_id = run_id
        self._send, self._receive = trio.open_memory_channel[bytes](math.inf)
        self.done: trio.Event | None = None
        # A body Quart never starts (its client left first) is closed after a grace: the run
        # is cancelled then, as if the client had left mid-stream.
        self._unstarted = unstarted
        self._started = False
        if unstarted is not None:
            unstarted.add(self)

    def sink(self, name: str, data: dict[str, Any]) -> None:
        # The client may have left: the segment is being cancelled then.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            self._send.send_nowait(frame(name, data))

    def send_raw(self, data: bytes) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            self._send.send_nowait(data)

    def end(self) -> None:
        self.send_raw(DONE)
        self._send.close()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> bytes:
        if not self._started:
            self._started = True
            if self._unstarted is not None:
                self._unstarted.discard(self)
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        if self._unstarted is not None:
            self._unstarted.discard(self)
        self._receive.close()
        if self.done is not None and not self.done.is_set():
            self._executor.cancel(self._run_id)
            with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_WAIT_S):
                await self.done.wait()
