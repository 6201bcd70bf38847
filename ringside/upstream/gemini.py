"""Adapter for Google's Gemini API (``generativelanguage.googleapis.com``, ``v1beta``).

Chat goes to ``models/{model}:generateContent`` (``:streamGenerateContent?alt=sse`` for
streams) and embeddings to ``models/{model}:batchEmbedContents``, authenticated with the
``x-goog-api-key`` header. The OpenAI body is translated field by field:

* messages → ``contents`` (user → ``user``, assistant → ``model``); system and developer
  messages → ``systemInstruction`` (all of them, in order: Gemini has one); tool results →
  ``functionResponse`` parts ``{id, name, response: {"output": <text>}}`` of one user turn,
  the name recovered from the assistant message whose ``tool_calls`` hold the same id.
* images: a ``data:`` URL → ``inlineData``; an http(s) URL → ``fileData`` with the MIME type
  guessed from the URL's extension (image/jpeg when it has none): Gemini fetches the URL
  itself, so it must be public (or a Files API / Cloud Storage URI).
* ``generationConfig``: temperature, topP, maxOutputTokens, stopSequences, candidateCount
  (``n``), seed, presence/frequency penalties; ``response_format`` → ``responseMimeType``
  application/json (+ the schema, natively, as ``responseJsonSchema``); ``reasoning_effort``
  → ``thinkingConfig.thinkingBudget`` (``_BUDGETS``) with ``includeThoughts``, the thought
  summaries coming back as ``reasoning_content``.
* tools → ``functionDeclarations`` with the JSON schema as ``parametersJsonSchema``;
  ``tool_choice`` auto/none/required/forced → AUTO/NONE/ANY/ANY + ``allowedFunctionNames``.

Tool call ids: Gemini's own ``functionCall.id`` when it sends one (it travels back as
``functionCall.id`` / ``functionResponse.id``), else a generated ``call_…`` that stays here:
Gemini pairs calls and results by position, so the results of a step are sent in the order
of its calls, whatever order the client answered them in.

Gemini 3 models sign their function calls (``thoughtSignature``) and refuse a history that
drops the signature: it is returned on the tool call as
``extra_content.google.thought_signature`` (the shape Google's own OpenAI-compatible
endpoint uses) and sent back from there; a call replayed without it gets Google's
documented ``skip_thought_signature_validator``.

Finish reasons: STOP → stop (tool_calls when the candidate called functions), MAX_TOKENS →
length, the safety family → content_filter; a blocked prompt (``promptFeedback.blockReason``,
no candidates) answers choices with ``content: null`` and ``finish_reason: content_filter``.
Usage: prompt = promptTokenCount (+ toolUsePromptTokenCount), cached = cachedContentTokenCount,
completion = candidatesTokenCount + thoughtsTokenCount, reasoning = thoughtsTokenCount.

A Gemini SSE stream just ends (no ``[DONE]``): the payload carrying a ``finishReason`` (or a
prompt block) is taken as the last one, and the finish chunk, the usage chunk (from the last
``usageMetadata`` seen) and ``[DONE]`` follow it.
"""

from __future__ import annotations

import base64
import math
import mimetypes
import re
import struct
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from ringside.errors import InvalidRequest, NoActiveProviderKeys, RingsideError, UpstreamError
from ringside.tokens import TokenUsage, estimate_tokens
from ringside.upstream.adapter import Exchange, JsonReply, UpstreamStream, parsed_url, read_json
from ringside.upstream.sending import upstream_error
from ringside.upstream.shapes import (
    DONE,
    StreamState,
    completion,
    content_text,
    function_call,
    max_output,
    message,
    stop_sequences,
    tool_arguments,
    tool_call_id,
    tool_choice,
)
from ringside.upstream.sse import SSEDecoder

