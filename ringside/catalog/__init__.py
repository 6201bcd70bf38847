"""The model catalog: every provider's model line-up, prices per 1M tokens and capabilities.

Shipped as ``models.json`` in this package; ``RINGSIDE_CATALOG`` names an extra JSON file of
the same shape whose entries are added to (or replace) the shipped ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

# "caching": the provider reads prompts from a cache at a lower price (derived from the
# prices: cached_input below input).
CAPABILITIES = frozenset(
    {"chat", "tools", "vision", "json_schema", "reasoning", "embeddings", "streaming", "caching"}
)
_PER_TOKEN = Decimal(1_000_000)


@dataclass(frozen=True)
class Pricing:
    """USD per 1M tokens."""

    input: Decimal
    cached_input: Decimal
    output: Decimal
    reasoning: Decimal
    cache_write: Decimal | None = None  # writing to the prompt cache; None: the input price

    def as_json(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class ModelInfo:
    provider: str
    model: str
    family: str
    version: tuple[int, ...]
    version_text: str
    released: date
    context_window: int
    max_output_tokens: int | None
    pricing: Pricing
    capabilities: frozenset[str]

    @property
    def ref(self) -> str:
        return f"fc:{self.provider}/{self.model}"

    def cost(
        self, *, input: int, cached_input: int, output: int, reasoning: int, cache_write: int = 0
    ) -> Decimal:
        """Exact USD cost. ``input`` counts all prompt tokens, cached and cache-written ones
        included, and ``output`` all completion tokens, reasoning included (OpenAI's
        accounting), so each part is billed once at its own price."""
        p = self.pricing
        fresh_input = max(input - cached_input - cache_write, 0)
        visible_output = max(output - reasoning, 0)
        write_price = p.input if p.cache_write is None else p.cache_write
        total = (
            fresh_input * p.input
            + cached_input * p.cached_input
            + cache_write * write_price
            + visible_output * p.output
            + reasoning * p.reasoning
        )
        return total / _PER_TOKEN

    def as_openai_json(self) -> dict[str, Any]:
        created = datetime(self.released.year, self.released.month, self.released.day, tzinfo=UTC)
        return {
            "id": self.ref,
            "object": "model",
            "created": int(created.timestamp()),
            "owned_by": self.provider,
            "provider": self.provider,
            "family": self.family,
            "version": self.version_text,
            "context_window": self.context_window,
            "max_output_tokens": self.max_output_tokens,
            "pricing": self.pricing.as_json(),
            "capabilities": {c: c in self.capabilities for c in sorted(CAPABILITIES)},
        }


def _derived(prices: Mapping[str, Any]) -> frozenset[str]:
    cached = prices.get("cached_input")
    return (
        frozenset({"caching"})
        if cached is not None and Decimal(cached) < Decimal(prices["input"])
        else frozenset()
    )


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _model_from_json(raw: Mapping[str, Any]) -> ModelInfo:
    prices = raw["pricing"]
    caps = frozenset(raw["capabilities"])
    unknown = caps - CAPABILITIES
    if unknown:
        raise ValueError(f"{raw['provider']}/{raw['model']}: unknown capabilities {unknown}")
    return ModelInfo(
        provider=raw["provider"],
        model=raw["model"],
        family=raw["family"],
        version=parse_version(raw["version"]),
        version_text=raw["version"],
        released=date.fromisoformat(raw["released"]),
        context_window=int(raw["context_window"]),
        max_output_tokens=raw.get("max_output_tokens"),
        pricing=Pricing(
            input=Decimal(prices["input"]),
            cached_input=Decimal(prices.get("cached_input", prices["input"])),
            output=Decimal(prices["output"]),
            reasoning=Decimal(prices.get("reasoning", prices["output"])),
            cache_write=Decimal(prices["cache_write"]) if "cache_write" in prices else None,
        ),
        capabilities=caps | _derived(prices),
    )


class Catalog:
    def __init__(self, models: Iterable[ModelInfo]) -> None:
        self._by_ref: dict[str, ModelInfo] = {m.ref: m for m in models}
        self._by_family: dict[tuple[str, str], list[ModelInfo]] = {}
        for m in self._by_ref.values():
            self._by_family.setdefault((m.provider, m.family), []).append(m)
        for members in self._by_family.values():
            # Newest first: highest version, then the latest release of that version.
            members.sort(key=lambda m: (m.version, m.released), reverse=True)

    def __len__(self) -> int:
        return len(self._by_ref)

    def get(self, provider: str, model: str) -> ModelInfo | None:
        return self._by_ref.get(f"fc:{provider}/{model}")

    def by_ref(self, ref: str) -> ModelInfo | None:
        return self._by_ref.get(ref)

    def family(self, provider: str, family: str) -> list[ModelInfo]:
        """Members of a model family, newest first."""
        return self._by_family.get((provider, family), [])

    def all(self) -> list[ModelInfo]:
        return sorted(self._by_ref.values(), key=lambda m: m.ref)

    def providers(self) -> set[str]:
        return {m.provider for m in self._by_ref.values()}


def _read(path: Path | None) -> list[dict[str, Any]]:
    if path is None:
        text = resources.files(__package__).joinpath("models.json").read_text("utf-8")
    else:
        text = path.read_text("utf-8")
    # Exact decimals: a price written as a JSON number never passes through a float.
    models: list[dict[str, Any]] = json.loads(text, parse_float=Decimal)["models"]
    return models


def load_catalog(extra: Path | None = None) -> Catalog:
    entries = {(m["provider"], m["model"]): m for m in _read(None)}
    if extra is not None:
        entries.update({(m["provider"], m["model"]): m for m in _read(extra)})
    return Catalog(_model_from_json(raw) for raw in entries.values())
