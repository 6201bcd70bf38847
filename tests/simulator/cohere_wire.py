"""The simulated Cohere v2 API: ``POST /cohere/v2/chat`` (JSON or SSE) and ``/cohere/v2/embed``.

Requests are checked as Cohere checks them (``Authorization: Bearer``, unknown fields refused,
roles, content parts, tool messages answering an earlier assistant tool call, ranges of ``p``
and the penalties, ``tool_choice`` only with tools, no ``response_format`` beside tools, embed's
``input_type`` and ``output_dimension``) and refused with Cohere's body ``{"id", "message"}``.

Replies come from ``completion.make_plan`` / ``embedding.make_embedding_plan`` on an equivalent
OpenAI body, so texts and counts match the OpenAI-wire simulator: ``usage.billed_units`` carries
the plan's counts, ``usage.tokens.input_tokens`` adds ``TEMPLATE_TOKENS`` (Cohere's prompt
template, which is not billed). With ``thinking`` enabled the reply opens with a ``thinking``
part; a tool call comes with a ``tool_plan``. Streams are SSE with ``event:`` and ``data:``
lines (the data object repeats its ``type``), ending after ``message-end`` (no ``[DONE]``).

Cohere-only directives (the other simulated providers ignore them, so a cascade can fall back):
``cohere_status`` (as ``status``), ``cohere_finish`` (the finish reason to report, e.g.
``"ERROR"``, with ``delta.error`` / ``error`` set).
"""

from __future__ import annotations

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
from .completion import Plan, SimError, dumps, make_plan, rand_id
from .embedding import EmbeddingPlan, encode_base64, make_embedding_plan, vector
from .native import NativeRequest

if TYPE_CHECKING:
    from .app import Simulator

TEMPLATE_TOKENS: Final = 7
ARG_FRAGMENT: Final = 8
BAD_KEY: Final = "sk-bad"
CHAT_PATH: Final = "/cohere/v2/chat"
EMBED_PATH: Final = "/cohere/v2/embed"
_CHAT_FIELDS: Final = frozenset(
    {
        "model", "messages", "tools", "strict_tools", "documents", "citation_options",
        "response_format", "safety_mode", "max_tokens", "stop_sequences", "temperature", "seed",
        "frequency_penalty", "presence_penalty", "k", "p", "logprobs", "tool_choice", "thinking",
        "priority", "stream",
    }
)  # fmt: skip
_EMBED_FIELDS: Final = frozenset(
    {
        "model", "input_type", "texts", "images", "inputs", "max_tokens", "output_dimension",
        "embedding_types", "truncate", "priority",
    }
)  # fmt: skip
_INPUT_TYPES: Final = frozenset(
    {"search_document", "search_query", "classification", "clustering", "image"}
)
_EMBEDDING_TYPES: Final = ("float", "base64")
_DIMENSIONS: Final = (256, 512, 1024, 1536)
_FINISH: Final = {"stop": "COMPLETE", "length": "MAX_TOKENS", "tool_calls": "TOOL_CALL"}


class CohereError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> bytes:
        return dumps({"id": rand_id(""), "message": self.message})


def _bad(message: str) -> CohereError:
    return CohereError(400, f"invalid request: {message}")


def _check_auth(headers: dict[str, str]) -> None:
    scheme, _, key = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise CohereError(401, "no api key supplied")
    if key.strip() == BAD_KEY:
        raise CohereError(401, "invalid api token")


def _number(body: dict[str, Any], name: str, lo: float, hi: float | None) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"{name} must be a number")
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise _bad(f"{name} must be {bound}, received {value}")


