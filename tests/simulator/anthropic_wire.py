"""Anthropic's Messages API, simulated: ``POST /anthropic/v1/messages``.

Requests are checked as the real API checks them, answering Anthropic's own error body
(``{"type": "error", "error": {"type", "message"}, "request_id"}``): ``x-api-key`` (missing, or
``sk-bad``: 401 ``authentication_error``), ``anthropic-version`` (400 without it), unknown
fields (400 "Extra inputs are not permitted"), ``model`` and ``max_tokens`` required, messages
non-empty, starting with ``user`` and alternating, a final assistant turn (prefill) without
trailing whitespace, stop sequences not blank, content blocks of the right shapes (non-empty
text, base64/url image sources, ``cache_control`` of type ephemeral), every ``tool_result``
answering a ``tool_use`` of the previous assistant turn and every ``tool_use`` answered in the
next user turn (tool results first), tool names ``^[a-zA-Z0-9_-]{1,64}$`` and unique,
``tool_choice`` naming a declared tool, ``thinking.budget_tokens`` >= 1024 and < ``max_tokens``
(with temperature 1, top_p >= 0.95 and no forced tool use), ``output_config.format``
``{type: json_schema, schema}``.

The answer comes from ``completion.make_plan`` on an equivalent OpenAI body (``system`` → one
system message per block, ``tool_result`` blocks → ``tool`` messages, ``tool_use`` →
``tool_calls``, images and documents → image parts), so text, tool calls and token counts are
those of the OpenAI-wire simulator. It is rendered as Anthropic's ``message`` or its exact SSE
event sequence. Directives, beside the shared ones: ``usage.cached_tokens`` →
``cache_read_input_tokens`` and ``cache_creation_tokens`` (top level or in ``usage``) →
``cache_creation_input_tokens``, both taken out of ``input_tokens`` (their sum stays the
OpenAI ``prompt_tokens``); ``reasoning_tokens`` with thinking on (enabled or adaptive) → a
thinking block of that many tokens, reported in ``output_tokens`` and
``output_tokens_details.thinking_tokens`` (without thinking they are not generated);
``error_event_after`` (N) → an ``event: error`` (``overloaded_error``, or the ``error``
directive's type/message) after N content deltas, then the body ends; ``no_usage`` → no
``usage`` at all (the real API always sends it: this tests the gateway's counting).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import trio

from .asgi import (
    GUARDED_KEYS,
    SSE_HEADERS,
    Flow,
    Receive,
    Send,
    extra_headers,
    request_id,
    send_json,
    watch_disconnect,
)
from .completion import (
    Plan,
    SimError,
    _content_text,
    dumps,
    loads,
    make_plan,
    rand_id,
    strip_directives,
)
from .native import NativeRequest
from .render import ARG_FRAGMENT

if TYPE_CHECKING:
    from .app import Simulator

PATH: Final = "/anthropic/v1/messages"
VERSIONS: Final = frozenset({"2023-06-01", "2023-01-01"})
BAD_KEY: Final = "sk-bad"
_DOCS: Final = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
_TOOL_NAME: Final = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_MEDIA_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_TOP_LEVEL: Final = frozenset(
    {
        "model", "max_tokens", "messages", "system", "stop_sequences", "stream", "temperature",
        "top_p", "top_k", "metadata", "tools", "tool_choice", "thinking", "output_config",
        "cache_control", "service_tier", "container", "inference_geo",
    }
)  # fmt: skip
_BLOCK_KEYS: Final = {
    "text": {"type", "text", "cache_control", "citations"},
    "image": {"type", "source", "cache_control"},
    "document": {"type", "source", "cache_control", "title", "context", "citations"},
    "tool_result": {"type", "tool_use_id", "content", "is_error", "cache_control"},
    "tool_use": {"type", "id", "name", "input", "cache_control"},
    "thinking": {"type", "thinking", "signature"},
    "redacted_thinking": {"type", "data"},
}
_ROLE_BLOCKS: Final = {
    "user": ("text", "image", "document", "tool_result"),
    "assistant": ("text", "tool_use", "thinking", "redacted_thinking"),
}
_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class AnthropicError(Exception):
    def __init__(self, status: int, message: str, type_: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_ or _ERROR_TYPES.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )

    def body(self) -> bytes:
        error = {"type": self.type, "message": self.message}
        return dumps({"type": "error", "error": error, "request_id": rand_id("req_")})


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise AnthropicError(400, message)


def _no_extra(obj: dict[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
    for key in obj:
        _check(key in allowed, f"{where}{key}: Extra inputs are not permitted")


# --- validation ---------------------------------------------------------------------------


def _cache_control(value: Any, where: str) -> None:
    if value is None:
        return
    _check(
        isinstance(value, dict) and value.get("type") == "ephemeral",
        f"{where}.cache_control.type: Input should be 'ephemeral'",
    )
    _no_extra(value, {"type", "ttl"}, f"{where}.cache_control.")
    _check(value.get("ttl") in (None, "5m", "1h"), f"{where}.cache_control.ttl: invalid")


def _source(source: Any, where: str, kinds: tuple[str, ...], image: bool) -> None:
    _check(isinstance(source, dict), f"{where}.source: Field required")
    kind = source.get("type")
    _check(kind in kinds, f"{where}.source.type: Input should be one of {kinds}")
    if kind == "base64":
        _no_extra(source, {"type", "media_type", "data"}, f"{where}.source.")
        if image:
            _check(source.get("media_type") in _MEDIA_TYPES, f"{where}.source.media_type: invalid")
        _check(isinstance(source.get("data"), str) and bool(source["data"]), f"{where}.data")
    elif kind == "url":
        _no_extra(source, {"type", "url"}, f"{where}.source.")
        url = source.get("url")
        _check(isinstance(url, str) and url.startswith(("http://", "https://")), f"{where}.url")


def _block(block: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    _check(isinstance(block, dict), f"{where}: Input should be a valid dictionary")
    kind = block.get("type")
    _check(
        kind in allowed,
        f"{where}: Input tag '{kind}' found using 'type' does not match any of the expected "
        f"tags: {', '.join(repr(k) for k in allowed)}",
    )
    _no_extra(block, _BLOCK_KEYS[kind], f"{where}.")
    _cache_control(block.get("cache_control"), where)
    if kind == "text":
        text = block.get("text")
        _check(isinstance(text, str), f"{where}.text: Field required")
        _check(bool(text), "messages: text content blocks must be non-empty")
    elif kind == "image":
        _source(block.get("source"), where, ("base64", "url"), True)
    elif kind == "document":
        _source(block.get("source"), where, ("base64", "url", "text"), False)
    elif kind == "tool_result":
        _check(isinstance(block.get("tool_use_id"), str), f"{where}.tool_use_id: Field required")
        content = block.get("content")
        if isinstance(content, list):
            for k, inner in enumerate(content):
                _block(inner, f"{where}.content.{k}", ("text", "image", "document"))
        else:
            _check(content is None or isinstance(content, str), f"{where}.content: invalid")
    elif kind == "tool_use":
        _check(isinstance(block.get("id"), str), f"{where}.id: Field required")
        _check(isinstance(block.get("name"), str), f"{where}.name: Field required")
        _check(isinstance(block.get("input"), dict), f"{where}.input: Input should be an object")
    return block


def _content(content: Any, where: str, role: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        _check(bool(content), "messages: text content blocks must be non-empty")
        return [{"type": "text", "text": content}]
    _check(isinstance(content, list), f"{where}: Input should be a valid list")
    return [_block(b, f"{where}.{j}", _ROLE_BLOCKS[role]) for j, b in enumerate(content)]


def _pairing(i: int, blocks: list[dict[str, Any]], asked: list[str]) -> None:
    """A user turn after an assistant turn that used tools: every call answered, nothing else."""
    answered = [b["tool_use_id"] for b in blocks if b["type"] == "tool_result"]
    for k, tool_use_id in enumerate(answered):
        _check(
            tool_use_id in asked,
            f"messages.{i}.content.{k}: unexpected `tool_use_id` found in `tool_result` blocks: "
            f"{tool_use_id}. Each `tool_result` block must have a corresponding `tool_use` block "
            "in the previous message.",
        )
    missing = [a for a in asked if a not in answered]
    _check(
        not missing,
        f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks immediately "
        f"after: {', '.join(missing)}. Each `tool_use` block must have a corresponding "
        "`tool_result` block in the next message.",
    )
    kinds = [b["type"] == "tool_result" for b in blocks]
    _check(
        kinds == sorted(kinds, reverse=True),
        f"messages.{i}: `tool_result` blocks must come first in the content, before any text.",
    )


def _messages(messages: Any) -> None:
    _check(isinstance(messages, list), "messages: Input should be a valid list")
    _check(bool(messages), "messages: at least one message is required")
    asked: list[str] = []
    for i, m in enumerate(messages):
        _check(isinstance(m, dict), f"messages.{i}: Input should be a valid dictionary")
        _no_extra(m, {"role", "content"}, f"messages.{i}.")
        role = m.get("role")
        _check(role in _ROLE_BLOCKS, f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if i == 0:
            _check(role == "user", 'messages: first message must use the "user" role')
        else:
            _check(
                role != messages[i - 1]["role"],
                'messages: roles must alternate between "user" and "assistant", but found '
                f'multiple "{role}" roles in a row',
            )
        blocks = _content(m.get("content"), f"messages.{i}.content", role)
        last = i == len(messages) - 1
        _check(
            bool(blocks) or (last and role == "assistant"),
            f"messages.{i}: all messages must have non-empty content except for the optional "
            "final assistant message",
        )
        if last and role == "assistant" and blocks and blocks[-1]["type"] == "text":
            _check(
                blocks[-1]["text"] == blocks[-1]["text"].rstrip(),
                "messages: final assistant content cannot end with trailing whitespace",
            )
        if role == "user":
            _pairing(i, blocks, asked)
            asked = []
        else:
            asked = [b["id"] for b in blocks if b["type"] == "tool_use"]
            _check(len(set(asked)) == len(asked), f"messages.{i}: `tool_use` ids must be unique")


def _tools(tools: Any, choice: Any) -> None:
    names: list[str] = []
    if tools is not None:
        _check(isinstance(tools, list), "tools: Input should be a valid list")
        for i, tool in enumerate(tools):
            _check(isinstance(tool, dict), f"tools.{i}: Input should be a valid dictionary")
            if tool.get("type") not in (None, "custom"):
                continue  # a server tool (web search...): not simulated further
            allowed = {"type", "name", "description", "input_schema", "cache_control", "strict"}
            _no_extra(tool, allowed, f"tools.{i}.custom.")
            name = tool.get("name")
            _check(
                isinstance(name, str) and bool(_TOOL_NAME.match(name)),
                f"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'",
            )
            schema = tool.get("input_schema")
            _check(isinstance(schema, dict), f"tools.{i}.custom.input_schema: Field required")
            _check(
                schema.get("type") == "object",
                f"tools.{i}.custom.input_schema.type: Input should be 'object'",
            )
            _cache_control(tool.get("cache_control"), f"tools.{i}")
            names.append(name)
        _check(len(set(names)) == len(names), "tools: Tool names must be unique.")
    if choice is None:
        return
    _check(isinstance(choice, dict), "tool_choice: Input should be a valid dictionary")
    kind = choice.get("type")
    _check(kind in ("auto", "any", "tool", "none"), f"tool_choice.type: invalid tag '{kind}'")
    keys = {"type", "name", "disable_parallel_tool_use"} if kind == "tool" else {"type"}
    _no_extra(choice, keys | ({"disable_parallel_tool_use"} if kind != "none" else set()), "")
    if kind in ("any", "tool"):
        _check(bool(names), f"tool_choice: '{kind}' requires tools to be specified")
    if kind == "tool":
        name = choice.get("name")
        _check(name in names, f"tool_choice.name: Tool '{name}' not found in tools")
    flag = choice.get("disable_parallel_tool_use")
    _check(flag is None or isinstance(flag, bool), "disable_parallel_tool_use: bool expected")


def _thinking(body: dict[str, Any]) -> None:
    thinking = body.get("thinking")
    if thinking is None:
        return
    _check(isinstance(thinking, dict), "thinking: Input should be a valid dictionary")
    kind = thinking.get("type")
    _check(kind in ("enabled", "disabled", "adaptive"), f"thinking.type: invalid tag '{kind}'")
    if kind == "disabled":
        return
    if kind == "enabled":
        _no_extra(thinking, {"type", "budget_tokens", "display"}, "thinking.enabled.")
        budget = thinking.get("budget_tokens")
        _check(isinstance(budget, int), "thinking.enabled.budget_tokens: Field required")
        _check(
            budget >= 1024,
            "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
        )
        _check(
            body["max_tokens"] > budget,
            f"`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
            f"documentation at {_DOCS}#max-tokens-and-context-window-size",
        )
    _check(
        body.get("temperature") in (None, 1, 1.0),
        "`temperature` may only be set to 1 when thinking is enabled or in adaptive mode. "
        f"Please consult our documentation at {_DOCS}#feature-compatibility",
    )
    top_p = body.get("top_p")
    _check(
        top_p is None or top_p >= 0.95,
        "`top_p` must be greater than or equal to 0.95 or unset when thinking is enabled.",
    )
    choice = body.get("tool_choice")
    _check(
        not isinstance(choice, dict) or choice.get("type") in ("auto", "none"),
        "Thinking may not be enabled when tool_choice forces tool use.",
    )


def _number(body: dict[str, Any], name: str, hi: float) -> None:
    value = body.get(name)
    if value is not None:
        _check(isinstance(value, int | float), f"{name}: Input should be a valid number")
        _check(value >= 0, f"{name}: Input should be greater than or equal to 0")
        _check(value <= hi, f"{name}: Input should be less than or equal to {hi:g}")


def _system(system: Any) -> None:
    if system is None or isinstance(system, str):
        return
    _check(isinstance(system, list), "system: Input should be a valid string or list")
    for j, block in enumerate(system):
        _block(block, f"system.{j}", ("text",))


def _output_config(config: Any) -> None:
    if config is None:
        return
    _check(isinstance(config, dict), "output_config: Input should be a valid dictionary")
    _no_extra(config, {"format", "effort"}, "output_config.")
    fmt = config.get("format")
    if fmt is not None:
        _check(isinstance(fmt, dict), "output_config.format: Input should be a valid dictionary")
        _no_extra(fmt, {"type", "schema"}, "output_config.format.")
        _check(fmt.get("type") == "json_schema", "output_config.format.type: 'json_schema'")
        _check(isinstance(fmt.get("schema"), dict), "output_config.format.schema: Field required")


def validate(body: Any) -> dict[str, Any]:
    """Check a Messages request as the real API does (raising ``AnthropicError``)."""
    _check(isinstance(body, dict), "Input should be a valid dictionary")
    _no_extra(body, _TOP_LEVEL, "")
    _check(isinstance(body.get("model"), str) and bool(body["model"]), "model: Field required")
    max_tokens = body.get("max_tokens")
    is_int = isinstance(max_tokens, int) and not isinstance(max_tokens, bool)
    _check(is_int, "max_tokens: Field required")
    _check(max_tokens >= 1, "max_tokens: Input should be greater than or equal to 1")
    _messages(body.get("messages"))
    _system(body.get("system"))
    _tools(body.get("tools"), body.get("tool_choice"))
    _thinking(body)
    _number(body, "temperature", 1.0)
    _number(body, "top_p", 1.0)
    stops = body.get("stop_sequences")
    _check(
        stops is None or (isinstance(stops, list) and all(isinstance(s, str) for s in stops)),
        "stop_sequences: Input should be a valid list of strings",
    )
    _check(all(s for s in stops or ()), "stop_sequences: each stop sequence must be non-empty")
    _check(
        all(s.strip() for s in stops or ()),
        "stop_sequences: each stop sequence must contain non-whitespace",
    )
    metadata = body.get("metadata")
    if metadata is not None:
        _check(isinstance(metadata, dict), "metadata: Input should be a valid dictionary")
        _no_extra(metadata, {"user_id"}, "metadata.")
        uid = metadata.get("user_id")
        _check(uid is None or (isinstance(uid, str) and len(uid) <= 256), "metadata.user_id")
    _output_config(body.get("output_config"))
    _cache_control(body.get("cache_control"), "body")
    _check(body.get("stream") in (None, True, False), "stream: Input should be a valid boolean")
    return body


# --- the equivalent OpenAI body -----------------------------------------------------------


def _result_text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(b.get("text", "") for b in content if b.get("type") == "text")
    return content if isinstance(content, str) else ""


def _openai_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    system = body.get("system")
    out: list[dict[str, Any]] = []
    if isinstance(system, str) and system:
        out.append({"role": "system", "content": system})
    elif isinstance(system, list):
        out += [{"role": "system", "content": b["text"]} for b in system]
    for m in body["messages"]:
        content = m["content"]
        if isinstance(content, str):
            out.append({"role": m["role"], "content": content})
            continue
        parts = []
        for b in content:
            if b["type"] == "text":
                parts.append({"type": "text", "text": b["text"]})
            elif b["type"] in ("image", "document"):
                parts.append({"type": "image_url", "image_url": {"url": "simulated"}})
            elif b["type"] == "tool_result":
                text = _result_text(b.get("content"))
                out.append({"role": "tool", "tool_call_id": b["tool_use_id"], "content": text})
        calls = [
            {"id": b["id"], "type": "function", "function": {"name": b["name"], "arguments": "{}"}}
            for b in content
            if b["type"] == "tool_use"
        ]
        if m["role"] == "assistant":
            message: dict[str, Any] = {"role": "assistant", "content": parts or None}
            if calls:
                message["tool_calls"] = calls
            out.append(message)
        elif parts:
            out.append({"role": "user", "content": parts})
    return out


_CHOICES: Final = {"auto": "auto", "any": "required", "none": "none"}


def openai_body(body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat body ``make_plan`` reads for this Messages request."""
    out: dict[str, Any] = {
        "model": body["model"],
        "messages": _openai_messages(body),
        "max_tokens": body["max_tokens"],
    }
    if body.get("stop_sequences"):
        out["stop"] = body["stop_sequences"]
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    tools = [t for t in body.get("tools") or () if "name" in t]
    if tools:
        out["tools"] = [{"type": "function", "function": {"name": t["name"]}} for t in tools]
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            kind = choice["type"]
            out["tool_choice"] = (
                {"type": "function", "function": {"name": choice["name"]}}
                if kind == "tool"
                else _CHOICES[kind]
            )
    return out


