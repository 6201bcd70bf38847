"""Process configuration, read once from the environment (and, later, ``RINGSIDE_CONFIG``)."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import platformdirs

from ringside.limits import LimitPolicy
from ringside.pricing import PricingPolicy
from ringside.upstream.providers import ProviderConfig, provider_configs

_PACKAGE_DIR = Path(__file__).resolve().parent


def _default_sql_dir() -> Path:
    """The migrations: a wheel carries them as ``ringside/sql/``; a checkout (or an editable
    install of one) keeps them in the top-level ``sql/`` beside the package."""
    packaged = _PACKAGE_DIR / "sql"
    return packaged if packaged.is_dir() else _PACKAGE_DIR.parent / "sql"


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    return default if raw in (None, "") else float(raw)


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    return default if raw in (None, "") else int(raw)


def _read_config(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    with open(path, "rb") as fh:
        # Exact decimals: prices and multipliers in the file must never pass through a float.
        return tomllib.load(fh, parse_float=Decimal)


def _slots(config: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """``[slots]`` in RINGSIDE_CONFIG: ``fast = ["fc:groq/...", "fc:openai/..."]`` (or a string)."""
    slots: dict[str, tuple[str, ...]] = {}
    for name, models in (config.get("slots") or {}).items():
        refs = (models,) if isinstance(models, str) else tuple(models)
        if not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"RINGSIDE_CONFIG: slot {name!r} must list model references")
        slots[name] = refs
    return slots


_KID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _client_token_keys(raw: str | None) -> tuple[tuple[str, str], ...]:
    """``RINGSIDE_CLIENT_TOKEN_KEYS="kid1:secret1,kid2:secret2"``: the first signs, all verify
    (put a new key first and keep the old one until its tokens have expired: an hour at most)."""
    keys: list[tuple[str, str]] = []
    for item in (raw or "").split(","):
        if not item.strip():
            continue
        kid, sep, secret = item.strip().partition(":")
        if not sep or not _KID.match(kid) or len(secret) < 32:
            raise ValueError(
                "RINGSIDE_CLIENT_TOKEN_KEYS: each entry is <kid>:<secret>, the kid 1 to 64 of"
                " A-Z a-z 0-9 . _ -, the secret at least 32 characters"
            )
        if any(kid == k for k, _ in keys):
            raise ValueError(f"RINGSIDE_CLIENT_TOKEN_KEYS: kid {kid!r} appears twice")
        keys.append((kid, secret))
    return tuple(keys)


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    redis_url: str | None
    data_dir: Path
    admin_key: str | None
    sql_dir: Path
    providers: Mapping[str, ProviderConfig]
    catalog_path: Path | None = None
    slots: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # The call deadline is a trio scope in the domain; the stream idle timeout bounds each
    # upstream read (httpx read timeout, on the scope httpcore opens per read anyway).
    upstream_timeout_s: float = 600.0
    stream_idle_timeout_s: float = 120.0
    # Retries of a failed upstream request that is safe to resend (connect errors, 429, 502,
    # 503), with jittered back-off, within the call deadline (upstream/sending.py).
    upstream_retries: int = 2
    # Run segments started at once per process (api/runs.py, RunExecutor.starts).
    run_starts: int = 1
    # A stream body Quart has not started after this long is closed (its client left first).
    stream_start_grace_s: float = 30.0
    key_cache_ttl_s: float = 0.5
    max_body_bytes: int = 16 * 1024 * 1024
    shutdown_grace_s: float = 10.0
    pricing: PricingPolicy = field(default_factory=PricingPolicy)
    limits: LimitPolicy = field(default_factory=LimitPolicy)  # RINGSIDE_CONFIG [limits]
    # Each web process beats this often; the settlement worker settles the holds of a process
    # silent for process_dead_after_s, sweeping every sweep_interval_s.
    heartbeat_interval_s: float = 2.0
    process_dead_after_s: float = 15.0
    sweep_interval_s: float = 5.0
    hold_max_age_s: float = 6 * 3600.0
    # A run's expiry when it names none (expires_in_seconds), SPEC §9.
    run_expiry_s: float = 600.0
    # Client token signing keys (kid, secret), the first signs; empty: a key generated once and
    # kept in PostgreSQL.
    client_token_keys: tuple[tuple[str, str], ...] = ()
    # Webhooks (workers/webhooks.py): URLs resolving to private addresses are refused unless
    # allowed; the deliverer polls every webhook_poll_s, sends at most webhook_concurrency at
    # once, each within webhook_timeout_s, claimed for webhook_lease_s, and retries with
    # exponential back-off (base, cap) for webhook_retry_for_s before giving up.
    webhooks_allow_private: bool = False
    webhook_poll_s: float = 0.5
    webhook_concurrency: int = 64
    webhook_timeout_s: float = 10.0
    webhook_lease_s: float = 60.0
    webhook_backoff_base_s: float = 5.0
    webhook_backoff_max_s: float = 3600.0
    webhook_retry_for_s: float = 24 * 3600.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        data_dir = Path(
            env.get("RINGSIDE_DATA_DIR") or platformdirs.user_data_dir("ringside", appauthor=False)
        )
        catalog = env.get("RINGSIDE_CATALOG")
        config = _read_config(env.get("RINGSIDE_CONFIG"))
        return cls(
            database_url=env.get("DATABASE_URL") or None,
            redis_url=env.get("REDIS_URL") or None,
            data_dir=data_dir,
            admin_key=env.get("RINGSIDE_ADMIN_KEY") or None,
            sql_dir=Path(env.get("RINGSIDE_SQL_DIR") or _default_sql_dir()),
            providers=provider_configs(env),
            catalog_path=Path(catalog) if catalog else None,
            slots=_slots(config),
            upstream_timeout_s=_float(env, "RINGSIDE_UPSTREAM_TIMEOUT_SECONDS", 600.0),
            stream_idle_timeout_s=_float(env, "RINGSIDE_STREAM_IDLE_TIMEOUT_SECONDS", 120.0),
            upstream_retries=_int(env, "RINGSIDE_UPSTREAM_RETRIES", 2),
            run_starts=max(1, _int(env, "RINGSIDE_RUN_STARTS", 1)),
            stream_start_grace_s=_float(env, "RINGSIDE_STREAM_START_GRACE_SECONDS", 30.0),
            key_cache_ttl_s=_float(env, "RINGSIDE_KEY_CACHE_TTL_SECONDS", 0.5),
            max_body_bytes=int(env.get("RINGSIDE_MAX_BODY_BYTES") or 16 * 1024 * 1024),
            shutdown_grace_s=_float(env, "RINGSIDE_SHUTDOWN_GRACE_SECONDS", 10.0),
            pricing=PricingPolicy.from_config(config),
            limits=LimitPolicy.from_config(config, env),
            heartbeat_interval_s=_float(env, "RINGSIDE_HEARTBEAT_SECONDS", 2.0),
            process_dead_after_s=_float(env, "RINGSIDE_PROCESS_DEAD_AFTER_SECONDS", 15.0),
            sweep_interval_s=_float(env, "RINGSIDE_SWEEP_INTERVAL_SECONDS", 5.0),
            hold_max_age_s=_float(env, "RINGSIDE_HOLD_MAX_AGE_SECONDS", 6 * 3600.0),
            run_expiry_s=_float(env, "RINGSIDE_RUN_EXPIRY_SECONDS", 600.0),
            client_token_keys=_client_token_keys(env.get("RINGSIDE_CLIENT_TOKEN_KEYS")),
            webhooks_allow_private=env.get("RINGSIDE_WEBHOOKS_ALLOW_PRIVATE", "") in ("1", "true"),
            webhook_poll_s=_float(env, "RINGSIDE_WEBHOOK_POLL_SECONDS", 0.5),
            webhook_concurrency=int(env.get("RINGSIDE_WEBHOOK_CONCURRENCY") or 64),
            webhook_timeout_s=_float(env, "RINGSIDE_WEBHOOK_TIMEOUT_SECONDS", 10.0),
            webhook_lease_s=_float(env, "RINGSIDE_WEBHOOK_LEASE_SECONDS", 60.0),
            webhook_backoff_base_s=_float(env, "RINGSIDE_WEBHOOK_BACKOFF_BASE_SECONDS", 5.0),
            webhook_backoff_max_s=_float(env, "RINGSIDE_WEBHOOK_BACKOFF_MAX_SECONDS", 3600.0),
            webhook_retry_for_s=_float(env, "RINGSIDE_WEBHOOK_RETRY_FOR_SECONDS", 24 * 3600.0),
        )