_API_VERSION = "v1beta"
_JSON = "application/json"
# Google's documented value for a function call that has no signature of its own (a call
# replayed by a client that dropped it, or made by another model).
SKIP_SIGNATURE = "skip_thought_signature_validator"
# reasoning_effort → thinkingBudget, as Google maps it on its OpenAI-compatible endpoint
# (none 0, low 1K, medium 8K, high 24K); minimal gets Flash-Lite's smallest budget.
_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576}
_BUDGETS |= {"xhigh": 24576, "max": 24576}  # 24K: the largest budget Flash takes
_FILTERED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"})
_FILTERED |= {"IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION"}
_TOOL_CHOICE_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY", "function": "ANY"}
_EMBED_BATCH = 100  # batchEmbedContents takes at most 100 requests
_GENERATED_ID = re.compile(r"call_[0-9a-f]{24}")  # shapes.tool_call_id()


def _model_path(model: str) -> str:
    return model if "/" in model else f"models/{model}"


def _url(x: Exchange, method: str) -> httpx.URL:
    if not x.provider.base_url:
        raise NoActiveProviderKeys("Provider 'gemini' has no base URL (set GEMINI_BASE_URL).")
    query = "?alt=sse" if method == "streamGenerateContent" else ""
    return parsed_url(
        f"{x.provider.base_url}/{_API_VERSION}/{_model_path(x.model)}:{method}{query}"
    )


async def _post(x: Exchange, method: str, body: dict[str, Any], stream: bool) -> httpx.Response:
    target = _url(x, method)
    content = orjson.dumps(body)
    timeout = x.timeout(stream)
    accept = "text/event-stream" if stream else _JSON

    def build(key: str | None) -> httpx.Request:
        headers = {"content-type": _JSON, "accept": accept}
        if key is not None:
            headers["x-goog-api-key"] = key
        return x.http.build_request(
            "POST", target, content=content, headers=headers, timeout=timeout
        )

    return await x.send(build, stream=stream)


# ---------------------------------------------------------------- request translation


def _bad(message: str, param: str | None = None) -> InvalidRequest:
    return InvalidRequest(message, param=param)


def _media(url: Any, param: str) -> dict[str, Any]:
    if not isinstance(url, str) or not url:
        raise _bad("An image part needs an 'image_url.url'.", param)
    if url.startswith("data:"):
        head, sep, data = url[5:].partition(",")
        mime, _, encoding = head.partition(";")
        if not sep or encoding != "base64" or not mime:
            raise _bad("A data: URL must be 'data:<mime type>;base64,<data>'.", param)
        return {"inlineData": {"mimeType": mime, "data": data}}
    if url.startswith(("http://", "https://", "gs://")):
        mime = mimetypes.guess_type(urlsplit(url).path)[0] or "image/jpeg"
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    raise _bad("An image URL must be an http(s) URL or a base64 data: URL.", param)


