"""Google's Gemini API (v1beta), simulated: ``POST /gemini/v1beta/models/{model}:{method}``
for ``generateContent``, ``streamGenerateContent`` (``?alt=sse``: ``data: {...}\\r\\n\\r\\n``
events; without it, a streamed JSON array), ``batchEmbedContents`` and ``embedContent``.

Auth is ``x-goog-api-key`` (or ``?key=``): none → 403 PERMISSION_DENIED, a bearer token
instead → 401 UNAUTHENTICATED, ``sk-bad`` → 400 API_KEY_INVALID, as Google answers. Requests
are checked as the real API checks them (unknown fields, roles user/model, non-empty parts,
one data field per part, function calls after a user turn, function responses right after
and as many as the calls, Gemini 3 thought signatures on the current turn's calls, the
generation config's ranges), answering Google's ``{"error": {code, message, status}}``.

Replies come from ``completion.make_plan`` on the equivalent OpenAI body, so text and token
counts match the OpenAI-wire simulator: ``promptTokenCount`` = prompt_tokens,
``candidatesTokenCount`` = completion_tokens - reasoning, ``thoughtsTokenCount`` =
reasoning_tokens, ``cachedContentTokenCount`` = usage.cached_tokens. Directives beyond the
shared ones: ``block`` (true or a reason: no candidates, ``promptFeedback.blockReason``),
``finish`` (a finishReason, e.g. "SAFETY"); with ``includeThoughts`` and reasoning tokens a
thought part comes first. Function calls of Gemini 3+ models carry an ``id`` and a
``thoughtSignature`` (on the first call of a step, as Gemini signs them) that a later request
must send back unchanged; Gemini 2.x calls have neither. Embeddings: ``embedding.vector``
values truncated to ``outputDimensionality`` without renormalising (as Gemini does),
``usageMetadata.promptTokenCount`` = words.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs

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
from .completion import Plan, SimError, dumps, loads, make_plan, rand_id
from .embedding import EmbeddingPlan, make_embedding_plan, vector
from .native import NativeRequest

if TYPE_CHECKING:
    from .app import Simulator

PREFIX: Final = "/gemini/v1beta/models/"
BAD_KEY: Final = "sk-bad"
SKIP_SIGNATURES: Final = frozenset(
    {"skip_thought_signature_validator", "context_engineering_is_the_way_to_go"}
)
EMBEDDING_DIMENSIONS: Final = 3072
THOUGHT_TEXT: Final = "**Thinking it over**\n\nThe user wants an answer; I will give it."
_CHAT_METHODS: Final = frozenset({"generateContent", "streamGenerateContent"})
_EMBED_METHODS: Final = frozenset({"batchEmbedContents", "embedContent"})
_STATUS_NAMES: Final = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_FINISH: Final = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}
_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")
_NO_KEY: Final = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
_BEARER: Final = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)


class GoogleError(Exception):
    """An error answered in Google's format."""

    def __init__(
        self,
        code: int,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers

    def body(self) -> bytes:
        status = _STATUS_NAMES.get(self.code, "UNKNOWN" if self.code < 500 else "INTERNAL")
        err: dict[str, Any] = {"code": self.code, "message": self.message, "status": status}
        if self.details:
            err["details"] = self.details
        return dumps({"error": err})


def _bad(message: str) -> GoogleError:
    return GoogleError(400, message)


# ------------------------------------------------------------------- request checking


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def fields(obj: Any, allowed: frozenset[str] | set[str], where: str) -> dict[str, Any]:
    """``obj`` with camelCase keys (proto JSON takes both spellings); an unknown name is
    refused as Google's JSON parser refuses it."""
    if not isinstance(obj, dict):
        at = f" at '{where}'" if where else ""
        raise _bad(f"Invalid JSON payload received. Expected an object{at}.")
    out = {}
    for key, value in obj.items():
        name = _camel(key)
        if name not in allowed:
            at = f" at '{where}'" if where else ""
            raise _bad(
                f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.'
            )
        out[name] = value
    return out


_REQUEST: Final = frozenset(
    {
        "contents",
        "tools",
        "toolConfig",
        "safetySettings",
        "systemInstruction",
        "generationConfig",
        "cachedContent",
        "model",
        "serviceTier",
    }
)
_DATA: Final = frozenset(
    {
        "text",
        "inlineData",
        "fileData",
        "functionCall",
        "functionResponse",
        "executableCode",
        "codeExecutionResult",
    }
)
_PART: Final = _DATA | {"thought", "thoughtSignature", "videoMetadata", "mediaResolution"}
_GENERATION: Final = frozenset(
    {
        "stopSequences",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "responseModalities",
        "candidateCount",
        "maxOutputTokens",
        "temperature",
        "topP",
        "topK",
        "seed",
        "presencePenalty",
        "frequencyPenalty",
        "responseLogprobs",
        "logprobs",
        "enableEnhancedCivicAnswers",
        "speechConfig",
        "thinkingConfig",
        "imageConfig",
        "mediaResolution",
    }
)
_MIME_TYPES: Final = frozenset({"text/plain", "application/json", "text/x.enum"})


def _bytes(value: Any, where: str) -> bytes:
    try:
        if not isinstance(value, str):
            raise ValueError
        return base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=False)
    except (ValueError, binascii.Error):
        raise _bad(
            f"Invalid value at '{where}' (TYPE_BYTES), Base64 decoding failed for {value!r}"
        ) from None


