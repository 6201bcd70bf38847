"""``python -m bench.webhooks [--events N] [--concurrency C]``: signed webhook deliveries per
second, from the outbox to a local receiver, against the target of 500/s.

An embedded PostgreSQL (fresh data dir) holds one endpoint; N ``wallet.low`` events are
written to the outbox in one statement (the fan-out trigger makes N deliveries); the webhooks
worker (``serve_webhooks``, in this process) claims, signs and POSTs them to a receiver in a
separate process (raw ASGI on Hypercorn/Trio, 127.0.0.1) that verifies every signature and
answers 200. The figure is N divided by the time from the insert until every delivery is
recorded ``succeeded`` in PostgreSQL (attempt log written, as in production).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from bench.harness import free_port
from ringside.runtime import open_services
from ringside.settings import Settings
from ringside.store.embedded import ensure_servers
from workers.webhooks import serve_webhooks

TARGET_PER_S = 500
SECRET = "whsec_bench"


def _receiver_app(secret: bytes) -> Any:
    counts = {"ok": 0, "bad": 0}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/count":
            status, answer = 200, b"%d %d" % (counts["ok"], counts["bad"])
        else:
            headers = dict(scope["headers"])
            parts = dict(p.split(b"=", 1) for p in headers.get(b"x-fc-signature", b"").split(b","))
            mac = hmac.new(secret, parts.get(b"t", b"") + b"." + body, hashlib.sha256).hexdigest()
            good = hmac.compare_digest(mac.encode(), parts.get(b"v1", b""))
            counts["ok" if good else "bad"] += 1
            status, answer = (200, b"ok") if good else (400, b"bad signature")
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": answer})

    return app


def serve_receiver(port: int) -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.loglevel = "WARNING"
    config.keep_alive_max_requests = 1_000_000
    trio.run(serve, _receiver_app(SECRET.encode()), config)


async def _wait_for_receiver(url: str) -> None:
    import httpx

    async with httpx.AsyncClient() as client:
        with trio.fail_after(20):
            while True:
                try:
                    if (await client.get(f"{url}/count")).status_code == 200:
                        return
                except httpx.TransportError:
                    await trio.sleep(0.1)


async def _deliver_all(db: Any, events: int) -> float:
    """Write ``events`` outbox events in one statement; seconds until all are delivered."""
    started = time.perf_counter()
    await db.execute(
        """INSERT INTO webhook_event (id, developer_id, type, data)
           SELECT 'evt_b' || i, 'dev_b', 'wallet.low',
                  jsonb_build_object('customer_id', 'cus_' || i, 'balance_usd', '0.10')
             FROM generate_series(1, $1::int) AS i""",
        events,
    )
    query = "SELECT count(*) FROM webhook_delivery WHERE state = 'succeeded'"
    while await db.fetchval(query) < events:  # noqa: ASYNC110 - the state is in PostgreSQL
        await trio.sleep(0.05)
    return time.perf_counter() - started


async def measure(
    events: int, concurrency: int, processes: int, data_dir: Path, url: str
) -> dict[str, Any]:
    """With ``processes`` = 0 the worker runs in this process; otherwise that many
    ``python -m workers webhooks`` processes share the queue."""
    servers = await trio.to_thread.run_sync(ensure_servers, data_dir, None, None)
    env = {
        "DATABASE_URL": servers.database_url,
        "REDIS_URL": servers.redis_url,
        "RINGSIDE_DATA_DIR": str(data_dir),
        "RINGSIDE_WEBHOOKS_ALLOW_PRIVATE": "1",
        "RINGSIDE_WEBHOOK_POLL_SECONDS": "0.05",
        "RINGSIDE_WEBHOOK_CONCURRENCY": str(concurrency),
    }
    children: list[trio.Process] = []
    try:
        async with open_services(Settings.from_env(env)) as svc, trio.open_nursery() as nursery:
            db = svc.db
            await db.execute("INSERT INTO developer (id, name, tier) VALUES ('dev_b', 'b', 'pro')")
            await db.execute(
                "INSERT INTO webhook_endpoint (id, developer_id, url, events, secret)"
                " VALUES ('we_b', 'dev_b', $1, ARRAY['*'], $2)",
                f"{url}/hooks",
                SECRET,
            )
            if processes:
                for _ in range(processes):
                    child = await trio.lowlevel.open_process(
                        [sys.executable, "-m", "workers", "webhooks"],
                        env={**os.environ, **env},
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                    children.append(child)
                await _deliver_all(db, 1)  # every worker up (and one delivery made)
                await db.execute("DELETE FROM webhook_attempt")
                await db.execute("DELETE FROM webhook_delivery")
                await db.execute("DELETE FROM webhook_event")
            else:
                await nursery.start(serve_webhooks, svc)
            cpu = time.process_time()
            elapsed = await _deliver_all(db, events)
            cpu_ms = (time.process_time() - cpu) * 1000 / events
            failed = await db.fetchval(
                "SELECT count(*) FROM webhook_attempt WHERE error IS NOT NULL"
            )
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            for child in children:
                child.terminate()
            for child in children:
                await child.wait()
            await trio.to_thread.run_sync(servers.stop)
    return {
        "events": events,
        "seconds": elapsed,
        "per_s": events / elapsed,
        "errors": failed,
        # This process's CPU per delivery: the worker's cost when it runs in-process.
        "cpu_ms": cpu_ms,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks", description=__doc__)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64, help="per worker")
    parser.add_argument(
        "--processes", type=int, default=0,
        help="worker processes (python -m workers webhooks); 0: the worker in this process",
    )  # fmt: skip
    parser.add_argument("--serve-receiver", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_receiver:
        serve_receiver(args.serve_receiver)
        return 0
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    receiver = subprocess.Popen(
        [sys.executable, "-m", "bench.webhooks", "--serve-receiver", str(port)],
        env={**os.environ},
        start_new_session=True,
    )
    try:
        with tempfile.TemporaryDirectory(prefix="ringside-bench-webhooks-") as tmp:
            trio.run(_wait_for_receiver, url)
            result = trio.run(
                measure, args.events, args.concurrency, args.processes, Path(tmp), url
            )
    finally:
        receiver.terminate()
        receiver.wait(10)
    verdict = "ok" if result["per_s"] >= TARGET_PER_S else "BELOW TARGET"
    print(
        f"webhooks: {result['events']} signed deliveries in {result['seconds']:.2f} s = "
        f"{result['per_s']:.0f}/s (target >= {TARGET_PER_S}/s: {verdict}; "
        f"workers: {args.processes or 'in-process'} x concurrency {args.concurrency}; "
        f"failed attempts {result['errors']}"
        + (f"; worker CPU {result['cpu_ms']:.2f} ms/delivery)" if not args.processes else ")")
    )
    return 0 if result["per_s"] >= TARGET_PER_S else 1


if __name__ == "__main__":
    sys.exit(main())
