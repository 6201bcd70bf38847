"""Rate-limit configuration: ``[limits]`` in RINGSIDE_CONFIG, overridden by the environment.

```toml
[limits]
enabled = true                      # RINGSIDE_RATE_LIMITS=off disables every layer
window_seconds = 60                 # RINGSIDE_RATE_LIMIT_WINDOW_SECONDS ("per minute")
output_tokens_estimate = 4096       # what a call without max_tokens reserves for its output
trusted_proxies = ["10.0.0.0/8"]    # RINGSIDE_TRUSTED_PROXIES=10.0.0.0/8,192.168.0.0/16
on_redis_error = "open"             # or "closed": 503 while Redis cannot be reached
ip = { rpm = 3000, tpm = 0 }        # RINGSIDE_IP_RPM_LIMIT / RINGSIDE_IP_TPM_LIMIT
client_token = { rpm = 60, tpm = 100000 }  # RINGSIDE_CLIENT_TOKEN_{RPM,TPM}_LIMIT
[limits.tiers.developer]
rpm = 600
tpm = 1000000
[limits.tiers.pro]
rpm = 3000
tpm = 5000000
```
A limit of 0 (or an absent one) does not limit. Customers' limits are their ``rpm_limit`` and
``tpm_limit``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Rate:
    """Requests and tokens per window; ``None`` does not limit."""

    rpm: int | None = None
    tpm: int | None = None


DEFAULT_TIERS: Mapping[str, Rate] = {
    "developer": Rate(600, 1_000_000),
    "pro": Rate(3000, 5_000_000),
}


@dataclass(frozen=True)
class LimitPolicy:
    enabled: bool = True
    window_s: float = 60.0
    # A developer's backend calls from one address, so the per-IP default must not cap a pro
    # developer below its tier: it is the pro tier's RPM, and does not count tokens.
    ip: Rate = Rate(3000, None)
    client_token: Rate = Rate(60, 100_000)
    tiers: Mapping[str, Rate] = field(default_factory=lambda: dict(DEFAULT_TIERS))
    output_tokens_estimate: int = 4096
    trusted_proxies: tuple[IPNetwork, ...] = ()
    fail_open: bool = True
    redis_timeout_s: float = 0.25
    # After a Redis failure, calls skip the limiter this long instead of each waiting for it.
    redis_retry_s: float = 1.0
    key_prefix: str = "ringside:"
    # Settlements wait this long to travel together: a fraction of a round trip per call
    # under load, at the price of unused tokens coming back 50 ms later.
    settle_linger_s: float = 0.05
    customer_cache_ttl_s: float = 0.5

    def tier(self, name: str) -> Rate:
        return self.tiers.get(name, Rate())

    @classmethod
    def from_config(cls, config: Mapping[str, Any], env: Mapping[str, str]) -> LimitPolicy:
        section: Mapping[str, Any] = config.get("limits") or {}
        tiers = dict(DEFAULT_TIERS)
        for name, raw in (section.get("tiers") or {}).items():
            tiers[name] = _rate(raw, f"limits.tiers.{name}", Rate())
        ip = _rate(section.get("ip"), "limits.ip", cls.ip)
        token = _rate(section.get("client_token"), "limits.client_token", cls.client_token)
        enabled = section.get("enabled", True)
        switch = env.get("RINGSIDE_RATE_LIMITS", "").strip().lower()
        if switch:
            if switch not in ("on", "off", "1", "0", "true", "false"):
                raise ValueError("RINGSIDE_RATE_LIMITS must be 'on' or 'off'")
            enabled = switch in ("on", "1", "true")
        on_error = env.get("RINGSIDE_RATE_LIMITS_ON_REDIS_ERROR") or section.get(
            "on_redis_error", "open"
        )
        if on_error not in ("open", "closed"):
            raise ValueError("limits.on_redis_error must be 'open' or 'closed'")
        proxies = env.get("RINGSIDE_TRUSTED_PROXIES")
        raw_proxies: list[str] = (
            [p for p in proxies.split(",") if p.strip()]
            if proxies is not None
            else list(section.get("trusted_proxies") or [])
        )
        return cls(
            enabled=bool(enabled),
            window_s=_number(
                env.get("RINGSIDE_RATE_LIMIT_WINDOW_SECONDS") or section.get("window_seconds", 60),
                "limits.window_seconds",
            ),
            ip=Rate(
                _limit(env.get("RINGSIDE_IP_RPM_LIMIT"), "RINGSIDE_IP_RPM_LIMIT", ip.rpm),
                _limit(env.get("RINGSIDE_IP_TPM_LIMIT"), "RINGSIDE_IP_TPM_LIMIT", ip.tpm),
            ),
            client_token=Rate(
                _limit(env.get("RINGSIDE_CLIENT_TOKEN_RPM_LIMIT"), "client token RPM", token.rpm),
                _limit(env.get("RINGSIDE_CLIENT_TOKEN_TPM_LIMIT"), "client token TPM", token.tpm),
            ),
            tiers=tiers,
            output_tokens_estimate=int(
                _number(section.get("output_tokens_estimate", 4096), "output_tokens_estimate")
            ),
            trusted_proxies=tuple(_network(p) for p in raw_proxies),
            fail_open=on_error == "open",
            key_prefix=env.get("RINGSIDE_REDIS_PREFIX") or "ringside:",
        )


def _number(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"RINGSIDE_CONFIG: {where} must be a number") from None
    if not number > 0:
        raise ValueError(f"RINGSIDE_CONFIG: {where} must be positive")
    return number


def _limit(value: Any, where: str, default: int | None) -> int | None:
    """A limit: a positive integer, or 0 for none (absent: ``default``)."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise ValueError(f"{where} must be a whole number")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a whole number") from None
    if number < 0:
        raise ValueError(f"{where} must be 0 (no limit) or more")
    return number or None


def _rate(raw: Any, where: str, default: Rate) -> Rate:
    if raw is None:
        return default
    if not isinstance(raw, Mapping):
        raise ValueError(f"RINGSIDE_CONFIG: {where} must be a table with rpm and tpm")
    return Rate(
        _limit(raw.get("rpm"), f"RINGSIDE_CONFIG: {where}.rpm", default.rpm),
        _limit(raw.get("tpm"), f"RINGSIDE_CONFIG: {where}.tpm", default.tpm),
    )


def _network(raw: Any) -> IPNetwork:
    try:
        return ipaddress.ip_network(str(raw).strip(), strict=False)
    except ValueError:
        raise ValueError(f"trusted proxy {raw!r} is not an IP address or CIDR") from None