def _part(raw: Any, where: str) -> dict[str, Any]:
    part = fields(raw, _PART, where)
    data = [k for k in part if k in _DATA]
    if not data:
        raise _bad(
            f"* GenerateContentRequest.{where}.data: required oneof field 'data' must have "
            "one initialized field\n"
        )
    if len(data) > 1:
        raise _bad(
            f"Invalid JSON payload received. Oneof field 'data' is already set. Cannot set "
            f"'{data[1]}'"
        )
    if "text" in part and not (isinstance(part["text"], str) and part["text"]):
        raise _bad(
            "Unable to submit request because it has an empty text parameter. Add a value to "
            "the parameter and try again."
        )
    if "inlineData" in part:
        blob = fields(part["inlineData"], {"mimeType", "data", "displayName"}, where)
        if not blob.get("mimeType") or not blob.get("data"):
            raise _bad(
                f"* GenerateContentRequest.{where}.inline_data: mime_type and data are required.\n"
            )
        _bytes(blob["data"], f"{where}.inline_data.data")
    if "fileData" in part:
        file = fields(part["fileData"], {"mimeType", "fileUri", "displayName"}, where)
        if not file.get("fileUri"):
            raise _bad(
                f"* GenerateContentRequest.{where}.file_data.file_uri: file_uri must be set.\n"
            )
    if "functionCall" in part:
        call = fields(part["functionCall"], {"id", "name", "args"}, f"{where}.function_call")
        if not isinstance(call.get("name"), str) or not call["name"]:
            raise _bad(
                f"* GenerateContentRequest.{where}.function_call.name: name is not specified.\n"
            )
        if "args" in call and not isinstance(call["args"], dict):
            raise _bad(
                f"Invalid value at '{where}.function_call.args' "
                "(type.googleapis.com/google.protobuf.Struct)"
            )
    if "functionResponse" in part:
        allowed = {"id", "name", "response", "parts", "willContinue", "scheduling"}
        resp = fields(part["functionResponse"], allowed, f"{where}.function_response")
        if not isinstance(resp.get("name"), str) or not resp["name"]:
            raise _bad(
                f"* GenerateContentRequest.{where}.function_response.name: name is not specified.\n"
            )
        if not isinstance(resp.get("response"), dict):
            raise _bad(
                f"* GenerateContentRequest.{where}.function_response.response: response is not "
                "specified.\n"
            )
    if "thoughtSignature" in part:
        _bytes(part["thoughtSignature"], f"{where}.thought_signature")
    return part