def _text_parts(content: Any, where: str, allowed: frozenset[str]) -> tuple[str, list[Any]]:
    """(text, OpenAI parts) of a Cohere content value (string or typed parts)."""
    if isinstance(content, str):
        return content, [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise _bad(f"{where}.content must be a string or an array of content parts")
    texts, parts = [], []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in allowed:
            raise _bad(f"{where}.content: unsupported content type {kind!r}")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise _bad(f"{where}.content: a text part needs 'text'")
            texts.append(part["text"])
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            url = part.get("image_url")
            if not isinstance(url, dict) or not isinstance(url.get("url"), str):
                raise _bad(f"{where}.content: image_url.url is required")
            parts.append({"type": "image_url", "image_url": {"url": url["url"]}})
        elif kind == "thinking" and not isinstance(part.get("thinking"), str):
            raise _bad(f"{where}.content: a thinking part needs 'thinking'")
    return " ".join(texts), parts


def _messages(raw: Any) -> list[dict[str, Any]]:
    """Cohere messages → the equivalent OpenAI messages, refusing what Cohere refuses."""
    if not isinstance(raw, list) or not raw:
        raise _bad("messages is required and must be a non-empty array")
    out: list[dict[str, Any]] = []
    asked: set[str] = set()
    for i, msg in enumerate(raw):
        where = f"messages[{i}]"
        role = msg.get("role") if isinstance(msg, dict) else None
        if role == "system":
            out.append(
                {
                    "role": "system",
                    "content": _text_parts(msg.get("content"), where, frozenset({"text"}))[1],
                }
            )
        elif role == "user":
            if "content" not in msg:
                raise _bad(f"{where}.content is required")
            parts = _text_parts(msg["content"], where, frozenset({"text", "image_url"}))[1]
            out.append({"role": "user", "content": parts})
        elif role == "assistant":
            out.append(_assistant(msg, where, asked))
        elif role == "tool":
            call_id = msg.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise _bad(f"{where}.tool_call_id is required")
            if call_id not in asked:
                raise _bad(f"{where}: tool_call_id {call_id!r} does not match a tool call")
            if "content" not in msg:
                raise _bad(f"{where}.content is required")
            text = _text_parts(msg["content"], where, frozenset({"text", "document"}))[0]
            out.append({"role": "tool", "tool_call_id": call_id, "content": text})
        else:
            raise _bad(f"{where}.role must be one of system, user, assistant, tool")
    return out


def _assistant(msg: dict[str, Any], where: str, asked: set[str]) -> dict[str, Any]:
    calls = msg.get("tool_calls")
    text = ""
    if msg.get("content") is not None:
        text = _text_parts(msg["content"], where, frozenset({"text", "thinking"}))[0]
    elif not calls:
        raise _bad(f"{where}: an assistant message needs content or tool_calls")
    for call in calls or ():
        fn = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(call.get("id"), str)
            or call.get("type", "function") != "function"
            or not isinstance(fn, dict)
            or not isinstance(fn.get("name"), str)
            or not isinstance(fn.get("arguments"), str)
        ):
            raise _bad(f"{where}.tool_calls: each needs id, type function, name and arguments")
        asked.add(call["id"])
    if msg.get("tool_plan") is not None and not isinstance(msg["tool_plan"], str):
        raise _bad(f"{where}.tool_plan must be a string")
    return {"role": "assistant", "content": text}


def _tools(body: dict[str, Any], openai: dict[str, Any]) -> None:
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools is not None:
        if not isinstance(tools, list):
            raise _bad("tools must be an array")
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if tool.get("type") != "function" or not isinstance(fn, dict):
                raise _bad(f"tools[{i}]: type must be function with a function object")
            if not isinstance(fn.get("name"), str) or not isinstance(fn.get("parameters"), dict):
                raise _bad(f"tools[{i}].function needs name and parameters")
            if set(fn) - {"name", "description", "parameters"}:
                raise _bad(f"tools[{i}].function: unknown field")
        if tools:
            openai["tools"] = tools
    if choice is not None:
        if choice not in ("REQUIRED", "NONE"):
            raise _bad("tool_choice must be one of REQUIRED, NONE")
        if not tools:
            raise _bad("tool_choice requires tools to be specified")
        openai["tool_choice"] = "required" if choice == "REQUIRED" else "none"
    fmt = body.get("response_format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object"):
            raise _bad("response_format.type must be one of text, json_object")
        if "json_schema" in fmt and not isinstance(fmt["json_schema"], dict):
            raise _bad("response_format.json_schema must be an object")
        if fmt["type"] == "json_object" and tools:
            raise _bad("response_format is not supported with tools")


