"""``response_format`` on every provider: natively where the catalog says the model enforces
it, otherwise enforced by Ringside.

Native: a target whose catalog entry has ``json_schema`` gets the body unchanged (its adapter
passes it through or translates it to the provider's structured output); so does
``json_object`` on an OpenAI-wire provider with that capability.

Enforced (every other target): ``response_format`` is taken out of the body sent upstream (a
native-wire model with the capability keeps a ``json_object`` one, for its adapter's JSON
mode), a system message states the schema, and the answer's ``message.content`` is checked —
with ``jsonschema`` (Draft 2020-12, formats checked) for ``json_schema``, as a JSON object for
``json_object``. A failing answer is re-prompted (the answer and a user message carrying the
validation error are appended) up to ``schema_retries`` times (a Ringside extension, 0..5,
default 2, never sent upstream); an answer that still fails is ``422
response_schema_validation_failed`` with the answer in ``error.content``. An answer wrapped in
one Markdown code fence is unwrapped (the client receives the JSON alone); an answer cut off
by ``max_tokens`` is not re-prompted (the same limit would cut it again). Tool calls and
refusals are not checked. Every attempt is billed; the reply's ``usage`` sums them.

Streams cannot be re-prompted: the chunks go through as they come, the first character of
each choice's content must be able to start a document of the schema's type (else the stream
ends at once), and the whole content is checked at the end — valid ends with ``[DONE]``,
invalid with an ``error`` event (no ``[DONE]``) that the openai SDK raises as ``APIError``.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import orjson
from jsonschema import Draft202012Validator, SchemaError
from jsonschema.exceptions import best_match

from ringside.catalog import ModelInfo
from ringside.domain.billing import CallBounds
from ringside.domain.cascade import add_usage
from ringside.domain.modelrefs import ResolvedModel
from ringside.errors import InvalidRequest, ResponseSchemaValidationFailed
from ringside.tokens import TokenUsage
from ringside.upstream import shapes
from ringside.upstream.adapter import JsonReply
from ringside.upstream.providers import PROVIDERS, Wire

EXTENSION = "schema_retries"  # the Ringside body field: re-prompts allowed (never sent upstream)
DEFAULT_RETRIES = 2
MAX_RETRIES = 5

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FENCED = re.compile(r"\A\s*```[A-Za-z0-9_-]*[ \t]*\n?(.*?)\s*```\s*\Z", re.DOTALL)
_PROBLEM_CHARS = 500  # of a validation error, in a re-prompt or an error message
_PREVIEW_CHARS = 200  # of the offending answer, in an error message
_REPROMPT = (
    "Your previous reply does not satisfy the required format: {problem}. Reply again with "
    "only the corrected JSON document: no prose, no Markdown, no code fences."
)
# Prompt tokens a re-prompt adds besides the answer fed back (two messages; a token is at
# least one byte and a character at most four).
_REPROMPT_TOKENS = 4 * (len(_REPROMPT) + _PROBLEM_CHARS) + 16
_ANY_START = frozenset('{["-0123456789tfn')
_STARTS: Mapping[str, frozenset[str]] = {
    "object": frozenset("{"),
    "array": frozenset("["),
    "string": frozenset('"'),
    "number": frozenset("-0123456789"),
    "integer": frozenset("-0123456789"),
    "boolean": frozenset("tf"),
    "null": frozenset("n"),
}
_PER_TOKEN = Decimal(1_000_000)

Kind = Literal["json_object", "json_schema"]


@dataclass(frozen=True)
class OutputFormat:
    """A request's ``response_format`` (``json_object`` or ``json_schema``), checked."""

    kind: Kind
    retries: int
    instruction: str  # the system message an enforced target is given
    validator: Draft202012Validator | None = field(default=None, compare=False)
    starts: frozenset[str] = _ANY_START  # what the content of a valid answer can start with

    def problem(self, text: str) -> str | None:
        """Why ``text`` is not a valid answer (None: it is)."""
        try:
            document = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return f"it is not valid JSON ({exc})"
        if self.validator is None:
            return None if isinstance(document, dict) else "it is JSON but not a JSON object"
        errors = list(itertools.islice(self.validator.iter_errors(document), 50))
        if not errors:
            return None
        error = best_match(errors)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return _clip(f"at {error.json_path}: {error.message}{more}", _PROBLEM_CHARS)