# --- the reply ----------------------------------------------------------------------------


@dataclass(slots=True)
class Reply:
    plan: Plan
    thinking: list[str]  # thinking tokens
    calls: list[tuple[str, str, str]]  # (id, name, arguments JSON)
    stop_reason: str
    stop_sequence: str | None
    usage: dict[str, Any] | None

    def message(self) -> bytes:
        content: list[dict[str, Any]] = []
        if self.thinking:
            content.append(
                {"type": "thinking", "thinking": "".join(self.thinking), "signature": _signature()}
            )
        if self.plan.tool_calls is None:
            content.append({"type": "text", "text": "".join(self.plan.tokens)})
        for call_id, name, args in self.calls:
            content.append({"type": "tool_use", "id": call_id, "name": name, "input": _obj(args)})
        out: dict[str, Any] = {
            "id": rand_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": self.plan.model,
            "content": content,
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
        }
        if self.usage is not None:
            out["usage"] = self.usage
        return dumps(out)


def _signature() -> str:
    return "EqQB" + rand_id("")


def _obj(args: str) -> Any:
    try:
        value = loads(args)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _full_text(plan: Plan, oai: dict[str, Any]) -> str:
    if "reply" in plan.directive:
        return str(plan.directive["reply"])
    last = next((m for m in reversed(oai["messages"]) if m["role"] == "user"), None)
    text = _content_text(last["content"])[0] if last else ""
    return "Echo: " + strip_directives(text, {}).strip()