@dataclass(slots=True)
class Chat:
    plan: Plan
    body: dict[str, Any]
    stopped: bool  # the reply was cut at a stop sequence


def _chat_plan(sim: Simulator, body: Any) -> Chat:
    if not isinstance(body, dict):
        raise _bad("body must be a JSON object")
    if unknown := sorted(set(body) - _CHAT_FIELDS):
        raise _bad(f"unknown field: {unknown[0]}")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _bad("model is required")
    openai: dict[str, Any] = {"model": body["model"], "messages": _messages(body.get("messages"))}
    _tools(body, openai)
    _number(body, "temperature", 0, None)
    _number(body, "p", 0.01, 0.99)
    _number(body, "k", 0, 500)
    _number(body, "frequency_penalty", 0, 1)
    _number(body, "presence_penalty", 0, 1)
    limit = body.get("max_tokens")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise _bad("max_tokens must be a positive integer")
        openai["max_tokens"] = limit
    stops = body.get("stop_sequences")
    if stops is not None:
        if (
            not isinstance(stops, list)
            or len(stops) > 5
            or not all(isinstance(s, str) for s in stops)
        ):
            raise _bad("stop_sequences must be an array of at most 5 strings")
        openai["stop"] = stops
    thinking = body.get("thinking")
    if thinking is not None and (
        not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled")
    ):
        raise _bad("thinking.type must be one of enabled, disabled")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise _bad("stream must be a boolean")
    try:
        plan = make_plan(openai, None, sim.defaults)
        stopped = False
        if "stop" in openai and plan.finish_reason == "stop":
            del openai["stop"]
            stopped = make_plan(openai, None, sim.defaults).tokens != plan.tokens
    except SimError as err:
        raise CohereError(err.status, f"invalid request: {err.message}") from None
    return Chat(plan, body, stopped)


def _usage(plan: Plan) -> dict[str, Any] | None:
    u = plan.usage
    if u is None:
        return None
    prompt, completion = u["prompt_tokens"], u["completion_tokens"]
    return {
        "billed_units": {"input_tokens": prompt, "output_tokens": completion},
        "tokens": {"input_tokens": prompt + TEMPLATE_TOKENS, "output_tokens": completion},
        "cached_tokens": u["prompt_tokens_details"]["cached_tokens"],
    }


def _finish(plan: Plan, stopped: bool) -> str:
    if isinstance(forced := plan.directive.get("cohere_finish"), str):
        return forced
    if plan.finish_reason == "stop" and stopped:
        return "STOP_SEQUENCE"
    return _FINISH.get(plan.finish_reason, "COMPLETE")


def _thinking(chat: Chat) -> str | None:
    t = chat.body.get("thinking")
    if isinstance(t, dict) and t.get("type") == "enabled":
        return "Let me think about the answer."
    return None


def _tool_plan(plan: Plan) -> str:
    return "I will call " + ", ".join(name for name, _ in plan.tool_calls or ()) + "."


def chat_body(chat: Chat) -> bytes:
    plan = chat.plan
    message: dict[str, Any] = {"role": "assistant"}
    if plan.tool_calls is not None:
        message["tool_plan"] = _tool_plan(plan)
        message["tool_calls"] = [
            {"id": rand_id("call_"), "type": "function", "function": {"name": n, "arguments": a}}
            for n, a in plan.tool_calls
        ]
    else:
        content: list[dict[str, Any]] = []
        if (thought := _thinking(chat)) is not None:
            content.append({"type": "thinking", "thinking": thought})
        content.append({"type": "text", "text": "".join(plan.tokens)})
        message["content"] = content
    out: dict[str, Any] = {
        "id": rand_id(""),
        "finish_reason": _finish(plan, chat.stopped),
        "message": message,
    }
    if out["finish_reason"] in ("ERROR", "TIMEOUT"):
        out["error"] = "simulated generation failure"
    if (usage := _usage(plan)) is not None:
        out["usage"] = usage
    return dumps(out)


