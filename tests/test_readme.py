"""The README's quickstart, run block by block in a plain shell as a newcomer would paste it.

Each ``./dev <recipe>`` becomes the command that recipe runs (``just --dry-run``), which is what
``./dev`` runs once ``.venv`` exists; the port, the demo directory and the virtualenv become the
test's own. Nothing else in the blocks is touched.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from contextlib import suppress
from pathlib import Path

import httpx
import pytest
import trio

from tests.processes import BIN, ROOT, base_env, free_port

README = ROOT / "README.md"
DEMO_DIR = ".ringside-demo"
DEFAULT_URL = "127.0.0.1:8000"


def quickstart_blocks(readme: str) -> tuple[list[str], list[str]]:
    """The ``sh`` blocks of the quickstart: the demo's, and the real-provider-keys variant's."""
    section = readme[readme.index("## Quickstart\n") :]
    section = section[: section.index("\n## ", 1)]
    demo, _, real = section.partition("### With real provider keys\n")
    blocks = re.compile(r"^```sh\n(.*?)^```$", re.M | re.S)
    return blocks.findall(demo), blocks.findall(real)


def section_blocks(readme: str, heading: str) -> list[str]:
    """The ``sh`` blocks of a ``## `` section."""
    section = readme[readme.index(f"## {heading}\n") :]
    section = section[: section.index("\n## ", 1)]
    return re.compile(r"^```sh\n(.*?)^```$", re.M | re.S).findall(section)


async def recipe_command(recipe: str, env: dict[str, str]) -> str:
    """What ``just <recipe>`` runs, with this environment's host and port."""
    result = await trio.run_process(
        [str(BIN / "just"), "--dry-run", recipe],
        env=env,
        cwd=ROOT,
        capture_stdout=True,
        capture_stderr=True,
    )
    return result.stderr.decode().strip()


@pytest.fixture
def shell_env(database_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    return base_env(
        {
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",  # as ./dev sets it
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "RINGSIDE_DATA_DIR": str(tmp_path / "data"),
            "RINGSIDE_DEMO_DIR": str(tmp_path / "demo"),
            "RINGSIDE_HOST": "127.0.0.1",
            "RINGSIDE_PORT": str(free_port()),
        }
    )


async def as_test_script(blocks: list[str], env: dict[str, str]) -> str:
    script = "\n".join(blocks)
    for recipe in sorted(set(re.findall(r"\./dev (\w+)", script))):
        script = script.replace(f"./dev {recipe}", await recipe_command(recipe, env))
    script = script.replace(DEFAULT_URL, f"127.0.0.1:{env['RINGSIDE_PORT']}")
    script = script.replace(f"{DEMO_DIR}/", env["RINGSIDE_DEMO_DIR"] + "/")
    return script.replace(".venv/bin/", f"{BIN}/")


async def stop_group(process: trio.Process) -> None:
    """SIGTERM to the whole group (the demo stops its gateway on it), SIGKILL if that is not
    enough."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with trio.move_on_after(20):
        await process.wait()
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


async def run_script(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    # -e: a failing block fails the test. The script's last block stops what it started in the
    # background; `wait` returns that exit status.
    with trio.fail_after(180):
        return await trio.run_process(
            ["sh", "-euc", f"{script}\nwait $!\n"],
            env=env,
            cwd=ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            start_new_session=True,
            deliver_cancel=stop_group,
        )


async def read_all(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data.decode()


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="the quickstart uses curl")


@needs_curl
async def test_quickstart_runs_as_pasted(shell_env: dict[str, str]) -> None:
    demo_blocks, _ = quickstart_blocks(README.read_text())
    script = await as_test_script(demo_blocks, shell_env)
    assert "python -m tests.demo" in script
    result = await run_script(script, shell_env)
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, f"{out}\n{err}"
    assert err == ""  # no warning, no traceback, nothing from the demo's stop either
    assert '"object":"chat.completion"' in out  # the curl block
    lines = out.splitlines()
    assert "Echo: Hello" in lines  # the plain completion
    assert "Echo: Stream a haiku" in lines  # the streamed one
    assert lines[-1] == "fc:anthropic/claude-sonnet-5-5 false"  # Anthropic answered
    key = (Path(shell_env["RINGSIDE_DEMO_DIR"]) / "api-key").exists()
    assert not key, "the demo removes its key file when it stops"


@needs_curl
async def test_quickstart_with_real_keys_reaches_a_key(shell_env: dict[str, str]) -> None:
    _, real_blocks = quickstart_blocks(README.read_text())
    script = await as_test_script(real_blocks, shell_env)
    assert "hypercorn -k trio" in script
    # The blocks set everything up; the calls themselves would need real provider keys.
    result = await run_script(f'{script}\necho "key: $RINGSIDE_API_KEY"\nkill $!', shell_env)
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, f"{out}\n{err}"
    assert out.splitlines()[-1].startswith("key: sk_live_"), out


async def test_demo_stops_cleanly_on_ctrl_c(shell_env: dict[str, str]) -> None:
    # (SIGTERM is the quickstart's `kill $!`, above.)
    key_file = Path(shell_env["RINGSIDE_DEMO_DIR"]) / "api-key"
    url = f"http://127.0.0.1:{shell_env['RINGSIDE_PORT']}"
    demo = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.demo"],
        env=shell_env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        with trio.fail_after(120):
            while not key_file.exists():
                assert demo.poll() is None, "the demo stopped while starting"
                await trio.sleep(0.1)
        key = key_file.read_text().strip()
        async with httpx.AsyncClient(base_url=url) as client:
            r = await client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200
        demo.send_signal(signal.SIGINT)
        with trio.fail_after(20):
            await demo.wait()
        assert demo.returncode == 0
        assert demo.stdout is not None
        assert demo.stderr is not None
        banner = await read_all(demo.stdout)
        assert key in banner
        assert "from openai import OpenAI" in banner
        assert await read_all(demo.stderr) == ""
        assert not key_file.exists()
        async with httpx.AsyncClient(base_url=url) as client:
            with pytest.raises(httpx.ConnectError):  # the gateway has stopped too
                await client.get("/readyz")
    finally:
        with trio.CancelScope(shield=True):
            await stop_group(demo)


@needs_curl
async def test_customers_and_money_runs_as_pasted(shell_env: dict[str, str]) -> None:
    demo_blocks, _ = quickstart_blocks(README.read_text())
    money = section_blocks(README.read_text(), "Customers and money")
    assert len(money) == 3
    # With the demo running (its blocks but the last, which stops it), then stopped.
    script = await as_test_script([*demo_blocks[:-1], *money, demo_blocks[-1]], shell_env)
    result = await run_script(script, shell_env)
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, f"{out}\n{err}"
    assert err == ""
    assert '"object":"customer"' in out
    assert '"type":"topup"' in out
    lines = out.splitlines()
    first = next(line for line in lines if line.startswith("deducted "))
    second = next(line for line in lines if line.endswith("replayed true"))
    assert first.split()[1] == second.split()[1]  # the same charge, replayed, not charged again
    assert first.split()[3] == second.split()[3]
    assert '"object":"customer.usage"' in out
    assert '"object":"developer.usage"' in out
    assert '"type":"debit"' in out
