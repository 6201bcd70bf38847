"""Canonical token accounting, the same four numbers for every provider."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TokenUsage:
    """``input`` includes ``cached_input``; ``output`` includes ``reasoning`` (OpenAI's way)."""

    input: int = 0
    cached_input: int = 0
    output: int = 0
    reasoning: int = 0

    @classmethod
    def from_openai(cls, usage: Mapping[str, Any]) -> TokenUsage:
        prompt_details = usage.get("prompt_tokens_details") or {}
        completion_details = usage.get("completion_tokens_details") or {}
        return cls(
            input=int(usage.get("prompt_tokens") or 0),
            cached_input=int(prompt_details.get("cached_tokens") or 0),
            output=int(usage.get("completion_tokens") or 0),
            reasoning=int(completion_details.get("reasoning_tokens") or 0),
        )

    @property
    def total(self) -> int:
        return self.input + self.output


def estimate_tokens(chars: int) -> int:
    """Roughly four characters per token (OpenAI's rule of thumb for English text); used
    only when a provider reports no usage at all."""
    return (chars + 3) // 4
