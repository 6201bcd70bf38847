"""The deliverer's HTTP/1.1 client against raw Trio servers: keep-alive reuse, servers that
close, answers longer than the read limit, refused connections, and TLS verified against the
URL's host name while connecting to the checked address."""

from __future__ import annotations

import ipaddress
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import httpx
import pytest
import trio

from ringside.domain.webhook_targets import Target
from workers.webhook_http import SendError, WebhookHttp

LOOPBACK = ipaddress.ip_address("127.0.0.1")
Answer = Callable[[trio.abc.Stream, bytes], Awaitable[bool]]  # False: close the connection


@dataclass
class Server:
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)


async def _read_request(stream: trio.abc.Stream) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += await stream.receive_some(65536)
    return data


@asynccontextmanager
async def serve(answer: Answer, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    server = Server()

    async def handle(stream: trio.abc.Stream) -> None:
        server.connections += 1
        if tls is not None:
            stream = trio.SSLStream(stream, tls, server_side=True, https_compatible=True)
        try:
            while (request := await _read_request(stream)) is not None:
                server.requests.append(request)
                if not await answer(stream, request):
                    break
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, handle, 0)
        server.port = cast(trio.SocketListener, listeners[0]).socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


def ok(extra: bytes = b"", body: bytes = b"ok") -> Answer:
    async def answer(stream: trio.abc.Stream, _: bytes) -> bool:
        head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n" % (len(body), extra)
        await stream.send_all(head + body)
        return b"close" not in extra

    return answer


def target(port: int, host: str = "127.0.0.1", scheme: str = "http") -> Target:
    return Target(httpx.URL(f"{scheme}://{host}:{port}/hooks?x=1"), LOOPBACK)


async def post(http: WebhookHttp, to: Target, read_limit: int = 64 * 1024) -> int:
    return await http.post(to, [(b"X-FC-Event-Id", b"evt_1")], b'{"a":1}', read_limit)


@pytest.fixture
async def http() -> AsyncIterator[WebhookHttp]:
    client = WebhookHttp(ssl.create_default_context())
    yield client
    client.close()


async def test_one_connection_carries_many_requests(http: WebhookHttp) -> None:
    async with serve(ok()) as server:
        assert [await post(http, target(server.port)) for _ in range(3)] == [200] * 3
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /hooks?x=1 HTTP/1.1\r\n")
    assert b"host: 127.0.0.1:%d\r\n" % server.port in first.lower()
    assert first.endswith(b'\r\n\r\n{"a":1}')


async def test_a_connection_the_server_closes_is_not_reused(http: WebhookHttp) -> None:
    async with serve(ok(b"connection: close\r\n")) as server:
        assert [await post(http, target(server.port)) for _ in range(2)] == [200] * 2
    assert server.connections == 2

    async def then_hang_up(stream: trio.abc.Stream, request: bytes) -> bool:
        await ok()(stream, request)
        return False  # closes without saying so: the idle connection turns readable (EOF)

    async with serve(then_hang_up) as server:
        await post(http, target(server.port))
        await trio.sleep(0.05)
        assert await post(http, target(server.port)) == 200
    assert server.connections == 2


async def test_a_long_answer_is_read_up_to_the_limit_then_dropped(http: WebhookHttp) -> None:
    async with serve(ok(body=b"x" * 100_000)) as server:
        assert await post(http, target(server.port), read_limit=1000) == 200
        assert await post(http, target(server.port), read_limit=1000) == 200
    assert server.connections == 2


async def test_a_refused_connection_and_a_garbled_answer_are_send_errors(http: WebhookHttp) -> None:
    async with serve(ok()) as server:
        port = server.port
    with pytest.raises(SendError):
        await post(http, target(port))

    async def garbage(stream: trio.abc.Stream, _: bytes) -> bool:
        await stream.send_all(b"NOT HTTP\r\n\r\n")
        return False

    async with serve(garbage) as server:
        with pytest.raises(SendError, match="RemoteProtocolError"):
            await post(http, target(server.port))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=hooks.example", "-addext", "subjectAltName=DNS:hooks.example",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_checks_the_url_host_name_on_the_checked_address(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    http = WebhookHttp(ssl.create_default_context(cafile=str(cert)))
    untrusting = WebhookHttp(ssl.create_default_context())
    async with serve(ok(), server_tls) as server:
        # hooks.example is not resolved: the connection goes to the checked 127.0.0.1.
        for _ in range(2):
            assert await post(http, target(server.port, "hooks.example", "https")) == 200
        assert server.connections == 1  # kept alive (TLS 1.3 session tickets read, too)
        assert b"host: hooks.example:%d\r\n" % server.port in server.requests[0].lower()
        with pytest.raises(SendError, match="TLS: Hostname mismatch"):
            await post(http, target(server.port, "other.example", "https"))
        with pytest.raises(SendError, match="TLS: self-signed certificate"):
            await post(untrusting, target(server.port, "hooks.example", "https"))
    http.close()
