"""The bridge's asyncio loop runs every callback already queued in one pass of the Trio
scheduler (trio-asyncio's own loop runs one per pass: see ``bridge._drain_per_pass``)."""

from __future__ import annotations

import trio
import trio_asyncio

from ringside.store import bridge

CALLBACKS = 20


async def _passes_until_run(loop: trio_asyncio.TrioEventLoop) -> int:
    """How many Trio scheduler passes ``CALLBACKS`` queued callbacks take to run."""
    ran: list[int] = []
    for i in range(CALLBACKS):
        loop.call_soon(ran.append, i)
    passes = 0
    while len(ran) < CALLBACKS:
        await trio.lowlevel.cancel_shielded_checkpoint()
        passes += 1
        assert passes < 10 * CALLBACKS, "the loop stopped running callbacks"
    assert ran == list(range(CALLBACKS))  # in order
    return passes


async def test_the_bridge_loop_drains_its_queue_in_one_pass() -> None:
    async with trio_asyncio.open_loop() as loop:
        bridge._drain_per_pass(loop)
        # The loop may be waiting inside the original method when it is wrapped: one callback
        # brings it round to the batching one.
        done = trio.Event()
        loop.call_soon(done.set)
        await done.wait()
        assert await _passes_until_run(loop) <= 3  # (Trio may run the two tasks in either order)


async def test_trio_asyncio_alone_runs_one_callback_per_pass() -> None:
    """Why the bridge drains: when this fails, trio-asyncio batches by itself and
    ``_drain_per_pass`` can go."""
    async with trio_asyncio.open_loop() as loop:
        assert await _passes_until_run(loop) >= CALLBACKS - 1
