"""Strict parsing of OpenAI SSE stream bodies (reusable by gateway tests)."""

from __future__ import annotations

import json
from typing import Any

from .openapi import validate


def sse_chunks(raw: bytes, *, schema: bool = True) -> list[dict[str, Any]]:
    """Parse an OpenAI SSE body strictly: ``data: <json>\\n\\n`` events ending ``[DONE]``.

    Each chunk is validated against ``CreateChatCompletionStreamResponse`` unless ``schema``
    is false.
    """
    assert raw.endswith(b"data: [DONE]\n\n"), raw[-80:]
    events = raw.split(b"\n\n")
    assert events[-1] == b""
    assert events[-2] == b"data: [DONE]"
    chunks = []
    for event in events[:-2]:
        assert event.startswith(b"data: {"), event
        assert b"\n" not in event, event
        chunk = json.loads(event[6:])
        if schema:
            validate(chunk, "CreateChatCompletionStreamResponse")
        chunks.append(chunk)
    return chunks


def streamed_text(chunks: list[dict[str, Any]], index: int = 0) -> str:
    """The content of choice ``index`` reassembled from its deltas."""
    return "".join(
        choice["delta"].get("content") or ""
        for chunk in chunks
        for choice in chunk["choices"]
        if choice["index"] == index
    )
