"""Adapter for Anthropic's Messages API: ``POST {base}/v1/messages`` with ``x-api-key`` and
``anthropic-version: 2023-06-01`` (base URL ``https://api.anthropic.com`` by default).

Request (OpenAI chat body → Messages body):

* ``system``/``developer`` messages, wherever they are, become the top-level ``system``: one
  string (joined by blank lines), or one text block per part when any of them carries
  ``cache_control``. Other messages become alternating ``user``/``assistant`` turns of content
  blocks (consecutive same-role messages merge into one turn); ``tool`` messages become
  ``tool_result`` blocks of a user turn (``tool_use_id`` = the ``tool_call_id``, placed before
  any text as Anthropic requires); assistant ``tool_calls`` become ``tool_use`` blocks (the
  OpenAI call id kept, ``input`` = the parsed arguments). Images: a ``data:`` URL becomes a
  base64 source, an http(s) URL a url source; a ``data:application/pdf`` file part a document.
  ``cache_control`` on a part (or on a message with string content) passes through verbatim,
  as does a top-level ``cache_control`` (Anthropic's automatic caching).
* ``max_tokens`` is required by Anthropic: ``max_completion_tokens``, else ``max_tokens``,
  else ``DEFAULT_MAX_TOKENS`` = 4096. ``temperature`` is clamped to Anthropic's 0..1;
  ``top_p``; ``stop`` → ``stop_sequences`` (whitespace-only ones dropped: Anthropic refuses
  them); ``user`` → ``metadata.user_id``. A final assistant turn (a prefill) loses its
  trailing whitespace, which Anthropic refuses too. ``n`` > 1 is a
  400 (Anthropic has no ``n``). ``seed``, ``logprobs``, penalties, ``logit_bias`` are dropped.
* Function tools → ``{name, description, input_schema, strict}``; ``tool_choice`` auto → auto,
  none → none, required → any, a forced function → ``{type: tool, name}``;
  ``parallel_tool_calls: false`` → ``disable_parallel_tool_use: true``.
* ``reasoning_effort`` → ``thinking: {type: enabled, budget_tokens}`` with ``THINKING_BUDGETS``
  (minimal 1024, low 2048, medium 8192, high 16384, xhigh 32768; ``none`` → no thinking). A
  ``thinking`` object in the client body (a Ringside extension) passes through verbatim and wins.
  Anthropic's ``max_tokens`` covers thinking and must exceed the budget. The client's own limit
  stays the cap (as OpenAI's ``max_completion_tokens`` includes reasoning, and the call's hold
  was reserved for it): the budget shrinks to fit under it, and below Anthropic's minimum (1024)
  there is no thinking. Without a client limit, ``max_tokens`` is the budget + 4096.
* ``response_format`` json_schema → ``output_config.format = {type: json_schema, schema}``
  (Anthropic's GA structured outputs, no beta header); json_object and text are dropped (no
  native JSON mode: the domain instructs and validates).

Reply → ``chat.completion``: text blocks joined → ``content``; ``thinking`` blocks →
``reasoning_content`` (the signature is not exposed, so thinking cannot be replayed in a later
turn); ``tool_use`` → ``tool_calls``. ``stop_reason`` end_turn/stop_sequence/pause_turn → stop,
max_tokens/model_context_window_exceeded → length, tool_use → tool_calls, refusal →
content_filter. Usage: ``prompt_tokens`` = input + cache read + cache creation tokens,
``cached_tokens`` = cache read tokens, ``cache_write_tokens`` (Ringside's, billed at the
catalog's ``cache_write`` price) = cache creation tokens, ``completion_tokens`` =
``output_tokens``; reasoning = ``output_tokens_details.thinking_tokens`` when Anthropic reports
it, else estimated from the thinking text (4 characters a token), capped at ``output_tokens``.

Streams: Anthropic's SSE events become OpenAI chunks (tool call index = order of the tool_use
blocks), then the usage chunk and ``[DONE]`` at ``message_stop``. An ``error`` event mid-stream
ends the translation: nothing more is emitted, no ``[DONE]``, so the relay reports the stream
as ended before it was complete (a 503 error event to the client, the call settled for the
usage seen). Anthropic has no embeddings: ``embed`` is a 400 ``embeddings_unsupported``.
"""

