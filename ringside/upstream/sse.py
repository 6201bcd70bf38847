"""Incremental server-sent-events decoding, for every provider that streams SSE."""

from __future__ import annotations


class SSEDecoder:
    """``feed`` takes the bytes of one upstream read and returns the ``data`` payloads of the
    events it completed, whatever the upstream's line endings; comments (keep-alives) and
    other fields are dropped. ``feed_events`` also returns each event's ``event`` name (b""
    when it has none). Synchronous, so a relay adds no async layer per read."""

    def __init__(self) -> None:
        self._buffer = b""

    def _blocks(self, chunk: bytes) -> list[bytes]:
        pending = self._buffer + chunk
        if b"\r" in pending:  # CRLF framing, possibly split across reads
            pending = pending.replace(b"\r\n", b"\n")
        *blocks, self._buffer = pending.split(b"\n\n")
        return blocks

    def feed(self, chunk: bytes) -> list[bytes]:
        payloads = []
        for block in self._blocks(chunk):
            data = [
                line[5:].removeprefix(b" ")
                for line in block.split(b"\n")
                if line.startswith(b"data:")
            ]
            if data:
                payloads.append(b"\n".join(data))
        return payloads

    def feed_events(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        events = []
        for block in self._blocks(chunk):
            name = b""
            data: list[bytes] = []
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    data.append(line[5:].removeprefix(b" "))
                elif line.startswith(b"event:"):
                    name = line[6:].strip()
            if data or name:
                events.append((name, b"\n".join(data)))
        return events