def _user_parts(content: Any, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else ():
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            parts.append(_media(image.get("url") if isinstance(image, dict) else image, param))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            mime = f"audio/{audio.get('format') or 'wav'}"
            parts.append({"inlineData": {"mimeType": mime, "data": audio.get("data") or ""}})
        elif (
            kind == "file" and isinstance(part.get("file"), dict) and part["file"].get("file_data")
        ):
            parts.append(_media(part["file"]["file_data"], param))
        else:
            raise _bad(f"Gemini does not take {kind!r} content parts here.", param)
    return parts


def _signature(call: dict[str, Any]) -> str | None:
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    sig = google.get("thought_signature") if isinstance(google, dict) else None
    return sig if isinstance(sig, str) and sig else None


def _gemini_id(call_id: Any) -> bool:
    """Is this tool call id Gemini's own (sent back), rather than one generated here (Gemini
    pairs calls and results by position then, and has never seen the id)?"""
    return isinstance(call_id, str) and bool(call_id) and not _GENERATED_ID.fullmatch(call_id)


def _model_parts(
    msg: dict[str, Any], calls_by_id: dict[str, tuple[str, int]], param: str
) -> list[dict[str, Any]]:
    text = content_text(msg.get("content"))
    parts: list[dict[str, Any]] = [{"text": text}] if text else []
    legacy = msg.get("function_call")
    calls = list(msg.get("tool_calls") or ())
    if isinstance(legacy, dict):
        calls.append({"function": legacy})
    for i, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _bad("A tool call needs a function name.", f"{param}.tool_calls[{i}]")
        fc: dict[str, Any] = {
            "name": fn["name"],
            "args": tool_arguments(fn.get("arguments"), param),
        }
        call_id = call.get("id")
        if isinstance(call_id, str) and call_id:
            calls_by_id[call_id] = (fn["name"], i)
        if _gemini_id(call_id):
            fc["id"] = call_id
        part: dict[str, Any] = {"functionCall": fc}
        # Gemini signs the first call of a step; a replay without it needs the skip value.
        sig = _signature(call) or (SKIP_SIGNATURE if i == 0 else None)
        if sig is not None:
            part["thoughtSignature"] = sig
        parts.append(part)
    return parts


def _results(content: dict[str, Any] | None) -> bool:
    return bool(
        content
        and content["role"] == "user"
        and all("functionResponse" in p for p in content["parts"])
    )


def _add_result(
    contents: list[dict[str, Any]], part: dict[str, Any], position: int, where: dict[int, int]
) -> None:
    """Tool results of one step go together in one user turn, in the order of the model
    turn's calls (Gemini pairs them by position; OpenAI clients may answer in any order)."""
    where[id(part)] = position
    if _results(contents[-1] if contents else None):
        parts = contents[-1]["parts"]
        parts.append(part)
        parts.sort(key=lambda p: where.get(id(p), 0))
    else:
        contents.append({"role": "user", "parts": [part]})


def contents_of(
    messages: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(systemInstruction parts, contents) of OpenAI chat messages."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    calls_by_id: dict[str, tuple[str, int]] = {}  # tool_call_id -> (name, position in turn)
    positions: dict[int, int] = {}
    for i, msg in enumerate(messages):
        role, param = msg.get("role"), f"messages[{i}]"
        if role in ("system", "developer"):
            if text := content_text(msg.get("content")):
                system.append({"text": text})
        elif role == "user":
            if parts := _user_parts(msg.get("content"), f"{param}.content"):
                contents.append({"role": "user", "parts": parts})
        elif role == "assistant":
            if parts := _model_parts(msg, calls_by_id, param):
                contents.append({"role": "model", "parts": parts})
        elif role in ("tool", "function"):
            call_id = msg.get("tool_call_id") if role == "tool" else None
            name, position = calls_by_id.get(str(call_id), (None, 0))
            name = name if role == "tool" else msg.get("name")
            if not isinstance(name, str):
                raise _bad(
                    f"{param}: a tool message must answer a tool call of a preceding "
                    "assistant message (its tool_call_id names none).",
                    f"{param}.tool_call_id",
                )
            response: dict[str, Any] = {"name": name}
            if _gemini_id(call_id):
                response["id"] = call_id
            # Gemini reads the "output" key as the function's output.
            response["response"] = {"output": content_text(msg.get("content"))}
            _add_result(contents, {"functionResponse": response}, position, positions)
    return system, contents


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    declarations = []
    for i, tool in enumerate(body.get("tools") or ()):
        fn = tool.get("function")
        if tool.get("type") != "function" or not isinstance(fn, dict):
            raise _bad(f"Gemini takes function tools only (tools[{i}]).", f"tools[{i}]")
        declaration: dict[str, Any] = {"name": fn["name"]}
        if fn.get("description"):
            declaration["description"] = fn["description"]
        if fn.get("parameters"):
            declaration["parametersJsonSchema"] = fn["parameters"]
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}] if declarations else []


def _tool_config(body: dict[str, Any]) -> dict[str, Any]:
    mode, name = tool_choice(body)
    if mode not in _TOOL_CHOICE_MODES or (mode == "function" and name is None):
        raise _bad("Unsupported 'tool_choice' for Gemini.", "tool_choice")
    config: dict[str, Any] = {"mode": _TOOL_CHOICE_MODES[mode]}
    if name is not None:
        config["allowedFunctionNames"] = [name]
    return {"functionCallingConfig": config}


