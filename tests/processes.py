"""Running the real thing as separate processes: ``hypercorn -k trio ringside:app`` and the
``ringside`` CLI, exactly as an operator would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_API_KEY", "_BASE_URL")) and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update(extra)
    return env


@dataclass
class GatewayProcess:
    process: trio.Process
    url: str
    log_path: Path

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_text().splitlines():
            if raw.startswith("{"):
                lines.append(orjson.loads(raw))
        return lines


@asynccontextmanager
async def spawn_gateway(
    env: Mapping[str, str], tmp: Path, *, workers: int = 1, grace: int = 5
) -> AsyncIterator[GatewayProcess]:
    port = free_port()
    log_path = tmp / f"gateway-{port}.log"
    cmd = [
        str(BIN / "hypercorn"),
        "-k",
        "trio",
        "--workers",
        str(workers),
        "--bind",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        str(grace),
        "ringside:app",
    ]
    with log_path.open("wb") as log:
        process = await trio.lowlevel.open_process(
            cmd,
            env=base_env(env),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            with trio.fail_after(60):
                while True:
                    try:
                        if (await client.get(f"{url}/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert process.poll() is None, log_path.read_text()
                    await trio.sleep(0.1)
        yield GatewayProcess(process, url, log_path)
    finally:
        # SIGTERM to Hypercorn's master only: its workers exit cleanly and let go of the
        # embedded servers; anything still alive after that is killed.
        with trio.CancelScope(shield=True):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(15):
                    await process.wait()
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


async def run_cli(env: Mapping[str, str], *args: str) -> Any:
    result = await trio.run_process(
        [str(BIN / "ringside"), *args],
        env=base_env(env),
        cwd=ROOT,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    return orjson.loads(result.stdout)
