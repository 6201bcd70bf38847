"""The rate limiter against real Redis: every layer, lowest wins, refusals count nothing, token
settlement, Redis failures; and the pure parts (client address, configuration, estimates)."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import AsyncIterator

import pytest
import trio

from ringside.domain.rate_limits import (
    Admission,
    RateLimiter,
    Subject,
    client_ip,
    estimate_tokens,
)
from ringside.errors import RateLimited, ServiceUnavailable
from ringside.limits import LimitPolicy, Rate
from ringside.store.bridge import open_storage

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


def policy(**kw: object) -> LimitPolicy:
    base: dict[str, object] = {
        "ip": Rate(5, None),
        "client_token": Rate(3, None),
        "tiers": {"developer": Rate(10, 1000)},
        "key_prefix": f"t{secrets.token_hex(6)}:",
    }
    return LimitPolicy(**{**base, **kw})  # type: ignore[arg-type]


def subject(ip: str | None = "192.0.2.1", token: str | None = None, dev: str = "dev_a") -> Subject:
    return Subject(
        ip=ip, client_token_id=token, developer_id=dev, tier="developer", customer_ref=None
    )


@pytest.fixture(params=["native", "bridged"])
async def limiter(
    request: pytest.FixtureRequest, database_url: str, redis_url: str, nursery: trio.Nursery
) -> AsyncIterator[RateLimiter]:
    """The limiter on its native Redis connection (``store/resp.py``, as in the web process),
    and through the bridged redis-py client (no URL given: before ``serve`` does the same)."""
    native = redis_url if request.param == "native" else None
    async with open_storage(database_url, redis_url) as (db, cache):
        limiter = RateLimiter(policy(), db, cache, redis_url=native)
        await nursery.start(limiter.serve)
        yield limiter


async def admitted(limiter: RateLimiter, who: Subject, tokens: int = 1) -> Admission:
    admission = await limiter.admit(who, tokens)
    admission.check()
    return admission


async def refused(limiter: RateLimiter, who: Subject, tokens: int = 1) -> RateLimited:
    admission = await limiter.admit(who, tokens)
    assert admission.refused is not None, admission.headers
    return admission.refused


async def test_client_token_layer_limits_each_token(limiter: RateLimiter) -> None:
    first = subject(token="ctok_fake_1")
    seen = [(await admitted(limiter, first)).headers for _ in range(3)]
    # The token's 3 is the lowest of ip 5, token 3, developer 10.
    assert [h["X-RateLimit-Limit"] for h in seen] == ["3", "3", "3"]
    assert [h["X-RateLimit-Remaining"] for h in seen] == ["2", "1", "0"]
    error = await refused(limiter, first)
    assert error.code == "rate_limited"
    assert "client token" in error.message
    assert error.retry_after_seconds == 20  # one request's share of a 60 s window at 3/min
    await admitted(limiter, subject(ip="192.0.2.2", token="ctok_fake_2"))
    # Without a client token that layer does not apply.
    await admitted(limiter, subject(ip="192.0.2.3"))


async def test_lowest_layer_wins_and_a_refusal_counts_nothing(limiter: RateLimiter) -> None:
    for _ in range(5):
        await admitted(limiter, subject(ip="192.0.2.10"))
    for _ in range(3):  # refused by the IP layer: the developer's count does not move
        error = await refused(limiter, subject(ip="192.0.2.10"))
        assert "IP address" in error.message
    for i in range(5):  # from other addresses, up to the developer's 10
        headers = (await admitted(limiter, subject(ip=f"192.0.2.{20 + i}"))).headers
    assert headers["X-RateLimit-Limit"] == "10"
    assert headers["X-RateLimit-Remaining"] == "0"
    assert headers["X-RateLimit-Reset"] == "60"  # until the bucket is full again
    assert headers["X-RateLimit-Limit-Tokens"] == "1000"
    assert 990 <= int(headers["X-RateLimit-Remaining-Tokens"]) <= 999
    error = await refused(limiter, subject(ip="192.0.2.12"))
    assert "your account" in error.message
    assert error.retry_after_seconds == 6
    # Another developer shares nothing but the address.
    await admitted(limiter, subject(ip="192.0.2.12", dev="dev_b"))


async def test_tokens_are_reserved_then_settled_to_the_actual(limiter: RateLimiter) -> None:
    who = subject()
    first = await admitted(limiter, who, tokens=600)
    assert first.headers["X-RateLimit-Remaining-Tokens"] == "400"
    error = await refused(limiter, who, tokens=600)
    assert "1000 tokens" in error.message
    limiter.settle_soon(first, 100)  # it used far less than reserved: 500 come back
    limiter.settle_soon(first, 0)  # only the first settlement counts
    await limiter.wait_settled()
    second = await admitted(limiter, who, tokens=600)
    assert 300 <= int(second.headers["X-RateLimit-Remaining-Tokens"]) <= 310
    limiter.settle_soon(second, 1500)  # far more than reserved: the bucket goes into debt
    await limiter.wait_settled()
    error = await refused(limiter, who, tokens=10)
    assert error.retry_after_seconds is not None
    assert error.retry_after_seconds >= 36


async def test_a_call_larger_than_the_limit_waits_for_a_full_bucket(limiter: RateLimiter) -> None:
    who = subject()
    big = await admitted(limiter, who, tokens=50_000)  # counted as the whole limit
    assert big.headers["X-RateLimit-Remaining-Tokens"] == "0"
    await refused(limiter, who, tokens=1)
    limiter.settle_soon(big, 200)
    await limiter.wait_settled()
    await admitted(limiter, who, tokens=700)


async def test_the_script_is_reloaded_when_redis_forgot_it(
    limiter: RateLimiter, redis_url: str, database_url: str
) -> None:
    await admitted(limiter, subject())
    async with open_storage(database_url, redis_url) as (_, cache):
        await cache.execute("SCRIPT", "FLUSH")
    admission = await admitted(limiter, subject())
    assert admission.headers["X-RateLimit-Remaining"] == "3"


async def test_disabled_limits_admit_everything(database_url: str, redis_url: str) -> None:
    async with open_storage(database_url, redis_url) as (db, cache):
        limiter = RateLimiter(policy(enabled=False, ip=Rate(1, 1)), db, cache)
        for _ in range(3):
            assert (await admitted(limiter, subject(), tokens=10)).headers == {}


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("fail_open", [True, False])
async def test_redis_down_fails_open_or_closed(
    database_url: str, fail_open: bool, native: bool, nursery: trio.Nursery
) -> None:
    dead = "redis://127.0.0.1:1/0"
    async with open_storage(database_url, dead) as (db, cache):
        limiter = RateLimiter(
            policy(fail_open=fail_open), db, cache, redis_url=dead if native else None
        )
        await nursery.start(limiter.serve)
        for _ in range(2):  # the second call does not try Redis again for a second
            if fail_open:
                admission = await admitted(limiter, subject())
                assert admission.headers == {}
                limiter.settle_soon(admission, 10)  # nothing to settle, nothing raised
            else:
                with pytest.raises(ServiceUnavailable) as caught:
                    await limiter.admit(subject(), 1)
                assert caught.value.retry_after_seconds == 1


def test_client_ip_reads_forwarded_for_only_from_trusted_proxies() -> None:
    assert client_ip("192.0.2.1", ["203.0.113.9"], TRUSTED) == "192.0.2.1"
    assert client_ip("10.1.2.3", ["203.0.113.9"], TRUSTED) == "203.0.113.9"
    # Right-most untrusted: what the client put to the left is its own choice.
    assert client_ip("10.1.2.3", ["198.51.100.1, 203.0.113.9, 10.0.0.7"], TRUSTED) == "203.0.113.9"
    assert client_ip("10.1.2.3", ["198.51.100.1", "203.0.113.9,10.9.9.9"], TRUSTED) == "203.0.113.9"
    # All hops trusted: the left-most; garbage: the nearest trusted hop.
    assert client_ip("10.1.2.3", ["10.0.0.1, 10.0.0.2"], TRUSTED) == "10.0.0.1"
    assert client_ip("10.1.2.3", ["203.0.113.9, nonsense"], TRUSTED) == "10.1.2.3"
    assert client_ip("10.1.2.3", [], TRUSTED) == "10.1.2.3"
    assert client_ip("10.1.2.3", ["203.0.113.9:4711"], TRUSTED) == "203.0.113.9"
    assert client_ip("::1", ["[2001:db8:1:2::5]:443"], TRUSTED) == "2001:db8:1:2::/64"
    assert client_ip("10.1.2.3", ["203.0.113.9"], ()) == "10.1.2.3"
    assert client_ip("::ffff:192.0.2.4", [], TRUSTED) == "192.0.2.4"
    assert client_ip(None, ["203.0.113.9"], TRUSTED) is None


def test_policy_from_config_and_environment() -> None:
    config = {
        "limits": {
            "ip": {"rpm": 100},
            "tiers": {"pro": {"rpm": 9000, "tpm": 0}, "team": {"rpm": 50}},
            "trusted_proxies": ["10.0.0.0/8"],
            "on_redis_error": "closed",
        }
    }
    p = LimitPolicy.from_config(config, {"RINGSIDE_IP_TPM_LIMIT": "5000"})
    assert p.ip == Rate(100, 5000)
    assert p.tier("pro") == Rate(9000, None)
    assert p.tier("developer") == Rate(600, 1_000_000)
    assert p.tier("team") == Rate(50, None)
    assert p.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"),)
    assert not p.fail_open
    env = {
        "RINGSIDE_RATE_LIMITS": "off",
        "RINGSIDE_TRUSTED_PROXIES": "192.168.0.0/16, 2001:db8::/32",
        "RINGSIDE_IP_RPM_LIMIT": "0",
    }
    p = LimitPolicy.from_config(config, env)
    assert not p.enabled
    assert p.ip.rpm is None
    assert len(p.trusted_proxies) == 2
    defaults = LimitPolicy.from_config({}, {})
    assert (defaults.ip, defaults.enabled, defaults.window_s) == (Rate(3000, None), True, 60)
    with pytest.raises(ValueError, match=r"0 \(no limit\) or more"):
        LimitPolicy.from_config({}, {"RINGSIDE_IP_RPM_LIMIT": "-1"})
    with pytest.raises(ValueError, match="not an IP address or CIDR"):
        LimitPolicy.from_config({}, {"RINGSIDE_TRUSTED_PROXIES": "nope"})
    with pytest.raises(ValueError, match="open' or 'closed"):
        LimitPolicy.from_config({"limits": {"on_redis_error": "maybe"}}, {})


def test_estimate_counts_the_prompt_and_a_capped_output() -> None:
    assert estimate_tokens(400, 50, 1, 4096) == 150
    assert estimate_tokens(400, None, 2, 4096) == 100 + 8192
    assert estimate_tokens(400, 100_000, 1, 4096) == 100 + 4096
    assert estimate_tokens(400, 0, 1, 0) == 100
