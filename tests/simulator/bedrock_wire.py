"""Simulated Amazon Bedrock runtime: Converse, ConverseStream and InvokeModel (Titan text v2 and
Cohere embed embeddings) under ``/bedrock/model/{modelId}/...``.

Every request must be SigV4-signed for the ``bedrock`` service with the test credentials
(``tests.gateway.AWS_ENV``): the simulator recomputes the signature with botocore from what it
received and answers 403 ``InvalidSignatureException`` / ``UnrecognizedClientException`` as
AWS does. A ``Bearer`` token (a Bedrock API key) is accepted too, except ``sk-bad``.

Converse bodies are validated as the service does (shapes of the service model, roles
alternating from a user turn, every ``toolResult`` answering a ``toolUse`` of the turn before,
``toolConfig`` present whenever tool blocks are), then translated to the equivalent OpenAI body
for ``completion.make_plan``, so text and token counts match the OpenAI-wire simulator. Errors
are ``{"message": ...}`` with ``x-amzn-errortype``. ConverseStream answers real AWS event-stream
frames (``encode_event``). Directives: those of the package docstring, plus
``stream_exception`` (an exception event, e.g. ``"throttlingException"``, after the first
content event; ``true`` sends ``modelStreamErrorException``).
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import trio
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from .asgi import GUARDED_KEYS, Flow, Receive, Send, extra_headers, send_json, watch_disconnect
from .completion import Plan, SimError, dumps, loads, make_plan, rand_id
from .embedding import EmbeddingPlan, make_embedding_plan, vector
from .native import NativeRequest

if TYPE_CHECKING:
    from .app import Simulator

ACCESS_KEY: Final = "AKIDSIMULATOR000001"  # tests.gateway.AWS_ENV
SECRET_KEY: Final = "simulator-secret-access-key"
BAD_TOKEN: Final = "sk-bad"
PREFIX: Final = "/bedrock/model/"
EVENT_STREAM: Final = b"application/vnd.amazon.eventstream"
ARG_FRAGMENT: Final = 8
THINKING: Final = "_bedrock_thinking"  # set in a plan's directive when thinking was asked for
REASONING: Final = "Considering the request."

_ERROR_TYPES: Final = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_STOP: Final = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_CONVERSE_KEYS: Final = frozenset(
    {
        "messages",
        "system",
        "inferenceConfig",
        "toolConfig",
        "guardrailConfig",
        "additionalModelRequestFields",
        "promptVariables",
        "additionalModelResponseFieldPaths",
        "requestMetadata",
        "performanceConfig",
        "serviceTier",
        "outputConfig",
    }
)
_BLOCK_KINDS: Final = frozenset(
    {"text", "image", "document", "video", "audio", "toolUse", "toolResult", "guardContent"}
    | {"cachePoint", "reasoningContent", "citationsContent", "searchResult"}
)
_NAME_RE: Final = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_ID_RE: Final = re.compile(r"^[a-zA-Z0-9_.:-]{1,64}$")
_AUTH_RE: Final = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, ?SignedHeaders=(?P<signed>[^,]+), ?"
    r"Signature=(?P<sig>[0-9a-f]+)$"
)
_TITAN_DIMENSIONS: Final = (256, 512, 1024)
_COHERE_DIMENSIONS: Final = (256, 512, 1024, 1536)
_COHERE_INPUT_TYPES: Final = ("search_document", "search_query", "classification", "clustering")


class BedrockError(Exception):
    def __init__(self, status: int, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind or _ERROR_TYPES.get(status, "InternalServerException")

    def headers(self) -> tuple[tuple[bytes, bytes], ...]:
        return ((b"x-amzn-errortype", self.kind.encode()),)

    def body(self) -> bytes:
        return dumps({"message": self.message})


def _invalid(message: str) -> BedrockError:
    return BedrockError(400, message, "ValidationException")


# --- the AWS event stream encoding (botocore only decodes it) ---------------------------------


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return (
        struct.pack("!B", len(raw_name))
        + raw_name
        + struct.pack("!BH", 7, len(raw_value))  # type 7: string
        + raw_value
    )


def encode_event(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (total length, headers length, CRC32 of the two),
    headers, payload, then the CRC32 of everything before it."""
    raw_headers = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack("!II", total, len(raw_headers))
    prelude += struct.pack("!I", binascii.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + raw_headers + payload
    return message + struct.pack("!I", binascii.crc32(message) & 0xFFFFFFFF)


def event(kind: str, data: dict[str, Any]) -> bytes:
    # Bedrock pads every event with a "p" field (so lengths leak nothing); clients ignore it.
    payload = dumps({**data, "p": "abcdefghijklmnopqrstuvwxyzABCDEF"[: 1 + len(kind)]})
    return encode_event(
        {":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
        payload,
    )


def exception_event(kind: str, message: str) -> bytes:
    return encode_event(
        {
            ":exception-type": kind,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        dumps({"message": message}),
    )


# --- authentication ----------------------------------------------------------------------------


def check_auth(request: NativeRequest) -> None:
    """SigV4, recomputed with botocore from the request as received (or a bearer API key)."""
    auth = request.headers.get("authorization", "")
    if auth.startswith("Bearer "):
        if not auth[7:].strip() or auth[7:].strip() == BAD_TOKEN:
            raise BedrockError(403, "Invalid API Key format", "UnrecognizedClientException")
        return
    match = _AUTH_RE.match(auth)
    if match is None:
        raise BedrockError(
            403, "Missing Authentication Token", "MissingAuthenticationTokenException"
        )
    if match["key"] != ACCESS_KEY:
        raise BedrockError(
            403,
            "The security token included in the request is invalid.",
            "UnrecognizedClientException",
        )
    if match["service"] != "bedrock":
        raise BedrockError(
            403,
            "Credential should be scoped to correct service: 'bedrock'.",
            "InvalidSignatureException",
        )
    stamp = request.headers.get("x-amz-date", "")
    signed = match["signed"].split(";")
    if "host" not in signed or stamp[:8] != match["date"]:
        raise BedrockError(403, _SIGNATURE_MISMATCH, "InvalidSignatureException")
    host = request.headers.get("host", "")
    url = f"http://{host}{quote(request.path, safe='/-_.~')}"
    headers = {name: request.headers.get(name, "") for name in signed}
    aws = AWSRequest(method=request.method, url=url, data=request.body, headers=headers)
    aws.context["timestamp"] = stamp
    token = request.headers.get("x-amz-security-token")
    signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, token), "bedrock", match["region"])
    canonical = signer.canonical_request(aws)
    expected = signer.signature(signer.string_to_sign(aws, canonical), aws)
    if expected != match["sig"]:
        raise BedrockError(403, _SIGNATURE_MISMATCH, "InvalidSignatureException")


_SIGNATURE_MISMATCH: Final = (
    "The request signature we calculated does not match the signature you provided. Check "
    "your AWS Secret Access Key and signing method. Consult the service documentation for "
    "details."
)


# --- Converse validation and translation -------------------------------------------------------


def _block_kind(block: Any, where: str) -> str:
    if not isinstance(block, dict) or len(block) != 1 or next(iter(block)) not in _BLOCK_KINDS:
        raise _invalid(f"The value at {where} must hold exactly one content block member.")
    return next(iter(block))


def _image_part(image: Any, where: str) -> dict[str, Any]:
    if not isinstance(image, dict) or image.get("format") not in ("png", "jpeg", "gif", "webp"):
        raise _invalid(f"The format of the image at {where} is missing or not supported.")
    source = image.get("source")
    data = source.get("bytes") if isinstance(source, dict) else None
    try:
        raw = base64.b64decode(data, validate=True) if isinstance(data, str) else b""
    except binascii.Error:
        raw = b""
    if not raw:
        raise _invalid(f"The image at {where} has no valid base64 bytes.")
    return {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}


def _tool_result_text(result: dict[str, Any], where: str) -> str:
    content = result.get("content")
    if not isinstance(content, list):
        raise _invalid(f"The toolResult at {where} needs a content list.")
    texts = []
    for j, item in enumerate(content):
        kind = next(iter(item)) if isinstance(item, dict) and len(item) == 1 else None
        if kind == "text" and isinstance(item["text"], str):
            texts.append(item["text"])
        elif kind == "json":
            texts.append(dumps(item["json"]).decode())
        elif kind not in ("image", "document", "video", "searchResult"):
            raise _invalid(f"The value at {where}.content.{j} is not a tool result block.")
    if result.get("status") not in (None, "success", "error"):
        raise _invalid(f"The status of the toolResult at {where} must be success or error.")
    return " ".join(texts)


def _user_turn(content: list[Any], i: int, asked: set[str]) -> list[dict[str, Any]]:
    """OpenAI messages for a user turn: one ``tool`` message per toolResult, then the rest."""
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        where = f"messages.{i}.content.{j}"
        kind = _block_kind(block, where)
        if kind == "text":
            if not isinstance(block["text"], str) or not block["text"].strip():
                raise _invalid(
                    f"The text field in the ContentBlock object at {where} is blank. Add text "
                    "to the text field, and try again."
                )
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image_part(block["image"], where))
        elif kind == "toolResult":
            result = block["toolResult"]
            use_id = result.get("toolUseId") if isinstance(result, dict) else None
            if not isinstance(use_id, str) or use_id not in asked:
                raise _invalid(
                    "The toolResult blocks at messages."
                    f"{i} must answer the toolUse blocks of the turn before (toolUseId {use_id!r} "
                    "was not asked for)."
                )
            tools.append(
                {
                    "role": "tool",
                    "tool_call_id": use_id,
                    "content": _tool_result_text(result, where),
                }
            )
        elif kind in ("toolUse", "reasoningContent"):
            raise _invalid(f"A user message cannot hold a {kind} block ({where}).")
    out = list(tools)
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _assistant_turn(content: list[Any], i: int) -> tuple[dict[str, Any], set[str]]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        where = f"messages.{i}.content.{j}"
        kind = _block_kind(block, where)
        if kind == "text":
            if not isinstance(block["text"], str) or not block["text"].strip():
                raise _invalid(f"The text field in the ContentBlock object at {where} is blank.")
            texts.append(block["text"])
        elif kind == "toolUse":
            use = block["toolUse"]
            ok = (
                isinstance(use, dict)
                and isinstance(use.get("toolUseId"), str)
                and _ID_RE.match(use["toolUseId"])
                and isinstance(use.get("name"), str)
                and _NAME_RE.match(use["name"])
                and isinstance(use.get("input"), dict)
            )
            if not ok:
                raise _invalid(f"The toolUse at {where} needs toolUseId, name and an input object.")
            arguments = dumps(use["input"]).decode()
            calls.append(
                {
                    "id": use["toolUseId"],
                    "type": "function",
                    "function": {"name": use["name"], "arguments": arguments},
                }
            )
        elif kind in ("image", "toolResult", "document"):
            raise _invalid(f"An assistant message cannot hold a {kind} block ({where}).")
    msg: dict[str, Any] = {"role": "assistant", "content": " ".join(texts) or None}
    if calls:
        msg["tool_calls"] = calls
    return msg, {c["id"] for c in calls}


