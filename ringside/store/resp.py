"""Redis for the rate limiter, natively on Trio: one pipelined RESP2 connection per process.

The limiter sends one script call per request, on the request's path. Through redis-py and
the trio-asyncio bridge that costs ~0.4 ms of CPU (an asyncio task, redis-py's pool, retry
and parser layers, two loop hops); written here it costs ~0.06 ms. The connection is shared:
each caller queues its command and waits for its reply; one writer task sends whatever is
queued in one write, one reader task hands the replies back in order (Redis answers a
connection's commands in the order they came). A caller that gives up (its cancel scope)
leaves its reply to be read and dropped, so replies never shift. A broken connection fails
every command waiting on it (:class:`RedisConnectionLost`, an ``OSError``) and the next command
opens a new one.

Everything else still goes through the bridged redis-py client (``store/bridge.py``).
"""

from __future__ import annotations

import ssl
from collections import deque
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis
import trio

Reply = int | bytes | list["Reply"] | None
_RECEIVE_BYTES = 64 * 1024


class RedisConnectionLost(ConnectionError):
    """The connection failed or closed before this command's reply arrived."""


class RedisReplyError(Exception):
    """Redis answered with an error (``-ERR …``)."""


class RedisNoScript(RedisReplyError):
    """``EVALSHA`` of a script this Redis does not hold (``-NOSCRIPT``)."""


@dataclass(frozen=True)
class RedisAddress:
    host: str | None  # None: the unix socket at ``path``
    port: int
    path: str | None
    tls: bool
    username: str | None
    password: str | None
    db: int

    @classmethod
    def parse(cls, url: str) -> RedisAddress | None:
        """``redis://``, ``rediss://`` or ``unix://`` with optional credentials and ``db``
        (path or query); None for anything else (a caller then keeps to redis-py)."""
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if set(query) - {"db", "password"}:
            return None
        username = unquote(parts.username) if parts.username else None
        password = query.get("password") or (unquote(parts.password) if parts.password else None)
        db_text = query.get("db") or ("0" if parts.scheme == "unix" else parts.path.strip("/"))
        try:
            db, port = int(db_text or "0"), parts.port or 6379
        except ValueError:
            return None
        if parts.scheme == "unix" and parts.path:
            return cls(None, 0, parts.path, False, username, password, db)
        if parts.scheme in ("redis", "rediss") and parts.hostname:
            tls = parts.scheme == "rediss"
            return cls(parts.hostname, port, None, tls, username, password, db)
        return None


