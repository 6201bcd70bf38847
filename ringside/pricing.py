"""What a call is charged on top of its provider cost: markup by developer tier (overridable per
developer), the developer's rate multiplier, and per-model multipliers (``RINGSIDE_CONFIG``).

billable = cost * (1 + markup / 100) * rate multiplier * model multiplier
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

_HUNDRED = Decimal(100)
_ONE = Decimal(1)

DEFAULT_MARKUP_PERCENT: Mapping[str, Decimal] = {"developer": Decimal(10), "pro": Decimal(6)}


@dataclass(frozen=True)
class PricingPolicy:
    markup_percent: Mapping[str, Decimal] = field(
        default_factory=lambda: dict(DEFAULT_MARKUP_PERCENT)
    )
    model_multipliers: Mapping[str, Decimal] = field(default_factory=dict)

    def factor(
        self, tier: str, markup_percent: Decimal | None, rate_multiplier: Decimal, model_ref: str
    ) -> Decimal:
        markup = markup_percent
        if markup is None:
            markup = self.markup_percent.get(tier, Decimal(0))
        multiplier = self.model_multipliers.get(model_ref, _ONE)
        return (_ONE + markup / _HUNDRED) * rate_multiplier * multiplier

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PricingPolicy:
        """``[pricing.markup_percent]`` (``developer = 10``, ``pro = 6``) and
        ``[pricing.model_multipliers]`` (``"fc:openai/gpt-4o" = 1.25``); the TOML is read with
        exact decimals, so no figure here ever was a float."""
        section = config.get("pricing") or {}
        markup = dict(DEFAULT_MARKUP_PERCENT)
        markup.update(
            {k: _decimal(v, f"pricing.markup_percent.{k}") for k, v in
             (section.get("markup_percent") or {}).items()}
        )  # fmt: skip
        multipliers = {
            k: _decimal(v, f"pricing.model_multipliers.{k}")
            for k, v in (section.get("model_multipliers") or {}).items()
        }
        return cls(markup, multipliers)


def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        raise ValueError(f"RINGSIDE_CONFIG: {where} must be a number")
    amount = Decimal(value)
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"RINGSIDE_CONFIG: {where} must be a non-negative number")
    return amount
