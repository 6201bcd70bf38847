"""Rendering a ``Plan`` as an OpenAI ``chat.completion`` body or as ``chat.completion.chunk``
SSE events (``data: <compact json>\\n\\n``)."""

from __future__ import annotations

import time
from typing import Any, Final

from .completion import FINGERPRINT, Plan, dumps, rand_id

ARG_FRAGMENT: Final = 8  # characters of tool-call arguments per streamed fragment
DONE: Final = b"data: [DONE]\n\n"


def _token_logprob(token: str, top: int) -> dict[str, Any]:
    alts = [{"token": token, "logprob": -0.1, "bytes": list(token.encode())}]
    alts += [
        {"token": f" alt{j}", "logprob": -1.0 - j, "bytes": list(f" alt{j}".encode())}
        for j in range(1, top)
    ]
    return {
        "token": token,
        "logprob": -0.1,
        "bytes": list(token.encode()),
        "top_logprobs": alts[:top],
    }


def completion_body(plan: Plan) -> bytes:
    """The non-streamed ``CreateChatCompletionResponse``."""
    content = "".join(plan.tokens)
    choices = []
    for i in range(plan.n):
        message: dict[str, Any] = {
            "role": "assistant",
            "content": content,
            "refusal": None,
            "annotations": [],
        }
        if plan.tool_calls is not None:
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": rand_id("call_"),
                    "type": "function",
                    "function": {"name": name, "arguments": args},
                }
                for name, args in plan.tool_calls
            ]
        logprobs = None
        if plan.logprobs:
            logprobs = {
                "content": [_token_logprob(t, plan.top_logprobs) for t in plan.tokens],
                "refusal": None,
            }
        choices.append(
            {
                "index": i,
                "message": message,
                "logprobs": logprobs,
                "finish_reason": plan.finish_reason,
            }
        )
    out: dict[str, Any] = {
        "id": rand_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": plan.model,
        "choices": choices,
    }
    if plan.usage is not None:
        out["usage"] = plan.usage
    out["service_tier"] = "default"
    out["system_fingerprint"] = FINGERPRINT
    return dumps(out)


class ChunkWriter:
    """Renders ``data: <chunk>\\n\\n`` events sharing one id/created/model prefix."""

    __slots__ = ("_prefix", "_suffix", "plan")

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        head = dumps(
            {
                "id": rand_id("chatcmpl-"),
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": plan.model,
                "service_tier": "default",
                "system_fingerprint": FINGERPRINT,
            }
        )
        self._prefix = b"data: " + head[:-1] + b',"choices":'
        self._suffix = b',"usage":null}\n\n' if plan.include_usage else b"}\n\n"

    def event(
        self, index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None
    ) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return self._prefix + dumps([choice]) + self._suffix

    def usage_event(self) -> bytes:
        return self._prefix + b'[],"usage":' + dumps(self.plan.usage) + b"}\n\n"

    def _tool_events(self, i: int) -> list[bytes]:
        events: list[bytes] = []
        for k, (name, args) in enumerate(self.plan.tool_calls or ()):
            head = {
                "index": k,
                "id": rand_id("call_"),
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            if k == 0:
                events.append(
                    self.event(
                        i,
                        {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [head],
                            "refusal": None,
                        },
                    )
                )
            else:
                events.append(self.event(i, {"tool_calls": [head]}))
            events += [
                self.event(
                    i,
                    {
                        "tool_calls": [
                            {"index": k, "function": {"arguments": args[j : j + ARG_FRAGMENT]}}
                        ]
                    },
                )
                for j in range(0, len(args), ARG_FRAGMENT)
            ]
        return events

    def steps(self) -> list[list[bytes]]:
        """Chunk events grouped by step: [role], content steps..., [finish]; one per choice."""
        plan, n = self.plan, self.plan.n
        if plan.tool_calls is None:
            first = [
                self.event(i, {"role": "assistant", "content": "", "refusal": None})
                for i in range(n)
            ]
            body = []
            for tok in plan.tokens:
                lp = None
                if plan.logprobs:
                    lp = {"content": [_token_logprob(tok, plan.top_logprobs)], "refusal": None}
                body.append([self.event(i, {"content": tok}, None, lp) for i in range(n)])
        else:
            per_choice = [self._tool_events(i) for i in range(n)]
            first = [events[0] for events in per_choice]
            body = [list(step) for step in zip(*(events[1:] for events in per_choice), strict=True)]
        last = [self.event(i, {}, plan.finish_reason) for i in range(n)]
        return [first, *body, last]