def _messages(raw: Any) -> tuple[list[dict[str, Any]], bool]:
    """(OpenAI messages, whether tool blocks were used) of Converse ``messages``."""
    if not isinstance(raw, list) or not raw:
        raise _invalid("The messages field is required and must hold at least one message.")
    out: list[dict[str, Any]] = []
    asked: set[str] = set()
    tool_blocks = False
    for i, msg in enumerate(raw):
        role = msg.get("role") if isinstance(msg, dict) else None
        content = msg.get("content") if isinstance(msg, dict) else None
        if role not in ("user", "assistant") or not isinstance(content, list) or not content:
            raise _invalid(
                f"The message at messages.{i} needs a role and a non-empty content list."
            )
        if i == 0 and role != "user":
            raise _invalid(
                "A conversation must start with a user message. Try again with a "
                "conversation that starts with a user message."
            )
        if i and raw[i - 1].get("role") == role:
            raise _invalid(
                "A conversation must alternate between user and assistant roles. Make sure the "
                "conversation alternates between user and assistant roles and try again."
            )
        tool_blocks = tool_blocks or any(
            isinstance(b, dict) and ("toolUse" in b or "toolResult" in b) for b in content
        )
        if role == "user":
            out += _user_turn(content, i, asked)
            asked = set()
        else:
            assistant, asked = _assistant_turn(content, i)
            out.append(assistant)
    return out, tool_blocks