def _event(kind: str, **fields: Any) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + dumps({"type": kind, **fields}) + b"\n\n"


def stream_events(chat: Chat) -> list[tuple[bool, bytes]]:
    """The SSE events of a streamed answer, in Cohere's order, each marked when it carries
    generated text or arguments (``stream_error_after`` counts those)."""
    plan = chat.plan
    start = {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}
    events = [_event("message-start", id=rand_id(""), delta={"message": start})]
    if plan.tool_calls is not None:
        for word in _tool_plan(plan).split(" "):
            events.append(_event("tool-plan-delta", delta={"message": {"tool_plan": word + " "}}))
        for i, (name, args) in enumerate(plan.tool_calls):
            call = {
                "id": rand_id("call_"),
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            events.append(
                _event("tool-call-start", index=i, delta={"message": {"tool_calls": call}})
            )
            for j in range(0, len(args), ARG_FRAGMENT):
                fragment = {"tool_calls": {"function": {"arguments": args[j : j + ARG_FRAGMENT]}}}
                events.append(_event("tool-call-delta", index=i, delta={"message": fragment}))
            events.append(_event("tool-call-end", index=i))
    else:
        index = 0
        if (thought := _thinking(chat)) is not None:
            head = {"content": {"type": "thinking", "thinking": ""}}
            events.append(_event("content-start", index=0, delta={"message": head}))
            piece = {"content": {"thinking": thought}}
            events.append(_event("content-delta", index=0, delta={"message": piece}))
            events.append(_event("content-end", index=0))
            index = 1
        head = {"content": {"type": "text", "text": ""}}
        events.append(_event("content-start", index=index, delta={"message": head}))
        for tok in plan.tokens:
            piece = {"content": {"text": tok}}
            events.append(_event("content-delta", index=index, delta={"message": piece}))
        events.append(_event("content-end", index=index))
    end: dict[str, Any] = {"finish_reason": _finish(plan, chat.stopped)}
    if end["finish_reason"] in ("ERROR", "TIMEOUT"):
        end["error"] = "simulated generation failure"
    if (usage := _usage(plan)) is not None:
        end["usage"] = usage
    events.append(_event("message-end", id=rand_id(""), delta=end))
    return [(b'"type":"content-delta"' in e or b'"type":"tool-call-delta"' in e, e) for e in events]


Embed = tuple[EmbeddingPlan, list[str], list[str]]  # the plan, texts, embedding types


def _embed_plan(sim: Simulator, body: Any) -> Embed:
    if not isinstance(body, dict):
        raise _bad("body must be a JSON object")
    if unknown := sorted(set(body) - _EMBED_FIELDS):
        raise _bad(f"unknown field: {unknown[0]}")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _bad("model is required")
    if body.get("input_type") not in _INPUT_TYPES:
        raise _bad("input_type is required and must be one of " + ", ".join(sorted(_INPUT_TYPES)))
    texts = body.get("texts")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
        raise _bad("texts must be a non-empty array of non-empty strings")
    if len(texts) > 96:
        raise _bad(f"too many texts: {len(texts)} (at most 96)")
    types = body.get("embedding_types", ["float"])
    if not isinstance(types, list) or not types or any(t not in _EMBEDDING_TYPES for t in types):
        raise _bad("embedding_types: the simulator serves float and base64")
    dims = body.get("output_dimension")
    if dims is not None and dims not in _DIMENSIONS:
        raise _bad("output_dimension must be one of 256, 512, 1024, 1536")
    openai: dict[str, Any] = {"model": body["model"], "input": texts}
    if dims is not None:
        openai["dimensions"] = dims
    try:
        return make_embedding_plan(openai, None, sim.defaults), texts, types
    except SimError as err:
        raise CohereError(err.status, f"invalid request: {err.message}") from None


def embed_body(plan: EmbeddingPlan, texts: list[str], types: list[str]) -> bytes:
    vectors = [vector(seed, plan.native, plan.dimensions) for seed in plan.seeds]
    embeddings: dict[str, Any] = {}
    if "float" in types:
        embeddings["float"] = vectors
    if "base64" in types:
        embeddings["base64"] = [encode_base64(v) for v in vectors]
    meta: dict[str, Any] = {"api_version": {"version": "2"}}
    if plan.usage is not None:
        meta["billed_units"] = {"input_tokens": plan.usage["prompt_tokens"]}
    return dumps(
        {
            "id": rand_id(""),
            "embeddings": embeddings,
            "texts": texts,
            "meta": meta,
            "response_type": "embeddings_by_type",
        }
    )


async def handle(sim: Simulator, request: NativeRequest, receive: Receive, send: Send) -> None:
    try:
        if request.path not in (CHAT_PATH, EMBED_PATH):
            raise CohereError(404, f"{request.method} {request.path} not found")
        if request.method != "POST":
            raise CohereError(405, "method not allowed")
        _check_auth(request.headers)
        if request.json is None:
            raise _bad("body must be valid JSON")
        answer: Chat | Embed
        if request.path == CHAT_PATH:
            answer = _chat_plan(sim, request.json)
            directive, stream = answer.plan.directive, answer.body.get("stream") is True
        else:
            answer = _embed_plan(sim, request.json)
            directive, stream = answer[0].directive, False
    except CohereError as err:
        await send_json(send, err.status, err.body())
        return
    if not stream and not (directive.keys() & (GUARDED_KEYS | {"cohere_status"})):
        await send_json(send, 200, _render(answer))
        return
    flow = Flow(sim, stream)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_disconnect, receive, nursery.cancel_scope)
            await _answer(answer, directive, send, flow)
            nursery.cancel_scope.cancel()
    finally:
        flow.abandon()


