"""Amazon Bedrock: chat through the Converse API (``/model/{modelId}/converse`` and
``/converse-stream``), embeddings through InvokeModel (Titan text v2, Cohere embed).

Requests are signed with SigV4 (botocore) from the provider options ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` (/ ``AWS_SESSION_TOKEN``), freshly for every attempt; a configured
``BEDROCK_API_KEY`` (a Bedrock API key) is sent as a bearer token instead. The region is
``BEDROCK_REGION``, else ``AWS_REGION``, else ``AWS_DEFAULT_REGION``, else us-east-1, and the
default base URL follows it.

Mappings worth knowing (see ``_converse_body``): system and developer messages become
``system`` blocks; tool results become ``toolResult`` blocks of a user turn; consecutive turns
of one role are merged (Converse requires alternation). Converse has no ``tool_choice:
"none"``: the tools are left out, unless the history holds tool blocks (Converse then requires
a ``toolConfig``), in which case they are declared and the model may still call one.
``json_schema`` uses Converse's native structured output (``outputConfig.textFormat``);
``json_object`` has no native form and becomes a system instruction. ``reasoning_effort`` maps
to Anthropic ``thinking`` budgets on Claude models, ``reasoningConfig`` on Nova and
``reasoning_effort`` on OpenAI open-weight models (``additionalModelRequestFields``).
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import trio
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError

from ringside.errors import (
    InvalidRequest,
    NoActiveProviderKeys,
    RingsideError,
    UpstreamError,
    UpstreamTimeout,
)
from ringside.tokens import TokenUsage
from ringside.upstream import shapes
from ringside.upstream.adapter import Exchange, JsonReply, UpstreamStream, parsed_url, read_json
from ringside.upstream.providers import PROVIDERS, ProviderConfig
from ringside.upstream.sending import upstream_error

_JSON = "application/json"
_EVENT_STREAM = "application/vnd.amazon.eventstream"
_DEFAULT_REGION = "us-east-1"
_REGION_OPTIONS = ("BEDROCK_REGION", "AWS_REGION", "AWS_DEFAULT_REGION")

STOP_REASONS: Mapping[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}

# Anthropic thinking budgets per OpenAI reasoning_effort (1,024 is Anthropic's minimum).
_THINKING_BUDGETS: Mapping[str, int] = {"low": 1024, "medium": 4096, "high": 16384}
_MIN_THINKING = 1024
_IMAGE_FORMATS: Mapping[str, str] = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
_DATA_URL = re.compile(r"^data:(?P<mime>[\w/+.-]+);base64,(?P<data>.*)$", re.DOTALL)
_JSON_OBJECT_INSTRUCTION = "Respond with a single valid JSON object and nothing else."
# Embeddings: Titan takes one text a request (sent concurrently, this many at once); Cohere
# takes at most 96 texts a request.
_TITAN_CONCURRENCY = 8
_COHERE_BATCH = 96
_INPUT_TOKENS_HEADER = "x-amzn-bedrock-input-token-count"


# --- where and how ---------------------------------------------------------------------------


def region(cfg: ProviderConfig) -> str:
    for name in _REGION_OPTIONS:
        value = cfg.options.get(name)
        if value:
            return value
    return _DEFAULT_REGION


def base_url(cfg: ProviderConfig) -> str:
    """The configured base URL; the us-east-1 default follows the configured region."""
    where = region(cfg)
    if cfg.base_url == PROVIDERS["bedrock"].default_base_url and where != _DEFAULT_REGION:
        return f"https://bedrock-runtime.{where}.amazonaws.com"
    return cfg.base_url


def model_url(cfg: ProviderConfig, model: str, action: str) -> str:
    # A model id holds ':' (and an ARN '/'): one path segment, percent-encoded as botocore does.
    return f"{base_url(cfg)}/model/{quote(model, safe='')}/{action}"


def credentials(cfg: ProviderConfig) -> Credentials | None:
    """The SigV4 credentials, or None when the provider uses Bedrock API keys instead."""
    access = cfg.options.get("AWS_ACCESS_KEY_ID")
    secret = cfg.options.get("AWS_SECRET_ACCESS_KEY")
    if access and secret:
        return Credentials(access, secret, cfg.options.get("AWS_SESSION_TOKEN"))
    if cfg.keys:
        return None
    raise NoActiveProviderKeys(
        "No AWS credentials are configured for provider 'bedrock' (set AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY, or BEDROCK_API_KEY)."
    )


def signed_headers(
    creds: Credentials, where: str, url: str, content: bytes, headers: dict[str, str]
) -> dict[str, str]:
    """``headers`` plus SigV4's (X-Amz-Date, X-Amz-Security-Token, Authorization) for a POST."""
    request = AWSRequest(method="POST", url=url, data=content, headers=headers)
    SigV4Auth(creds, "bedrock", where).add_auth(request)
    return dict(request.headers.items())


