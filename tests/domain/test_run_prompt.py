"""The chat body of a run's model call: instructions, thread messages, truncation, tool
exchanges, budgets (pure functions, no database)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ringside.domain.run_prompt import PromptMessage, build, chat_message
from ringside.store.run_steps import StepRow


@dataclass
class Settings:
    model: str = "fc:openai/gpt-4o-mini"
    instructions: str = "sys"
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    response_format: Any | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_prompt_tokens: int | None = None
    max_completion_tokens: int | None = None
    truncation_strategy: dict[str, Any] = field(
        default_factory=lambda: {"type": "auto", "last_messages": None}
    )


def text(role: str, value: str) -> PromptMessage:
    return PromptMessage(role, [{"type": "text", "text": {"value": value, "annotations": []}}])


def tool_step(status: str = "completed") -> StepRow:
    now = datetime.now(UTC)
    function = {"name": "f", "arguments": "{}", "output": "42"}
    calls = [{"id": "call_1", "type": "function", "function": function}]
    return StepRow(
        seq=1, id="step_1", run_id="run_1", type="tool_calls", status=status,
        step_details={"type": "tool_calls", "tool_calls": calls}, last_error=None,
        request_id="req_1", prompt_tokens=1, completion_tokens=1, metadata={}, created_at=now,
        cancelled_at=None, failed_at=None, completed_at=now, expired_at=None,
    )  # fmt: skip


def test_instructions_messages_and_settings() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    settings = Settings(
        tools=[tool], response_format={"type": "json_object"}, temperature=0.2, top_p=0.5
    )
    body = build(settings, [text("user", "hi"), text("assistant", "yo")], []).body
    assert body is not None
    assert body["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
    ]
    assert body["tools"] == [tool]
    assert (body["tool_choice"], body["parallel_tool_calls"]) == ("auto", True)
    assert body["response_format"] == {"type": "json_object"}
    assert (body["temperature"], body["top_p"]) == (0.2, 0.5)
    assert body["stream"] is True


def test_no_tools_sends_no_tool_choice() -> None:
    body = build(Settings(tool_choice="none"), [text("user", "hi")], []).body
    assert body is not None
    assert "tool_choice" not in body
    assert "parallel_tool_calls" not in body


def test_tool_exchanges_follow_the_thread() -> None:
    body = build(Settings(), [text("user", "hi")], [tool_step(), tool_step("in_progress")]).body
    assert body is not None
    assert body["messages"][-2:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]


def test_images_stay_parts() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "auto"}}
    message = PromptMessage("user", [{"type": "text", "text": {"value": "see"}}, image])
    assert chat_message(message) == {
        "role": "user",
        "content": [{"type": "text", "text": "see"}, image],
    }


def test_max_prompt_tokens_keeps_the_newest_or_ends_incomplete() -> None:
    old, new = text("user", "word " * 400), text("user", "recent")
    prompt = build(Settings(max_prompt_tokens=256), [old, new], [])
    assert prompt.body is not None
    assert prompt.body["messages"][1:] == [{"role": "user", "content": "recent"}]
    assert build(Settings(max_prompt_tokens=256), [old], []).incomplete == "max_prompt_tokens"
    # The budget is the run's: what earlier calls used counts.
    spent = build(Settings(max_prompt_tokens=256), [new], [], used=(300, 0))
    assert spent.incomplete == "max_prompt_tokens"


def test_max_completion_tokens_is_what_the_run_has_left() -> None:
    prompt = build(Settings(max_completion_tokens=300), [text("user", "x")], [], used=(0, 100))
    assert prompt.body is not None
    assert prompt.body["max_completion_tokens"] == 200
    done = build(Settings(max_completion_tokens=300), [text("user", "x")], [], used=(0, 300))
    assert done.incomplete == "max_completion_tokens"


def test_auto_truncation_fits_the_context_window() -> None:
    old, new = text("user", "word " * 400), text("user", "recent")
    body = build(Settings(), [old, new], [], context_tokens=50).body
    assert body is not None
    assert body["messages"][1:] == [{"role": "user", "content": "recent"}]
    last = Settings(truncation_strategy={"type": "last_messages", "last_messages": 5})
    body = build(last, [old, new], [], context_tokens=50).body
    assert body is not None
    assert len(body["messages"]) == 3  # last_messages is the caller's choice, kept as given
