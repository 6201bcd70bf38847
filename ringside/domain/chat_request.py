"""Validation of ``POST /v1/chat/completions`` bodies, and of what they ask of the models.

Only what Ringside itself relies on is checked strictly; unknown fields pass through to
OpenAI-compatible providers untouched (a developer's provider-specific knobs keep working).
What the catalog says a model cannot do is refused before any provider is called: ``tools``
(or a ``tool_choice`` other than ``"none"``, or legacy ``functions``) without the ``tools``
capability, image parts without ``vision``, ``reasoning_effort`` without ``reasoning`` (as
OpenAI refuses it on its non-reasoning models). In a cascade every model must be able to; a
model outside the catalog (a local Ollama one) has unknown capabilities and is not refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fastjsonschema
import orjson

from ringside.catalog import Catalog
from ringside.domain import structured_output
from ringside.domain.modelrefs import ResolvedModel
from ringside.errors import InvalidRequest
from ringside.tokens import TokenUsage, estimate_tokens

_TEXT_OR_PARTS = {
    "anyOf": [
        {"type": "string"},
        {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"type": "string"}, "text": {"type": "string"}},
            },
        },
        {"type": "null"},
    ]
}
_INT_GE1 = {"type": "integer", "minimum": 1}

CHAT_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {
            "anyOf": [
                {"type": "string", "minLength": 1},
                {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 8,
                    "items": {"type": "string", "minLength": 1},
                },
            ]
        },
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["role"],
                "properties": {
                    "role": {
                        "enum": ["system", "developer", "user", "assistant", "tool", "function"]
                    },
                    "content": _TEXT_OR_PARTS,
                    "name": {"type": "string"},
                    "tool_calls": {"type": "array"},
                    "tool_call_id": {"type": "string"},
                },
            },
        },
        "stream": {"type": ["boolean", "null"]},
        "stream_options": {
            "type": ["object", "null"],
            "properties": {"include_usage": {"type": "boolean"}},
        },
        "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
        "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "max_tokens": {"anyOf": [_INT_GE1, {"type": "null"}]},
        "max_completion_tokens": {"anyOf": [_INT_GE1, {"type": "null"}]},
        "n": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 128}, {"type": "null"}]},
        "seed": {"type": ["integer", "null"]},
        "user": {"type": "string"},
        "logprobs": {"type": ["boolean", "null"]},
        "top_logprobs": {
            "anyOf": [{"type": "integer", "minimum": 0, "maximum": 20}, {"type": "null"}]
        },
        "stop": {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "maxItems": 4, "items": {"type": "string"}},
                {"type": "null"},
            ]
        },
        "tools": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {"type": "string"},
                    "function": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "parameters": {"type": "object"},
                        },
                    },
                },
            },
        },
        "tool_choice": {
            "anyOf": [
                {"enum": ["none", "auto", "required"]},
                {"type": "object", "required": ["type"]},
            ]
        },
        "response_format": {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"enum": ["text", "json_object", "json_schema"]}},
        },
        "metadata": {"type": ["object", "null"]},
    },
}

# Compiled once to plain Python: ~7 µs a request where an interpreting validator takes ~130.
_validate = fastjsonschema.compile(CHAT_REQUEST_SCHEMA)


@dataclass(frozen=True)
class ChatRequest:
    body: dict[str, Any]  # the client's body, untouched
    model: str | list[str]
    stream: bool
    include_usage: bool  # did the client ask for the usage chunk?
    user: str | None
    size: int  # bytes of the request body: a bound on its prompt tokens
    output: structured_output.OutputFormat | None  # response_format, checked; None: text
    upstream_body: dict[str, Any]  # what a provider gets by default: no Ringside extension

    @property
    def max_output_tokens(self) -> int | None:
        limit = self.body.get("max_completion_tokens") or self.body.get("max_tokens")
        return limit if isinstance(limit, int) else None

    @property
    def choices(self) -> int:
        n = self.body.get("n")
        return n if isinstance(n, int) and n > 0 else 1

    def counted_usage(self, output_chars: int) -> TokenUsage:
        """Usage counted from text, for providers (or aborted streams) that report none."""
        return counted_usage(self.body["messages"], output_chars)

    @classmethod
    def parse(cls, body: Any, size: int | None = None) -> ChatRequest:
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.")
        try:
            _validate(body)
        except fastjsonschema.JsonSchemaValueException as exc:
            path = ".".join(str(p) for p in exc.path[1:]) or None
            message = exc.message.replace("data.", "", 1) if path else "body" + exc.message[4:]
            raise InvalidRequest(f"Invalid request: {message}", param=path) from None
        stream_options = body.get("stream_options") or {}
        upstream_body = body
        if structured_output.EXTENSION in body:
            upstream_body = {k: v for k, v in body.items() if k != structured_output.EXTENSION}
        return cls(
            body=body,
            model=body["model"],
            stream=bool(body.get("stream")),
            include_usage=bool(stream_options.get("include_usage")),
            user=body.get("user"),
            size=size if size is not None else len(orjson.dumps(body)),
            output=structured_output.parse(body),
            upstream_body=upstream_body,
        )


def counted_usage(messages: Sequence[Mapping[str, Any]], output_chars: int) -> TokenUsage:
    return TokenUsage(
        input=estimate_tokens(prompt_text_chars(messages)), output=estimate_tokens(output_chars)
    )


def check_capabilities(
    req: ChatRequest, targets: Sequence[ResolvedModel], catalog: Catalog
) -> None:
    """Refuse what a catalogued target cannot do (see the module docstring). Cheap when the
    request asks for nothing special: a few lookups, no copy."""
    body = req.body
    tools, functions = body.get("tools"), body.get("functions")
    if tools or functions or body.get("tool_choice") not in (None, "none"):
        param = "tools" if tools else "functions" if functions else "tool_choice"
        _require(catalog, targets, "tools", "tools", param)
    if body.get("reasoning_effort") is not None:
        _require(catalog, targets, "reasoning", "reasoning_effort", "reasoning_effort")
    for target in targets:
        if "vision" not in target.model.capabilities:
            image = _image_part(body["messages"])
            if image is not None:
                _require(catalog, targets, "vision", "images", image)
            return


def _require(
    catalog: Catalog,
    targets: Sequence[ResolvedModel],
    capability: str,
    what: str,
    param: str,
) -> None:
    lacking = [
        t.ref
        for t in targets
        if capability not in t.model.capabilities and catalog.by_ref(t.ref) is not None
    ]
    if not lacking:
        return
    if len(targets) == 1:
        who = f"{lacking[0]} does not support {what} (its catalog entry has"
        choose = "a model that does"
    else:
        names = ", ".join(lacking)
        who = f"Every model of a cascade must support {what}; {names} " + (
            "does not (its catalog entry has"
            if len(lacking) == 1
            else "do not (their catalog entries have"
        )
        choose = "models that do"
    raise InvalidRequest(
        f"{who} no {capability!r} capability): choose {choose} "
        f"(GET /v1/models?supports={capability}), or send the request without {param}.",
        param=param,
        code=f"{capability}_unsupported",
    )


def _image_part(messages: list[Any]) -> str | None:
    """The param path of the first image part in the messages (None: there is none)."""
    for i, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if isinstance(part, dict) and part.get("type") == "image_url":
                    return f"messages.{i}.content.{j}"
    return None


def prompt_text_chars(messages: Sequence[Mapping[str, Any]]) -> int:
    """Characters of text in a prompt, for counting usage when a provider reports none."""
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    return total
