"""A gateway and a simulator as real processes on a database of their own, for synchronous
(hypothesis) tests that drive them over HTTP from outside any Trio loop."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from ringside.store.bridge import open_storage
from tests.conftest import TEMPLATE_DB, with_database
from tests.gateway import ADMIN_KEY, SIMULATED
from tests.processes import BIN, ROOT, base_env, free_port
from tests.simulator.providers import base_path


@dataclass(frozen=True)
class LiveGateway:
    url: str
    log: Path
    database_url: str
    redis_url: str


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"{url} did not become ready:\n{log.read_text()}")


@contextlib.contextmanager
def _process(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd, env=base_env(env), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextlib.contextmanager
def open_live_gateway(
    server_url: str, redis_url: str, tmp: Path, extra_env: Mapping[str, str] | None = None
) -> Iterator[LiveGateway]:
    name = f"live_{secrets.token_hex(4)}"

    async def database(statement: str) -> None:
        async with open_storage(server_url, redis_url) as (db, _):
            await db.execute(statement)

    trio.run(database, f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
    sim_port, gw_port = free_port(), free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    env = {
        "DATABASE_URL": with_database(server_url, name),
        "REDIS_URL": redis_url,
        "RINGSIDE_ADMIN_KEY": ADMIN_KEY,
        "RINGSIDE_DATA_DIR": str(tmp / "data"),
        "RINGSIDE_REDIS_PREFIX": f"{name}:",
        **(extra_env or {}),
    }
    for provider in SIMULATED:
        env[f"{provider.upper()}_BASE_URL"] = sim_url + base_path(provider)
        env[f"{provider.upper()}_API_KEY"] = f"sk-{provider}-test"
    sim_cmd = [sys.executable, "-m", "tests.simulator", "--port", str(sim_port)]
    gw_cmd = [
        str(BIN / "hypercorn"), "-k", "trio", "--bind", f"127.0.0.1:{gw_port}",
        "--graceful-timeout", "2", "ringside:app",
    ]  # fmt: skip
    gw_log = tmp / "gateway.log"
    try:
        with (
            _process(sim_cmd, env, tmp / "simulator.log"),
            _process(gw_cmd, env, gw_log) as gw,
        ):
            url = f"http://127.0.0.1:{gw_port}"
            _wait_ready(url, gw, gw_log)
            yield LiveGateway(url, gw_log, env["DATABASE_URL"], redis_url)
    finally:
        trio.run(database, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