def make_reply(plan: Plan, body: dict[str, Any], oai: dict[str, Any]) -> Reply:
    d = plan.directive
    over = d.get("usage") if isinstance(d.get("usage"), dict) else {}
    reasoning = int(over.get("reasoning_tokens", d.get("reasoning_tokens", 0)) or 0)
    thinking_on = (body.get("thinking") or {}).get("type") in ("enabled", "adaptive")
    thinking = ["Thinking"] + [" more"] * (reasoning - 1) if thinking_on and reasoning > 0 else []
    calls = [(rand_id("toolu_"), name, args) for name, args in plan.tool_calls or ()]
    stop_reason, stop_sequence = "end_turn", None
    if plan.finish_reason == "tool_calls":
        stop_reason = "tool_use"
    elif plan.finish_reason == "length":
        stop_reason = "max_tokens"
    else:
        full = _full_text(plan, oai)
        hits = [(full.find(s), s) for s in body.get("stop_sequences") or () if s and s in full]
        if hits:
            stop_reason, stop_sequence = "stop_sequence", min(hits)[1]
    usage = None
    if plan.usage is not None:
        cached = int(plan.usage["prompt_tokens_details"]["cached_tokens"])
        creation = int(over.get("cache_creation_tokens", d.get("cache_creation_tokens", 0)) or 0)
        output = int(plan.usage["completion_tokens"]) - (0 if thinking else reasoning)
        usage = {
            "input_tokens": max(int(plan.usage["prompt_tokens"]) - cached - creation, 0),
            "cache_creation_input_tokens": creation,
            "cache_read_input_tokens": cached,
            "output_tokens": max(output, 0),
            "service_tier": "standard",
        }
        if thinking_on:
            usage["output_tokens_details"] = {"thinking_tokens": len(thinking)}
    return Reply(plan, thinking, calls, stop_reason, stop_sequence, usage)


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + dumps({"type": name, **data}) + b"\n\n"