async def _post(
    x: Exchange, action: str, payload: dict[str, Any], *, stream: bool = False
) -> httpx.Response:
    cfg = x.provider
    creds = credentials(cfg)
    where = region(cfg)
    url = model_url(cfg, x.model, action)
    content = orjson.dumps(payload)
    timeout = x.timeout(stream)
    accept = _EVENT_STREAM if stream else _JSON

    def build(key: str | None) -> httpx.Request:
        headers = {"content-type": _JSON, "accept": accept}
        if creds is not None:
            headers = signed_headers(creds, where, url, content, headers)  # fresh each attempt
        elif key is not None:
            headers["authorization"] = f"Bearer {key}"
        return x.http.build_request(
            "POST", parsed_url(url), content=content, headers=headers, timeout=timeout
        )

    return await x.send(build, stream=stream)


# --- OpenAI chat -> Converse -----------------------------------------------------------------


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    match = _DATA_URL.match(url) if isinstance(url, str) else None
    if match is None:
        raise InvalidRequest(
            "Bedrock takes images only inline, as base64 data URLs (data:image/png;base64,...).",
            param="messages",
        )
    fmt = _IMAGE_FORMATS.get(match["mime"].lower())
    if fmt is None:
        raise InvalidRequest(
            f"Bedrock does not accept images of type {match['mime']!r} (png, jpeg, gif, webp).",
            param="messages",
        )
    data = match["data"].strip()
    try:
        base64.b64decode(data, validate=True)
    except binascii.Error:
        raise InvalidRequest("An image data URL is not valid base64.", param="messages") from None
    return {"image": {"format": fmt, "source": {"bytes": data}}}


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else ():
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append({"text": str(part["text"])})
        elif kind == "image_url":
            blocks.append(_image_block(part))
        elif kind is not None:
            raise InvalidRequest(
                f"Bedrock's Converse API does not take {kind!r} content parts.",
                param="messages",
            )
    return blocks


def _tool_use(call: Any) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        raise InvalidRequest("A tool call has no function.", param="messages")
    arguments = shapes.tool_arguments(function.get("arguments"), "messages")
    return {
        "toolUse": {
            "toolUseId": str(call.get("id") or shapes.tool_call_id()),
            "name": str(function.get("name", "")),
            "input": arguments,
        }
    }


def _turns(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, alternating Converse messages) of the OpenAI ``messages``."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for msg in messages:
        role = msg.get("role")
        if role in ("system", "developer"):
            text = shapes.content_text(msg.get("content"))
            if text:
                system.append({"text": text})
            continue
        if role == "tool":
            text = shapes.content_text(msg.get("content"))
            result = {"toolUseId": str(msg.get("tool_call_id", "")), "content": [{"text": text}]}
            role, blocks = "user", [{"toolResult": result}]
        elif role == "assistant":
            blocks = _content_blocks(msg.get("content"))
            blocks += [_tool_use(call) for call in msg.get("tool_calls") or ()]
        else:
            role, blocks = "user", _content_blocks(msg.get("content"))
        if not blocks:
            continue  # Converse refuses empty turns and blank text
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _tool_names_used(turns: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for turn in turns:
        for block in turn["content"]:
            use = block.get("toolUse")
            if use is not None and use["name"] not in names:
                names.append(use["name"])
    return names


def _has_tool_blocks(turns: list[dict[str, Any]]) -> bool:
    return any("toolUse" in b or "toolResult" in b for t in turns for b in t["content"])


def _tool_spec(tool: Any) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict):
        raise InvalidRequest("Bedrock takes only function tools.", param="tools")
    spec: dict[str, Any] = {
        "name": function.get("name"),
        "inputSchema": {"json": function.get("parameters") or {"type": "object"}},
    }
    if function.get("description"):
        spec["description"] = function["description"]
    if function.get("strict") is True:
        spec["strict"] = True
    return {"toolSpec": spec}


