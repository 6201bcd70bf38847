"""Adapter for Cohere's v2 API: ``POST /v2/chat`` (plain and SSE) and ``POST /v2/embed``.

Requests: OpenAI messages map one to one (``system``/``developer`` → ``system``; ``image_url``
parts are kept, Cohere takes the same part); tools keep OpenAI's function shape. ``tool_choice``
``required`` → ``REQUIRED``, ``none`` → ``NONE``; a forced function restricts ``tools`` to that
one and sends ``REQUIRED`` (Cohere cannot name a tool). ``top_p`` → ``p`` and the penalties are
clamped into Cohere's ranges (``p`` 0.01-0.99, penalties 0-1). ``response_format`` is native
(``json_schema`` → ``{"type": "json_object", "json_schema": schema}``) and, as at Cohere, not
combinable with tools. ``reasoning_effort`` → ``thinking`` (``none`` disables it; the others
enable it with the token budget of ``_THINKING_BUDGETS``; ``high`` leaves the model's own).
``n`` > 1 is refused; ``logprobs``, ``parallel_tool_calls`` and other OpenAI-only fields are
dropped. Cohere's own ``k``, ``safety_mode`` and ``priority`` pass through.

Replies: text parts → ``content``; ``thinking`` parts and ``tool_plan`` (the model's plan
before a tool call) → ``reasoning_content``; tool calls keep their ids. Usage is
``usage.billed_units`` (what Cohere bills; ``usage.tokens`` also counts its prompt template),
``usage.tokens`` only when billed units are absent; ``cached_tokens`` as cached input. A
generation Cohere ends with ``ERROR``/``TIMEOUT`` is a provider failure (502/504, or a stream
that ends without ``[DONE]``, after its usage chunk).

Embeddings: ``input`` strings → ``texts`` (96 per call, as Cohere allows: larger inputs are
sent in order in several calls), ``input_type`` ``search_document`` unless the request names
one (a Ringside extension field), ``embedding_types: ["float"]``, ``dimensions`` →
``output_dimension``; ``base64`` is encoded here (float32 little-endian, as OpenAI sends it).
Token-id inputs are refused.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import httpx
import orjson

from ringside.errors import InvalidRequest, RingsideError, UpstreamTimeout, UpstreamUnavailable
from ringside.tokens import TokenUsage
from ringside.upstream import shapes
from ringside.upstream.adapter import Exchange, JsonReply, UpstreamStream, parsed_url, read_json
from ringside.upstream.sending import upstream_error
from ringside.upstream.sse import SSEDecoder

_JSON = "application/json"
_FINISH = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
}
_FAILED = frozenset({"ERROR", "TIMEOUT"})
_THINKING_BUDGETS = {"minimal": 512, "low": 2048, "medium": 8192}
_PASSTHROUGH = ("k", "safety_mode", "priority")
MAX_TEXTS = 96  # Cohere's limit per embed call
DEFAULT_INPUT_TYPE = "search_document"


def _invalid(message: str, param: str | None = None, code: str | None = None) -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _clamp(value: Any, lo: float, hi: float) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return min(max(value, lo), hi)


def _content(content: Any, index: int, images: bool) -> str | list[dict[str, Any]]:
    """A message's content as Cohere takes it: a string, or text (and image) parts."""
    if content is None or isinstance(content, str):
        return content or ""
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "image_url" and images:
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise _invalid("An image_url part needs a url.", f"messages.{index}.content")
            out: dict[str, Any] = {"url": url}
            if isinstance(image, dict) and image.get("detail") in ("auto", "low", "high"):
                out["detail"] = image["detail"]
            parts.append({"type": "image_url", "image_url": out})
        else:
            raise _invalid(
                f"Cohere does not take {kind!r} content parts in {'user' if images else 'this'}"
                " messages.",
                f"messages.{index}.content",
                "unsupported_content",
            )
    return parts


def _tool_calls(calls: list[Any], index: int) -> list[dict[str, Any]]:
    out = []
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(call.get("id"), str):
            raise _invalid("A tool call needs an id and a function.", f"messages.{index}")
        arguments = fn.get("arguments")
        out.append(
            {
                "id": call["id"],
                "type": "function",
                "function": {
                    "name": str(fn.get("name", "")),
                    "arguments": arguments if isinstance(arguments, str) else "{}",
                },
            }
        )
    return out