def _block_steps(index: int, start: dict[str, Any], deltas: list[dict[str, Any]]) -> list[bytes]:
    """One step per delta, the block's start before the first and its stop after the last."""
    steps = [_event("content_block_delta", {"index": index, "delta": d}) for d in deltas] or [b""]
    steps[0] = _event("content_block_start", {"index": index, "content_block": start}) + steps[0]
    steps[-1] += _event("content_block_stop", {"index": index})
    return steps


def stream_steps(reply: Reply) -> list[bytes]:
    """[message_start + ping, one content delta a step ..., message_delta + message_stop]."""
    plan = reply.plan
    head: dict[str, Any] = {
        "id": rand_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
    }
    if reply.usage is not None:
        head["usage"] = {**reply.usage, "output_tokens": 1}
        head["usage"].pop("output_tokens_details", None)
    steps = [_event("message_start", {"message": head}) + _event("ping", {})]
    index = 0
    if reply.thinking:
        deltas = [{"type": "thinking_delta", "thinking": t} for t in reply.thinking]
        deltas.append({"type": "signature_delta", "signature": _signature()})
        start = {"type": "thinking", "thinking": "", "signature": ""}
        steps += _block_steps(index, start, deltas)
        index += 1
    if plan.tool_calls is None:
        deltas = [{"type": "text_delta", "text": t} for t in plan.tokens]
        steps += _block_steps(index, {"type": "text", "text": ""}, deltas)
        index += 1
    for call_id, name, args in reply.calls:
        fragments = [""] + [args[j : j + ARG_FRAGMENT] for j in range(0, len(args), ARG_FRAGMENT)]
        deltas = [{"type": "input_json_delta", "partial_json": f} for f in fragments]
        start = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
        steps += _block_steps(index, start, deltas)
        index += 1
    delta: dict[str, Any] = {
        "delta": {"stop_reason": reply.stop_reason, "stop_sequence": reply.stop_sequence}
    }
    if reply.usage is not None:
        delta["usage"] = {"output_tokens": reply.usage["output_tokens"]}
        if "output_tokens_details" in reply.usage:
            delta["usage"]["output_tokens_details"] = reply.usage["output_tokens_details"]
    steps.append(_event("message_delta", delta) + _event("message_stop", {}))
    return steps