def encode(args: tuple[str | bytes | int, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _reader() -> hiredis.Reader:
    """hiredis parses RESP: error replies come back as values, a malformed stream raises."""
    return hiredis.Reader(protocolError=RedisConnectionLost, replyError=RedisReplyError)


class _Pending:
    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: Reply | BaseException = None


class _Connection:
    """One connection's queue: commands not yet written, and those awaiting their reply."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.alive = True
        self._queued: list[bytes] = []
        self._sending: list[_Pending] = []
        self._waiting: deque[_Pending] = deque()
        self._wake = trio.Event()

    def submit(self, command: bytes) -> _Pending:
        if not self.alive:
            raise RedisConnectionLost("the Redis connection is closed")
        pending = _Pending()
        self._queued.append(command)
        self._sending.append(pending)
        self._wake.set()
        return pending

    async def write(self) -> None:
        error = RedisConnectionLost("the Redis connection is closed")
        try:
            while self.alive:
                await self._wake.wait()
                self._wake = trio.Event()
                if not self._queued:
                    continue
                data, self._queued = b"".join(self._queued), []
                self._waiting.extend(self._sending)
                self._sending = []
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            error = RedisConnectionLost(f"Redis connection lost: {exc!r}")
        finally:
            self.fail(error)
            await trio.aclose_forcefully(self.stream)

    async def read(self) -> None:
        error = RedisConnectionLost("the Redis connection is closed")
        try:
            await self._read()
            error = RedisConnectionLost("Redis closed the connection")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            error = RedisConnectionLost(f"Redis connection lost: {exc!r}")
        except RedisConnectionLost as exc:
            error = exc
        finally:
            self.fail(error)
            await trio.aclose_forcefully(self.stream)

    async def _read(self) -> None:
        reader = _reader()
        while self.alive:
            chunk = await self.stream.receive_some(_RECEIVE_BYTES)
            if not chunk:
                return
            reader.feed(bytes(chunk))
            while (reply := reader.gets()) is not False:
                if not self._waiting:
                    raise RedisConnectionLost("Redis sent a reply nobody asked for")
                if isinstance(reply, RedisReplyError) and str(reply).startswith("NOSCRIPT"):
                    reply = RedisNoScript(str(reply))
                pending = self._waiting.popleft()
                pending.reply = reply
                pending.done.set()

    def fail(self, error: RedisConnectionLost) -> None:
        """Fail every command still waiting; the tasks close the stream on their way out."""
        self.alive = False
        for pending in (*self._waiting, *self._sending):
            pending.reply = error
            pending.done.set()
        self._waiting.clear()
        self._sending.clear()
        self._queued.clear()
        self._wake.set()


class NativeRedis:
    """Commands over one pipelined connection, opened on first use and again after a failure;
    its reader and writer run in the nursery of :meth:`serve`."""

    def __init__(self, address: RedisAddress, nursery: trio.Nursery) -> None:
        self._address = address
        self._nursery = nursery
        self._conn: _Connection | None = None
        self._connecting = trio.Lock()

    @classmethod
    async def serve(
        cls, address: RedisAddress, *, task_status: trio.TaskStatus[NativeRedis]
    ) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started(cls(address, nursery))
            await trio.sleep_forever()

    async def execute(self, *args: str | bytes | int) -> Reply:
        conn = self._conn
        if conn is None or not conn.alive:
            conn = await self._connect()
        pending = conn.submit(encode(args))
        await pending.done.wait()
        reply = pending.reply
        if isinstance(reply, RedisConnectionLost):
            raise RedisConnectionLost(*reply.args)  # shared by every waiter: raise a copy
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def _connect(self) -> _Connection:
        async with self._connecting:
            if self._conn is not None and self._conn.alive:
                return self._conn
            stream = await self._open()
            try:
                await self._hello(stream)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
            self._conn = _Connection(stream)
            self._nursery.start_soon(self._conn.read)
            self._nursery.start_soon(self._conn.write)
            return self._conn

    def reset(self) -> None:
        """Drop the connection (a command timed out: it may be stuck); the next command
        opens a new one, and what waits on this one fails now."""
        if self._conn is not None:
            self._conn.fail(RedisConnectionLost("the Redis connection was reset"))
            self._conn = None

    async def _open(self) -> trio.abc.Stream:
        a = self._address
        if a.path is not None:
            return await trio.open_unix_socket(a.path)
        assert a.host is not None
        tcp = await trio.open_tcp_stream(a.host, a.port)
        if not a.tls:
            return tcp
        stream = trio.SSLStream(tcp, ssl.create_default_context(), server_hostname=a.host)
        try:
            await stream.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(tcp)
            raise
        return stream

    async def _hello(self, stream: trio.abc.Stream) -> None:
        """AUTH and SELECT, answered before the connection is shared."""
        a = self._address
        commands: list[tuple[str | bytes | int, ...]] = []
        if a.password is not None:
            commands.append(
                ("AUTH", a.username, a.password) if a.username else ("AUTH", a.password)
            )
        if a.db:
            commands.append(("SELECT", a.db))
        if not commands:
            return
        await stream.send_all(b"".join(encode(c) for c in commands))
        reader = _reader()
        for _ in commands:
            while (reply := reader.gets()) is False:
                chunk = await stream.receive_some(_RECEIVE_BYTES)
                if not chunk:
                    raise RedisConnectionLost("Redis closed the connection")
                reader.feed(bytes(chunk))
            if isinstance(reply, RedisReplyError):
                raise reply
