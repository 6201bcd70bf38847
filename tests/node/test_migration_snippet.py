"""The migration guide's Node.js snippet, run unchanged with the official ``openai`` npm package
(pinned in ``tests/node/package.json`` and its lock) against a gateway process.

The package is installed with ``npm ci`` into a cache directory outside the checkout, one per
lock file (``$RINGSIDE_NODE_CACHE``, else the user cache dir's ``ringside/node/<lock hash>``),
on first use and again whenever the lock changes; npm's own cache makes a reinstall quick.
Skipped only where ``node`` is not installed."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import platformdirs
import pytest
import trio

from tests.gateway import ADMIN_KEY, simulator_env
from tests.processes import run_cli, run_to_exit, spawn_gateway
from tests.simulator.server import RunningSimulator

HERE = Path(__file__).resolve().parent
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")

_MANIFEST = ("package.json", "package-lock.json")


def node_dir() -> Path:
    """A directory with the pinned packages installed (``npm ci``) and the snippet beside them
    (ESM resolves ``import "openai"`` from the importing file's directory)."""
    lock = hashlib.sha256(b"".join((HERE / f).read_bytes() for f in _MANIFEST)).hexdigest()
    root = os.environ.get("RINGSIDE_NODE_CACHE") or platformdirs.user_cache_dir("ringside")
    target = Path(root) / "node" / lock[:16]
    target.mkdir(parents=True, exist_ok=True)
    with (target / ".lock").open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # two test runs installing at once
        if not (target / ".installed").exists():
            for name in _MANIFEST:
                shutil.copy(HERE / name, target / name)
            return_code = _npm_ci(target)
            assert return_code == 0, (target / "npm-ci.log").read_text()
            (target / ".installed").write_text(lock)
    shutil.copy(HERE / "migration-snippet.mjs", target / "migration-snippet.mjs")
    return target


def _npm_ci(target: Path) -> int:
    npm = shutil.which("npm")
    assert npm is not None, "node is installed but npm is not: it installs tests/node's packages"
    with (target / "npm-ci.log").open("wb") as log:
        return subprocess.run(
            [npm, "ci", "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=target,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=300,
            check=False,
        ).returncode


@pytest.fixture
def env(database_url: str, redis_url: str, simulator: RunningSimulator) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "RINGSIDE_ADMIN_KEY": ADMIN_KEY,
        **simulator_env(simulator),
    }


async def test_the_guides_node_snippet_runs_unchanged(
    env: dict[str, str], tmp_path: Path, simulator: RunningSimulator
) -> None:
    installed = await trio.to_thread.run_sync(node_dir)
    async with spawn_gateway(env, tmp_path) as gw:
        dev = await run_cli(env, "developers", "create", "--name", "node")
        snippet_env = {
            **env,
            "RINGSIDE_API_KEY": dev["api_key"]["key"],
            "RINGSIDE_BASE_URL": f"{gw.url}/v1",
        }
        assert NODE is not None
        status, output = await run_to_exit(
            [NODE, str(installed / "migration-snippet.mjs")],
            snippet_env,
            tmp_path / "node.log",
            within=120,
        )
    assert status == 0, output
    result: dict[str, Any] = orjson.loads(output.strip().splitlines()[-1])
    assistant, thread, run = result["assistant"], result["thread"], result["run"]
    assert assistant["object"] == "assistant"
    assert assistant["id"].startswith("asst_")
    assert (assistant["name"], assistant["model"]) == ("Support Bot", "fc:openai/gpt-4o")
    assert thread["object"] == "thread"
    assert thread["id"].startswith("thread_")
    assert run["object"] == "thread.run"
    assert (run["thread_id"], run["assistant_id"]) == (thread["id"], assistant["id"])
    assert run["status"] == "completed", run
    assert run["usage"]["total_tokens"] > 0
    user, answer = result["messages"]
    assert (user["role"], user["content"][0]["text"]["value"]) == ("user", "Hello")
    assert answer["role"] == "assistant"
    assert answer["run_id"] == run["id"]
    assert answer["content"][0]["text"]["value"] == "Echo: Hello"
    # The run went to the upstream as one chat call.
    assert [r.json["model"] for r in simulator.sim.chats()] == ["gpt-4o"]