# --- serving ------------------------------------------------------------------------------


def _authorize(request: NativeRequest) -> None:
    if request.path != PATH:
        raise AnthropicError(404, f"Not found: {request.method} {request.path}")
    if request.method != "POST":
        raise AnthropicError(405, f"Method {request.method} not allowed", "invalid_request_error")
    key = request.headers.get("x-api-key", "").strip()
    if not key:
        raise AnthropicError(401, "x-api-key header is required")
    if key == BAD_KEY:
        raise AnthropicError(401, "invalid x-api-key")
    version = request.headers.get("anthropic-version")
    if not version:
        raise AnthropicError(400, "anthropic-version: header is required")
    if version not in VERSIONS:
        raise AnthropicError(400, f"anthropic-version: invalid version {version!r}")


def _directive_error(status: int, d: dict[str, Any]) -> AnthropicError:
    over = d.get("error") if isinstance(d.get("error"), dict) else {}
    default = "Overloaded" if status == 529 else f"Simulated upstream error (HTTP {status})."
    return AnthropicError(status, str(over.get("message", default)), over.get("type"))


async def handle(sim: Simulator, request: NativeRequest, receive: Receive, send: Send) -> None:
    try:
        _authorize(request)
        if request.json is None:
            raise AnthropicError(400, "There was an error parsing the body of your request.")
        body = validate(request.json)
        oai = openai_body(body)
        plan = make_plan(oai, None, sim.defaults)
    except AnthropicError as err:
        await send_json(send, err.status, err.body())
        return
    except SimError as err:  # a malformed directive, or a check make_plan makes
        await send_json(send, err.status, AnthropicError(err.status, err.message).body())
        return
    reply = make_reply(plan, body, oai)
    if not plan.stream and not (plan.directive.keys() & GUARDED_KEYS):
        await send_json(send, 200, reply.message())
        return
    flow = Flow(sim, plan.stream)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_disconnect, receive, nursery.cancel_scope)
            await _answer(reply, send, flow)
            nursery.cancel_scope.cancel()
    finally:
        flow.abandon()