def _response_format(body: dict[str, Any], config: dict[str, Any]) -> None:
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("json_object", "json_schema"):
        config["responseMimeType"] = _JSON
    if kind == "json_schema":
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            config["responseJsonSchema"] = schema


def _thinking(body: dict[str, Any], config: dict[str, Any]) -> None:
    effort = body.get("reasoning_effort")
    if effort is None:
        return
    if effort not in _BUDGETS:
        raise _bad(f"'reasoning_effort' must be one of {', '.join(_BUDGETS)}.", "reasoning_effort")
    budget = _BUDGETS[effort]
    config["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": budget > 0}


_SAMPLING = (
    ("temperature", "temperature"),
    ("top_p", "topP"),
    ("seed", "seed"),
    ("presence_penalty", "presencePenalty"),
    ("frequency_penalty", "frequencyPenalty"),
)


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {
        native: body[name] for name, native in _SAMPLING if body.get(name) is not None
    }
    if (limit := max_output(body)) is not None:
        config["maxOutputTokens"] = limit
    if stops := stop_sequences(body):
        config["stopSequences"] = stops
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        config["candidateCount"] = n
    _response_format(body, config)
    _thinking(body, config)
    return config


def request_body(body: dict[str, Any]) -> dict[str, Any]:
    """The ``GenerateContentRequest`` of an OpenAI chat body."""
    system, contents = contents_of(body.get("messages") or [])
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    if tools := _tools(body):
        out["tools"] = tools
        out["toolConfig"] = _tool_config(body)
    if config := _generation_config(body):
        out["generationConfig"] = config
    return out


# --------------------------------------------------------------- response translation


def _count(meta: dict[str, Any], key: str) -> int:
    value = meta.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_of(meta: Any) -> TokenUsage | None:
    if not isinstance(meta, dict):
        return None
    thoughts = _count(meta, "thoughtsTokenCount")
    return TokenUsage(
        input=_count(meta, "promptTokenCount") + _count(meta, "toolUsePromptTokenCount"),
        cached_input=_count(meta, "cachedContentTokenCount"),
        output=_count(meta, "candidatesTokenCount") + thoughts,
        reasoning=thoughts,
    )


def finish_reason(reason: Any, called: bool) -> str:
    if reason in _FILTERED:
        return "content_filter"
    if reason == "MAX_TOKENS":
        return "length"
    return "tool_calls" if called else "stop"


