"""The Chat Completions body of one model call of a run: the run's instructions as a system
message, the thread's messages (truncated as the run asks), the run's earlier tool calls with
their outputs, and the run's sampling, tool and format settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ringside.store.run_steps import StepRow
from ringside.tokens import estimate_tokens

# Per-message overhead of a chat prompt (OpenAI's counting rule of thumb).
_PER_MESSAGE = 3


class RunSettings(Protocol):
    """What a model call takes from its run (a stored run, or one about to be inserted)."""

    @property
    def model(self) -> str: ...
    @property
    def instructions(self) -> str: ...
    @property
    def tools(self) -> list[dict[str, Any]]: ...
    @property
    def tool_choice(self) -> Any: ...
    @property
    def parallel_tool_calls(self) -> bool: ...
    @property
    def response_format(self) -> Any | None: ...
    @property
    def temperature(self) -> float | None: ...
    @property
    def top_p(self) -> float | None: ...
    @property
    def max_prompt_tokens(self) -> int | None: ...
    @property
    def max_completion_tokens(self) -> int | None: ...
    @property
    def truncation_strategy(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class PromptMessage:
    """A thread message as the prompt needs it (a stored message, or one being added)."""

    role: str
    content: list[dict[str, Any]]  # OpenAI Assistants content parts


@dataclass(frozen=True)
class Prompt:
    body: dict[str, Any] | None
    # Set (and body None) when the run's token budget leaves no room for another call:
    # "max_prompt_tokens" or "max_completion_tokens", OpenAI's incomplete reasons.
    incomplete: str | None = None


def _text_of(parts: Sequence[dict[str, Any]]) -> str:
    texts = []
    for part in parts:
        if part.get("type") == "text":
            text = part.get("text")
            texts.append(text.get("value", "") if isinstance(text, dict) else str(text or ""))
    return "".join(texts)


def chat_message(message: PromptMessage) -> dict[str, Any]:
    """An Assistants message as a Chat Completions message."""
    if message.role != "user" or all(p.get("type") == "text" for p in message.content):
        return {"role": message.role, "content": _text_of(message.content)}
    parts: list[dict[str, Any]] = []
    for part in message.content:
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": _text_of([part])})
        elif kind == "image_url":
            parts.append({"type": "image_url", "image_url": part.get("image_url")})
    return {"role": "user", "content": parts}


def tool_exchanges(steps: Sequence[StepRow]) -> list[dict[str, Any]]:
    """The run's finished tool calls: the assistant's call, then each output."""
    out: list[dict[str, Any]] = []
    for step in steps:
        if step.type != "tool_calls" or step.status != "completed":
            continue
        calls = step.step_details.get("tool_calls") or []
        out.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {
                            "name": c["function"]["name"],
                            "arguments": c["function"]["arguments"],
                        },
                    }
                    for c in calls
                ],
            }
        )
        out.extend(
            {"role": "tool", "tool_call_id": c["id"], "content": c["function"].get("output") or ""}
            for c in calls
        )
    return out


def _tokens(message: dict[str, Any]) -> int:
    content = message.get("content")
    chars = 0
    if isinstance(content, str):
        chars = len(content)
    elif isinstance(content, list):
        chars = sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    for call in message.get("tool_calls") or ():
        chars += len(call["function"]["arguments"]) + len(call["function"]["name"])
    return estimate_tokens(chars) + _PER_MESSAGE


def _fit(
    head: list[dict[str, Any]],
    thread: list[dict[str, Any]],
    tail: list[dict[str, Any]],
    budget: int,
) -> list[dict[str, Any]] | None:
    """The newest thread messages that fit ``budget`` tokens beside ``head`` and ``tail``
    (truncation ``auto``); None when not even the newest one does."""
    used = sum(_tokens(m) for m in head) + sum(_tokens(m) for m in tail)
    kept: list[dict[str, Any]] = []
    for message in reversed(thread):
        used += _tokens(message)
        if used > budget:
            break
        kept.append(message)
    if thread and not kept:
        return None
    kept.reverse()
    return kept


def build(
    run: RunSettings,
    messages: Sequence[PromptMessage],
    steps: Sequence[StepRow],
    used: tuple[int, int] = (0, 0),
    context_tokens: int | None = None,
) -> Prompt:
    """The next model call of ``run``, which has ``used`` (prompt, completion) tokens so far.
    ``messages`` are the thread's (already limited to the last N for truncation
    ``last_messages``); ``context_tokens`` is the room the model leaves for a prompt, which
    truncation ``auto`` keeps the newest messages within."""
    head = [{"role": "system", "content": run.instructions}] if run.instructions else []
    thread = [chat_message(m) for m in messages]
    tail = tool_exchanges(steps)
    if run.max_prompt_tokens is not None:
        budget = run.max_prompt_tokens - used[0]
        fitted = _fit(head, thread, tail, budget)
        if fitted is None or budget <= 0:
            return Prompt(None, "max_prompt_tokens")
        thread = fitted
    if context_tokens is not None and run.truncation_strategy.get("type") == "auto":
        # Not even the newest message fits: sent as it is, for the provider to refuse.
        thread = _fit(head, thread, tail, context_tokens) or thread
    remaining = None
    if run.max_completion_tokens is not None:
        remaining = run.max_completion_tokens - used[1]
        if remaining <= 0:
            return Prompt(None, "max_completion_tokens")
    if not head and not thread and not tail:
        thread = [{"role": "user", "content": ""}]  # a chat call needs one message
    body: dict[str, Any] = {"model": run.model, "messages": [*head, *thread, *tail]}
    body["stream"] = True
    tools = [t for t in run.tools if t.get("type") == "function"]
    if tools:
        body["tools"] = [{"type": "function", "function": t["function"]} for t in tools]
        body["tool_choice"] = run.tool_choice
        body["parallel_tool_calls"] = run.parallel_tool_calls
    if run.response_format not in (None, "auto"):
        body["response_format"] = run.response_format
    if run.temperature is not None:
        body["temperature"] = run.temperature
    if run.top_p is not None:
        body["top_p"] = run.top_p
    if remaining is not None:
        body["max_completion_tokens"] = remaining
    return Prompt(body)
