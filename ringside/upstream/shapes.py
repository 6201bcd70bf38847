"""OpenAI's response shapes, built by every native adapter the same way.

``completion`` and ``chunk`` build ``chat.completion`` / ``chat.completion.chunk`` objects as
OpenAI sends them (and as the official SDKs and OpenAI's OpenAPI schemas expect: ``id``,
``object``, ``created``, ``model``, ``choices``, ``usage``); ``usage`` builds the usage object
from canonical counts. ``StreamState`` tracks what a translated stream has said so far (role
sent once, tool-call indexes, the finish reason), so each adapter only maps events.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from ringside.errors import InvalidRequest
from ringside.tokens import TokenUsage

DONE = b"[DONE]"


def completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def tool_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def usage(u: TokenUsage) -> dict[str, Any]:
    """OpenAI's ``CompletionUsage`` for canonical counts (input includes cached input, output
    includes reasoning, as at OpenAI)."""
    return {
        "prompt_tokens": u.input,
        "completion_tokens": u.output,
        "total_tokens": u.input + u.output,
        "prompt_tokens_details": _prompt_details(u),
        "completion_tokens_details": {
            "reasoning_tokens": u.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _prompt_details(u: TokenUsage) -> dict[str, int]:
    details = {"cached_tokens": u.cached_input, "audio_tokens": 0}
    if u.cache_write:
        details["cache_write_tokens"] = u.cache_write  # Ringside's: see TokenUsage
    return details


def message(
    content: str | None,
    tool_calls: list[dict[str, Any]] | None = None,
    *,
    reasoning: str | None = None,
) -> dict[str, Any]:
    """An assistant ``ChatCompletionResponseMessage``. ``tool_calls`` items are
    ``{"id", "type": "function", "function": {"name", "arguments"}}``; ``reasoning`` (the
    provider's visible thinking, when it returns one) goes in ``reasoning_content`` as
    DeepSeek and other OpenAI-wire providers do."""
    msg: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        msg["tool_calls"] = tool_calls
    if reasoning:
        msg["reasoning_content"] = reasoning
    return msg


def function_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def completion(
    model: str,
    choices: list[tuple[dict[str, Any], str]],
    u: TokenUsage,
    *,
    id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """A ``chat.completion``: ``choices`` are (message, finish_reason) pairs."""
    return {
        "id": id or completion_id(),
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "message": msg, "finish_reason": finish, "logprobs": None}
            for i, (msg, finish) in enumerate(choices)
        ],
        "usage": usage(u),
    }


@dataclass
class StreamState:
    """One translated stream (a single choice, index 0). ``text``, ``tool_start``,
    ``tool_arguments`` and ``finish`` return the JSON payload of the chunk to send;
    ``usage_chunk`` the final usage-only chunk; the decoder appends ``DONE`` last."""

    model: str
    id: str = field(default_factory=completion_id)
    created: int = field(default_factory=lambda: int(time.time()))
    role_sent: bool = False
    finish_reason: str | None = None
    tool_indexes: dict[str, int] = field(default_factory=dict)  # native call key -> index
    content_chars: int = 0

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        if not self.role_sent:
            delta = {"role": "assistant", **delta}
            self.role_sent = True
        return orjson.dumps(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
                ],
            }
        )

    def start(self) -> bytes:
        """The first chunk OpenAI sends: the role and empty content."""
        return self._chunk({"content": ""})

    def text(self, text: str) -> bytes:
        self.content_chars += len(text)
        return self._chunk({"content": text})

    def reasoning(self, text: str) -> bytes:
        return self._chunk({"reasoning_content": text})

    def tool_start(self, key: str, call_id: str, name: str, arguments: str = "") -> bytes:
        """A new tool call (``key`` is the provider's handle for it, e.g. its block index)."""
        index = self.tool_indexes.setdefault(key, len(self.tool_indexes))
        return self._chunk(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    }
                ]
            }
        )

    def tool_arguments(self, key: str, fragment: str) -> bytes:
        index = self.tool_indexes[key]
        return self._chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})

    def finish(self, reason: str) -> bytes:
        self.finish_reason = reason
        return self._chunk({}, reason)

    def usage_chunk(self, u: TokenUsage) -> bytes:
        return orjson.dumps(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage(u),
            }
        )


def text_chars(value: Any) -> int:
    return len(value) if isinstance(value, str) else 0


def choices_text_chars(choices: Any, part: str) -> int:
    """Characters of text and tool-call arguments in ``choices[*][part]`` (``message`` in a
    reply, ``delta`` in a chunk); whatever the provider sent, malformed parts count as 0."""
    total = 0
    for choice in choices if isinstance(choices, list) else ():
        body = choice.get(part) if isinstance(choice, dict) else None
        if not isinstance(body, dict):
            continue
        total += text_chars(body.get("content"))
        calls = body.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                total += text_chars(function.get("arguments"))
    return total


# How providers write the null usage that `include_usage` adds to every chunk. A JSON string
# cannot contain an unescaped quote, so these bytes can only be the member itself.
_NULL_USAGE = (b',"usage":null', b'"usage":null,', b', "usage": null', b'"usage": null, ')


def without_null_usage(payload: bytes) -> bytes:
    """A chunk as the provider sends it when usage was not asked for: the ``"usage": null``
    member removed, every other byte untouched."""
    for member in _NULL_USAGE:
        if payload.count(member) == 1:
            return payload.replace(member, b"", 1)
    chunk = orjson.loads(payload)  # an unusual layout: re-encode without the member
    chunk.pop("usage", None)
    return orjson.dumps(chunk)


def tool_choice(body: dict[str, Any]) -> tuple[str, str | None]:
    """The request's ``tool_choice`` as (mode, forced function name): mode is ``auto``,
    ``none``, ``required`` or ``function``. Absent: ``auto`` with tools, ``none`` without."""
    choice = body.get("tool_choice")
    if choice is None:
        return ("auto" if body.get("tools") else "none"), None
    if isinstance(choice, str):
        return choice, None
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    return "function", name if isinstance(name, str) else None


def tool_arguments(raw: Any, param: str) -> dict[str, Any]:
    """An assistant tool call's ``function.arguments`` (a JSON text, as OpenAI sends it) as the
    object native APIs take; absent or empty is ``{}``, anything else a 400 at ``param``."""
    if isinstance(raw, dict):
        return raw
    if raw is None or raw == "":
        return {}
    try:
        args = orjson.loads(raw) if isinstance(raw, str) else None
    except orjson.JSONDecodeError:
        args = None
    if not isinstance(args, dict):
        raise InvalidRequest("Tool call arguments must be a JSON object.", param=param)
    return args


def max_output(body: dict[str, Any]) -> int | None:
    """``max_completion_tokens``, else the deprecated ``max_tokens``."""
    value = body.get("max_completion_tokens")
    if value is None:
        value = body.get("max_tokens")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def stop_sequences(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if isinstance(stop, str):
        return [stop]
    return [s for s in stop if isinstance(s, str)] if isinstance(stop, list) else []


def content_text(content: Any) -> str:
    """The text of a message's ``content`` (a string, or the text parts of an array)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""
