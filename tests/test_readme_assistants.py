"""The README's data migration loop (Assistants, from an export), run as pasted against a
gateway: an export written with the openai SDK's own types, a first run cut short (a thread
half-copied and missing from the id map, as after a crash), then a full run that resumes."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import orjson
import trio
from openai.types.beta import Assistant, Thread
from openai.types.beta.threads import Message

from tests.api.devapi import DevApi, new_dev
from tests.gateway import RunningGateway
from tests.processes import ROOT, base_env

README = ROOT / "README.md"
SECTION = "## Migrating from the OpenAI Assistants API\n"
DEFAULT_URL = "http://127.0.0.1:8000/v1"
CUSTOMERS_LINE = "CUSTOMER_OF: dict[str, str] = {}"


def migration_script(readme: str) -> str:
    assert SECTION in readme, f"README.md has no {SECTION.strip()!r} section"
    section = readme[readme.index(SECTION) :]
    end = section.find("\n## ", 1)
    section = section if end < 0 else section[:end]
    part = section[section.index("### Migrating your data from an export\n") :]
    [script] = re.compile(r"^```python\n(.*?)^```$", re.M | re.S).findall(part)
    return str(script)


def assistant(n: int, tools: list[dict[str, Any]]) -> dict[str, Any]:
    return Assistant.model_validate(
        {"id": f"asst_old{n}", "object": "assistant", "created_at": 1_700_000_000 + n,
         "name": f"Bot {n}", "description": None, "instructions": f"Be helpful ({n}).",
         "model": "gpt-4o-mini", "tools": tools, "metadata": {"team": "support"},
         "temperature": 0.5, "top_p": None, "response_format": "auto", "tool_resources": None}
    ).model_dump(mode="json")  # fmt: skip


def thread(old_id: str, metadata: dict[str, str]) -> dict[str, Any]:
    return Thread.model_validate(
        {"id": old_id, "object": "thread", "created_at": 1_700_000_100, "metadata": metadata,
         "tool_resources": None}
    ).model_dump(mode="json")  # fmt: skip


def message(thread_id: str, n: int, role: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    return Message.model_validate(
        {"id": f"msg_old{thread_id[-1]}{n}", "object": "thread.message", "thread_id": thread_id,
         "created_at": 1_700_000_200 + n, "role": role, "content": parts, "attachments": [],
         "assistant_id": "asst_old1" if role == "assistant" else None, "run_id": None,
         "status": "completed", "completed_at": None, "incomplete_at": None,
         "incomplete_details": None, "metadata": {"n": str(n)}}
    ).model_dump(mode="json")  # fmt: skip


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": {"value": value, "annotations": []}}


FUNCTION = {
    "type": "function",
    "function": {"name": "lookup", "description": "Look it up", "parameters": {"type": "object"}},
}
A_MESSAGES = [
    message("thread_oldA", 1, "user", [text("Hello")]),
    message("thread_oldA", 2, "assistant", [text("Hi! How can I help?")]),
    message(
        "thread_oldA",
        3,
        "user",
        [
            text("What is in this picture?"),
            {
                "type": "image_url",
                "image_url": {"url": "https://example.com/a.png", "detail": "auto"},
            },
            {"type": "image_file", "image_file": {"file_id": "file_old", "detail": "auto"}},
        ],
    ),
]
B_MESSAGES = [
    message("thread_oldB", 1, "user", [text("First")]),
    message("thread_oldB", 2, "user", [text("Second")]),
]


def export(with_second_b: bool) -> bytes:
    items = [
        assistant(1, [FUNCTION, {"type": "code_interpreter"}]),
        assistant(2, [{"type": "file_search"}]),
        thread("thread_oldA", {"customer": "a"}),
        thread("thread_oldB", {}),
        *reversed(A_MESSAGES),  # any order: the loop sorts by created_at
        *B_MESSAGES[: 2 if with_second_b else 1],
    ]
    return b"".join(orjson.dumps(item) + b"\n" for item in items)


async def run_script(script: str, cwd: Path, key: str) -> None:
    result = await trio.run_process(
        [sys.executable, "-c", script],
        cwd=cwd,
        env=base_env({"RINGSIDE_API_KEY": key}),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()


async def messages_of(dev: DevApi, thread_id: str) -> list[dict[str, Any]]:
    page = await dev.ok("GET", f"/v1/threads/{thread_id}/messages", params={"order": "asc"})
    return list(page["data"])


async def test_the_migration_loop_copies_an_export_and_resumes_after_a_crash(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    dev = await new_dev(gateway)
    script = migration_script(README.read_text())
    script = script.replace(DEFAULT_URL, f"{gateway.url}/v1")
    assert CUSTOMERS_LINE in script
    script = script.replace(CUSTOMERS_LINE, 'CUSTOMER_OF = {"thread_oldA": "cust_a"}')

    # A first run that stopped half-way: thread B has one message of two, and the id map lost
    # its line for thread B (the crash came between creating it and writing it down).
    (tmp_path / "assistants-export.jsonl").write_bytes(export(with_second_b=False))
    await run_script(script, tmp_path, dev.key)
    journal = (tmp_path / "id-map.jsonl").read_text().splitlines()
    assert [orjson.loads(j)["old"] for j in journal] == [
        "asst_old1", "asst_old2", "thread_oldA", "thread_oldB",
    ]  # fmt: skip
    (tmp_path / "id-map.jsonl").write_text("\n".join(journal[:3]) + "\n")

    (tmp_path / "assistants-export.jsonl").write_bytes(export(with_second_b=True))
    await run_script(script, tmp_path, dev.key)
    id_map = dict(
        (m["old"], m["new"])
        for m in map(orjson.loads, (tmp_path / "id-map.jsonl").read_text().splitlines())
    )
    assert set(id_map) == {"asst_old1", "asst_old2", "thread_oldA", "thread_oldB"}

    listed = (await dev.ok("GET", "/v1/assistants", params={"order": "asc"}))["data"]
    assert [a["id"] for a in listed] == [id_map["asst_old1"], id_map["asst_old2"]]
    first, second = listed
    assert (first["name"], first["model"], first["instructions"]) == (
        "Bot 1", "fc:openai/gpt-4o-mini", "Be helpful (1).",
    )  # fmt: skip
    assert first["tools"] == [FUNCTION]
    assert (first["temperature"], first["metadata"]) == (0.5, {"team": "support"})
    assert second["tools"] == []

    for old in ("thread_oldA", "thread_oldB"):
        found = await dev.ok("GET", "/v1/threads", params={"source_thread_id": old})
        assert [t["id"] for t in found["data"]] == [id_map[old]]
        assert found["data"][0]["metadata"]["source_thread_id"] == old
    a = await messages_of(dev, id_map["thread_oldA"])
    assert [(m["role"], m["metadata"]) for m in a] == [
        ("user", {"n": "1"}), ("assistant", {"n": "2"}), ("user", {"n": "3"}),
    ]  # fmt: skip
    assert [p["type"] for p in a[2]["content"]] == ["text", "image_url"]
    assert a[2]["content"][0]["text"]["value"] == "What is in this picture?"
    assert a[2]["content"][1]["image_url"]["url"] == "https://example.com/a.png"
    b = await messages_of(dev, id_map["thread_oldB"])
    assert [m["content"][0]["text"]["value"] for m in b] == ["First", "Second"]

    # Thread A was created for its customer.
    customer = await dev.ok("GET", "/v1/customers/cust_a")
    owner = await gateway.services.db.fetchval(
        "SELECT c.customer_id FROM conversation AS c"
        " JOIN api_thread_aliases AS a ON a.conversation_id = c.id WHERE a.thread_id = $1",
        id_map["thread_oldA"],
    )
    assert owner == customer["id"]