def _system(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _invalid("The system field must be a list of system content blocks.")
    out = []
    for i, block in enumerate(raw):
        if isinstance(block, dict) and set(block) == {"cachePoint"}:
            continue
        if not isinstance(block, dict) or set(block) != {"text"} or not block["text"]:
            raise _invalid(f"The value at system.{i} must be a non-empty text block.")
        out.append({"role": "system", "content": block["text"]})
    return out


def _tools(config: Any, tool_blocks: bool) -> dict[str, Any]:
    if config is None:
        if tool_blocks:
            raise _invalid(
                "The toolConfig field must be defined when using toolUse and toolResult content "
                "blocks."
            )
        return {}
    tools = config.get("tools") if isinstance(config, dict) else None
    if not isinstance(tools, list) or not tools:
        raise _invalid("The toolConfig.tools list must hold at least one tool.")
    functions = []
    for i, tool in enumerate(tools):
        spec = tool.get("toolSpec") if isinstance(tool, dict) else None
        schema = spec.get("inputSchema") if isinstance(spec, dict) else None
        ok = (
            isinstance(spec, dict)
            and isinstance(spec.get("name"), str)
            and _NAME_RE.match(spec["name"])
            and isinstance(schema, dict)
            and isinstance(schema.get("json"), dict)
            and spec.get("description", "x") != ""
        )
        if not ok:
            raise _invalid(f"The tool at toolConfig.tools.{i} needs a valid toolSpec.")
        fn = {"name": spec["name"], "parameters": schema["json"]}
        functions.append({"type": "function", "function": fn})
    out: dict[str, Any] = {"tools": functions}
    choice = config.get("toolChoice")
    if choice is None or choice == {"auto": {}}:
        return out
    if choice == {"any": {}}:
        out["tool_choice"] = "required"
    elif isinstance(choice, dict) and set(choice) == {"tool"} and isinstance(choice["tool"], dict):
        name = choice["tool"].get("name")
        if name not in {f["function"]["name"] for f in functions}:
            raise _invalid(f"The tool {name!r} of toolChoice is not in toolConfig.tools.")
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise _invalid("toolChoice must be one of auto, any or tool.")
    return out


def _inference(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or set(raw) - {
        "maxTokens",
        "temperature",
        "topP",
        "stopSequences",
    }:
        raise _invalid("inferenceConfig holds only maxTokens, temperature, topP, stopSequences.")
    out: dict[str, Any] = {}
    if "maxTokens" in raw:
        if not isinstance(raw["maxTokens"], int) or raw["maxTokens"] < 1:
            raise _invalid("inferenceConfig.maxTokens must be an integer of at least 1.")
        out["max_tokens"] = raw["maxTokens"]
    for name in ("temperature", "topP"):
        value = raw.get(name)
        if value is not None and not (isinstance(value, int | float) and 0 <= value <= 1):
            raise _invalid(f"inferenceConfig.{name} must be between 0 and 1.")
    stops = raw.get("stopSequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise _invalid("inferenceConfig.stopSequences must be non-empty strings.")
        out["stop"] = stops
    return out


def _output_config(raw: Any) -> None:
    if raw is None:
        return
    fmt = raw.get("textFormat") if isinstance(raw, dict) else None
    if fmt is None:
        return
    structure = fmt.get("structure") if isinstance(fmt, dict) else None
    spec = structure.get("jsonSchema") if isinstance(structure, dict) else None
    schema = spec.get("schema") if isinstance(spec, dict) else None
    try:
        parsed = loads(schema.encode()) if isinstance(schema, str) else None
    except ValueError:
        parsed = None
    if fmt.get("type") != "json_schema" or not isinstance(parsed, dict):
        raise _invalid("outputConfig.textFormat needs type json_schema and a JSON schema string.")


def _thinking(fields: Any, max_tokens: int | None) -> bool:
    """Whether Anthropic thinking is asked for (validated as Anthropic does)."""
    thinking = fields.get("thinking") if isinstance(fields, dict) else None
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return False
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or budget < 1024:
        raise _invalid("thinking.budget_tokens: Input should be greater than or equal to 1024")
    if max_tokens is not None and budget >= max_tokens:
        raise _invalid("`max_tokens` must be greater than `thinking.budget_tokens`.")
    return True


def converse_plan(sim: Simulator, model: str, body: Any, stream: bool) -> Plan:
    """Validate a Converse body and plan its answer through the OpenAI simulator's rules."""
    if not isinstance(body, dict):
        raise BedrockError(
            400, "Unable to parse the request body as JSON.", "SerializationException"
        )
    unknown = set(body) - _CONVERSE_KEYS
    if unknown:
        raise _invalid(f"The request holds unknown fields: {', '.join(sorted(unknown))}.")
    if model.startswith(("amazon.titan-embed", "cohere.embed")):
        raise _invalid(
            "This action doesn't support the model that you provided. Try again "
            "with a supported text or chat model."
        )
    messages, tool_blocks = _messages(body.get("messages"))
    openai_body: dict[str, Any] = {
        "model": model,
        "messages": _system(body.get("system")) + messages,
        **_inference(body.get("inferenceConfig")),
        **_tools(body.get("toolConfig"), tool_blocks),
    }
    _output_config(body.get("outputConfig"))
    thinks = _thinking(body.get("additionalModelRequestFields"), openai_body.get("max_tokens"))
    if stream:
        openai_body["stream"] = True
        openai_body["stream_options"] = {"include_usage": True}
    try:
        plan = make_plan(openai_body, None, sim.defaults)
        sim.check_flaky(plan.directive)
    except SimError as err:
        raise BedrockError(err.status, err.message) from None
    if thinks:
        plan.directive[THINKING] = True
    return plan


def _usage(plan: Plan) -> dict[str, int] | None:
    if plan.usage is None:
        return None
    prompt = plan.usage["prompt_tokens"]
    cached = plan.usage["prompt_tokens_details"]["cached_tokens"]
    out = plan.usage["completion_tokens"]
    usage = {"inputTokens": prompt - cached, "outputTokens": out, "totalTokens": prompt + out}
    if cached:
        usage["cacheReadInputTokens"] = cached
    return usage


def _tool_ids(plan: Plan) -> list[str]:
    return [rand_id("tooluse_") for _ in plan.tool_calls or ()]


def converse_body(plan: Plan) -> bytes:
    content: list[dict[str, Any]]
    if plan.tool_calls is not None:
        content = [
            {"toolUse": {"toolUseId": call_id, "name": name, "input": loads(args.encode())}}
            for call_id, (name, args) in zip(_tool_ids(plan), plan.tool_calls, strict=True)
        ]
    else:
        content = [{"text": "".join(plan.tokens)}]
    if plan.directive.get(THINKING):
        reasoning = {"reasoningText": {"text": REASONING, "signature": "sig_sim"}}
        content.insert(0, {"reasoningContent": reasoning})
    out: dict[str, Any] = {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": _STOP.get(plan.finish_reason, "end_turn"),
        "metrics": {"latencyMs": 12},
    }
    usage = _usage(plan)
    if usage is not None:
        out["usage"] = usage
    return dumps(out)


def stream_events(plan: Plan) -> list[bytes]:
    """The ConverseStream events of a plan, in order (messageStart ... metadata)."""
    events = [event("messageStart", {"role": "assistant"})]
    if plan.tool_calls is None:
        block = 0
        if plan.directive.get(THINKING):
            # The thinking is block 0 and the text block 1, as Anthropic streams them.
            delta = {"reasoningContent": {"text": REASONING}}
            events.append(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": delta}))
            events.append(event("contentBlockStop", {"contentBlockIndex": 0}))
            block = 1
        events += [
            event("contentBlockDelta", {"contentBlockIndex": block, "delta": {"text": token}})
            for token in plan.tokens
        ]
        events.append(event("contentBlockStop", {"contentBlockIndex": block}))
    else:
        for k, (call_id, (name, args)) in enumerate(
            zip(_tool_ids(plan), plan.tool_calls, strict=True)
        ):
            start = {"toolUse": {"toolUseId": call_id, "name": name}}
            events.append(event("contentBlockStart", {"contentBlockIndex": k, "start": start}))
            events += [
                event(
                    "contentBlockDelta",
                    {
                        "contentBlockIndex": k,
                        "delta": {"toolUse": {"input": args[j : j + ARG_FRAGMENT]}},
                    },
                )
                for j in range(0, len(args), ARG_FRAGMENT)
            ]
            events.append(event("contentBlockStop", {"contentBlockIndex": k}))
    events.append(event("messageStop", {"stopReason": _STOP.get(plan.finish_reason, "end_turn")}))
    usage = _usage(plan)
    if usage is not None:
        events.append(event("metadata", {"usage": usage, "metrics": {"latencyMs": 12}}))
    return events


# --- InvokeModel: embeddings -------------------------------------------------------------------


def _extraneous(body: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise _invalid(
            f"Malformed input request: #: extraneous key [{extra[0]}] is not permitted, please "
            "reformat your input and try again."
        )


def _embedding_plan(sim: Simulator, model: str, body: dict[str, Any]) -> EmbeddingPlan:
    try:
        plan = make_embedding_plan(body, model, sim.defaults)
    except SimError as err:
        raise _invalid(err.message) from None
    return plan


def titan_answer(sim: Simulator, model: str, body: Any) -> tuple[EmbeddingPlan, bytes]:
    if not isinstance(body, dict):
        raise _invalid("Malformed input request, please reformat your input and try again.")
    _extraneous(body, {"inputText", "dimensions", "normalize", "embeddingTypes"})
    text = body.get("inputText")
    if not isinstance(text, str) or not text:
        raise _invalid("Malformed input request: #: required key [inputText] not found.")
    dims = body.get("dimensions", 1024)
    if dims not in _TITAN_DIMENSIONS:
        raise _invalid("Malformed input request: #/dimensions: must be one of 256, 512, 1024.")
    plan = _embedding_plan(sim, model, {"input": text, "dimensions": dims})
    values = vector(plan.seeds[0], plan.native, plan.dimensions)
    tokens = plan.usage["prompt_tokens"] if plan.usage else 0
    answer = {
        "embedding": values,
        "inputTextTokenCount": tokens,
        "embeddingsByType": {"float": values},
    }
    return plan, dumps(answer)


def cohere_answer(sim: Simulator, model: str, body: Any) -> tuple[EmbeddingPlan, bytes]:
    if not isinstance(body, dict):
        raise _invalid("Malformed input request, please reformat your input and try again.")
    _extraneous(
        body,
        {"texts", "images", "inputs", "input_type", "embedding_types", "output_dimension"}
        | {"max_tokens", "truncate"},
    )
    texts = body.get("texts")
    if not isinstance(texts, list) or not 1 <= len(texts) <= 96:
        raise _invalid("Malformed input request: #/texts: expected 1 to 96 strings.")
    if body.get("input_type") not in _COHERE_INPUT_TYPES:
        raise _invalid("Malformed input request: #/input_type: is not a valid enum value.")
    dims = body.get("output_dimension", 1536)
    if dims not in _COHERE_DIMENSIONS:
        raise _invalid("Malformed input request: #/output_dimension: is not a valid enum value.")
    types = body.get("embedding_types")
    if types is not None and (not isinstance(types, list) or "float" not in types):
        raise _invalid("This simulator answers float embeddings only.")
    plan = _embedding_plan(sim, model, {"input": texts, "dimensions": dims})
    vectors = [vector(seed, plan.native, plan.dimensions) for seed in plan.seeds]
    answer: dict[str, Any] = {"id": rand_id(""), "texts": texts}
    if types is None:
        answer |= {"embeddings": vectors, "response_type": "embeddings_floats"}
    else:
        answer |= {"embeddings": {"float": vectors}, "response_type": "embeddings_by_type"}
    return plan, dumps(answer)


# --- serving -------------------------------------------------------------------------------------


def _route(request: NativeRequest) -> tuple[str, str]:
    rest = request.path[len(PREFIX) :] if request.path.startswith(PREFIX) else ""
    model, _, action = rest.rpartition("/")
    if (
        request.method != "POST"
        or not model
        or action not in ("converse", "converse-stream", "invoke")
    ):
        raise BedrockError(
            404, f"Unknown operation: {request.method} {request.path}", "UnknownOperationException"
        )
    return model, action


async def handle(sim: Simulator, request: NativeRequest, receive: Receive, send: Send) -> None:
    try:
        model, action = _route(request)
        check_auth(request)
        if request.json is None:
            raise BedrockError(
                400, "Unable to parse the request body as JSON.", "SerializationException"
            )
        plan: Plan | EmbeddingPlan
        if action == "invoke":
            if model.startswith("amazon.titan-embed"):
                plan, body = titan_answer(sim, model, request.json)
            elif model.startswith("cohere.embed"):
                plan, body = cohere_answer(sim, model, request.json)
            else:
                raise _invalid("The provided model identifier is invalid.")
        else:
            plan = converse_plan(sim, model, request.json, action == "converse-stream")
            body = b"" if plan.stream else converse_body(plan)
    except BedrockError as err:
        await send_json(send, err.status, err.body(), err.headers())
        return
    if not plan.stream and not (plan.directive.keys() & GUARDED_KEYS):
        await send_json(send, 200, body, _token_headers(plan))
        return
    flow = Flow(sim, plan.stream)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_disconnect, receive, nursery.cancel_scope)
            await _answer(plan, body, send, flow)
            nursery.cancel_scope.cancel()
    finally:
        flow.abandon()


def _token_headers(plan: Plan | EmbeddingPlan) -> tuple[tuple[bytes, bytes], ...]:
    if plan.usage is None:
        return ()
    prompt = str(plan.usage["prompt_tokens"]).encode()
    out = [(b"x-amzn-bedrock-input-token-count", prompt)]
    if isinstance(plan, Plan):
        out.append(
            (b"x-amzn-bedrock-output-token-count", str(plan.usage["completion_tokens"]).encode())
        )
    return tuple(out)


async def _answer(plan: Plan | EmbeddingPlan, body: bytes, send: Send, flow: Flow) -> None:
    d = plan.directive
    if d.get("hang"):
        await trio.sleep_forever()
    if float(d.get("delay") or 0) > 0:
        await trio.sleep(float(d["delay"]))
    extra = extra_headers(d)
    status = int(d.get("status") or 200)
    if status >= 400:
        given = d.get("error")
        over: dict[str, Any] = given if isinstance(given, dict) else {}
        err = BedrockError(
            status,
            str(over.get("message", f"Simulated upstream error (HTTP {status}).")),
            over.get("type"),
        )
        flow.finish()
        await send_json(send, status, err.body(), err.headers() + extra)
    elif not isinstance(plan, Plan) or not plan.stream:
        flow.finish()
        await send_json(send, 200, body, _token_headers(plan) + extra)
    else:
        await _stream(plan, send, flow, extra)


async def _stream(
    plan: Plan, send: Send, flow: Flow, extra: tuple[tuple[bytes, bytes], ...]
) -> None:
    d = plan.directive
    events = stream_events(plan)
    chunk_delay = float(d.get("chunk_delay") or 0)
    raw_after = d.get("stream_error_after")
    error_after = None if raw_after is None else int(raw_after)
    failure = d.get("stream_exception")
    try:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", EVENT_STREAM),
                    (b"x-amzn-requestid", rand_id("").encode()),
                    *extra,
                ],
            }
        )
        for idx, frame in enumerate(events):
            if error_after is not None and idx >= 1 and idx - 1 >= error_after:
                flow.finish()
                return  # no final message: hypercorn drops the connection mid-body
            if failure and idx == 2:
                kind = failure if isinstance(failure, str) else "modelStreamErrorException"
                frame = exception_event(kind, "Simulated exception in the model stream.")
                flow.finish()
                await send({"type": "http.response.body", "body": frame, "more_body": False})
                return
            if idx and chunk_delay > 0:
                await trio.sleep(chunk_delay)
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        flow.finish()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except Exception:  # sending after the client left: the stream is over (undone)
        return
