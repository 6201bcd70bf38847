"""Runs and run steps on the wire (OpenAI's RunObject and RunStepObject), the streaming
events' payloads, and their SSE framing (``event: <name>`` / ``data: <json>``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from ringside.errors import RingsideError
from ringside.store.run_steps import StepRow
from ringside.store.runs import RunRow
from ringside.timestamps import unix

TERMINAL = frozenset({"completed", "incomplete", "failed", "cancelled", "expired"})
DONE = b"event: done\ndata: [DONE]\n\n"

# A streaming run's events as they happen: (event name, payload). Non-streaming runs pass a
# sink that drops them.
Sink = Callable[[str, dict[str, Any]], None]


def drop(name: str, data: dict[str, Any]) -> None:
    """The sink of a run nobody streams."""


def usage_json(prompt: int | None, completion: int | None) -> dict[str, int] | None:
    if prompt is None or completion is None:
        return None
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def run_json(run: RunRow, thread_id: str) -> dict[str, Any]:
    """OpenAI's RunObject; ``usage`` stays null until the run has ended, as OpenAI's does."""
    ended = run.status in TERMINAL
    return {
        "id": run.id,
        "object": "thread.run",
        "created_at": unix(run.created_at),
        "assistant_id": run.assistant_id,
        "thread_id": thread_id,
        "status": run.status,
        "started_at": unix(run.started_at),
        "expires_at": None if ended else unix(run.expires_at),
        "cancelled_at": unix(run.cancelled_at),
        "failed_at": unix(run.failed_at),
        "completed_at": unix(run.completed_at),
        "required_action": run.required_action,
        "last_error": run.last_error,
        "model": run.model,
        "instructions": run.instructions,
        "tools": run.tools,
        "metadata": run.metadata,
        "usage": usage_json(run.prompt_tokens, run.completion_tokens) if ended else None,
        "incomplete_details": run.incomplete_details,
        "temperature": run.temperature,
        "top_p": run.top_p,
        "max_prompt_tokens": run.max_prompt_tokens,
        "max_completion_tokens": run.max_completion_tokens,
        "truncation_strategy": run.truncation_strategy,
        "tool_choice": run.tool_choice,
        "parallel_tool_calls": run.parallel_tool_calls,
        "response_format": "auto" if run.response_format is None else run.response_format,
    }


def step_json(step: StepRow, run: RunRow, thread_id: str) -> dict[str, Any]:
    return {
        "id": step.id,
        "object": "thread.run.step",
        "created_at": unix(step.created_at),
        "run_id": step.run_id,
        "assistant_id": run.assistant_id,
        "thread_id": thread_id,
        "type": step.type,
        "status": step.status,
        "cancelled_at": unix(step.cancelled_at),
        "completed_at": unix(step.completed_at),
        "expired_at": unix(step.expired_at),
        "failed_at": unix(step.failed_at),
        "last_error": step.last_error,
        "step_details": step.step_details,
        "usage": usage_json(step.prompt_tokens, step.completion_tokens),
        "metadata": step.metadata,
    }


def text_delta(message_id: str, text: str) -> dict[str, Any]:
    return {
        "id": message_id,
        "object": "thread.message.delta",
        "delta": {
            "content": [{"index": 0, "type": "text", "text": {"value": text, "annotations": []}}]
        },
    }


def tool_call_delta(step_id: str, call: dict[str, Any]) -> dict[str, Any]:
    """``call``: {"index", and any of "id", "type", "function": {"name", "arguments"}}."""
    return {
        "id": step_id,
        "object": "thread.run.step.delta",
        "delta": {"step_details": {"type": "tool_calls", "tool_calls": [call]}},
    }


def run_event(status: str) -> str:
    return f"thread.run.{status}"


def frame(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def error_data(error: RingsideError, request_id: str) -> dict[str, Any]:
    """OpenAI's ErrorEvent data (the Error object); the Ringside envelope rides along under
    ``error``, so SDKs that look for it raise with the message."""
    body = error.envelope(request_id)
    inner = body["error"]
    return {
        "type": inner["type"],
        "code": inner["code"],
        "message": inner["message"],
        "param": inner["param"],
        **body,
    }