from __future__ import annotations

import functools
from typing import Any, Final

import httpx
import orjson

from ringside.errors import InvalidRequest, RingsideError
from ringside.tokens import TokenUsage, estimate_tokens
from ringside.upstream import shapes
from ringside.upstream.adapter import Exchange, JsonReply, UpstreamStream, read_json
from ringside.upstream.sending import upstream_error
from ringside.upstream.sse import SSEDecoder

API_VERSION: Final = "2023-06-01"
DEFAULT_MAX_TOKENS: Final = 4096
_MIN_THINKING: Final = 1024  # Anthropic's smallest thinking budget
THINKING_BUDGETS: Final = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 32768,
}
_JSON: Final = "application/json"

_FINISH: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _invalid(message: str, param: str | None = None) -> InvalidRequest:
    return InvalidRequest(message, param=param)


# --- request ------------------------------------------------------------------------------


def _cached(block: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    if "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def _data_url(url: str, param: str) -> tuple[str, str]:
    head, sep, data = url.partition(",")
    media_type, _, encoding = head.removeprefix("data:").partition(";")
    if not sep or encoding != "base64" or not media_type:
        raise _invalid("Only base64 data: URLs are accepted for Anthropic.", param)
    return media_type, data


def _image(part: dict[str, Any], param: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise _invalid("An image_url part needs a url.", param)
    if url.startswith("data:"):
        media_type, data = _data_url(url, param)
        source = {"type": "base64", "media_type": media_type, "data": data}
    elif url.startswith(("http://", "https://")):
        source = {"type": "url", "url": url}
    else:
        raise _invalid("An image URL must be a data: or http(s) URL.", param)
    return _cached({"type": "image", "source": source}, part)


def _document(part: dict[str, Any], param: str) -> dict[str, Any]:
    file = part.get("file")
    data = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data, str) or not data.startswith("data:application/pdf"):
        raise _invalid("Anthropic accepts file parts only as inline PDF data: URLs.", param)
    media_type, payload = _data_url(data, param)
    source = {"type": "base64", "media_type": media_type, "data": payload}
    return _cached({"type": "document", "source": source}, part)


def _blocks(message: dict[str, Any], param: str) -> list[dict[str, Any]]:
    """A message's ``content`` as Anthropic content blocks (empty text is dropped: Anthropic
    refuses empty text blocks)."""
    content = message.get("content")
    if content is None:
        return []
    if isinstance(content, str):
        return [_cached({"type": "text", "text": content}, message)] if content else []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        where = f"{param}.content[{j}]"
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                blocks.append(_cached({"type": "text", "text": part["text"]}, part))
        elif kind == "image_url":
            blocks.append(_image(part, where))
        elif kind == "file":
            blocks.append(_document(part, where))
        elif kind != "refusal":
            raise _invalid(f"Content parts of type {kind!r} are not supported by Anthropic.", where)
    return blocks


def _tool_uses(message: dict[str, Any], param: str) -> list[dict[str, Any]]:
    uses = []
    for j, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str):
            raise _invalid("A tool call needs an id and a function.", f"{param}.tool_calls[{j}]")
        arguments = shapes.tool_arguments(
            function.get("arguments"), f"{param}.tool_calls[{j}].function.arguments"
        )
        uses.append(
            {"type": "tool_use", "id": call["id"], "name": function.get("name"), "input": arguments}
        )
    return uses


def _system(parts: list[tuple[dict[str, Any], str]]) -> str | list[dict[str, Any]] | None:
    blocks = [b for message, param in parts for b in _blocks(message, param)]
    if not blocks:
        return None
    if any(b["type"] != "text" for b in blocks):
        raise _invalid("System messages may hold only text for Anthropic.", parts[0][1])
    if any("cache_control" in b for b in blocks):
        return blocks
    return "\n\n".join(b["text"] for b in blocks)


