"""Rate-limit buckets in Redis: GCRA, one Lua script per step, one round trip each.

Each bucket (one layer's requests, or its tokens) is one key holding its *theoretical arrival
time* (TAT, microseconds of Redis's clock): the moment the bucket would be empty again. A call
of cost ``c`` against a limit of ``L`` per window ``P`` advances it by ``c * P / L``; it is
admitted when the TAT would stay within ``P`` of now. So a full bucket takes a burst of ``L``
and then refills evenly, and the key expires when the bucket is full again.

``admit`` checks every bucket of a call and, only if all admit it, advances them all (a refused
call consumes nothing); ``settle`` moves the token buckets by what the calls really used
(``actual - reserved``: a refund, or a debt the next calls wait for), many settlements per
round trip. Time is Redis's (``TIME``), so processes with skewed clocks agree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ringside.store.bridge import NoScriptError
from ringside.store.resp import RedisNoScript

_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local tats = redis.call('MGET', unpack(KEYS))
local after = {}
local refused, wait = 0, 0
for i = 1, #KEYS do
  local interval = period / tonumber(ARGV[2 * i])
  local tat = math.max(tonumber(tats[i]) or now, now)
  local new = tat + tonumber(ARGV[2 * i + 1]) * interval
  after[i] = new
  if new - now > period then
    if refused == 0 then refused = i end
    wait = math.max(wait, new - now - period)
  end
end
local out = {refused, math.ceil(wait)}
for i = 1, #KEYS do
  if refused == 0 then
    redis.call('SET', KEYS[i], math.floor(after[i]), 'PX', math.ceil((after[i] - now) / 1000) + 1)
  end
  out[#out + 1] = math.floor(after[i] - now)
end
return out
"""

_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
for i = 1, #KEYS do
  local interval = period / tonumber(ARGV[2 * i])
  local tat = math.max(tonumber(redis.call('GET', KEYS[i]) or '0'), now)
  local new = tat + tonumber(ARGV[2 * i + 1]) * interval
  if new <= now then
    redis.call('DEL', KEYS[i])
  else
    redis.call('SET', KEYS[i], math.floor(new), 'PX', math.ceil((new - now) / 1000) + 1)
  end
end
return #KEYS
"""


class Commands(Protocol):
    """Where the scripts run: the limiter's native connection (``store/resp.py``) or the
    bridged redis-py client (``store/bridge.py``)."""

    async def execute(self, *args: Any) -> Any: ...


@dataclass(frozen=True)
class Script:
    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> Script:
        return cls(source, hashlib.sha1(source.encode()).hexdigest())


ADMIT = Script.of(_ADMIT)
SETTLE = Script.of(_SETTLE)


@dataclass(frozen=True)
class Bucket:
    key: str
    limit: int
    cost: int  # admit: what the call takes; settle: actual - reserved (may be negative)


@dataclass(frozen=True)
class Verdict:
    refused: int | None  # index of the first bucket that refused the call
    wait_us: int  # how long until every refusing bucket would take the call
    after_us: list[int]  # per bucket: how far its TAT is (or would be) ahead of now


async def _run(
    cache: Commands, script: Script, buckets: Sequence[Bucket], period_us: int
) -> object:
    keys = [b.key for b in buckets]
    args: list[int] = [period_us]
    for b in buckets:
        args += [b.limit, b.cost]
    try:
        return await cache.execute("EVALSHA", script.sha, len(keys), *keys, *args)
    except (NoScriptError, RedisNoScript):
        # First use on this Redis (or after a restart / SCRIPT FLUSH): EVAL caches it.
        return await cache.execute("EVAL", script.source, len(keys), *keys, *args)


async def admit(cache: Commands, buckets: Sequence[Bucket], period_us: int) -> Verdict:
    reply = await _run(cache, ADMIT, buckets, period_us)
    assert isinstance(reply, list)
    refused = int(reply[0])
    return Verdict(refused - 1 if refused else None, int(reply[1]), [int(v) for v in reply[2:]])


async def settle(cache: Commands, buckets: Sequence[Bucket], period_us: int) -> None:
    if buckets:
        await _run(cache, SETTLE, buckets, period_us)
