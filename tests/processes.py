"""Running the real thing as separate processes: ``hypercorn -k trio ringside:app`` and the
``ringside`` CLI, exactly as an operator would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
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


@dataclass(frozen=True)
class CliResult:
    status: int
    stdout: str
    stderr: str


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
    # Its own rate-limit buckets, shared by its workers (every test calls from 127.0.0.1).
    env = {"RINGSIDE_REDIS_PREFIX": f"t{port}:", **env}
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


async def run_cli_unchecked(env: Mapping[str, str], *args: str) -> CliResult:
    result = await trio.run_process(
        [str(BIN / "ringside"), *args],
        env=base_env(env),
        cwd=ROOT,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return CliResult(result.returncode, result.stdout.decode(), result.stderr.decode())


async def run_cli(env: Mapping[str, str], *args: str) -> Any:
    result = await run_cli_unchecked(env, *args)
    assert result.status == 0, result.stderr
    return orjson.loads(result.stdout)


async def run_to_exit(
    cmd: Sequence[str], env: Mapping[str, str], output: Path, *, within: float
) -> tuple[int, str]:
    """Run ``cmd`` in a session of its own until it exits; return its status and what it wrote
    (stdout and stderr, kept in ``output``). Still running after ``within`` seconds fails the
    test (``trio.TooSlowError``); either way its process group is killed at the end, with
    anything the command left behind."""
    with output.open("wb") as out:
        process = await trio.lowlevel.open_process(
            list(cmd), env=base_env(env), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        with trio.fail_after(within):
            await process.wait()
    finally:
        with trio.CancelScope(shield=True):
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    return process.returncode, await trio.Path(output).read_text()
