"""``./dev demo`` (``python -m tests.demo``): Ringside on this machine with no provider key.

It serves the upstream simulator, starts the gateway as operators run it (``hypercorn -k trio
ringside:app`` on ``RINGSIDE_HOST``:``RINGSIDE_PORT``, 127.0.0.1:8000 by default) with every
provider the simulator speaks pointed at it (and every other provider's key and URL removed, so
nothing real is ever called), creates a developer through the admin API and prints a
ready-to-paste SDK snippet with its key. Once all that is ready, and not before, the key is also
written to ``.ringside-demo/api-key``: a script can wait for that file. Ctrl-C or SIGTERM stops
everything (exit status 0) and removes the file.

``RINGSIDE_DEMO_DIR`` (default ``.ringside-demo`` in the repository) holds the key, the
gateway's log and, unless ``RINGSIDE_DATA_DIR`` / ``DATABASE_URL`` / ``REDIS_URL`` say
otherwise, the embedded PostgreSQL and Redis of the demo (kept apart from ``./dev serve``'s).

The demo lives in ``tests/`` because the simulator does: it is test code, not part of the
``ringside`` package, and a gateway started outside a checkout has nothing to demonstrate it
with.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from ringside.upstream.providers import PROVIDERS
from tests.gateway import simulator_env
from tests.simulator.app import Simulator
from tests.simulator.server import open_simulator

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 180.0  # a first start creates the embedded PostgreSQL cluster
STOP_TIMEOUT_S = 15.0  # the gateway's graceful timeout, its shutdown grace, and some slack
GRACEFUL_TIMEOUT_S = 3


class DemoError(Exception):
    """Why the demo cannot run, in one line."""


@dataclass(frozen=True)
class DemoConfig:
    host: str
    port: int
    dir: Path

    @property
    def url(self) -> str:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def key_file(self) -> Path:
        return self.dir / "api-key"

    @property
    def log_file(self) -> Path:
        return self.dir / "gateway.log"


def _shown(path: Path) -> str:
    with suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def _check_port_free(host: str, port: int) -> None:
    family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As Hypercorn binds: a connection of a previous run in TIME_WAIT is no conflict.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise DemoError(
                f"{host}:{port} is not free ({exc.strerror}): stop what listens there "
                "(another gateway?) or set RINGSIDE_PORT"
            ) from None


def gateway_env(
    environ: Mapping[str, str], simulated: Mapping[str, str], cfg: DemoConfig, admin_key: str
) -> dict[str, str]:
    """The environment for the gateway: the caller's, minus every provider key and URL (a
    demo never reaches a real provider), plus the simulator's."""
    providers = tuple(
        f"{name.upper()}_{var}" for name in PROVIDERS for var in ("API_KEY", "BASE_URL")
    )
    env = {k: v for k, v in environ.items() if k not in providers}
    env.setdefault("RINGSIDE_DATA_DIR", str(cfg.dir / "data"))
    env["RINGSIDE_ADMIN_KEY"] = admin_key
    # The demo's webhooks go to receivers on this machine (see the README's Webhooks section).
    env.setdefault("RINGSIDE_WEBHOOKS_ALLOW_PRIVATE", "1")
    env.update(simulated)
    return env


@asynccontextmanager
async def open_gateway(cfg: DemoConfig, env: Mapping[str, str]) -> AsyncIterator[trio.Process]:
    """``hypercorn -k trio ringside:app``, ready (``/readyz`` answers 200) when this yields;
    stopped on exit by a SIGTERM to its master, which drains and stops its workers."""
    cmd = [
        *(sys.executable, "-m", "hypercorn", "-k", "trio", "--workers", "1"),
        *("--bind", f"{cfg.host}:{cfg.port}", "--graceful-timeout", str(GRACEFUL_TIMEOUT_S)),
        "ringside:app",
    ]
    with cfg.log_file.open("wb") as log:
        # A session of its own: the demo alone decides when it stops (a Ctrl-C in the terminal
        # reaches the demo, which stops the gateway in order), and its group can be killed.
        process = await trio.lowlevel.open_process(
            cmd, env=dict(env), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        await _wait_ready(cfg, process)
        yield process
    finally:
        with trio.CancelScope(shield=True):
            await _stop(process)


@asynccontextmanager
async def open_workers(cfg: DemoConfig, env: Mapping[str, str]) -> AsyncIterator[trio.Process]:
    """``python -m workers`` (settlement, webhook delivery), stopped with SIGTERM on exit."""
    with (cfg.dir / "workers.log").open("wb") as log:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "workers"], env=dict(env), cwd=ROOT, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        with trio.CancelScope(shield=True):
            await _stop(process)