def _tool_config(body: dict[str, Any], turns: list[dict[str, Any]]) -> dict[str, Any] | None:
    mode, forced = shapes.tool_choice(body)
    tools = body.get("tools") or []
    history = _has_tool_blocks(turns)
    if tools and (mode != "none" or history):
        config: dict[str, Any] = {"tools": [_tool_spec(t) for t in tools]}
    elif history:
        # Converse needs every tool named in the history declared, even with no tools asked.
        config = {
            "tools": [
                {"toolSpec": {"name": name, "inputSchema": {"json": {"type": "object"}}}}
                for name in _tool_names_used(turns)
            ]
        }
        return config if config["tools"] else None
    else:
        return None
    if mode == "required":
        config["toolChoice"] = {"any": {}}
    elif mode == "function" and forced:
        config["toolChoice"] = {"tool": {"name": forced}}
    elif mode == "auto":
        config["toolChoice"] = {"auto": {}}
    return config


def _reasoning_fields(model: str, effort: Any, max_tokens: int | None) -> dict[str, Any]:
    if not isinstance(effort, str) or effort in ("none", "minimal"):
        return {}
    family = model.rpartition(".")[2] if model.startswith("arn:") else model
    if "anthropic." in family:
        budget = _THINKING_BUDGETS.get(effort, _THINKING_BUDGETS["high"])
        if max_tokens is not None:
            budget = min(budget, max_tokens - 1)  # Anthropic: the budget stays under max_tokens
        if budget < _MIN_THINKING:
            return {}
        return {"thinking": {"type": "enabled", "budget_tokens": budget}}
    if "amazon.nova" in family:
        level = effort if effort in ("low", "medium", "high") else "high"
        return {"reasoningConfig": {"type": "enabled", "maxReasoningEffort": level}}
    if "openai." in family:
        return {"reasoning_effort": effort}
    return {}


def converse_body(model: str, body: dict[str, Any]) -> dict[str, Any]:
    """The Converse request for a validated OpenAI chat body (see the module docstring)."""
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        raise InvalidRequest("Bedrock returns one choice per call: n must be 1.", param="n")
    messages = body.get("messages")
    system, turns = _turns(messages if isinstance(messages, list) else [])
    out: dict[str, Any] = {"messages": turns}
    inference: dict[str, Any] = {}
    max_tokens = shapes.max_output(body)
    if max_tokens is not None:
        inference["maxTokens"] = max_tokens
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP")):
        if isinstance(body.get(ours), int | float) and not isinstance(body.get(ours), bool):
            inference[theirs] = body[ours]
    stops = [s for s in shapes.stop_sequences(body) if s]
    if stops:
        inference["stopSequences"] = stops
    if inference:
        out["inferenceConfig"] = inference
    tool_config = _tool_config(body, turns)
    if tool_config is not None:
        out["toolConfig"] = tool_config
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_schema":
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        spec = spec if isinstance(spec, dict) else {}
        schema: dict[str, Any] = {"schema": orjson.dumps(spec.get("schema") or {}).decode()}
        for key in ("name", "description"):
            if isinstance(spec.get(key), str) and spec[key]:
                schema[key] = spec[key]
        out["outputConfig"] = {
            "textFormat": {"type": "json_schema", "structure": {"jsonSchema": schema}}
        }
    elif kind == "json_object":
        system.append({"text": _JSON_OBJECT_INSTRUCTION})
    if system:
        out["system"] = system
    extra = _reasoning_fields(model, body.get("reasoning_effort"), max_tokens)
    given = body.get("additionalModelRequestFields")  # a caller's own, through extra_body
    if isinstance(given, dict):
        extra = {**extra, **given}
    if extra:
        out["additionalModelRequestFields"] = extra
    return out


# --- Converse -> OpenAI ----------------------------------------------------------------------


def token_usage(raw: Any) -> TokenUsage | None:
    """OpenAI's accounting of Converse ``usage``: cache reads and writes are input too."""
    if not isinstance(raw, dict):
        return None

    def count(key: str) -> int:
        value = raw.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    cached = count("cacheReadInputTokens")
    prompt = count("inputTokens") + cached + count("cacheWriteInputTokens")
    return TokenUsage(input=prompt, cached_input=cached, output=count("outputTokens"))


