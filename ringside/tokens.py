"""Canonical token accounting, the same four numbers for every provider."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def _count(obj: Any, key: str) -> int:
    value = obj.get(key) if isinstance(obj, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(frozen=True)
class TokenUsage:
    """``input`` includes ``cached_input`` and ``cache_write``; ``output`` includes
    ``reasoning`` (OpenAI's way). ``cache_write`` counts prompt tokens written to a provider's
    prompt cache (Anthropic's cache creation, Bedrock's cache write), billed at their own rate;
    OpenAI-shaped usage carries it as ``prompt_tokens_details.cache_write_tokens``."""

    input: int = 0
    cached_input: int = 0
    output: int = 0
    reasoning: int = 0
    cache_write: int = 0

    @classmethod
    def from_openai(cls, usage: Mapping[str, Any]) -> TokenUsage:
        """From an OpenAI ``usage`` object; anything that is not a count reads as 0."""
        prompt_details = usage.get("prompt_tokens_details")
        completion_details = usage.get("completion_tokens_details")
        return cls(
            input=_count(usage, "prompt_tokens"),
            cached_input=_count(prompt_details, "cached_tokens"),
            output=_count(usage, "completion_tokens"),
            reasoning=_count(completion_details, "reasoning_tokens"),
            cache_write=_count(prompt_details, "cache_write_tokens"),
        )

    @property
    def total(self) -> int:
        return self.input + self.output


def estimate_tokens(chars: int) -> int:
    """Roughly four characters per token (OpenAI's rule of thumb for English text); used
    only when a provider reports no usage at all."""
    return (chars + 3) // 4