def parse(body: Mapping[str, Any]) -> OutputFormat | None:
    """The request's output format (None: plain text), or ``InvalidRequest`` for an invalid
    one — an invalid JSON Schema included — before any provider is called."""
    if "response_format" not in body and EXTENSION not in body:
        return None  # the common case, at the cost of two lookups
    retries = _retries(body.get(EXTENSION, DEFAULT_RETRIES))
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_object":
        instruction = (
            "Reply with only a JSON object. No prose, no Markdown, no code fences: the whole "
            "reply must parse as a JSON object."
        )
        return OutputFormat("json_object", retries, instruction, starts=_STARTS["object"])
    if kind != "json_schema":
        return None
    assert isinstance(response_format, dict)
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        raise InvalidRequest(
            "response_format.json_schema must be an object with a name and a schema.",
            param="response_format",
        )
    name = spec.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequest(
            "response_format.json_schema.name must be 1 to 64 letters, digits, '_' or '-'.",
            param="response_format",
        )
    schema = spec.get("schema", {})
    if not isinstance(schema, dict):
        raise InvalidRequest(
            "response_format.json_schema.schema must be a JSON Schema object.",
            param="response_format",
        )
    text = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    validator = _validator(text)
    description = spec.get("description")
    about = f" ({description})" if isinstance(description, str) and description else ""
    instruction = (
        f"Reply with only a JSON document that validates against the JSON Schema named "
        f"{name!r}{about} below. No prose, no Markdown, no code fences: the whole reply must be "
        f"the JSON document.\nJSON Schema: {text.decode()}"
    )
    return OutputFormat("json_schema", retries, instruction, validator, _starts(schema))