def finish_reason(stop_reason: Any) -> str:
    return STOP_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def completion(model: str, data: dict[str, Any]) -> dict[str, Any]:
    output = data.get("output")
    message = output.get("message") if isinstance(output, dict) else None
    blocks = message.get("content") if isinstance(message, dict) else None
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in blocks if isinstance(blocks, list) else ():
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            arguments = orjson.dumps(use.get("input", {})).decode()
            calls.append(
                shapes.function_call(str(use.get("toolUseId")), use.get("name"), arguments)
            )
        elif isinstance(block.get("reasoningContent"), dict):
            text = (block["reasoningContent"].get("reasoningText") or {}).get("text")
            if isinstance(text, str):
                reasoning.append(text)
    content = "".join(texts) if texts or not calls else None
    msg = shapes.message(content, calls, reasoning="".join(reasoning) or None)
    u = token_usage(data.get("usage"))
    body = shapes.completion(
        model, [(msg, finish_reason(data.get("stopReason")))], u or TokenUsage()
    )
    if u is None:
        del body["usage"]  # none reported: the gateway counts, rather than bill zero
    return body


# --- ConverseStream -> OpenAI chunks ---------------------------------------------------------


class EventStreamDecoder:
    """ConverseStream's AWS event stream (``application/vnd.amazon.eventstream``, framed and
    checksummed; botocore's ``EventStreamBuffer`` parses it) as OpenAI chunks: the usage chunk
    and ``[DONE]`` follow the ``metadata`` event. An exception event (throttling, a model
    stream error) or a corrupt frame ends the translation without ``[DONE]``: the relay then
    reports the stream as incomplete when the provider closes it."""

    def __init__(self, model: str) -> None:
        self.state = shapes.StreamState(model)
        self._buffer = EventStreamBuffer()
        self._over = False

    def feed(self, raw: bytes) -> list[bytes]:
        if self._over:
            return []
        self._buffer.add_data(raw)
        out: list[bytes] = []
        try:
            for message in self._buffer:
                out += self._event(message)
                if self._over:
                    break
        except ParserError:
            self._over = True
        return out

    def _event(self, message: EventStreamMessage) -> list[bytes]:
        headers = message.headers
        if headers.get(":message-type") != "event":
            self._over = True  # "exception" or "error": the stream failed
            return []
        try:
            data = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            self._over = True
            return []
        if not isinstance(data, dict):
            return []
        kind = headers.get(":event-type")
        state = self.state
        key = str(data.get("contentBlockIndex"))
        if kind == "messageStart":
            return [state.start()]
        if kind == "contentBlockStart":
            start = data.get("start")
            use = start.get("toolUse") if isinstance(start, dict) else None
            if isinstance(use, dict):
                return [state.tool_start(key, str(use.get("toolUseId")), str(use.get("name")))]
            return []
        if kind == "contentBlockDelta":
            return self._delta(key, data.get("delta"))
        if kind == "messageStop":
            return [state.finish(finish_reason(data.get("stopReason")))]
        if kind == "metadata":
            self._over = True
            u = token_usage(data.get("usage"))
            return [state.usage_chunk(u), shapes.DONE] if u is not None else [shapes.DONE]
        return []  # contentBlockStop, and events newer than this adapter

    def _delta(self, key: str, delta: Any) -> list[bytes]:
        if not isinstance(delta, dict):
            return []
        state = self.state
        if isinstance(delta.get("text"), str):
            return [state.text(delta["text"])]
        use = delta.get("toolUse")
        if isinstance(use, dict) and isinstance(use.get("input"), str):
            if key not in state.tool_indexes:
                return []
            return [state.tool_arguments(key, use["input"])]
        reasoning = delta.get("reasoningContent")
        if isinstance(reasoning, dict) and isinstance(reasoning.get("text"), str):
            return [state.reasoning(reasoning["text"])]
        return []


# --- embeddings ------------------------------------------------------------------------------


def _texts(body: dict[str, Any]) -> list[str]:
    raw = body.get("input")
    items = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
    if not items or not all(isinstance(item, str) for item in items):
        raise InvalidRequest(
            "Bedrock embeddings take text input only (a string or an array of strings), not "
            "token ids.",
            param="input",
        )
    return items


def _encode(values: list[float], encoding: Any) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")
    return values


def _floats(value: Any) -> list[float]:
    if not isinstance(value, list) or not all(isinstance(v, int | float) for v in value):
        raise UpstreamError("bedrock returned an embedding that is not a list of numbers.")
    return [float(v) for v in value]


def _header_tokens(response: httpx.Response) -> int:
    raw = response.headers.get(_INPUT_TOKENS_HEADER, "")
    return int(raw) if raw.isdigit() else 0


