"""The deliverer's HTTP/1.1 client: one POST at a time to a checked address, on h11 over Trio
streams, with a few kept-alive connections per sender.

httpx spends ~0.5-0.7 ms of CPU on a small POST (client, auth and redirect layers, cookies,
httpcore's pool and its cancel shields); a webhook needs none of it, and this client spends
~0.15 ms. What it keeps: the connection goes to the address the caller checked, never to a
fresh lookup; TLS verifies the certificate against the URL's host name (also the SNI);
redirects are answers, not followed; only the first ``read_limit`` bytes of an answer are read
(past that the connection is dropped); a connection is reused only after a complete exchange
that both sides left open, only while idle for less than ``_KEEPALIVE_S``, and never once the
server may have closed it. The caller bounds the whole request with a cancel scope; a cancelled
exchange closes its connection.
"""

from __future__ import annotations

import ssl
import time
from collections import deque
from dataclasses import dataclass, field

import h11
import trio

from ringside.domain.webhook_targets import Target

_KEEPALIVE_S = 5.0  # httpx's default keep-alive expiry
_RECEIVE_BYTES = 64 * 1024

# (scheme, address, port, host name): a connection serves only the target it was opened for.
_Key = tuple[str, str, int, str]


class SendError(Exception):
    """The exchange failed before a complete answer's status arrived (refused, reset, TLS,
    a malformed answer); the message says how."""


@dataclass
class _Connection:
    key: _Key
    stream: trio.abc.Stream
    socket: trio.socket.SocketType
    parser: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))
    idle_since: float = 0.0

    def close(self) -> None:
        # No close handshake (TLS close_notify): nothing waits on a connection being dropped.
        self.socket.close()


class WebhookHttp:
    """One sender's client: sequential requests, at most ``keep`` idle connections."""

    def __init__(self, tls: ssl.SSLContext, *, keep: int = 4) -> None:
        self._tls = tls
        self._keep = keep
        self._idle: deque[_Connection] = deque()

    def close(self) -> None:
        while self._idle:
            self._idle.popleft().close()

    async def post(
        self, target: Target, headers: list[tuple[bytes, bytes]], body: bytes, read_limit: int
    ) -> int:
        """POST ``body`` with ``headers`` (Host and Content-Length are added) to the checked
        address; the answer's status code. Raises :class:`SendError`."""
        url = target.url
        port = url.port or (443 if url.scheme == "https" else 80)
        key = (url.scheme, str(target.address), port, url.host)
        conn = self._idle_connection(key) or await self._open(key)
        request = h11.Request(
            method=b"POST",
            target=url.raw_path,
            headers=[(b"Host", url.netloc), (b"Content-Length", b"%d" % len(body)), *headers],
        )
        reuse = False
        try:
            status, reuse = await _exchange(conn, request, body, read_limit)
        except (h11.ProtocolError, trio.BrokenResourceError, OSError) as exc:
            raise SendError(_describe(exc)) from None
        finally:
            if reuse:
                self._release(conn)
            else:
                conn.close()
        return status

    def _idle_connection(self, key: _Key) -> _Connection | None:
        now, found = time.monotonic(), None
        for conn in list(self._idle):
            if now - conn.idle_since >= _KEEPALIVE_S:
                self._idle.remove(conn)
                conn.close()
            elif found is None and conn.key == key:
                self._idle.remove(conn)
                # Readable while idle: the server closed it (or sent what nobody asked for).
                if conn.socket.is_readable():
                    conn.close()
                else:
                    found = conn
        return found

    async def _open(self, key: _Key) -> _Connection:
        scheme, address, port, host = key
        try:
            tcp = await trio.open_tcp_stream(address, port)
        except OSError as exc:
            raise SendError(_describe(exc)) from None
        if scheme != "https":
            return _Connection(key, tcp, tcp.socket)
        tls = trio.SSLStream(tcp, self._tls, server_hostname=host, https_compatible=True)
        try:
            await tls.do_handshake()
        except (trio.BrokenResourceError, OSError) as exc:
            tcp.socket.close()
            raise SendError(_describe(exc)) from None
        except BaseException:
            tcp.socket.close()
            raise
        return _Connection(key, tls, tcp.socket)

    def _release(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        self._idle.append(conn)
        if len(self._idle) > self._keep:
            self._idle.popleft().close()


async def _exchange(
    conn: _Connection, request: h11.Request, body: bytes, read_limit: int
) -> tuple[int, bool]:
    """The answer's status code, and whether the connection may carry another request."""
    p = conn.parser
    events = (request, h11.Data(data=body), h11.EndOfMessage())
    await conn.stream.send_all(b"".join(p.send(e) or b"" for e in events))
    status, read = 0, 0
    while True:
        event = p.next_event()
        if event is h11.NEED_DATA:
            p.receive_data(bytes(await conn.stream.receive_some(_RECEIVE_BYTES)))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            read += len(event.data)
            if read > read_limit:
                return status, False
        elif isinstance(event, h11.EndOfMessage):
            break
        elif isinstance(event, h11.ConnectionClosed):
            raise SendError("the server closed the connection without answering")
        # An InformationalResponse (1xx): the final answer follows.
    if p.our_state is h11.DONE and p.their_state is h11.DONE:
        p.start_next_cycle()
        return status, True
    return status, False


def _describe(exc: BaseException) -> str:
    # trio wraps what the socket or TLS layer said (reset, certificate) as the cause.
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ else exc
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"TLS: {cause.verify_message}"
    return f"{type(cause).__name__}: {cause}"[:500]
