"""A run's parameters as OpenAI's CreateRunRequest (and create_and_run's, tool outputs',
update's) has them, validated as OpenAI does; and the run they ask for, from its assistant's
settings with the run's overrides."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ringside import validation
from ringside.domain import assistants, threads
from ringside.domain.auth import Caller
from ringside.domain.threads import NewMessage, ThreadRow, ThreadSpec
from ringside.errors import InvalidRequest
from ringside.ids import new_id
from ringside.services import Services
from ringside.store.runs import NewRun

MAX_EXPIRY_S = 86_400
MAX_TOOL_OUTPUT = 512 * 1024
_MAX_ADDITIONAL = 32

# The fields of a run create body (create_and_run adds thread and tool_resources, and takes
# no additional_* fields); ``user`` and ``expires_in_seconds`` are Ringside extensions.
_RUN_FIELDS = frozenset(
    {
        "assistant_id",
        "model",
        "instructions",
        "tools",
        "metadata",
        "temperature",
        "top_p",
        "stream",
        "max_prompt_tokens",
        "max_completion_tokens",
        "truncation_strategy",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "reasoning_effort",
        "expires_in_seconds",
        "user",
    }
)
_CREATE_FIELDS = _RUN_FIELDS | {"additional_instructions", "additional_messages", "include"}
_THREAD_AND_RUN_FIELDS = _RUN_FIELDS | {"thread", "tool_resources"}


@dataclass(frozen=True)
class RunSpec:
    assistant_id: str
    overrides: dict[str, Any]  # the run fields the body sets (model, tools, ...), parsed
    additional_instructions: str | None = None
    additional_messages: list[NewMessage] = field(default_factory=list)
    stream: bool = False
    expires_in_s: int | None = None
    user: str | None = None


def _token_limit(value: Any, param: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 256 <= value <= 2**31 - 1:
        raise InvalidRequest(f"'{param}' must be an integer of at least 256, or null.", param=param)
    return value


def _truncation(value: Any, param: str) -> dict[str, Any]:
    if value is None:
        return {"type": "auto", "last_messages": None}
    if not isinstance(value, dict) or value.get("type") not in ("auto", "last_messages"):
        raise InvalidRequest(
            f"'{param}' must be {{'type': 'auto'}} or {{'type': 'last_messages', "
            "'last_messages': N}}.",
            param=param,
        )
    extra = set(value) - {"type", "last_messages"}
    if extra:
        raise InvalidRequest(f"Unknown field {sorted(extra)[0]!r} in '{param}'.", param=param)
    last = value.get("last_messages")
    if value["type"] == "last_messages":
        if isinstance(last, bool) or not isinstance(last, int) or last < 1:
            raise InvalidRequest(
                f"'{param}.last_messages' must be a positive integer.",
                param=f"{param}.last_messages",
            )
    elif last is not None:
        raise InvalidRequest(
            f"'{param}.last_messages' goes with type 'last_messages'.",
            param=f"{param}.last_messages",
        )
    return {"type": value["type"], "last_messages": last}


def _tool_choice(value: Any, param: str) -> Any:
    if value is None:
        return "auto"
    if value in ("none", "auto", "required"):
        return value
    if isinstance(value, dict) and value.get("type") == "function":
        fn = value.get("function")
        if set(value) <= {"type", "function"} and isinstance(fn, dict):
            name = fn.get("name")
            if isinstance(name, str) and name and set(fn) == {"name"}:
                return {"type": "function", "function": {"name": name}}
    if isinstance(value, dict) and value.get("type") in ("code_interpreter", "file_search"):
        raise InvalidRequest(
            f"'{param}': {value['type']} is not supported.",
            param=param,
            code="unsupported_tool_type",
        )
    raise InvalidRequest(
        f"'{param}' must be 'none', 'auto', 'required' or "
        "{'type': 'function', 'function': {'name': ...}}.",
        param=param,
    )


def _flag(value: Any, param: str) -> bool:
    if value is None:
        return True
    if not isinstance(value, bool):
        raise InvalidRequest(f"'{param}' must be a boolean.", param=param)
    return value


def _expiry(value: Any, param: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_EXPIRY_S:
        raise InvalidRequest(
            f"'{param}' must be an integer from 1 to {MAX_EXPIRY_S} (seconds).", param=param
        )
    return value


def _parsers(svc: Services) -> dict[str, Callable[[Any, str], Any]]:
    return {
        "model": lambda v, p: None if v is None else assistants.check_model(svc, v, p),
        "instructions": lambda v, p: validation.optional_free_text(v, p, max_len=256_000),
        "tools": lambda v, p: None if v is None else assistants.parse_tools(v, p),
        "metadata": validation.metadata,
        "temperature": lambda v, p: assistants.parse_sampling(v, p, 0, 2),
        "top_p": lambda v, p: assistants.parse_sampling(v, p, 0, 1),
        "max_prompt_tokens": _token_limit,
        "max_completion_tokens": _token_limit,
        "truncation_strategy": _truncation,
        "tool_choice": _tool_choice,
        "parallel_tool_calls": _flag,
        "response_format": assistants.parse_response_format,
        "tool_resources": assistants.parse_tool_resources,
    }


def parse_create(
    svc: Services, body: Any, *, with_thread: bool = False
) -> tuple[RunSpec, ThreadSpec | None]:
    """A run create body (or create_and_run's, with its ``thread``)."""
    obj = validation.body_object(body, _THREAD_AND_RUN_FIELDS if with_thread else _CREATE_FIELDS)
    assistant_id = obj.get("assistant_id")
    if not isinstance(assistant_id, str) or not assistant_id:
        raise InvalidRequest("Missing required parameter: 'assistant_id'.", param="assistant_id")
    parsers = _parsers(svc)
    overrides = {k: parsers[k](v, k) for k, v in obj.items() if k in parsers}
    stream = obj.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    user = obj.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("'user' must be a string (your end-customer's id).", param="user")
    raw_messages = obj.get("additional_messages") or []
    if not isinstance(raw_messages, list) or len(raw_messages) > _MAX_ADDITIONAL:
        raise InvalidRequest(
            f"'additional_messages' must be an array of at most {_MAX_ADDITIONAL} messages.",
            param="additional_messages",
        )
    spec = RunSpec(
        assistant_id=assistant_id,
        overrides=overrides,
        additional_instructions=validation.optional_free_text(
            obj.get("additional_instructions"), "additional_instructions", max_len=256_000
        ),
        additional_messages=[
            threads.parse_new_message(m, f"additional_messages.{i}")
            for i, m in enumerate(raw_messages)
        ],
        stream=bool(stream),
        expires_in_s=_expiry(obj.get("expires_in_seconds"), "expires_in_seconds"),
        user=user,
    )
    thread = threads.parse_thread_body(obj.get("thread")) if with_thread else None
    return spec, thread


def _check_tool_choice(tools: list[dict[str, Any]], choice: Any) -> None:
    if isinstance(choice, dict):
        name = choice["function"]["name"]
        if not any(t.get("function", {}).get("name") == name for t in tools):
            raise InvalidRequest(
                f"'tool_choice' names function {name!r}, which is not among the run's tools.",
                param="tool_choice",
            )


def new_run(
    svc: Services,
    caller: Caller,
    thread: ThreadRow | None,
    assistant: assistants.AssistantRow,
    spec: RunSpec,
) -> NewRun:
    """The run the spec asks for: the assistant's settings with the run's overrides."""
    o = spec.overrides
    instructions = o.get("instructions")
    if instructions is None:
        instructions = assistant.instructions or ""
    if spec.additional_instructions:
        instructions = f"{instructions}\n\n{spec.additional_instructions}".strip()
    tools = o["tools"] if o.get("tools") is not None else assistant.tools
    tool_choice = o.get("tool_choice", "auto")
    _check_tool_choice(tools, tool_choice)
    response_format = o.get("response_format", assistant.response_format)
    return NewRun(
        id=new_id("run"),
        developer_id=caller.developer_id,
        conversation_id=thread.conversation_id if thread else "",
        assistant_id=assistant.id,
        # The thread's customer; a call attributed to another is billed to that one, and the
        # run names the customer its reservation found (run_calls.Reservations.reserve).
        customer_id=thread.customer_id if thread else None,
        api_key_id=caller.key_id,
        model=o.get("model") or assistant.model,
        instructions=instructions,
        tools=tools,
        tool_resources=o.get("tool_resources"),
        temperature=o.get("temperature", assistant.temperature),
        top_p=o.get("top_p", assistant.top_p),
        max_prompt_tokens=o.get("max_prompt_tokens"),
        max_completion_tokens=o.get("max_completion_tokens"),
        truncation_strategy=o.get("truncation_strategy", {"type": "auto", "last_messages": None}),
        tool_choice=tool_choice,
        parallel_tool_calls=o.get("parallel_tool_calls", True),
        response_format=None if response_format == "auto" else response_format,
        metadata=o.get("metadata", {}),
        expires_in_s=spec.expires_in_s or round(svc.settings.run_expiry_s),
    )


def parse_tool_outputs(body: Any) -> tuple[dict[str, str], bool, str | None]:
    """(tool_call_id -> output, stream, user)."""
    obj = validation.body_object(body, ("tool_outputs", "stream", "user"))
    raw = obj.get("tool_outputs")
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("'tool_outputs' must be a non-empty array.", param="tool_outputs")
    outputs: dict[str, str] = {}
    for i, item in enumerate(raw):
        param = f"tool_outputs.{i}"
        if not isinstance(item, dict) or set(item) - {"tool_call_id", "output"}:
            raise InvalidRequest(f"'{param}' must be {{'tool_call_id', 'output'}}.", param=param)
        call_id = item.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise InvalidRequest(
                f"'{param}.tool_call_id' is required.", param=f"{param}.tool_call_id"
            )
        output = item.get("output", "")
        if not isinstance(output, str) or len(output) > MAX_TOOL_OUTPUT:
            raise InvalidRequest(
                f"'{param}.output' must be a string of at most {MAX_TOOL_OUTPUT} characters.",
                param=f"{param}.output",
            )
        outputs[call_id] = output
    stream = obj.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    user = obj.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("'user' must be a string.", param="user")
    return outputs, bool(stream), user


def parse_update(body: Any) -> dict[str, str] | None:
    obj = validation.body_object(body if body is not None else {}, ("metadata",))
    if "metadata" not in obj:
        return None
    return validation.metadata(obj["metadata"])