def _content(raw: Any, where: str, system: bool = False) -> dict[str, Any]:
    content = fields(raw, {"role", "parts"}, where)
    role = content.get("role", "")
    if not system and role not in ("user", "model", ""):
        raise _bad("Please use a valid role: user, model.")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise _bad(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.\n")
    content["parts"] = [_part(p, f"{where}.parts[{j}]") for j, p in enumerate(parts)]
    content["role"] = role or "user"
    return content


def signature_for(name: str, args: Any) -> str:
    """The signature the simulator puts on a call: it names the call, so a signature moved
    to another call (or args rewritten) is refused as corrupted."""
    digest = hashlib.sha256(dumps([name, args or {}])).digest()[:18]
    return base64.b64encode(b"simsig:" + digest).decode()


def _signs(model: str) -> bool:
    return not model.startswith(("gemini-1", "gemini-2"))


def _kind(content: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [p[key] for p in content["parts"] if key in p]


def _check_turns(contents: list[dict[str, Any]], model: str) -> None:
    # The current turn: everything after the last user message that is not tool results.
    current = 0
    for i, content in enumerate(contents):
        if content["role"] == "user" and not _kind(content, "functionResponse"):
            current = i
    for i, content in enumerate(contents):
        calls = _kind(content, "functionCall")
        responses = _kind(content, "functionResponse")
        previous = contents[i - 1] if i else None
        if calls and (content["role"] != "model" or previous is None or previous["role"] != "user"):
            raise _bad(
                "Please ensure that function call turn comes immediately after a user turn or "
                "after a function response turn."
            )
        if responses:
            asked = _kind(previous, "functionCall") if previous else []
            if content["role"] != "user" or not asked:
                raise _bad(
                    "Please ensure that function response turn comes immediately after a "
                    "function call turn."
                )
            if len(responses) != len(asked):
                raise _bad(
                    "Please ensure that the number of function response parts is equal to the "
                    "number of function call parts of the function call turn."
                )
            ids = {c.get("id") for c in asked if c.get("id")}
            if any(r.get("id") and r["id"] not in ids for r in responses):
                raise _bad("The function response id does not match any function call id.")
        if calls and i > current and _signs(model):
            _check_signature(content)


def _check_signature(content: dict[str, Any]) -> None:
    for j, part in enumerate(content["parts"]):
        if "functionCall" not in part:
            continue
        call, sig = part["functionCall"], part.get("thoughtSignature")
        if sig is None:
            raise _bad(
                "Function call is missing a thought_signature in functionCall parts. This is "
                "required for tools to work correctly, and missing thought_signature may lead "
                f"to degraded model performance. Additional data, function call "
                f"`{call['name']}` , position {j + 1}. Please refer to "
                "https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
            )
        if sig not in SKIP_SIGNATURES and sig != signature_for(call["name"], call.get("args")):
            raise _bad("Corrupted thought signature.")
        return  # only the first call of a step is signed


def _number(config: dict[str, Any], key: str, lo: float, hi: float, integer: bool) -> None:
    value = config.get(key)
    if value is None:
        return
    kinds = (int,) if integer else (int, float)
    if not isinstance(value, kinds) or isinstance(value, bool) or not lo <= value <= hi:
        raise _bad(
            f"* GenerateContentRequest.generation_config.{_snake(key)}: must be in the range "
            f"[{lo:g}, {hi:g}].\n"
        )


def _generation(raw: Any) -> dict[str, Any]:
    config = fields(raw, _GENERATION, "generation_config")
    _number(config, "candidateCount", 1, 8, True)
    _number(config, "maxOutputTokens", 1, 1 << 31, True)
    _number(config, "temperature", 0, 2, False)
    _number(config, "topP", 0, 1, False)
    stops = config.get("stopSequences", [])
    if not isinstance(stops, list) or len(stops) > 5 or not all(isinstance(s, str) for s in stops):
        raise _bad(
            "* GenerateContentRequest.generation_config.stop_sequences: the number of "
            "stop_sequences must be less than or equal to 5.\n"
        )
    mime = config.get("responseMimeType")
    if mime is not None and mime not in _MIME_TYPES:
        raise _bad(
            "* GenerateContentRequest.generation_config.response_mime_type: allowed mimetypes "
            "are `text/plain`, `application/json` and `text/x.enum`.\n"
        )
    if "responseSchema" in config and "responseJsonSchema" in config:
        raise _bad("response_schema and response_json_schema cannot both be set.")
    if (
        "responseSchema" in config or "responseJsonSchema" in config
    ) and mime != "application/json":
        raise _bad(
            "* GenerateContentRequest.generation_config.response_mime_type: must be "
            "application/json when a response schema is set.\n"
        )
    if "thinkingConfig" in config:
        allowed = {"includeThoughts", "thinkingBudget", "thinkingLevel"}
        thinking = fields(config["thinkingConfig"], allowed, "generation_config.thinking_config")
        if "thinkingBudget" in thinking and "thinkingLevel" in thinking:
            raise _bad("You can only set only one of thinking budget and thinking level.")
        budget = thinking.get("thinkingBudget", 0)
        if not isinstance(budget, int) or isinstance(budget, bool) or not -1 <= budget <= 32768:
            raise _bad("The thinking budget must be between -1 and 32768.")
        config["thinkingConfig"] = thinking
    return config


def _tools(raw: Any) -> list[dict[str, Any]]:
    """The function declarations of ``tools``."""
    if not isinstance(raw, list):
        raise _bad("Invalid JSON payload received. 'tools' must be an array.")
    declarations = []
    allowed = {"functionDeclarations", "googleSearch", "codeExecution", "urlContext"}
    for i, tool in enumerate(raw):
        tool = fields(tool, allowed, f"tools[{i}]")
        for j, decl in enumerate(tool.get("functionDeclarations") or ()):
            where = f"tools[{i}].function_declarations[{j}]"
            decl = fields(
                decl,
                {
                    "name",
                    "description",
                    "parameters",
                    "parametersJsonSchema",
                    "response",
                    "responseJsonSchema",
                    "behavior",
                },
                where,
            )
            if not isinstance(decl.get("name"), str) or not _NAME_RE.match(decl["name"]):
                raise _bad(
                    f"* GenerateContentRequest.{where}.name: Invalid function name. Must start "
                    "with a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), "
                    "underscores (_), dots (.), colons (:) or dashes (-), with a maximum length "
                    "of 128.\n"
                )
            if "parameters" in decl and "parametersJsonSchema" in decl:
                raise _bad(
                    f"* GenerateContentRequest.{where}: parameters and parameters_json_schema are "
                    "mutually exclusive.\n"
                )
            schema = decl.get("parametersJsonSchema")
            if schema is not None and (
                not isinstance(schema, dict) or schema.get("type", "object") != "object"
            ):
                raise _bad(
                    f"* GenerateContentRequest.{where}.parameters_json_schema: the schema must "
                    "describe an object.\n"
                )
            declarations.append(decl)
    return declarations


def _tool_config(raw: Any, names: set[str]) -> dict[str, Any]:
    config = fields(raw, {"functionCallingConfig", "retrievalConfig"}, "tool_config")
    calling = fields(
        config.get("functionCallingConfig") or {},
        {"mode", "allowedFunctionNames"},
        "tool_config.function_calling_config",
    )
    mode = calling.get("mode", "AUTO")
    if mode not in ("AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED"):
        raise _bad(f"Invalid value at 'tool_config.function_calling_config.mode', \"{mode}\"")
    allowed = calling.get("allowedFunctionNames")
    if allowed is not None:
        if mode not in ("ANY", "VALIDATED"):
            raise _bad(
                "* GenerateContentRequest.tool_config.function_calling_config."
                "allowed_function_names: only allowed when mode is ANY.\n"
            )
        if not isinstance(allowed, list) or any(n not in names for n in allowed):
            raise _bad(
                "* GenerateContentRequest.tool_config.function_calling_config."
                "allowed_function_names: every name must be a declared function.\n"
            )
    return calling


# ------------------------------------------------------------ Gemini → OpenAI, for the plan


def _openai_content(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for part in parts:
        if "text" in part and not part.get("thought"):
            out.append({"type": "text", "text": part["text"]})
        elif "inlineData" in part or "fileData" in part:
            out.append({"type": "image_url", "image_url": {"url": "gemini:media"}})
    return out


def _tool_output(response: dict[str, Any]) -> str:
    output = response.get("response") or {}
    if set(output) == {"output"} and isinstance(output["output"], str):
        return output["output"]
    return dumps(output).decode()


def openai_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    system = request.get("systemInstruction")
    for part in system["parts"] if system else ():
        messages.append({"role": "system", "content": _openai_content([part])})
    for content in request["contents"]:
        if content["role"] == "model":
            text = "".join(
                p["text"] for p in content["parts"] if "text" in p and not p.get("thought")
            )
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            calls = _kind(content, "functionCall")
            if calls:
                message["tool_calls"] = [
                    {
                        "id": c.get("id") or rand_id("call_"),
                        "type": "function",
                        "function": {
                            "name": c["name"],
                            "arguments": dumps(c.get("args") or {}).decode(),
                        },
                    }
                    for c in calls
                ]
            messages.append(message)
            continue
        for response in _kind(content, "functionResponse"):
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": response.get("id") or "",
                    "content": _tool_output(response),
                }
            )
        if parts := _openai_content(content["parts"]):
            messages.append({"role": "user", "content": parts})
    return messages


def _openai_tools(request: dict[str, Any], body: dict[str, Any]) -> None:
    declarations = _tools(request.get("tools") or [])
    if not declarations:
        return
    body["tools"] = [{"type": "function", "function": {"name": d["name"]}} for d in declarations]
    calling = _tool_config(request.get("toolConfig") or {}, {d["name"] for d in declarations})
    allowed = calling.get("allowedFunctionNames")
    if calling.get("mode") == "ANY":
        body["tool_choice"] = (
            {"type": "function", "function": {"name": allowed[0]}}
            if allowed and len(allowed) == 1
            else "required"
        )


def chat_plan(sim: Simulator, model: str, raw: Any, stream: bool) -> tuple[Plan, dict[str, Any]]:
    """Check a ``GenerateContentRequest``; the plan of its OpenAI equivalent and the
    checked request."""
    request = fields(raw, _REQUEST, "")
    contents = request.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _bad("* GenerateContentRequest.contents: contents is not specified\n")
    request["contents"] = [_content(c, f"contents[{i}]") for i, c in enumerate(contents)]
    if "systemInstruction" in request:
        request["systemInstruction"] = _content(
            request["systemInstruction"], "system_instruction", True
        )
    _check_turns(request["contents"], model)
    config = _generation(request.get("generationConfig") or {})
    request["generationConfig"] = config
    body: dict[str, Any] = {
        "model": model,
        "messages": openai_messages(request),
        "stream": stream,
        "stream_options": {"include_usage": True},
    }
    for native, name in (
        ("candidateCount", "n"),
        ("maxOutputTokens", "max_completion_tokens"),
        ("stopSequences", "stop"),
    ):
        if config.get(native):
            body[name] = config[native]
    _openai_tools(request, body)
    try:
        return make_plan(body, None, sim.defaults), request
    except SimError as err:
        raise _bad(err.message) from None


# ------------------------------------------------------------------------- rendering


def usage_metadata(plan: Plan, final: bool = True) -> dict[str, Any] | None:
    if plan.usage is None:
        return None
    u = plan.usage
    prompt = u["prompt_tokens"]
    meta: dict[str, Any] = {"promptTokenCount": prompt}
    reasoning = u["completion_tokens_details"]["reasoning_tokens"] if final else 0
    candidates = u["completion_tokens"] - reasoning if final else 0
    if candidates:
        meta["candidatesTokenCount"] = candidates
    meta["totalTokenCount"] = u["total_tokens"] if final else prompt
    if cached := u["prompt_tokens_details"]["cached_tokens"]:
        meta["cachedContentTokenCount"] = cached
    meta["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    if reasoning:
        meta["thoughtsTokenCount"] = reasoning
    return meta


def _envelope(
    model: str, response_id: str, body: dict[str, Any], meta: dict[str, Any] | None
) -> dict[str, Any]:
    if meta is not None:
        body["usageMetadata"] = meta
    body["modelVersion"] = model
    body["responseId"] = response_id
    return body


def _call_parts(plan: Plan) -> list[dict[str, Any]]:
    parts = []
    for k, (name, args) in enumerate(plan.tool_calls or ()):
        try:
            parsed = loads(args.encode())
        except ValueError:
            parsed = {}
        call: dict[str, Any] = {"name": name, "args": parsed if isinstance(parsed, dict) else {}}
        part: dict[str, Any] = {"functionCall": call}
        if _signs(plan.model):  # Gemini 3 names its calls, and signs the first of a step
            call["id"] = rand_id("")[:8]
            if k == 0:
                part["thoughtSignature"] = signature_for(name, call["args"])
        parts.append(part)
    return parts


def _finish(plan: Plan) -> str:
    override = plan.directive.get("finish")
    return str(override) if override else _FINISH.get(plan.finish_reason, "STOP")


def _thought(plan: Plan, request: dict[str, Any]) -> list[dict[str, Any]]:
    thinking = request["generationConfig"].get("thinkingConfig") or {}
    reasoning = plan.usage["completion_tokens_details"]["reasoning_tokens"] if plan.usage else 0
    if thinking.get("includeThoughts") and reasoning:
        return [{"text": THOUGHT_TEXT, "thought": True}]
    return []


def _block(plan: Plan, meta: dict[str, Any] | None) -> dict[str, Any]:
    reason = plan.directive["block"]
    ratings = [
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}
    ]
    feedback = {
        "blockReason": reason if isinstance(reason, str) else "SAFETY",
        "safetyRatings": ratings,
    }
    if meta is not None:
        meta = {
            "promptTokenCount": meta["promptTokenCount"],
            "totalTokenCount": meta["promptTokenCount"],
        }
    return _envelope(plan.model, rand_id(""), {"promptFeedback": feedback}, meta)


def response_body(plan: Plan, request: dict[str, Any]) -> dict[str, Any]:
    """The non-streamed ``GenerateContentResponse``."""
    if plan.directive.get("block"):
        return _block(plan, usage_metadata(plan))
    parts = _thought(plan, request)
    if plan.tool_calls is not None:
        parts += _call_parts(plan)
    elif text := "".join(plan.tokens):
        parts.append({"text": text})
    candidates = [
        {"content": {"parts": parts, "role": "model"}, "finishReason": _finish(plan), "index": i}
        for i in range(plan.n)
    ]
    return _envelope(plan.model, rand_id(""), {"candidates": candidates}, usage_metadata(plan))


def stream_bodies(plan: Plan, request: dict[str, Any]) -> list[dict[str, Any]]:
    """The streamed responses: a thought, one per reply token (every candidate), the last
    with the finishReason and the final usage; function calls come whole, in one."""
    if plan.directive.get("block"):
        return [_block(plan, usage_metadata(plan))]
    response_id = rand_id("")
    steps: list[list[dict[str, Any]]] = [[p] for p in _thought(plan, request)]
    if plan.tool_calls is not None:
        steps.append(_call_parts(plan))
    else:
        steps += [[{"text": token}] for token in plan.tokens] or [[{"text": ""}]]
    bodies = []
    for idx, parts in enumerate(steps):
        last = idx == len(steps) - 1
        candidates = []
        for i in range(plan.n):
            candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": i}
            if last:
                candidate["finishReason"] = _finish(plan)
            candidates.append(candidate)
        meta = usage_metadata(plan, final=last)
        bodies.append(_envelope(plan.model, response_id, {"candidates": candidates}, meta))
    return bodies


# ------------------------------------------------------------------------- embeddings


def _embed_request(raw: Any, model: str, where: str) -> tuple[str, int]:
    request = fields(raw, {"model", "content", "taskType", "title", "outputDimensionality"}, where)
    if request.get("model", f"models/{model}") != f"models/{model}":
        raise _bad(
            f"* BatchEmbedContentsRequest.{where}.model: the model of every request must be "
            f"the batch's model, models/{model}.\n"
        )
    content = _content(request.get("content"), f"{where}.content")
    if any("text" not in p for p in content["parts"]):
        raise _bad(f"* {where}.content: only text parts can be embedded.\n")
    dims = request.get("outputDimensionality", EMBEDDING_DIMENSIONS)
    if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= EMBEDDING_DIMENSIONS:
        raise _bad(
            f"* BatchEmbedContentsRequest.{where}.output_dimensionality: must be between 1 and "
            f"{EMBEDDING_DIMENSIONS}.\n"
        )
    return " ".join(p["text"] for p in content["parts"]), dims


def embed_answer(sim: Simulator, model: str, method: str, raw: Any) -> tuple[EmbeddingPlan, bytes]:
    """(plan, body) of an embeddings request: the plan carries the directives."""
    if method == "embedContent":
        requests = [raw]
    else:
        batch = fields(raw, {"requests"}, "")
        requests = batch.get("requests")
        if not isinstance(requests, list) or not requests:
            raise _bad("* BatchEmbedContentsRequest.requests: requests is not specified\n")
        if len(requests) > 100:
            raise _bad(
                "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch\n"
            )
    checked = [_embed_request(r, model, f"requests[{i}]") for i, r in enumerate(requests)]
    try:
        plan = make_embedding_plan(
            {"model": model, "input": [t for t, _ in checked]}, None, sim.defaults
        )
    except SimError as err:
        raise _bad(err.message) from None
    # Gemini truncates the full vector (Matryoshka) and leaves it unnormalised.
    embeddings = [
        {"values": vector(seed, EMBEDDING_DIMENSIONS, EMBEDDING_DIMENSIONS)[:dims]}
        for seed, (_, dims) in zip(plan.seeds, checked, strict=True)
    ]
    body: dict[str, Any] = (
        {"embedding": embeddings[0]} if method == "embedContent" else {"embeddings": embeddings}
    )
    if plan.usage is not None:
        body["usageMetadata"] = {"promptTokenCount": plan.usage["prompt_tokens"]}
    return plan, dumps(body)


# ----------------------------------------------------------------------------- serving


def _route(request: NativeRequest) -> tuple[str, str]:
    rest = request.path.removeprefix(PREFIX)
    model, sep, method = rest.rpartition(":")
    if rest == request.path or not sep or "/" in model or not model:
        raise GoogleError(404, f"Method not found: {request.method} {request.path}")
    if request.method != "POST":
        raise GoogleError(404, f"Method not found: {request.method} {request.path}")
    embedding = "embedding" in model
    if method not in _CHAT_METHODS | _EMBED_METHODS or embedding != (method in _EMBED_METHODS):
        raise GoogleError(
            404,
            f"models/{model} is not found for API version v1beta, or is not supported for "
            f"{method}. Call ListModels to see the list of available models and their "
            "supported methods.",
        )
    return model, method


def _check_auth(request: NativeRequest, query: dict[str, list[str]]) -> None:
    key = request.headers.get("x-goog-api-key") or (query.get("key") or [""])[0]
    if not key:
        if request.headers.get("authorization"):
            raise GoogleError(401, _BEARER)
        raise GoogleError(403, _NO_KEY)
    if key == BAD_KEY:
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": "API key not valid. Please pass a valid API key.",
            },
        ]
        raise GoogleError(400, "API key not valid. Please pass a valid API key.", details)