def _tool_call(part: dict[str, Any]) -> dict[str, Any]:
    fc = part["functionCall"]
    call_id = fc.get("id") if isinstance(fc.get("id"), str) and fc.get("id") else tool_call_id()
    args = orjson.dumps(fc.get("args") or {}).decode()
    call = function_call(call_id, str(fc.get("name") or ""), args)
    if isinstance(part.get("thoughtSignature"), str):
        call["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
    return call


def _parts(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def _choice(candidate: dict[str, Any]) -> tuple[dict[str, Any], str]:
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in _parts(candidate):
        if isinstance(part.get("functionCall"), dict):
            calls.append(_tool_call(part))
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") else texts).append(part["text"])
    finish = finish_reason(candidate.get("finishReason"), bool(calls))
    text: str | None = "".join(texts)
    if not texts and (calls or finish == "content_filter"):
        text = None
    return message(text, calls, reasoning="".join(thoughts) or None), finish


def reply_of(model: str, data: dict[str, Any], n: int) -> dict[str, Any]:
    """The ``chat.completion`` of a ``GenerateContentResponse``."""
    candidates = [c for c in data.get("candidates") or () if isinstance(c, dict)]
    candidates.sort(key=lambda c: c.get("index") or 0)
    if candidates:
        choices = [_choice(c) for c in candidates]
    else:
        feedback = data.get("promptFeedback")
        blocked = isinstance(feedback, dict) and bool(feedback.get("blockReason"))
        finish = "content_filter" if blocked else "stop"
        choices = [(message(None), finish) for _ in range(max(n, 1))]
    usage = usage_of(data.get("usageMetadata"))
    out = completion(model, choices, usage or TokenUsage())
    if usage is None:
        del out["usage"]  # none reported: the domain counts
    return out


class GeminiStreamDecoder:
    """SSE ``GenerateContentResponse`` payloads → ``chat.completion.chunk`` payloads (one
    candidate: streams take ``n`` = 1)."""

    def __init__(self, model: str) -> None:
        self._sse = SSEDecoder()
        self._state = StreamState(model)
        self._usage: TokenUsage | None = None
        self._calls = 0
        self._done = False

    def feed(self, raw: bytes) -> list[bytes]:
        out: list[bytes] = []
        for payload in self._sse.feed(raw):
            if self._done:
                break
            try:
                data = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            for event in data if isinstance(data, list) else [data]:
                if isinstance(event, dict) and not self._done:
                    self._event(event, out)
        return out

    def _event(self, data: dict[str, Any], out: list[bytes]) -> None:
        state = self._state
        if isinstance(data.get("error"), dict):
            # Relayed as OpenAI sends a mid-stream error; no [DONE] follows, so the relay
            # ends the call as an upstream failure.
            err = data["error"]
            body = {
                "message": str(err.get("message", "")),
                "type": "api_error",
                "code": err.get("status"),
            }
            out.append(orjson.dumps({"error": body}))
            self._done = True
            return
        if not state.role_sent:
            out.append(state.start())
        if (usage := usage_of(data.get("usageMetadata"))) is not None:
            self._usage = usage
        candidates = data.get("candidates")
        candidate = candidates[0] if isinstance(candidates, list) and candidates else None
        if not isinstance(candidate, dict):
            feedback = data.get("promptFeedback")
            if isinstance(feedback, dict) and feedback.get("blockReason"):
                self._end(out, "content_filter")
            return
        for part in _parts(candidate):
            if isinstance(part.get("functionCall"), dict):
                out.append(self._tool_chunk(part))
            elif isinstance(part.get("text"), str) and part["text"]:
                text = part["text"]
                out.append(state.reasoning(text) if part.get("thought") else state.text(text))
        if candidate.get("finishReason"):
            self._end(out, finish_reason(candidate["finishReason"], self._calls > 0))

    def _tool_chunk(self, part: dict[str, Any]) -> bytes:
        call = _tool_call(part)
        key = str(self._calls)
        self._calls += 1
        fn = call["function"]
        payload = self._state.tool_start(key, call["id"], fn["name"], fn["arguments"])
        if "extra_content" not in call:
            return payload
        chunk = orjson.loads(payload)
        chunk["choices"][0]["delta"]["tool_calls"][0]["extra_content"] = call["extra_content"]
        return orjson.dumps(chunk)

    def _end(self, out: list[bytes], reason: str) -> None:
        out.append(self._state.finish(reason))
        if self._usage is not None:
            out.append(self._state.usage_chunk(self._usage))
        out.append(DONE)
        self._done = True


# ------------------------------------------------------------------------- embeddings


def _embedding_texts(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(item, str) for item in raw):
        return raw
    raise _bad(
        "Gemini embeds text only: 'input' must be a string or an array of strings (token-id "
        "arrays are not supported).",
        "input",
    )


def _unit(values: list[float]) -> list[float]:
    """The vector at unit length, as float32 values: Gemini leaves shortened embeddings
    unnormalised where OpenAI's are unit vectors (so dot products are cosines)."""
    norm = math.hypot(*values) or 1.0
    return list(
        struct.unpack(
            f"<{len(values)}f", struct.pack(f"<{len(values)}f", *(v / norm for v in values))
        )
    )


def _vectors(x: Exchange, data: dict[str, Any], expected: int) -> list[list[float]]:
    embeddings = data.get("embeddings")
    if not isinstance(embeddings, list) or len(embeddings) != expected:
        raise UpstreamError(f"{x.name} returned an unexpected embeddings body.")
    vectors = []
    for item in embeddings:
        values = item.get("values") if isinstance(item, dict) else None
        if not isinstance(values, list) or not values:
            raise UpstreamError(f"{x.name} returned an embedding without values.")
        vectors.append(_unit([float(v) for v in values]))
    return vectors


async def _embed_batch(
    x: Exchange, texts: list[str], dimensions: Any
) -> tuple[list[list[float]], int]:
    model = _model_path(x.model)
    requests = []
    for text in texts:
        request: dict[str, Any] = {"model": model, "content": {"parts": [{"text": text}]}}
        if dimensions is not None:
            request["outputDimensionality"] = dimensions
        requests.append(request)
    response = await _post(x, "batchEmbedContents", {"requests": requests}, False)
    data = read_json(x, response)
    meta = data.get("usageMetadata")
    tokens = meta.get("promptTokenCount") if isinstance(meta, dict) else None
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
        tokens = estimate_tokens(sum(len(t) for t in texts))  # unreported: as the domain counts
    return _vectors(x, data, len(texts)), tokens


def _encode(values: list[float], encoding: Any) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")
    return values


# ----------------------------------------------------------------------------- errors


def _error_info(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    if isinstance(data, list) and data:
        data = data[0]
    err = data.get("error") if isinstance(data, dict) else None
    return err if isinstance(err, dict) else {}


def _retry_delay(info: dict[str, Any]) -> str | None:
    for detail in info.get("details") or ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            delay = detail.get("retryDelay")
            if isinstance(delay, str) and delay.endswith("s"):
                try:
                    return str(max(float(delay[:-1]), 0.0))
                except ValueError:
                    return None
    return None


def _reasons(info: dict[str, Any]) -> set[str]:
    return {
        str(d.get("reason"))
        for d in info.get("details") or ()
        if isinstance(d, dict) and d.get("reason")
    }


class GeminiAdapter:
    """Google's Gemini API (see the module docstring for the mappings)."""

    async def complete(self, x: Exchange, body: dict[str, Any]) -> JsonReply:
        response = await _post(x, "generateContent", request_body(body), False)
        n = body.get("n")
        data = read_json(x, response)
        return JsonReply.of(reply_of(x.model, data, n if isinstance(n, int) else 1))

    async def open_stream(self, x: Exchange, body: dict[str, Any]) -> UpstreamStream:
        n = body.get("n")
        if isinstance(n, int) and n > 1:
            raise _bad("Gemini streams one choice: 'n' must be 1 with stream: true.", "n")
        response = await _post(x, "streamGenerateContent", request_body(body), True)
        return UpstreamStream(response, GeminiStreamDecoder(x.model))

    async def embed(self, x: Exchange, body: dict[str, Any]) -> JsonReply:
        texts = _embedding_texts(body.get("input"))
        dimensions = body.get("dimensions")
        vectors: list[list[float]] = []
        tokens = 0
        for start in range(0, len(texts), _EMBED_BATCH):
            batch, used = await _embed_batch(x, texts[start : start + _EMBED_BATCH], dimensions)
            vectors += batch
            tokens += used
        encoding = body.get("encoding_format", "float")
        data = [
            {"object": "embedding", "index": i, "embedding": _encode(v, encoding)}
            for i, v in enumerate(vectors)
        ]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JsonReply.of({"object": "list", "data": data, "model": x.model, "usage": usage})

    def error(
        self, provider: str, status: int, body: bytes, headers: httpx.Headers
    ) -> RingsideError:
        info = _error_info(body)
        # Google answers a bad key with a 400 (API_KEY_INVALID) and a location or project
        # problem with FAILED_PRECONDITION: the operator's, not the caller's, mistake.
        if status == 400 and (
            "API_KEY_INVALID" in _reasons(info) or info.get("status") == "FAILED_PRECONDITION"
        ):
            status = 401 if "API_KEY_INVALID" in _reasons(info) else 403
        if status == 429 and "retry-after" not in headers and (delay := _retry_delay(info)):
            headers = httpx.Headers({**headers, "retry-after": delay})
        return upstream_error(provider, status, body, headers)


ADAPTER = GeminiAdapter()