async def _answer(reply: Reply, send: Send, flow: Flow) -> None:
    d = reply.plan.directive
    if d.get("hang"):
        await trio.sleep_forever()
    delay = float(d.get("delay") or 0)
    if delay > 0:
        await trio.sleep(delay)
    extra = extra_headers(d)
    status = int(d.get("status") or 200)
    if status >= 400:
        flow.finish()
        await send_json(send, status, _directive_error(status, d).body(), extra)
    elif not reply.plan.stream:
        flow.finish()
        await send_json(send, 200, reply.message(), extra)
    else:
        await _stream(reply, send, flow, extra)


async def _stream(
    reply: Reply, send: Send, flow: Flow, extra: tuple[tuple[bytes, bytes], ...]
) -> None:
    d = reply.plan.directive
    steps = stream_steps(reply)
    chunk_delay = float(d.get("chunk_delay") or 0)
    drop_after, event_after = d.get("stream_error_after"), d.get("error_event_after")
    given = drop_after if drop_after is not None else event_after
    cut = len(steps) if given is None else int(given)
    last = len(steps) - 1
    headers = [*SSE_HEADERS, request_id(), *extra]
    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for idx, step in enumerate(steps):
            if idx >= 1 and (idx - 1 >= cut or (idx == last and cut < len(steps))):
                flow.finish()  # a deliberate failure, not a client disconnect
                if drop_after is None:
                    error = _directive_error(529, d)
                    payload = {"error": {"type": error.type, "message": error.message}}
                    await send({"type": "http.response.body", "body": _event("error", payload)})
                return  # without a final message, hypercorn drops the connection mid-body
            if idx and chunk_delay > 0:
                await trio.sleep(chunk_delay)
            if idx == last:
                flow.finish()
            await send({"type": "http.response.body", "body": step, "more_body": idx < last})
    except Exception:  # sending after the client left: the stream is over (undone)
        return