def _conversation(
    messages: list[dict[str, Any]],
) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]]]:
    system: list[tuple[dict[str, Any], str]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role, param = message.get("role"), f"messages[{i}]"
        if role in ("system", "developer"):
            system.append((message, param))
            continue
        if role == "user":
            blocks = _blocks(message, param)
        elif role == "assistant":
            blocks = _blocks(message, param) + _tool_uses(message, param)
        elif role == "tool":
            result: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id"),
                "content": _blocks(message, param),
            }
            blocks, role = [result], "user"
        else:
            raise _invalid(f"Messages of role {role!r} are not supported by Anthropic.", param)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:  # tool results first in a user turn, as Anthropic requires
        turn["content"].sort(key=lambda b: b["type"] != "tool_result")
    last = turns[-1]["content"] if turns and turns[-1]["role"] == "assistant" else []
    if last and last[-1]["type"] == "text":  # a prefill may not end with whitespace
        last[-1]["text"] = last[-1]["text"].rstrip()
        if not last[-1]["text"]:
            last.pop()
    return _system(system), turns


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = []
    for i, tool in enumerate(body.get("tools") or ()):
        function = tool.get("function")
        if tool.get("type") != "function" or not isinstance(function, dict):
            raise _invalid("Only function tools are supported by Anthropic.", f"tools[{i}]")
        out: dict[str, Any] = {
            "name": function["name"],
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            out["description"] = function["description"]
        if isinstance(function.get("strict"), bool):
            out["strict"] = function["strict"]
        tools.append(_cached(out, tool))
    return tools


def _tool_choice(body: dict[str, Any]) -> dict[str, Any]:
    mode, name = shapes.tool_choice(body)
    choice: dict[str, Any]
    if mode == "function":
        if name is None:
            raise _invalid("A forced tool_choice needs a function name.", "tool_choice")
        choice = {"type": "tool", "name": name}
    elif mode in ("auto", "none"):
        choice = {"type": mode}
    elif mode == "required":
        choice = {"type": "any"}
    else:
        raise _invalid(f"Unknown tool_choice {mode!r}.", "tool_choice")
    if body.get("parallel_tool_calls") is False and choice["type"] != "none":
        choice["disable_parallel_tool_use"] = True
    return choice


def _thinking(body: dict[str, Any]) -> dict[str, Any] | None:
    if isinstance(body.get("thinking"), dict):
        return dict(body["thinking"])
    effort = body.get("reasoning_effort")
    if effort is None or effort == "none":
        return None
    budget = THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is None:
        raise _invalid(
            f"reasoning_effort must be one of none, {', '.join(THINKING_BUDGETS)}.",
            "reasoning_effort",
        )
    return {"type": "enabled", "budget_tokens": budget}


def _response_format(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return None
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise _invalid("response_format.json_schema needs a schema.", "response_format")
    return {"type": "json_schema", "schema": schema}


def messages_body(x: Exchange, body: dict[str, Any], stream: bool) -> dict[str, Any]:
    """The Messages API body for the client's OpenAI chat ``body``."""
    n = body.get("n")
    if n is not None and n != 1:
        raise _invalid("Anthropic models return one choice: n must be 1.", "n")
    system, turns = _conversation(body["messages"])
    max_tokens = shapes.max_output(body) or DEFAULT_MAX_TOKENS
    out: dict[str, Any] = {"model": x.model, "max_tokens": max_tokens, "messages": turns}
    if system is not None:
        out["system"] = system
    if "cache_control" in body:
        out["cache_control"] = body["cache_control"]
    if isinstance(body.get("temperature"), int | float):
        out["temperature"] = min(float(body["temperature"]), 1.0)
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    if stops := [s for s in shapes.stop_sequences(body) if s.strip()]:
        out["stop_sequences"] = stops
    if isinstance(body.get("user"), str) and body["user"]:
        out["metadata"] = {"user_id": body["user"]}
    if tools := _tools(body):
        out["tools"] = tools
        out["tool_choice"] = _tool_choice(body)
    if (thinking := _thinking(body)) is not None:
        budget = thinking.get("budget_tokens")
        if "thinking" in body or not isinstance(budget, int) or max_tokens > budget:
            out["thinking"] = thinking
        elif shapes.max_output(body) is None:
            out["thinking"] = thinking  # no client limit: the default allowance on top
            out["max_tokens"] = budget + max_tokens
        elif max_tokens - 1 >= _MIN_THINKING:
            # The client's limit covers thinking too (OpenAI's max_completion_tokens includes
            # reasoning, and the call was reserved for it): the budget shrinks to fit under it.
            out["thinking"] = {**thinking, "budget_tokens": max_tokens - 1}
        # else: a limit too small for Anthropic's minimum budget: no thinking
    if (fmt := _response_format(body)) is not None:
        out["output_config"] = {"format": fmt}
    if stream:
        out["stream"] = True
    return out


# --- reply --------------------------------------------------------------------------------


def _int(obj: Any, key: str) -> int:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def token_usage(usage: dict[str, Any], thinking_chars: int) -> TokenUsage:
    """Canonical counts of an Anthropic ``usage`` (see the module docstring)."""
    cached = _int(usage, "cache_read_input_tokens")
    written = _int(usage, "cache_creation_input_tokens")
    total_input = _int(usage, "input_tokens") + cached + written
    output = _int(usage, "output_tokens")
    details = usage.get("output_tokens_details")
    if isinstance(details, dict) and "thinking_tokens" in details:
        reasoning = _int(details, "thinking_tokens")
    else:
        reasoning = estimate_tokens(thinking_chars) if thinking_chars else 0
    return TokenUsage(total_input, cached, output, min(reasoning, output), cache_write=written)


def _finish(stop_reason: Any) -> str:
    return _FINISH.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def chat_completion(x: Exchange, data: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic ``message`` as an OpenAI ``chat.completion``."""
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in data.get("content") or ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "thinking":
            thoughts.append(str(block.get("thinking", "")))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            call_id = block.get("id") or shapes.tool_call_id()
            calls.append(shapes.function_call(call_id, str(block.get("name")), arguments))
    content = "".join(texts) if texts or not calls else None
    reasoning = "".join(thoughts)
    message = shapes.message(content, calls, reasoning=reasoning or None)
    model = data.get("model")
    model = model if isinstance(model, str) else x.model
    usage = data.get("usage")
    u = token_usage(usage, len(reasoning)) if isinstance(usage, dict) else TokenUsage()
    out = shapes.completion(model, [(message, _finish(data.get("stop_reason")))], u)
    if not isinstance(usage, dict):
        del out["usage"]  # none reported: the domain counts
    return out


class StreamDecoder:
    """Anthropic's stream events → OpenAI chunk payloads (see ``ChunkDecoder``)."""

    def __init__(self, model: str) -> None:
        self._sse = SSEDecoder()
        self._state = shapes.StreamState(model)
        self._usage: dict[str, Any] | None = None
        self._thinking_chars = 0
        self._tools: dict[int, bool] = {}  # tool_use block index -> arguments seen
        self._stop_reason: Any = None
        self._over = False

    def feed(self, raw: bytes) -> list[bytes]:
        out: list[bytes] = []
        for name, data in self._sse.feed_events(raw):
            if self._over:
                break
            try:
                event = orjson.loads(data) if data else {}
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict):
                kind = event.get("type") or name.decode("latin-1")
                out.extend(self._event(kind, event))
        return out

    def _event(self, kind: str, event: dict[str, Any]) -> list[bytes]:
        state = self._state
        if kind == "message_start":
            message = event.get("message") or {}
            if isinstance(message.get("model"), str):
                state.model = message["model"]
            self._merge_usage(message.get("usage"))
            return [state.start()]
        if kind == "content_block_start":
            return self._block_start(event.get("index"), event.get("content_block") or {})
        if kind == "content_block_delta":
            return self._delta(event.get("index"), event.get("delta") or {})
        if kind == "content_block_stop":
            index = event.get("index")
            if isinstance(index, int) and self._tools.get(index) is False:
                self._tools[index] = True  # a call without arguments: OpenAI sends "{}"
                return [state.tool_arguments(str(index), "{}")]
            return []
        if kind == "message_delta":
            delta = event.get("delta") or {}
            self._stop_reason = delta.get("stop_reason") or self._stop_reason
            self._merge_usage(event.get("usage"))
            return []
        if kind == "message_stop":
            self._over = True
            out = [state.finish(_finish(self._stop_reason))]
            if self._usage is not None:
                out.append(state.usage_chunk(token_usage(self._usage, self._thinking_chars)))
            return [*out, shapes.DONE]
        if kind == "error":
            self._over = True  # the relay reports the stream as ended before complete
        return []  # ping, and events of features Ringside does not map

    def _block_start(self, index: Any, block: dict[str, Any]) -> list[bytes]:
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            return [self._state.text(block["text"])]
        if kind == "thinking" and block.get("thinking"):
            self._thinking_chars += len(block["thinking"])
            return [self._state.reasoning(block["thinking"])]
        if kind == "tool_use" and isinstance(index, int):
            self._tools[index] = False
            call_id = block.get("id") or shapes.tool_call_id()
            return [self._state.tool_start(str(index), call_id, str(block.get("name")))]
        return []

    def _delta(self, index: Any, delta: dict[str, Any]) -> list[bytes]:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [self._state.text(delta["text"])]
        if kind == "thinking_delta" and delta.get("thinking"):
            self._thinking_chars += len(delta["thinking"])
            return [self._state.reasoning(delta["thinking"])]
        if kind == "input_json_delta" and index in self._tools and delta.get("partial_json"):
            self._tools[index] = True
            return [self._state.tool_arguments(str(index), delta["partial_json"])]
        return []  # signature_delta (never exposed), citations_delta

    def _merge_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):  # message_delta's counts are cumulative: they win
            self._usage = {**(self._usage or {}), **usage}


# --- the adapter --------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _url(base_url: str) -> httpx.URL:
    return httpx.URL(f"{base_url}/v1/messages")


class AnthropicMessages:
    """Anthropic's Messages API (see the module docstring)."""

    async def complete(self, x: Exchange, body: dict[str, Any]) -> JsonReply:
        response = await self._post(x, messages_body(x, body, False), False)
        return JsonReply.of(chat_completion(x, read_json(x, response)))

    async def open_stream(self, x: Exchange, body: dict[str, Any]) -> UpstreamStream:
        response = await self._post(x, messages_body(x, body, True), True)
        return UpstreamStream(response, StreamDecoder(x.model))

    async def embed(self, x: Exchange, body: dict[str, Any]) -> JsonReply:
        raise InvalidRequest(
            "Anthropic has no embeddings models.", code="embeddings_unsupported", param="model"
        )

    def error(
        self, provider: str, status: int, body: bytes, headers: httpx.Headers
    ) -> RingsideError:
        # Anthropic's {"type": "error", "error": {"type", "message"}} reads as OpenAI's
        # envelope does; 529 overloaded_error is a 5xx, so the cascade falls back.
        return upstream_error(provider, status, body, headers)

    @staticmethod
    async def _post(x: Exchange, payload: dict[str, Any], stream: bool) -> httpx.Response:
        target = _url(x.provider.base_url)
        content = orjson.dumps(payload)
        timeout = x.timeout(stream)
        accept = "text/event-stream" if stream else _JSON

        def build(key: str | None) -> httpx.Request:
            headers = {"content-type": _JSON, "accept": accept, "anthropic-version": API_VERSION}
            if key is not None:
                headers["x-api-key"] = key
            return x.http.build_request(
                "POST", target, content=content, headers=headers, timeout=timeout
            )

        return await x.send(build, stream=stream)


ADAPTER = AnthropicMessages()
