"""The limiter's native Redis client against the real (embedded) Redis: pipelined callers each
get their own reply, a caller that gives up shifts nothing, a lost connection fails what
waits on it and the next command reconnects; and the URLs it speaks."""

from __future__ import annotations

import dataclasses
import secrets

import pytest
import trio

from ringside.store.resp import (
    NativeRedis,
    RedisAddress,
    RedisConnectionLost,
    RedisNoScript,
    RedisReplyError,
)


@pytest.fixture
async def redis(redis_url: str, nursery: trio.Nursery) -> NativeRedis:
    address = RedisAddress.parse(redis_url)
    assert address is not None, redis_url
    native: NativeRedis = await nursery.start(NativeRedis.serve, address)
    return native


async def test_concurrent_callers_share_one_connection_and_get_their_own_replies(
    redis: NativeRedis,
) -> None:
    key = f"t{secrets.token_hex(6)}"
    got: dict[int, object] = {}

    async def incr(i: int) -> None:
        got[i] = await redis.execute("EVAL", "return {ARGV[1], redis.call('INCR', KEYS[1])}",
                                     1, key, i)  # fmt: skip

    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(incr, i)
    assert {i: reply[0] for i, reply in got.items()} == {i: b"%d" % i for i in range(200)}  # type: ignore[index]
    assert sorted(reply[1] for reply in got.values()) == list(range(1, 201))  # type: ignore[index]
    assert await redis.execute("DEL", key) == 1
    assert await redis.execute("GET", key) is None


async def test_a_caller_that_gives_up_shifts_no_reply(redis: NativeRedis) -> None:
    with trio.move_on_after(0.01):
        await redis.execute("BLPOP", f"t{secrets.token_hex(6)}", "0.2")  # answers in 0.2 s
    assert await redis.execute("ECHO", "mine") == b"mine"


async def test_errors_are_raised_to_their_caller_only(redis: NativeRedis) -> None:
    with pytest.raises(RedisNoScript):
        await redis.execute("EVALSHA", "0" * 40, 0)
    with pytest.raises(RedisReplyError, match="unknown command"):
        await redis.execute("NO-SUCH-COMMAND")
    assert await redis.execute("PING") == b"PONG"


async def test_a_lost_connection_fails_its_waiters_and_the_next_command_reconnects(
    redis: NativeRedis,
) -> None:
    name = f"t{secrets.token_hex(6)}"
    await redis.execute("CLIENT", "SETNAME", name)
    waiter_failed = trio.Event()

    async def wait_forever() -> None:
        with pytest.raises(RedisConnectionLost):
            await redis.execute("BLPOP", f"{name}:never", "0")
        waiter_failed.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_forever)
        await trio.sleep(0.05)
        redis.reset()
        await waiter_failed.wait()
    # A new connection: it no longer has the name.
    assert await redis.execute("CLIENT", "GETNAME") is None


async def test_the_urls_database_is_selected(redis_url: str, nursery: trio.Nursery) -> None:
    address = RedisAddress.parse(redis_url)
    assert address is not None
    other = await nursery.start(NativeRedis.serve, dataclasses.replace(address, db=3))
    info = await other.execute("CLIENT", "INFO")
    assert isinstance(info, bytes)
    assert b" db=3 " in info


def test_urls() -> None:
    assert RedisAddress.parse("unix:///tmp/r.sock") == RedisAddress(
        None, 0, "/tmp/r.sock", False, None, None, 0
    )
    assert RedisAddress.parse("unix:///tmp/r.sock?db=2&password=pw") == RedisAddress(
        None, 0, "/tmp/r.sock", False, None, "pw", 2
    )
    assert RedisAddress.parse("redis://:p%40ss@cache:6380/3") == RedisAddress(
        "cache", 6380, None, False, None, "p@ss", 3
    )
    assert RedisAddress.parse("rediss://user:pw@cache") == RedisAddress(
        "cache", 6379, None, True, "user", "pw", 0
    )
    # What it does not speak stays with redis-py.
    assert RedisAddress.parse("redis://cache/0?ssl_cert_reqs=none") is None
    assert RedisAddress.parse("redis+sentinel://cache/0") is None
    assert RedisAddress.parse("redis://cache/x") is None


async def test_a_server_that_does_not_speak_resp_fails_the_command_not_the_process(
    nursery: trio.Nursery,
) -> None:
    async def garbage(stream: trio.SocketStream) -> None:
        await stream.receive_some(1024)
        await stream.send_all(b":twelve\r\n")
        await trio.sleep_forever()

    listeners = await nursery.start(trio.serve_tcp, garbage, 0)
    port = listeners[0].socket.getsockname()[1]
    address = RedisAddress("127.0.0.1", port, None, False, None, None, 0)
    native: NativeRedis = await nursery.start(NativeRedis.serve, address)
    with pytest.raises(RedisConnectionLost, match="Bad integer value"):
        await native.execute("PING")