def _message(msg: dict[str, Any], index: int) -> dict[str, Any]:
    role = msg["role"]
    content = msg.get("content")
    if role in ("system", "developer"):
        return {"role": "system", "content": _content(content, index, False)}
    if role == "user":
        return {"role": "user", "content": _content(content, index, True)}
    if role == "assistant":
        out: dict[str, Any] = {"role": "assistant"}
        text = _content(content, index, False)
        if text:
            out["content"] = text
        if msg.get("tool_calls"):
            out["tool_calls"] = _tool_calls(msg["tool_calls"], index)
            plan = msg.get("reasoning_content")
            if isinstance(plan, str) and plan:
                out["tool_plan"] = plan
        elif not text:
            out["content"] = ""
        return out
    if role == "tool":
        call_id = msg.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise _invalid("A tool message needs a tool_call_id.", f"messages.{index}")
        return {"role": "tool", "tool_call_id": call_id, "content": shapes.content_text(content)}
    raise _invalid(
        f"Cohere does not take {role!r} messages.", f"messages.{index}.role", "unsupported_role"
    )


def _tools(body: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """Cohere's ``tools`` and ``strict_tools`` for the request's function tools."""
    tools, strict = [], False
    for i, tool in enumerate(body.get("tools") or ()):
        fn = tool.get("function")
        if tool.get("type") != "function" or not isinstance(fn, dict):
            raise _invalid("Cohere takes function tools only.", f"tools.{i}", "unsupported_tool")
        out: dict[str, Any] = {
            "name": fn["name"],
            "parameters": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        if isinstance(fn.get("description"), str):
            out["description"] = fn["description"]
        strict = strict or fn.get("strict") is True
        tools.append({"type": "function", "function": out})
    return tools, strict


def _tool_options(body: dict[str, Any], out: dict[str, Any]) -> None:
    tools, strict = _tools(body)
    mode, forced = shapes.tool_choice(body)
    if mode == "function":
        tools = [t for t in tools if t["function"]["name"] == forced]
        if not tools:
            raise _invalid(f"tool_choice names {forced!r}, which is not in tools.", "tool_choice")
    if tools:
        out["tools"] = tools
        if strict:
            out["strict_tools"] = True
        if mode in ("required", "function"):
            out["tool_choice"] = "REQUIRED"
        elif mode == "none":
            out["tool_choice"] = "NONE"


def _response_format(body: dict[str, Any], out: dict[str, Any]) -> None:
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("json_object", "json_schema"):
        return
    if out.get("tools"):
        raise _invalid(
            "Cohere cannot combine response_format with tools.",
            "response_format",
            "unsupported_combination",
        )
    native: dict[str, Any] = {"type": "json_object"}
    if kind == "json_schema":
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            native["json_schema"] = schema
    out["response_format"] = native


def chat_body(x: Exchange, body: dict[str, Any], stream: bool) -> dict[str, Any]:
    """The ``/v2/chat`` body for a validated OpenAI chat body."""
    if body.get("n") not in (None, 1):
        raise _invalid("Cohere returns one choice: 'n' must be 1.", "n", "unsupported_parameter")
    out: dict[str, Any] = {
        "model": x.model,
        "messages": [_message(m, i) for i, m in enumerate(body["messages"])],
        "stream": stream,
    }
    _tool_options(body, out)
    _response_format(body, out)
    if body.get("temperature") is not None:
        out["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        out["p"] = _clamp(body["top_p"], 0.01, 0.99)
    for name in ("frequency_penalty", "presence_penalty"):
        if body.get(name) is not None:
            out[name] = _clamp(body[name], 0.0, 1.0)
    if (limit := shapes.max_output(body)) is not None:
        out["max_tokens"] = limit
    if stops := shapes.stop_sequences(body):
        out["stop_sequences"] = stops
    if isinstance(body.get("seed"), int):
        out["seed"] = body["seed"]
    effort = body.get("reasoning_effort")
    if effort == "none":
        out["thinking"] = {"type": "disabled"}
    elif isinstance(effort, str):
        out["thinking"] = {"type": "enabled"}
        if effort in _THINKING_BUDGETS:
            out["thinking"]["token_budget"] = _THINKING_BUDGETS[effort]
    for name in _PASSTHROUGH:
        if body.get(name) is not None:
            out[name] = body[name]
    return out


def _count(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def usage_of(raw: Any) -> TokenUsage | None:
    """Canonical usage from Cohere's ``usage`` (billed units first)."""
    if not isinstance(raw, dict):
        return None
    counts = raw.get("billed_units")
    if not isinstance(counts, dict) or "input_tokens" not in counts:
        counts = raw.get("tokens")
    if not isinstance(counts, dict):
        return None
    prompt = _count(counts.get("input_tokens"))
    return TokenUsage(
        input=prompt,
        cached_input=min(_count(raw.get("cached_tokens")), prompt),
        output=_count(counts.get("output_tokens")),
    )


def _failure(x: Exchange, reason: str, detail: Any) -> RingsideError:
    message = f"{x.name} ended the generation with {reason}" + (f": {detail}" if detail else ".")
    return UpstreamTimeout(message) if reason == "TIMEOUT" else UpstreamUnavailable(message)


def completion_of(x: Exchange, data: dict[str, Any]) -> dict[str, Any]:
    """The ``chat.completion`` for a ``/v2/chat`` answer."""
    reason = str(data.get("finish_reason") or "COMPLETE")
    if reason in _FAILED:
        raise _failure(x, reason, data.get("error"))
    msg = _obj(data.get("message"))
    texts, thoughts = [], []
    for part in msg.get("content") or ():
        if isinstance(part, dict) and part.get("type") == "text":
            texts.append(str(part.get("text", "")))
        elif isinstance(part, dict) and part.get("type") == "thinking":
            thoughts.append(str(part.get("thinking", "")))
    if isinstance(msg.get("tool_plan"), str) and msg["tool_plan"]:
        thoughts.append(msg["tool_plan"])
    calls = [
        shapes.function_call(
            str(c.get("id") or shapes.tool_call_id()),
            str(_obj(c.get("function")).get("name", "")),
            str(_obj(c.get("function")).get("arguments") or "{}"),
        )
        for c in msg.get("tool_calls") or ()
        if isinstance(c, dict)
    ]
    text = "".join(texts)
    message = shapes.message(
        text if text or not calls else None, calls, reasoning="\n\n".join(thoughts) or None
    )
    finish = _FINISH.get(reason, "stop")
    out = shapes.completion(
        x.model, [(message, finish)], usage_of(data.get("usage")) or TokenUsage()
    )
    return out


class CohereDecoder:
    """Cohere v2 stream events (SSE; each data object names its ``type``) → OpenAI chunks."""

    def __init__(self, model: str) -> None:
        self._sse = SSEDecoder()
        self.state = shapes.StreamState(model)
        self.failed = False

    def feed(self, raw: bytes) -> list[bytes]:
        out: list[bytes] = []
        for payload in self._sse.feed(raw):
            if self.failed or payload == shapes.DONE:
                continue
            try:
                event = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict):
                out += self._event(event)
        return out

    def _event(self, event: dict[str, Any]) -> list[bytes]:
        kind = event.get("type")
        delta = _obj(event.get("delta"))
        msg = _obj(delta.get("message"))
        s = self.state
        if kind == "message-start":
            return [s.start()]
        if kind in ("content-start", "content-delta"):
            part = _obj(msg.get("content"))
            if part.get("thinking"):
                return [s.reasoning(str(part["thinking"]))]
            return [s.text(str(part["text"]))] if part.get("text") else []
        if kind == "tool-plan-delta":
            plan = msg.get("tool_plan")
            return [s.reasoning(plan)] if isinstance(plan, str) and plan else []
        call = _obj(msg.get("tool_calls"))
        fn = _obj(call.get("function"))
        key = str(event.get("index", len(s.tool_indexes)))
        if kind == "tool-call-start":
            call_id = str(call.get("id") or shapes.tool_call_id())
            return [s.tool_start(key, call_id, str(fn.get("name", "")), fn.get("arguments") or "")]
        if kind == "tool-call-delta" and key in s.tool_indexes and fn.get("arguments"):
            return [s.tool_arguments(key, str(fn["arguments"]))]
        if kind == "message-end":
            return self._end(delta)
        return []  # content-end, tool-call-end, citation-*, debug

    def _end(self, delta: dict[str, Any]) -> list[bytes]:
        reason = str(delta.get("finish_reason") or "COMPLETE")
        usage = usage_of(delta.get("usage"))
        out = [] if reason in _FAILED else [self.state.finish(_FINISH.get(reason, "stop"))]
        if usage is not None:
            out.append(self.state.usage_chunk(usage))
        if reason in _FAILED:
            self.failed = True  # no [DONE]: the relay reports the stream as incomplete
        else:
            out.append(shapes.DONE)
        return out


def _inputs(body: dict[str, Any]) -> list[str]:
    raw = body.get("input")
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and all(isinstance(t, str) for t in raw):
        return list(raw)
    raise _invalid(
        "Cohere embeds text: 'input' must be a string or an array of strings (token ids are "
        "not accepted).",
        "input",
        "token_input_unsupported",
    )


def _vector(values: Any, encoding: str) -> list[float] | str:
    floats = [float(v) for v in values] if isinstance(values, list) else []
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(floats)}f", *floats)).decode("ascii")
    return floats


class CohereAdapter:
    """Cohere v2 chat and embed."""

    async def complete(self, x: Exchange, body: dict[str, Any]) -> JsonReply:
        response = await _post(x, "v2/chat", chat_body(x, body, False), False)
        return JsonReply.of(completion_of(x, read_json(x, response)))

    async def open_stream(self, x: Exchange, body: dict[str, Any]) -> UpstreamStream:
        response = await _post(x, "v2/chat", chat_body(x, body, True), True)
        return UpstreamStream(response, CohereDecoder(x.model))

    async def embed(self, x: Exchange, body: dict[str, Any]) -> JsonReply:
        texts = _inputs(body)
        input_type = body.get("input_type", DEFAULT_INPUT_TYPE)
        if not isinstance(input_type, str):
            raise _invalid("'input_type' must be a string.", "input_type")
        encoding = str(body.get("encoding_format") or "float")
        data: list[dict[str, Any]] = []
        billed: int | None = None
        for start in range(0, len(texts), MAX_TEXTS):
            native: dict[str, Any] = {
                "model": x.model,
                "texts": texts[start : start + MAX_TEXTS],
                "input_type": input_type,
                "embedding_types": ["float"],
            }
            if body.get("dimensions") is not None:
                native["output_dimension"] = body["dimensions"]
            answer = read_json(x, await _post(x, "v2/embed", native, False))
            vectors = _obj(answer.get("embeddings")).get("float") or []
            for values in vectors:
                data.append(
                    {
                        "object": "embedding",
                        "index": len(data),
                        "embedding": _vector(values, encoding),
                    }
                )
            units = _obj(_obj(answer.get("meta")).get("billed_units")).get("input_tokens")
            if isinstance(units, int | float) and not isinstance(units, bool):
                billed = (billed or 0) + int(units)
        out: dict[str, Any] = {"object": "list", "data": data, "model": x.model}
        if billed is not None:
            out["usage"] = {"prompt_tokens": billed, "total_tokens": billed}
        return JsonReply.of(out)

    def error(
        self, provider: str, status: int, body: bytes, headers: httpx.Headers
    ) -> RingsideError:
        return upstream_error(provider, status, body, headers)  # Cohere: {"message": ...}


async def _post(x: Exchange, path: str, native: dict[str, Any], stream: bool) -> httpx.Response:
    url = parsed_url(f"{x.provider.base_url}/{path}")
    content = orjson.dumps(native)
    timeout = x.timeout(stream)

    def build(key: str | None) -> httpx.Request:
        headers = {"content-type": _JSON, "accept": "text/event-stream" if stream else _JSON}
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        return x.http.build_request("POST", url, content=content, headers=headers, timeout=timeout)

    return await x.send(build, stream=stream)


ADAPTER = CohereAdapter()
