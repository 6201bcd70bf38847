"""The runs sweeper against the real database: rows written with SQL, one sweep, then the runs,
their steps and messages, the thread lock, the outbox and the cancel signal checked."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio_asyncio

from ringside.store import runs as runs_store
from ringside.store.bridge import Database, UniqueViolation, open_storage
from ringside.store.run_expiry import RUN_CANCEL_CHANNEL
from workers.runs import sweep_runs

DEV = "dev_sweep"
KEY = "key_sweep"
CUSTOMER = "cus_sweep"


@pytest.fixture
async def db(database_url: str, redis_url: str) -> AsyncIterator[Database]:
    async with open_storage(database_url, redis_url) as (db, _):
        await db.execute(
            "INSERT INTO developer (id, name, tier) VALUES ($1, 's', 'developer')", DEV
        )
        await db.execute(
            "INSERT INTO api_key (id, developer_id, prefix, key_hash) VALUES ($1, $2, 'sk', 'k')",
            KEY,
            DEV,
        )
        await db.execute(
            "INSERT INTO customer (id, developer_id, external_id) VALUES ($1, $2, 'c1')",
            CUSTOMER,
            DEV,
        )
        yield db


@asynccontextmanager
async def notifications(db: Database, channel: str) -> AsyncIterator[list[str]]:
    """The payloads NOTIFYed on ``channel`` while inside (asyncpg's listener, on the bridge's
    loop: tests may reach under the bridge)."""
    got: list[str] = []

    def heard(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        got.append(payload)

    async with db.connection() as conn:
        raw, loop = conn._target, conn._loop
        await trio_asyncio.aio_as_trio(raw.add_listener, loop=loop)(channel, heard)
        try:
            yield got
        finally:
            with trio.CancelScope(shield=True):
                await trio_asyncio.aio_as_trio(raw.remove_listener, loop=loop)(channel, heard)


async def thread(db: Database, n: int) -> str:
    conv = f"conv_{n:04d}"
    await db.execute(
        "INSERT INTO conversation (id, developer_id, customer_id) VALUES ($1, $2, $3)",
        conv,
        DEV,
        CUSTOMER,
    )
    await db.execute(
        "INSERT INTO api_thread_aliases (thread_id, conversation_id) VALUES ($1, $2)",
        f"thread_{n:04d}",
        conv,
    )
    return conv


async def run(
    db: Database,
    run_id: str,
    conv: str,
    status: str,
    expires_in_s: float,
    *,
    process_id: str | None = None,
    tokens: tuple[int, int] = (0, 0),
) -> None:
    required = (
        json.dumps({"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": []}})
        if status == "requires_action"
        else None
    )
    await db.execute(
        """INSERT INTO run (id, developer_id, conversation_id, assistant_id, customer_id,
                            api_key_id, status, model, expires_at, process_id, required_action,
                            prompt_tokens, completion_tokens, created_at)
           VALUES ($1, $2, $3, 'asst_1', $4, $5, $6, 'fc:openai/gpt-4o-mini',
                   now() + make_interval(secs => $7), $8, $9::jsonb, $10, $11,
                   now() - interval '1 hour')""",
        run_id,
        DEV,
        conv,
        CUSTOMER,
        KEY,
        status,
        expires_in_s,
        process_id,
        required,
        *tokens,
    )


async def step(db: Database, step_id: str, run_id: str, status: str = "in_progress") -> None:
    await db.execute(
        """INSERT INTO run_step (id, run_id, type, status, step_details)
           VALUES ($1, $2, 'message_creation', $3,
                   '{"type": "message_creation", "message_creation": {"message_id": "m"}}')""",
        step_id,
        run_id,
        status,
    )


async def message(db: Database, msg_id: str, conv: str, ordinal: int, run_id: str | None) -> None:
    await db.execute(
        """INSERT INTO thread_message (id, conversation_id, ordinal, role, content, run_id,
                                       status)
           VALUES ($1, $2, $3, 'assistant', '[]', $4, $5)""",
        msg_id,
        conv,
        ordinal,
        run_id,
        "in_progress" if run_id else "completed",
    )


async def status_of(db: Database, table: str, row_id: str) -> dict[str, Any]:
    row = await db.fetchrow(f"SELECT * FROM {table} WHERE id = $1", row_id)
    assert row is not None
    return dict(row)


async def events(db: Database) -> dict[str, dict[str, Any]]:
    rows = await db.fetch("SELECT id, developer_id, type, data FROM webhook_event ORDER BY seq")
    out = {}
    for r in rows:
        assert r["type"] == "run.failed"
        assert r["developer_id"] == DEV
        assert r["id"].startswith("evt_")
        data = json.loads(r["data"])
        out[data["run_id"]] = data
    assert len(out) == len(rows)
    return out


def test_the_sweeper_signals_on_the_gateways_cancel_channel() -> None:
    assert RUN_CANCEL_CHANNEL == runs_store.CANCEL_CHANNEL


async def test_overdue_runs_expire_release_their_lock_and_emit_run_failed(db: Database) -> None:
    c1, c2, c3, c4 = [await thread(db, n) for n in range(1, 5)]
    await run(db, "run_ra", c1, "requires_action", -1)
    await step(db, "step_ra", "run_ra")
    await run(db, "run_ip", c2, "in_progress", -30, process_id="proc_x", tokens=(120, 7))
    await step(db, "step_ip_done", "run_ip", "completed")
    await step(db, "step_ip", "run_ip")
    await message(db, "msg_user", c2, 0, None)
    await message(db, "msg_ip", c2, 1, "run_ip")
    await run(db, "run_later", c3, "requires_action", 600)
    await run(db, "run_done", c4, "completed", -60)

    async with notifications(db, RUN_CANCEL_CHANNEL) as heard:
        swept = await sweep_runs(db, dead_after_s=15)
        with trio.fail_after(5):
            while len(heard) < 2:  # noqa: ASYNC110 - delivered by asyncpg's protocol
                await trio.sleep(0.01)
    assert sorted(swept.expired) == ["run_ip", "run_ra"]
    assert swept.cancelled == []
    assert sorted(heard) == ["run_ip", "run_ra"]

    for run_id in ("run_ra", "run_ip"):
        r = await status_of(db, "run", run_id)
        assert r["status"] == "expired"
        assert r["required_action"] is None
        assert r["process_id"] is None
        assert (r["failed_at"], r["cancelled_at"], r["completed_at"]) == (None, None, None)
    for step_id in ("step_ra", "step_ip"):
        s = await status_of(db, "run_step", step_id)
        assert s["status"] == "expired"
        assert s["expired_at"] is not None
    assert (await status_of(db, "run_step", "step_ip_done"))["status"] == "completed"
    m = await status_of(db, "thread_message", "msg_ip")
    assert m["status"] == "incomplete"
    assert m["incomplete_at"] is not None
    assert json.loads(m["incomplete_details"]) == {"reason": "run_expired"}
    assert (await status_of(db, "thread_message", "msg_user"))["status"] == "completed"
    assert (await status_of(db, "run", "run_later"))["status"] == "requires_action"
    assert (await status_of(db, "run", "run_done"))["status"] == "completed"

    # The locks of the expired runs are gone; the live run's holds.
    await run(db, "run_next1", c1, "queued", 600)
    await run(db, "run_next2", c2, "queued", 600)
    with pytest.raises(UniqueViolation):
        await run(db, "run_next3", c3, "queued", 600)

    sent = await events(db)
    assert set(sent) == {"run_ra", "run_ip"}
    created = sent["run_ip"]["created_at"]
    ended = sent["run_ip"]["ended_at"]
    assert isinstance(created, int)
    assert isinstance(ended, int)
    assert 3590 <= ended - created <= 3610
    assert sent["run_ip"] == {
        "run_id": "run_ip",
        "thread_id": "thread_0002",
        "assistant_id": "asst_1",
        "customer_id": CUSTOMER,
        "status": "expired",
        "model": "fc:openai/gpt-4o-mini",
        "reason": "expired",
        "last_error": None,
        "incomplete_details": None,
        "usage": {"prompt_tokens": 120, "completion_tokens": 7, "total_tokens": 127},
        "created_at": created,
        "ended_at": ended,
    }
    assert sent["run_ra"]["thread_id"] == "thread_0001"
    assert sent["run_ra"]["usage"] == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
    }

    again = await sweep_runs(db, dead_after_s=15)
    assert (again.expired, again.cancelled) == ([], [])
    assert len(await events(db)) == 2


async def test_cancels_no_live_process_will_carry_out_are_finished(db: Database) -> None:
    await db.execute(
        """INSERT INTO gateway_process (id, pid, hostname, heartbeat_at)
           VALUES ('proc_live', 1, 'h', now()), ('proc_stale', 2, 'h', now() - interval '1 hour')"""
    )
    convs = [await thread(db, n) for n in range(1, 6)]
    await run(db, "run_unowned", convs[0], "cancelling", 600)
    await run(db, "run_stale", convs[1], "cancelling", 600, process_id="proc_stale")
    await step(db, "step_stale", "run_stale")
    await run(db, "run_gone", convs[2], "cancelling", 600, process_id="proc_gone")
    await run(db, "run_live", convs[3], "cancelling", 600, process_id="proc_live")
    await run(db, "run_busy", convs[4], "in_progress", 600)

    async with notifications(db, RUN_CANCEL_CHANNEL) as heard:
        swept = await sweep_runs(db, dead_after_s=15)
        with trio.fail_after(5):
            while len(heard) < 3:  # noqa: ASYNC110 - delivered by asyncpg's protocol
                await trio.sleep(0.01)
    assert swept.expired == []
    assert sorted(swept.cancelled) == ["run_gone", "run_stale", "run_unowned"]
    assert sorted(heard) == sorted(swept.cancelled)
    for run_id in swept.cancelled:
        r = await status_of(db, "run", run_id)
        assert r["status"] == "cancelled"
        assert r["cancelled_at"] is not None
    s = await status_of(db, "run_step", "step_stale")
    assert (s["status"], s["cancelled_at"] is not None, s["expired_at"]) == (
        "cancelled",
        True,
        None,
    )
    assert (await status_of(db, "run", "run_live"))["status"] == "cancelling"
    assert (await status_of(db, "run", "run_busy"))["status"] == "in_progress"
    sent = await events(db)
    assert set(sent) == set(swept.cancelled)
    assert {(d["status"], d["reason"]) for d in sent.values()} == {("cancelled", "cancelled")}
    await run(db, "run_after", convs[0], "queued", 600)  # the lock is free again


async def test_runs_executing_in_a_dead_process_fail_at_once(db: Database) -> None:
    await db.execute(
        """INSERT INTO gateway_process (id, pid, hostname, heartbeat_at)
           VALUES ('proc_live', 1, 'h', now()), ('proc_stale', 2, 'h', now() - interval '1 hour')"""
    )
    convs = [await thread(db, n) for n in range(1, 5)]
    await run(db, "run_stale", convs[0], "in_progress", 600, process_id="proc_stale")
    await step(db, "step_stale", "run_stale")
    await message(db, "msg_stale", convs[0], 1, "run_stale")
    await run(db, "run_gone", convs[1], "in_progress", 600, process_id="proc_gone")
    await run(db, "run_live", convs[2], "in_progress", 600, process_id="proc_live")
    await run(db, "run_queued", convs[3], "queued", 600)  # not picked up yet: left to expiry

    swept = await sweep_runs(db, dead_after_s=15)
    assert (swept.expired, swept.cancelled) == ([], [])
    assert sorted(swept.failed) == ["run_gone", "run_stale"]
    for run_id in swept.failed:
        r = await status_of(db, "run", run_id)
        assert (r["status"], r["failed_at"] is not None, r["process_id"]) == ("failed", True, None)
        assert json.loads(r["last_error"])["code"] == "server_error"
    s = await status_of(db, "run_step", "step_stale")
    assert (s["status"], s["failed_at"] is not None) == ("failed", True)
    m = await status_of(db, "thread_message", "msg_stale")
    assert m["status"] == "incomplete"
    assert (await status_of(db, "run", "run_live"))["status"] == "in_progress"
    assert (await status_of(db, "run", "run_queued"))["status"] == "queued"
    sent = await events(db)
    assert set(sent) == {"run_gone", "run_stale"}
    assert {(d["status"], d["reason"]) for d in sent.values()} == {("failed", "error")}
    await run(db, "run_after", convs[0], "queued", 600)  # the lock is free again


async def test_sweepers_side_by_side_end_each_run_once(db: Database) -> None:
    for n in range(40):
        await run(db, f"run_{n:02d}", await thread(db, n), "requires_action", -1)
    results: list[list[str]] = []

    async def sweeper() -> None:
        while True:
            swept = await sweep_runs(db, dead_after_s=15, batch=7)
            if not swept.expired:
                return
            results.append(swept.expired)

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(sweeper)
    ended = [run_id for batch in results for run_id in batch]
    assert sorted(ended) == [f"run_{n:02d}" for n in range(40)]
    assert len(await events(db)) == 40