def _render(answer: Chat | Embed) -> bytes:
    if isinstance(answer, Chat):
        return chat_body(answer)
    return embed_body(*answer)


async def _answer(
    answer: Chat | Embed,
    d: dict[str, Any],
    send: Send,
    flow: Flow,
) -> None:
    if d.get("hang"):
        await trio.sleep_forever()
    if (delay := float(d.get("delay") or 0)) > 0:
        await trio.sleep(delay)
    extra = extra_headers({**d, "status": d.get("cohere_status") or d.get("status")})
    status = int(d.get("cohere_status") or d.get("status") or 200)
    if status >= 400:
        flow.finish()
        over = d.get("error") if isinstance(d.get("error"), dict) else {}
        message = str(over.get("message", f"Simulated upstream error (HTTP {status})."))
        await send_json(send, status, CohereError(status, message).body(), extra)
    elif not flow.stream or not isinstance(answer, Chat):
        flow.finish()
        await send_json(send, 200, _render(answer), extra)
    else:
        await _stream(answer, send, flow, extra)


async def _stream(
    chat: Chat, send: Send, flow: Flow, extra: tuple[tuple[bytes, bytes], ...]
) -> None:
    d = chat.plan.directive
    events = stream_events(chat)
    chunk_delay = float(d.get("chunk_delay") or 0)
    raw_after = d.get("stream_error_after")
    error_after = None if raw_after is None else int(raw_after)
    deltas = 0
    try:
        headers = [*SSE_HEADERS, request_id(), *extra]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for idx, (is_delta, event) in enumerate(events):
            last = idx == len(events) - 1
            if error_after is not None and ((is_delta and deltas >= error_after) or last):
                flow.finish()  # a deliberate abort: hypercorn drops the connection mid-body
                return
            deltas += is_delta
            if idx and chunk_delay > 0:
                await trio.sleep(chunk_delay)
            if last:
                flow.finish()
            await send({"type": "http.response.body", "body": event, "more_body": not last})
    except Exception:  # sending after the client left: the stream is over (undone)
        return