def _retries(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_RETRIES:
        return value
    raise InvalidRequest(
        f"{EXTENSION} (a Ringside extension) is the number of re-prompts after an answer that "
        f"does not match response_format: an integer from 0 to {MAX_RETRIES}.",
        param=EXTENSION,
    )


@functools.lru_cache(maxsize=256)
def _validator(schema: bytes) -> Draft202012Validator:
    """A compiled validator per schema (by its canonical bytes): the schema is checked against
    the 2020-12 meta-schema once."""
    try:
        Draft202012Validator.check_schema(orjson.loads(schema))
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(root)"
        raise InvalidRequest(
            f"response_format.json_schema.schema is not a valid JSON Schema (2020-12): at "
            f"{where}: {_clip(exc.message, _PROBLEM_CHARS)}",
            param="response_format",
        ) from None
    return Draft202012Validator(
        orjson.loads(schema), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def _starts(schema: Mapping[str, Any]) -> frozenset[str]:
    kinds = schema.get("type")
    names = [kinds] if isinstance(kinds, str) else kinds if isinstance(kinds, list) else None
    if not names or not all(isinstance(n, str) and n in _STARTS for n in names):
        return _ANY_START
    return frozenset().union(*(_STARTS[n] for n in names))


@dataclass(frozen=True)
class Enforcement:
    """How an enforced target is called: the format, and whether the body keeps its
    ``response_format`` (a native-wire adapter's own JSON mode)."""

    output: OutputFormat
    keep_format: bool


def enforcement(output: OutputFormat | None, target: ResolvedModel) -> Enforcement | None:
    """None when the target honours the format natively (or there is none)."""
    if output is None:
        return None
    capable = "json_schema" in target.model.capabilities
    if output.kind == "json_schema":
        return None if capable else Enforcement(output, False)
    if capable and PROVIDERS[target.model.provider].wire is not Wire.NATIVE:
        return None
    return Enforcement(output, capable)


def instructed(body: Mapping[str, Any], how: Enforcement) -> dict[str, Any]:
    """The body an enforced target gets: the schema stated in a system message placed after
    the client's leading system messages, ``response_format`` and the extension taken out."""
    dropped = (EXTENSION,) if how.keep_format else (EXTENSION, "response_format")
    upstream = {k: v for k, v in body.items() if k not in dropped}
    messages: list[Any] = list(body["messages"])
    at = next(
        (
            i
            for i, m in enumerate(messages)
            if not (isinstance(m, dict) and m.get("role") in ("system", "developer"))
        ),
        len(messages),
    )
    messages.insert(at, {"role": "system", "content": how.output.instruction})
    upstream["messages"] = messages
    return upstream


@dataclass(frozen=True)
class _Verdict:
    problem: str | None  # of the first failing choice
    content: str | None  # that choice's answer
    rewrites: dict[int, str]  # choice position -> the unwrapped document
    retry: bool  # would a re-prompt help?


def _judge(output: OutputFormat, data: Mapping[str, Any]) -> _Verdict:
    choices = data.get("choices")
    rewrites: dict[int, str] = {}
    if not isinstance(choices, list) or not choices:
        return _Verdict("the reply has no choices", None, rewrites, True)
    for i, choice in enumerate(choices):
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            return _Verdict("the reply has no message", None, rewrites, True)
        content = message.get("content")
        if message.get("refusal") or (message.get("tool_calls") and not content):
            continue  # a refusal or a tool call is relayed as it is, as by OpenAI
        if not isinstance(content, str) or not content.strip():
            return _Verdict("the reply is empty", content, rewrites, True)
        fenced = _FENCED.match(content)
        text = fenced.group(1) if fenced else content
        problem = output.problem(text)
        if problem is not None:
            cut = isinstance(choice, dict) and choice.get("finish_reason") == "length"
            if cut:
                problem += " (the answer was cut off by the token limit)"
            return _Verdict(problem, content, rewrites, not cut)
        if fenced:
            rewrites[i] = text
    return _Verdict(None, None, rewrites, False)


# One upstream call with the given body; the usage of one attempt, as billed.
Call = Callable[[dict[str, Any]], Awaitable[JsonReply]]
Meter = Callable[[JsonReply, Sequence[Any]], TokenUsage]


async def enforce(how: Enforcement, body: Mapping[str, Any], call: Call, meter: Meter) -> JsonReply:
    """Call until the answer satisfies the format, re-prompting with the validation error;
    ``meter`` bills each attempt as it ends. Raises ``ResponseSchemaValidationFailed``."""
    upstream = instructed(body, how)
    messages: list[Any] = upstream["messages"]
    total = TokenUsage()
    for attempt in range(how.output.retries + 1):
        reply = await call({**upstream, "messages": messages})
        total = add_usage(total, meter(reply, messages))
        verdict = _judge(how.output, reply.data)
        if verdict.problem is None:
            return _answer(reply, verdict.rewrites, total if attempt else None)
        if not verdict.retry or attempt == how.output.retries:
            break
        messages = [
            *messages,
            # Some providers refuse an empty assistant message: say what it was.
            {"role": "assistant", "content": verdict.content or "(an empty reply)"},
            {"role": "user", "content": _REPROMPT.format(problem=verdict.problem)},
        ]
    assert verdict.problem is not None
    raise ResponseSchemaValidationFailed(
        f"The model's output did not match response_format.{how.output.kind} after "
        f"{attempt} re-prompt(s): {verdict.problem}. Its last answer (in error.content) began: "
        f"{_clip(verdict.content or '', _PREVIEW_CHARS)!r}",
        content=verdict.content,
    )


def _answer(reply: JsonReply, rewrites: dict[int, str], total: TokenUsage | None) -> JsonReply:
    if not rewrites and total is None:
        return reply  # the provider's bytes, as they came
    data = reply.data
    for i, text in rewrites.items():
        data["choices"][i]["message"]["content"] = text
    if total is not None:
        data["usage"] = shapes.usage(total)
    return JsonReply.of(data)


class StreamCheck:
    """Checks a streamed answer of an enforced target: each choice's content must start as a
    document of the schema's type can, and be valid once the stream is complete."""

    def __init__(self, output: OutputFormat) -> None:
        self._output = output
        self._parts: dict[int, list[str]] = {}
        self._started: set[int] = set()
        self._exempt: set[int] = set()  # tool calls, refusals
        self._failed = 0  # the choice that failed
        self.problem: str | None = None

    def feed(self, choices: Any) -> None:
        for choice in choices if isinstance(choices, list) else ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            index = choice.get("index", 0)
            if delta.get("tool_calls") or delta.get("refusal"):
                self._exempt.add(index)
            content = delta.get("content")
            if not isinstance(content, str) or not content:
                continue
            self._parts.setdefault(index, []).append(content)
            if index not in self._started and (head := content.lstrip()):
                self._started.add(index)
                if head[0] not in self._output.starts and self.problem is None:
                    self._failed = index
                    self.problem = (
                        f"it cannot be a valid document: it starts with {_clip(head, 20)!r}"
                    )

    def finish(self) -> str | None:
        """Why the complete answer is invalid (None: it is valid)."""
        if self.problem is not None:
            return self.problem
        answered = set(self._parts) | self._exempt
        for index in sorted((answered or {0}) - self._exempt):
            text = "".join(self._parts.get(index, ()))
            self.problem = "the reply is empty" if not text.strip() else self._output.problem(text)
            if self.problem is not None:
                self._failed = index
                return self.problem
        return None

    def error(self) -> ResponseSchemaValidationFailed:
        assert self.problem is not None
        content = "".join(self._parts.get(self._failed, ()))
        return ResponseSchemaValidationFailed(
            f"The streamed output did not match response_format.{self._output.kind} (a stream "
            f"cannot be re-prompted): {self.problem}.",
            content=content,
        )


def stream_check(output: OutputFormat | None, target: ResolvedModel) -> StreamCheck | None:
    how = enforcement(output, target)
    return StreamCheck(how.output) if how is not None else None


@dataclass(frozen=True)
class Span:
    """One target's share of an enforced call's worst case."""

    limits: ModelInfo  # whose output limit applies when the request sets none
    attempts: int  # 1 + re-prompts
    instruction_tokens: int  # prompt tokens the instruction adds (0: native)
    moves_on: bool  # may it be billed and the cascade still move on (a schema failure)?


@dataclass(frozen=True)
class RetryBounds(CallBounds):
    """The worst case of a call with ``response_format``: every attempt of every enforced
    target (a schema failure moves the cascade on, and is billed), plus the dearest native one.
    Attempt k's prompt carries the k previous answers and re-prompts."""

    spans: tuple[Span, ...] = ()

    def worst_cost(self, model: ModelInfo) -> Decimal:
        costs = [(s.moves_on, self._span_cost(s, model)) for s in self.spans]
        once = max((c for moves_on, c in costs if not moves_on), default=Decimal(0))
        return sum((c for moves_on, c in costs if moves_on), once)

    def _span_cost(self, span: Span, model: ModelInfo) -> Decimal:
        p = model.pricing
        answer = self.max_output_tokens
        if answer is None:
            answer = span.limits.max_output_tokens or span.limits.context_window
        n = span.attempts
        prompt = n * (self.prompt_tokens + span.instruction_tokens) + n * (n - 1) // 2 * (
            answer + _REPROMPT_TOKENS
        )
        output = n * answer * self.choices
        return (
            prompt * max(p.input, p.cached_input) + output * max(p.output, p.reasoning)
        ) / _PER_TOKEN


def bounds(
    output: OutputFormat,
    targets: Sequence[ResolvedModel],
    prompt_tokens: int,
    max_output_tokens: int | None,
    choices: int,
    *,
    stream: bool,
) -> CallBounds:
    """The reservation bounds of a call with ``response_format`` (a stream has one attempt
    and never moves on after a schema failure)."""
    instruction = len(output.instruction.encode()) + 16
    spans = []
    for target in targets:
        how = enforcement(output, target)
        if how is None or stream:
            spans.append(Span(target.model, 1, instruction if how else 0, False))
        else:
            spans.append(Span(target.model, 1 + output.retries, instruction, True))
    return RetryBounds(prompt_tokens, max_output_tokens, choices, tuple(spans))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