async def _wait_ready(cfg: DemoConfig, process: trio.Process) -> None:
    async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
        with trio.move_on_after(START_TIMEOUT_S):
            while process.poll() is None:
                with suppress(httpx.TransportError):
                    if (await client.get(f"{cfg.url}/readyz")).status_code == 200:
                        return
                await trio.sleep(0.2)
            raise DemoError(
                f"the gateway exited while starting (status {process.returncode}); "
                f"its log: {_shown(cfg.log_file)}"
            )
    raise DemoError(
        f"the gateway was not ready after {START_TIMEOUT_S:.0f} s; its log: {_shown(cfg.log_file)}"
    )


async def _stop(process: trio.Process) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(STOP_TIMEOUT_S):
            await process.wait()
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    await process.wait()


async def create_developer(cfg: DemoConfig, admin_key: str) -> str:
    async with httpx.AsyncClient(base_url=cfg.url, timeout=30, trust_env=False) as client:
        r = await client.post(
            "/admin/v1/developers",
            json={"name": "demo", "tier": "pro"},
            headers={"Authorization": f"Bearer {admin_key}"},
        )
    if r.status_code != 201:
        raise DemoError(f"the admin API answered {r.status_code}: {r.text}")
    key: str = r.json()["api_key"]["key"]
    return key


def write_key(path: Path, key: str) -> None:
    """Atomically, so whoever waits for the file never reads half a key."""
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    os.replace(partial, path)


def banner(cfg: DemoConfig, key: str, admin_key: str, data_dir: str) -> str:
    return f"""
Ringside demo on {cfg.url}: every OpenAI-wire provider is simulated (nothing real is
called or billed). Developer "demo" (tier pro), API key (also in {_shown(cfg.key_file)}):

    {key}

Paste into Python (.venv/bin/python):

from openai import OpenAI

client = OpenAI(base_url="{cfg.url}/v1", api_key="{key}")
reply = client.chat.completions.create(
    model="fc:openai/gpt-4o-mini",
    messages=[{{"role": "user", "content": "Hello"}}],
)
print(reply.choices[0].message.content)

Admin API key: {admin_key}    Gateway log: {_shown(cfg.log_file)}
The CLI on the demo's data: RINGSIDE_DATA_DIR={_shown(Path(data_dir))} .venv/bin/ringside --help
Ctrl-C or SIGTERM stops it all.
"""


async def run_demo(cfg: DemoConfig) -> int:
    """Until cancelled (the demo's stop), or the gateway stops by itself (its status)."""
    cfg.dir.mkdir(parents=True, exist_ok=True)
    cfg.key_file.unlink(missing_ok=True)  # a key left by an earlier run is no sign of readiness
    _check_port_free(cfg.host, cfg.port)
    admin_key = os.environ.get("RINGSIDE_ADMIN_KEY") or secrets.token_urlsafe(24)
    async with open_simulator(Simulator(record=False)) as sim:
        env = gateway_env(os.environ, simulator_env(sim), cfg, admin_key)
        async with open_gateway(cfg, env) as gateway, open_workers(cfg, env):
            key = await create_developer(cfg, admin_key)
            print(banner(cfg, key, admin_key, env["RINGSIDE_DATA_DIR"]), flush=True)
            try:
                write_key(cfg.key_file, key)
                await gateway.wait()
            finally:
                cfg.key_file.unlink(missing_ok=True)
            print(
                f"demo: the gateway stopped by itself (status {gateway.returncode}); "
                f"its log: {_shown(cfg.log_file)}",
                file=sys.stderr,
            )
            return 1


async def _cancel_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return


async def main_async(cfg: DemoConfig) -> int:
    status = 0
    # Owned from the start, so a signal during start-up is a clean stop too.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope)
            try:
                status = await run_demo(cfg)
            except DemoError as exc:
                print(f"demo: {exc}", file=sys.stderr)
                status = 1
            nursery.cancel_scope.cancel()
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.demo", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("RINGSIDE_HOST") or "127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("RINGSIDE_PORT") or 8000))
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(os.environ.get("RINGSIDE_DEMO_DIR") or ROOT / ".ringside-demo"),
    )
    args = parser.parse_args(argv)
    return trio.run(main_async, DemoConfig(args.host, args.port, args.dir.absolute()))


if __name__ == "__main__":
    sys.exit(main())
