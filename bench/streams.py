"""The memory probe: hold N slow streaming chat requests open against a server at once, and
read its resident memory while they are all mid-stream."""

from __future__ import annotations

import resource
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson
import trio


@dataclass(frozen=True)
class StreamProbe:
    wanted: int
    opened: int  # got 200 and a first SSE event
    failed: int
    open_seconds: float
    rss: dict[str, float]  # whatever ``measure`` returned, sampled while all were open


def raise_fd_limit(at_least: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, at_least)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def slow_stream_body(model: str, chunk_delay: float = 2.0, words: int = 40) -> dict[str, object]:
    """A streaming request whose answer (one chunk per word) takes ``words * chunk_delay`` s."""
    text = " ".join(f"word{i}" for i in range(words))
    return {
        "model": model,
        "stream": True,
        "messages": [
            {"role": "user", "content": f'{text} #sim{{"chunk_delay": {chunk_delay}}}'},
        ],
    }


def _request(host: str, port: int, path: str, body: bytes, headers: Mapping[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += ["Content-Type: application/json", "Accept: text/event-stream"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _one(
    host: str,
    port: int,
    raw: bytes,
    first_chunk: Callable[[bool], None],
    hold: trio.Event,
) -> None:
    ok = False
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError:
        first_chunk(False)
        return
    async with stream:
        try:
            await stream.send_all(raw)
            seen = b""
            while b"data:" not in seen.partition(b"\r\n\r\n")[2]:
                data = await stream.receive_some(65536)
                if not data:
                    break
                seen += data
            ok = seen.startswith(b"HTTP/1.1 200") and b"data:" in seen
        except (OSError, trio.BrokenResourceError):
            ok = False
        first_chunk(ok)
        if ok:
            await hold.wait()  # closing the socket (leaving the block) ends the stream


async def _probe(
    host: str,
    port: int,
    path: str,
    body: Mapping[str, object],
    headers: Mapping[str, str],
    count: int,
    measure: Callable[[], dict[str, float]],
    open_within: float,
) -> StreamProbe:
    raw = _request(host, port, path, orjson.dumps(body), headers)
    opened = failed = 0
    all_in = trio.Event()
    hold = trio.Event()

    def first_chunk(ok: bool) -> None:
        nonlocal opened, failed
        opened, failed = opened + ok, failed + (not ok)
        if opened + failed == count:
            all_in.set()

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(_one, host, port, raw, first_chunk, hold)
            if i % 50 == 49:
                await trio.sleep(0.05)  # don't overflow the listen backlog in one burst
        with trio.move_on_after(open_within):
            await all_in.wait()
        elapsed = trio.current_time() - started
        await trio.sleep(1.0)  # let the server settle before sampling
        rss = measure()
        hold.set()
        nursery.cancel_scope.cancel()
    return StreamProbe(count, opened, failed, elapsed, rss)


def probe_streams(
    url: str,
    body: Mapping[str, object],
    headers: Mapping[str, str],
    count: int,
    measure: Callable[[], dict[str, float]],
    timeout: float = 90.0,
) -> StreamProbe:
    """Open ``count`` streams to ``url`` (``http://host:port/path``), call ``measure`` once all
    have their first chunk (or ``timeout`` passed), then close them all."""
    hostport, _, path = url.removeprefix("http://").partition("/")
    host, _, port = hostport.rpartition(":")
    raise_fd_limit(count + 256)
    return trio.run(_probe, host, int(port), "/" + path, body, headers, count, measure, timeout)