async def _gather(x: Exchange, calls: list[dict[str, Any]]) -> list[httpx.Response]:
    """Send the InvokeModel bodies concurrently (bounded); the first failure cancels the
    rest and is raised as itself, not wrapped in an exception group."""
    responses: list[httpx.Response | None] = [None] * len(calls)
    failure: list[RingsideError] = []
    limiter = trio.CapacityLimiter(_TITAN_CONCURRENCY)

    async def one(slot: int, payload: dict[str, Any], cancel: trio.CancelScope) -> None:
        async with limiter:
            try:
                responses[slot] = await _post(x, "invoke", payload)
            except RingsideError as exc:
                failure.append(exc)
                cancel.cancel()

    async with trio.open_nursery() as nursery:
        for slot, payload in enumerate(calls):
            nursery.start_soon(one, slot, payload, nursery.cancel_scope)
    if failure:
        raise failure[0]
    return [r for r in responses if r is not None]


async def _titan(x: Exchange, body: dict[str, Any], texts: list[str]) -> tuple[list[Any], int]:
    extra: dict[str, Any] = {"normalize": True}
    if body.get("dimensions") is not None:
        extra["dimensions"] = body["dimensions"]
    responses = await _gather(x, [{"inputText": t, **extra} for t in texts])
    vectors: list[Any] = []
    tokens = 0
    for response in responses:
        data = read_json(x, response)
        vectors.append(_floats(data.get("embedding")))
        count = data.get("inputTextTokenCount")
        tokens += count if isinstance(count, int) else _header_tokens(response)
    return vectors, tokens


async def _cohere(x: Exchange, body: dict[str, Any], texts: list[str]) -> tuple[list[Any], int]:
    base: dict[str, Any] = {
        "input_type": body.get("input_type", "search_document"),
        "embedding_types": ["float"],
    }
    if body.get("dimensions") is not None:
        base["output_dimension"] = body["dimensions"]
    batches = [texts[i : i + _COHERE_BATCH] for i in range(0, len(texts), _COHERE_BATCH)]
    responses = await _gather(x, [{"texts": b, **base} for b in batches])
    vectors: list[Any] = []
    tokens = 0
    for response in responses:
        data = read_json(x, response)
        embeddings = data.get("embeddings")
        if isinstance(embeddings, dict):  # embeddings_by_type
            embeddings = embeddings.get("float")
        if not isinstance(embeddings, list):
            raise UpstreamError("bedrock returned a Cohere answer without float embeddings.")
        vectors += [_floats(v) for v in embeddings]
        tokens += _header_tokens(response)
    return vectors, tokens


# --- the adapter -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Bedrock:
    async def complete(self, x: Exchange, body: dict[str, Any]) -> JsonReply:
        response = await _post(x, "converse", converse_body(x.model, body))
        return JsonReply.of(completion(x.model, read_json(x, response)))

    async def open_stream(self, x: Exchange, body: dict[str, Any]) -> UpstreamStream:
        response = await _post(x, "converse-stream", converse_body(x.model, body), stream=True)
        return UpstreamStream(response, EventStreamDecoder(x.model))

    async def embed(self, x: Exchange, body: dict[str, Any]) -> JsonReply:
        texts = _texts(body)
        if x.model.startswith("amazon.titan-embed"):
            vectors, tokens = await _titan(x, body, texts)
        elif x.model.startswith("cohere.embed"):
            vectors, tokens = await _cohere(x, body, texts)
        else:
            raise InvalidRequest(
                f"Bedrock model {x.model!r} is not an embeddings model Ringside can call.",
                param="model",
            )
        encoding = body.get("encoding_format", "float")
        return JsonReply.of(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": _encode(v, encoding)}
                    for i, v in enumerate(vectors)
                ],
                "model": x.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    def error(
        self, provider: str, status: int, body: bytes, headers: httpx.Headers
    ) -> RingsideError:
        # x-amzn-errortype is "ThrottlingException" or "...Exception:http://internal...".
        kind = headers.get("x-amzn-errortype", "").partition(":")[0]
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        message = data.get("message") or data.get("Message") if isinstance(data, dict) else None
        text = f"{kind}: {message}" if kind and message else message or kind or ""
        if kind == "ModelTimeoutException":
            return UpstreamTimeout(f"{provider} returned HTTP {status}: {text}")
        if status == 403:
            # Bad or unauthorised AWS credentials are the operator's to fix, not the caller's.
            return UpstreamError(
                f"{provider} refused the gateway's AWS credentials (HTTP 403): {text}",
                upstream_status=status,
            )
        return upstream_error(provider, status, orjson.dumps({"message": text}), headers)


ADAPTER = Bedrock()