def directive_error(d: dict[str, Any]) -> GoogleError:
    status = int(d["status"])
    over = d.get("error") if isinstance(d.get("error"), dict) else {}
    default = {
        429: "You exceeded your current quota, please check your plan and billing details.",
        503: "The model is overloaded. Please try again later.",
        500: "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    }.get(status, f"Simulated upstream error (HTTP {status}).")
    details = None
    if status == 429:
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/"
                        "generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                    }
                ],
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"},
        ]
    return GoogleError(status, str(over.get("message", default)), details, extra_headers(d))


async def handle(sim: Simulator, request: NativeRequest, receive: Receive, send: Send) -> None:
    query = parse_qs(request.query)
    try:
        model, method = _route(request)
        _check_auth(request, query)
        if request.json is None:
            raise _bad("Invalid JSON payload received. Unexpected token.")
        if method in _EMBED_METHODS:
            plan, body = embed_answer(sim, model, method, request.json)
            directive, stream = plan.directive, False
        else:
            stream = method == "streamGenerateContent"
            chat, checked = chat_plan(sim, model, request.json, stream)
            directive = chat.directive
    except GoogleError as err:
        await send_json(send, err.code, err.body(), err.headers)
        return
    if method in _CHAT_METHODS:
        if not stream and not (directive.keys() & GUARDED_KEYS):
            await send_json(send, 200, dumps(response_body(chat, checked)))
            return
        bodies = stream_bodies(chat, checked) if stream else [response_body(chat, checked)]
        sse = "alt=sse" in request.query
        await _guarded(sim, receive, send, directive, bodies, stream, sse)
        return
    if not directive.keys() & GUARDED_KEYS:
        await send_json(send, 200, body)
        return
    await _guarded(sim, receive, send, directive, [loads(body)], False, False)


