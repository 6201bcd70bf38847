"""Turning a Chat Completions request into a deterministic reply (a ``Plan``), and rendering it.

Rules (see the package docstring for the directive reference):

* reply text: ``"Echo: " + <text of the last user message>`` (directives stripped), or the
  ``reply`` directive, or ``replies[k]`` where k is the number of assistant messages in the
  request (the last entry once k runs past the list: a model answering re-prompts), or an
  object mapping a model id to such a list (other models answer as without it); tokens
  are ``\\s*\\S+`` runs, so streamed deltas concatenate to the content.
* ``prompt_tokens`` = whitespace words across all messages' text + 3 per message
  + ``IMAGE_TOKENS`` per image part; ``completion_tokens`` = reply tokens x ``n``
  (tool calls: 1 + words of the arguments JSON, per call) + ``reasoning_tokens``.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Any, Final

try:
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    def loads(data: bytes) -> Any:
        return orjson.loads(data)

except ImportError:  # pragma: no cover - orjson is a project dependency
    _ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

    def dumps(obj: Any) -> bytes:
        return _ENCODER.encode(obj).encode()

    def loads(data: bytes) -> Any:
        return json.loads(data)


IMAGE_TOKENS: Final = 85
PER_MESSAGE_TOKENS: Final = 3
MAX_N: Final = 8
FINGERPRINT: Final = "fp_sim"

_TOKEN_RE: Final = re.compile(r"\s*\S+")
_DECODER: Final = json.JSONDecoder()
_IMAGE_PARTS: Final = frozenset({"image_url", "input_image", "image"})


def rand_id(prefix: str) -> str:
    """``prefix`` + 24 random lower-case hex characters (alphanumeric, cheap)."""
    return f"{prefix}{random.getrandbits(96):024x}"


class SimError(Exception):
    """An HTTP error the simulator answers with an OpenAI-style error body."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers

    def body(self) -> bytes:
        err = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return dumps({"error": err})


def error_type_for(status: int) -> str:
    if status >= 500:
        return "server_error"
    return _ERROR_TYPES.get(status, "invalid_request_error")


_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def _bad(message: str, param: str | None = None, code: str | None = None) -> SimError:
    return SimError(400, message, param=param, code=code)


def strip_directives(text: str, into: dict[str, Any]) -> str:
    """Remove every ``#sim{...}`` from ``text``, merging the JSON objects into ``into``."""
    if "#sim{" not in text:
        return text
    parts: list[str] = []
    pos = 0
    while (start := text.find("#sim{", pos)) >= 0:
        try:
            obj, end = _DECODER.raw_decode(text, start + 4)
        except ValueError as exc:
            raise _bad(f"simulator: malformed #sim directive: {exc}") from None
        if not isinstance(obj, dict):
            raise _bad("simulator: #sim directive must be a JSON object")
        into.update(obj)
        parts.append(text[pos:start])
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


def _content_text(content: Any) -> tuple[str, int]:
    """(text, image count) of a message's ``content`` (string or array of parts)."""
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        return "", 0
    texts: list[str] = []
    images = 0
    for part in content:
        if isinstance(part, dict):
            kind = part.get("type")
            if kind == "text" or kind == "input_text":
                texts.append(str(part.get("text", "")))
            elif kind in _IMAGE_PARTS:
                images += 1
    return " ".join(texts), images


def _sets_tool_call(content: Any) -> bool:
    found: dict[str, Any] = {}
    strip_directives(_content_text(content)[0], found)
    return "tool_call" in found


@dataclass(slots=True)
class Plan:
    """Everything needed to answer one chat request."""

    model: str
    stream: bool
    include_usage: bool
    n: int
    directive: dict[str, Any]
    tokens: list[str]
    finish_reason: str
    tool_calls: list[tuple[str, str]] | None  # (name, arguments JSON)
    logprobs: bool
    top_logprobs: int
    usage: dict[str, Any] | None


def _int_param(body: dict[str, Any], name: str, lo: int, hi: int | None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < lo
        or (hi is not None and value > hi)
    ):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise _bad(f"Invalid '{name}': must be an integer {bound}.", name, "invalid_value")
    return value


def _tool_calls(body: dict[str, Any], directive: dict[str, Any]) -> list[tuple[str, str]] | None:
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if choice is not None and not tools:
        raise _bad(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            "tool_choice",
        )
    first: str | None = None
    if tools:
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise _bad("Invalid 'tools': expected an array of objects.", "tools", "invalid_type")
        fn = tools[0].get("function")
        first = fn.get("name") if isinstance(fn, dict) else None
    forced: str | None = None
    if choice == "required":
        forced = first
    elif isinstance(choice, dict) and choice.get("type") == "function":
        fn = choice.get("function")
        forced = fn.get("name") if isinstance(fn, dict) else None
    wanted = directive.get("tool_call")
    if wanted is None:
        return None if forced is None else [(forced, "{}")]
    calls: list[tuple[str, str]] = []
    for call in wanted if isinstance(wanted, list) else [wanted]:
        spec = call if isinstance(call, dict) else {}
        args = spec.get("arguments", {})
        name = spec.get("name") or forced or first or "function"
        calls.append((str(name), args if isinstance(args, str) else dumps(args).decode()))
    return calls


