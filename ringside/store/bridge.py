"""The one place asyncio meets Trio: asyncpg and redis-py run on a trio-asyncio loop.

``open_storage`` opens the loop, the PostgreSQL pool and the Redis client; everything else in
Ringside calls the bridged methods here and never imports asyncio, asyncpg or trio_asyncio.
A trio-asyncio loop opened in a service is not visible from request handlers, so every bridged
call passes ``loop=`` explicitly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, ParamSpec, TypeAlias, TypeVar, cast

import asyncpg
import redis.asyncio as aioredis
import redis.exceptions
import trio
import trio_asyncio

P = ParamSpec("P")
T = TypeVar("T")

Record: TypeAlias = asyncpg.Record
UniqueViolation = asyncpg.UniqueViolationError
PostgresError = asyncpg.PostgresError
InterfaceError = asyncpg.InterfaceError
RedisError = redis.exceptions.RedisError
NoScriptError = redis.exceptions.NoScriptError
# Failures that say nothing about the data: the same statement may succeed later.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
)


class _Queries:
    """The query methods, bridged onto the loop; ``_target`` is a pool or one connection."""

    def __init__(self, loop: asyncio.AbstractEventLoop, target: Any) -> None:
        self._loop = loop
        self._target = target

    def _bridge(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        return trio_asyncio.aio_as_trio(fn, loop=self._loop)  # type: ignore[no-any-return]

    async def fetch(self, query: str, *args: Any) -> list[Record]:
        return cast(list[Record], await self._bridge(self._target.fetch)(query, *args))

    async def fetchrow(self, query: str, *args: Any) -> Record | None:
        return cast(Record | None, await self._bridge(self._target.fetchrow)(query, *args))

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._bridge(self._target.fetchval)(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        return cast(str, await self._bridge(self._target.execute)(query, *args))


class Conn(_Queries):
    """One PostgreSQL connection, bridged; query modules take this as their first argument."""


class Database(_Queries):
    """The PostgreSQL pool. ``db.fetch(...)`` runs on any pooled connection;
    ``async with db.transaction() as conn`` scopes a transaction (owned by the domain layer)."""

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        raw = await self._bridge(self._target.acquire)()
        try:
            yield Conn(self._loop, raw)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._bridge(self._target.release)(raw)

    @asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[trio.MemoryReceiveChannel[str]]:
        """``LISTEN channel`` on a connection of its own, held while the context is open; the
        payloads of the notifications arrive on the returned channel (at most 10,000 waiting;
        beyond that, new ones are dropped). The channel ends if the connection is lost: the
        caller listens again."""
        send, receive = trio.open_memory_channel[str](10_000)

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            # Runs in the trio-asyncio loop's task, in trio's thread.
            with suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                send.send_nowait(payload)

        def on_lost(_conn: Any) -> None:
            send.close()

        raw = await self._bridge(self._target.acquire)()
        try:
            raw.add_termination_listener(on_lost)
            await self._bridge(raw.add_listener)(channel, on_notify)
            try:
                yield receive
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await self._bridge(raw.remove_listener)(channel, on_notify)
        finally:
            send.close()
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._bridge(self._target.release)(raw)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        async with self.connection() as conn:
            await conn.execute("BEGIN")
            try:
                yield conn
            except BaseException:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await conn.execute("ROLLBACK")
                raise
            else:
                await conn.execute("COMMIT")


class Cache:
    """Redis, bridged. Only the commands Ringside uses are exposed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client: aioredis.Redis) -> None:
        self._loop = loop
        self._client = client

    async def execute(self, *args: Any) -> Any:
        return await trio_asyncio.aio_as_trio(self._client.execute_command, loop=self._loop)(*args)

    async def ping(self) -> bool:
        return bool(await self.execute("PING"))


async def _connect_pg(dsn: str, min_size: int, max_size: int) -> asyncpg.Pool:
    # No asyncio timers per query: asyncpg would arm one per query (command_timeout), per
    # release (max_inactive_connection_lifetime) and per statement-cache hit (its lifetime),
    # and cancel it moments later; a cancelled timer stays in the loop's heap until it would
    # have fired, holding the context it was armed in — the request, its body — for up to
    # 5 minutes (~11 KB per call, hundreds of MB under load). Deadlines are Trio cancel scopes
    # in the domain instead; the statement cache stays bounded by its size.
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        max_inactive_connection_lifetime=0,
        max_cached_statement_lifetime=0,
        reset=_keep_session,
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a released connection needs beyond asyncpg's own clean-up (which rolls back an
    open transaction and drops its listeners): nothing. The default reset sends
    ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` on every release —
    a round trip per query through the pool, for session state Ringside never leaves behind
    (no SET, no cursors; the migration lock and LISTEN are undone where they are taken)."""


# trio-asyncio's main loop takes one asyncio callback from its queue per pass of the Trio
# scheduler (0.16's ``_main_loop_one`` receives one handle, runs it, and yields). Under load
# every ready Trio task runs between two callbacks, and a query, a handful of callbacks (the
# task step, the socket read, the future), waits that many full passes: 200 requests arriving
# at once made each query of the runs already executing take tens of milliseconds. The bridge's
# loop runs what is already queued, up to ``_BATCH`` callbacks, before it yields (callbacks are
# short by asyncio's own contract). trio-asyncio is pinned in pyproject.toml;
# tests/store/test_bridge.py checks that the loop still drains.
_BATCH = 64


def _drain_per_pass(loop: trio_asyncio.TrioEventLoop) -> None:
    one = loop._main_loop_one

    async def batched(no_wait: bool = False) -> None:
        await one(no_wait)
        for _ in range(_BATCH):
            try:
                await one(True)  # the queue's next handle (or a due timer), never blocking
            except trio.WouldBlock:
                return

    # Looked up on the loop at each turn of its main loop, so this takes effect at once.
    loop._main_loop_one = batched


@asynccontextmanager
async def open_storage(
    database_url: str, redis_url: str, *, pool_min: int = 1, pool_max: int = 10
) -> AsyncIterator[tuple[Database, Cache]]:
    """Open the asyncio loop, the pool and the Redis client; close all three on exit."""
    async with trio_asyncio.open_loop() as loop:
        _drain_per_pass(loop)
        pool = await trio_asyncio.aio_as_trio(_connect_pg, loop=loop)(
            database_url, pool_min, pool_max
        )
        client = aioredis.Redis.from_url(redis_url)
        try:
            yield Database(loop, pool), Cache(loop, client)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await trio_asyncio.aio_as_trio(client.aclose, loop=loop)()
                await trio_asyncio.aio_as_trio(pool.close, loop=loop)()