async def _guarded(
    sim: Simulator,
    receive: Receive,
    send: Send,
    d: dict[str, Any],
    bodies: list[dict[str, Any]],
    stream: bool,
    sse: bool,
) -> None:
    flow = Flow(sim, stream)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_disconnect, receive, nursery.cancel_scope)
            await _answer(send, flow, d, bodies, stream, sse)
            nursery.cancel_scope.cancel()
    finally:
        flow.abandon()


async def _answer(
    send: Send, flow: Flow, d: dict[str, Any], bodies: list[dict[str, Any]], stream: bool, sse: bool
) -> None:
    if d.get("hang"):
        await trio.sleep_forever()
    delay = float(d.get("delay") or 0)
    if delay > 0:
        await trio.sleep(delay)
    if int(d.get("status") or 200) >= 400:
        err = directive_error(d)
        flow.finish()
        await send_json(send, err.code, err.body(), err.headers)
    elif not stream:
        flow.finish()
        await send_json(send, 200, dumps(bodies[0]), extra_headers(d))
    else:
        await _stream(send, flow, d, bodies, sse)


def _frame(body: dict[str, Any], idx: int, sse: bool) -> bytes:
    if sse:
        return b"data: " + dumps(body) + b"\r\n\r\n"
    return (b"[" if idx == 0 else b",\r\n") + dumps(body)


async def _stream(
    send: Send, flow: Flow, d: dict[str, Any], bodies: list[dict[str, Any]], sse: bool
) -> None:
    chunk_delay = float(d.get("chunk_delay") or 0)
    raw_after = d.get("stream_error_after")
    error_after = None if raw_after is None else int(raw_after)
    last = len(bodies) - 1
    headers = [*SSE_HEADERS] if sse else [(b"content-type", b"application/json")]
    try:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*headers, request_id(), *extra_headers(d)],
            }
        )
        for idx, body in enumerate(bodies):
            if error_after is not None and (idx >= error_after or idx == last):
                flow.finish()  # a deliberate abort, not a client disconnect
                return  # no final message: hypercorn drops the connection mid-body
            if idx and chunk_delay > 0:
                await trio.sleep(chunk_delay)
            await send(
                {"type": "http.response.body", "body": _frame(body, idx, sse), "more_body": True}
            )
        flow.finish()
        await send({"type": "http.response.body", "body": b"" if sse else b"]", "more_body": False})
    except Exception:  # sending after the client left: the stream is over (undone)
        return