def _cut(text: str, stop: Any, limit: int | None) -> tuple[list[str], str]:
    finish = "stop"
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else ()
    cut = len(text)
    for s in stops:
        if isinstance(s, str) and s and (i := text.find(s)) >= 0 and i < cut:
            cut = i
    tokens = _TOKEN_RE.findall(text[:cut] if cut < len(text) else text)
    if limit is not None and len(tokens) > limit:
        tokens = tokens[:limit]
        finish = "length"
    return tokens, finish


def _usage(
    prompt: int, completion: int, directive: dict[str, Any], cached: int = 0
) -> dict[str, Any]:
    over = directive.get("usage")
    over = over if isinstance(over, dict) else {}
    reasoning = int(over.get("reasoning_tokens", directive.get("reasoning_tokens", 0)) or 0)
    prompt = int(over.get("prompt_tokens", prompt))
    completion = int(over.get("completion_tokens", completion + reasoning))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(over.get("total_tokens", prompt + completion)),
        "prompt_tokens_details": {
            "cached_tokens": int(over.get("cached_tokens", cached)),
            "audio_tokens": 0,
        },
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def make_plan(body: Any, model: str | None, defaults: dict[str, Any] | None = None) -> Plan:
    """Interpret a parsed request body; ``model`` overrides ``body["model"]`` (Azure)."""
    if not isinstance(body, dict):
        raise _bad("Invalid body: expected a JSON object.", None, "invalid_type")
    if model is None:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _bad("you must provide a model parameter")
    messages = body.get("messages")
    if messages is None:
        raise _bad(
            "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    if not isinstance(messages, list):
        raise _bad("Invalid type for 'messages': expected an array.", "messages", "invalid_type")
    if not messages:
        raise _bad(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            "messages",
            "empty_array",
        )
    directive: dict[str, Any] = dict(defaults) if defaults else {}
    words = PER_MESSAGE_TOKENS * len(messages)
    last_user = ""
    answered = 0  # assistant messages so far
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise _bad(
                f"Invalid 'messages[{i}]': expected an object with a 'role'.",
                f"messages[{i}]",
                "invalid_type",
            )
        text, images = _content_text(msg.get("content"))
        had_call = "tool_call" in directive
        text = strip_directives(text, directive)
        words += len(text.split()) + IMAGE_TOKENS * images
        if msg["role"] == "user":
            last_user = text
        elif msg["role"] == "assistant":
            answered += 1
        elif (
            msg["role"] == "tool"
            and had_call
            and directive.get("tool_call") is not None
            and not _sets_tool_call(msg.get("content"))
        ):
            # A model answers the tool results it asked for: the calls asked for before them
            # are not made again unless a later message asks anew.
            directive.pop("tool_call")
    n = _int_param(body, "n", 1, MAX_N) or 1
    limit = _int_param(body, "max_completion_tokens", 1, None)
    if limit is None:
        limit = _int_param(body, "max_tokens", 1, None)
    top = _int_param(body, "top_logprobs", 0, 20) or 0
    calls = _tool_calls(body, directive)
    if calls is None:
        replies = directive.get("replies")
        if isinstance(replies, dict):
            replies = replies.get(model)
        if isinstance(replies, list) and replies:
            reply = replies[min(answered, len(replies) - 1)]
        else:
            reply = directive["reply"] if "reply" in directive else "Echo: " + last_user.strip()
        tokens, finish = _cut(str(reply), body.get("stop"), limit)
        completion = len(tokens) * n
    else:
        tokens, finish = [], "tool_calls"
        completion = sum(1 + len(args.split()) for _, args in calls) * n
    opts = body.get("stream_options")
    stream = body.get("stream") is True
    no_usage = bool(directive.get("no_usage"))
    return Plan(
        model=model,
        stream=stream,
        include_usage=stream
        and isinstance(opts, dict)
        and opts.get("include_usage") is True
        and not no_usage,
        n=n,
        directive=directive,
        tokens=tokens,
        finish_reason=finish,
        tool_calls=calls,
        logprobs=body.get("logprobs") is True,
        top_logprobs=top,
        usage=None if no_usage else _usage(words, completion, directive),
    )
