"""``python -m workers`` as real processes: a webhooks worker SIGKILLed mid-delivery and
restarted still delivers every event at least once; SIGTERM lets the attempt in flight finish
and exits 0; ``--help`` and unknown names answer in one line."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from ringside.store.bridge import Database, open_storage
from tests.processes import BIN, ROOT, base_env
from tests.workers.receiver import Receiver, open_receiver

SECRET = "whsec_process_test"


@pytest.fixture
def env(database_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "RINGSIDE_DATA_DIR": str(tmp_path),
        "RINGSIDE_WEBHOOKS_ALLOW_PRIVATE": "1",
        "RINGSIDE_WEBHOOK_POLL_SECONDS": "0.1",
        "RINGSIDE_WEBHOOK_TIMEOUT_SECONDS": "2",
        "RINGSIDE_WEBHOOK_LEASE_SECONDS": "3",
        "RINGSIDE_WEBHOOK_BACKOFF_BASE_SECONDS": "0.1",
        "RINGSIDE_WEBHOOK_CONCURRENCY": "4",
    }


@asynccontextmanager
async def spawn_worker(env: dict[str, str], log: Path, *names: str) -> AsyncIterator[trio.Process]:
    with log.open("ab") as out:
        process = await trio.lowlevel.open_process(
            [str(BIN / "python"), "-m", "workers", *names], env=base_env(env), cwd=ROOT,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        with trio.CancelScope(shield=True):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


async def queue_events(db: Database, receiver: Receiver, count: int) -> None:
    receiver.secrets.append(SECRET)
    await db.execute("INSERT INTO developer (id, name, tier) VALUES ('dev_p', 'p', 'developer')")
    await db.execute(
        "INSERT INTO webhook_endpoint (id, developer_id, url, events, secret)"
        " VALUES ('we_p', 'dev_p', $1, ARRAY['wallet.low'], $2)",
        receiver.url,
        SECRET,
    )
    await db.execute(
        """INSERT INTO webhook_event (id, developer_id, type, data)
           SELECT 'evt_p' || i, 'dev_p', 'wallet.low', jsonb_build_object('i', i)
             FROM generate_series(1, $1::int) AS i""",
        count,
    )


async def test_a_worker_killed_mid_delivery_and_restarted_delivers_every_event(
    env: dict[str, str], database_url: str, redis_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    async with (
        open_receiver(delay_s=0.3) as receiver,
        open_storage(database_url, redis_url) as (db, _),
    ):
        await queue_events(db, receiver, 40)
        async with spawn_worker(env, log, "webhooks") as first:
            with trio.fail_after(30):
                await receiver.arrived.wait()
            await trio.sleep(0.5)  # a few delivered, four in flight
            os.killpg(first.pid, signal.SIGKILL)
            await first.wait()
        in_flight = await db.fetchval(
            "SELECT count(*) FROM webhook_delivery WHERE state = 'delivering'"
        )
        assert in_flight > 0, "the kill should have caught attempts in flight"
        assert len(receiver.succeeded()) < 40
        async with spawn_worker(env, log, "webhooks"):
            await receiver.wait_for(40, within=30)
            with trio.fail_after(10):
                while await db.fetchval(  # noqa: ASYNC110 - the state is in PostgreSQL
                    "SELECT count(*) FROM webhook_delivery WHERE state <> 'succeeded'"
                ):
                    await trio.sleep(0.1)
    assert receiver.succeeded() == {f"evt_p{i}" for i in range(1, 41)}
    assert all(r.verified for r in receiver.received)


async def test_sigterm_lets_the_attempt_in_flight_finish_and_exits_0(
    env: dict[str, str], database_url: str, redis_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    async with (
        open_receiver(delay_s=1.0) as receiver,
        open_storage(database_url, redis_url) as (db, _),
    ):
        await queue_events(db, receiver, 1)
        async with spawn_worker(env, log) as worker:  # every worker
            with trio.fail_after(30):
                await receiver.arrived.wait()
            worker.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                status = await worker.wait()
        assert status == 0, log.read_text()
        row = await db.fetchrow("SELECT state, attempts FROM webhook_delivery")
        assert dict(row) == {"state": "succeeded", "attempts": 1}
        assert receiver.succeeded() == {"evt_p1"}


async def test_help_and_unknown_names_answer_in_one_line(env: dict[str, str]) -> None:
    run = [str(BIN / "python"), "-m", "workers"]
    ok = await trio.run_process([*run, "--help"], env=base_env(env), cwd=ROOT,
                                capture_stdout=True, capture_stderr=True)  # fmt: skip
    assert ok.stdout.decode().count("\n") == 1
    assert "settlement, webhooks" in ok.stdout.decode()
    bad = await trio.run_process([*run, "webhooks", "nope"], env=base_env(env), cwd=ROOT,
                                 capture_stdout=True, capture_stderr=True, check=False)  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.decode() == (
        "workers: unknown worker nope (available: settlement, webhooks, runs)\n"
    )
