"""``/v1/threads`` through the official openai SDK (``client.beta.threads``): create (with
initial messages, tool_resources, metadata), retrieve, update, delete; the internal ``conv_`` id
never on the wire; the thread's customer (FC-Customer, ``user``, client token; stubs created
once); the ``source_thread_id`` lookup; isolation between developers and customers; a thread
with an active run; bad input answered with the SPEC §6 envelope and no change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio

from ringside.domain import threads
from ringside.domain.auth import Caller
from ringside.errors import NotFound
from tests.api.devapi import DevApi, assert_error, new_dev
from tests.gateway import RunningGateway, open_gateway
from tests.simulator.openapi import validate
from tests.simulator.server import RunningSimulator

# The SDK marks the whole Assistants surface deprecated (OpenAI switched it off); Ringside
# serves it, so its warning is expected here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:(deprecated|The Assistants API is deprecated):DeprecationWarning"
)

ORIGIN = "https://app.example"
TOKEN_KEYS = {"RINGSIDE_CLIENT_TOKEN_KEYS": "k1:" + "s" * 40}


@pytest.fixture
async def gateway(
    database_url: str, redis_url: str, simulator: RunningSimulator, data_dir: Path
) -> AsyncIterator[RunningGateway]:
    """The test gateway, able to mint client tokens."""
    async with open_gateway(database_url, redis_url, simulator, data_dir, TOKEN_KEYS) as gw:
        yield gw


@pytest.fixture
async def dev(gateway: RunningGateway) -> DevApi:
    return await new_dev(gateway)


@pytest.fixture
def client(gateway: RunningGateway, dev: DevApi) -> openai.AsyncOpenAI:
    return gateway.openai(dev.key)


async def count(gw: RunningGateway, table: str) -> int:
    return int(await gw.services.db.fetchval(f"SELECT count(*) FROM {table}"))


async def conversation_of(gw: RunningGateway, thread_id: str) -> dict[str, Any]:
    row = await gw.services.db.fetchrow(
        "SELECT c.* FROM api_thread_aliases AS a JOIN conversation AS c ON c.id = a.conversation_id"
        " WHERE a.thread_id = $1",
        thread_id,
    )
    assert row is not None
    return dict(row)


async def insert_active_run(gw: RunningGateway, dev: DevApi, thread_id: str) -> str:
    """A run holding the thread's lock, as the runs code writes it."""
    conv = await conversation_of(gw, thread_id)
    run_id = f"run_{thread_id[-12:]}"
    await gw.services.db.execute(
        "INSERT INTO run (id, developer_id, conversation_id, assistant_id, api_key_id, status,"
        " model, expires_at) VALUES ($1, $2, $3, 'asst_x', $4, 'requires_action',"
        " 'fc:openai/gpt-4o', now() + interval '10 minutes')",
        run_id,
        dev.id,
        conv["id"],
        dev.key_id,
    )
    return run_id


def every_verb(thread_id: str, message_id: str) -> list[tuple[str, str, Any]]:
    """Every thread and message endpoint on one thread, each with a body it accepts."""
    t, m = f"/v1/threads/{thread_id}", f"/v1/threads/{thread_id}/messages/{message_id}"
    return [
        ("GET", t, None),
        ("POST", t, {"metadata": {"k": "v"}}),
        ("DELETE", t, None),
        ("GET", f"{t}/messages", None),
        ("POST", f"{t}/messages", {"role": "user", "content": "x"}),
        ("GET", m, None),
        ("POST", m, {"metadata": {"k": "v"}}),
        ("DELETE", m, None),
    ]


@dataclass
class Browser:
    """A client token of one customer, used as a browser uses it."""

    token: str
    customer_id: str
    headers: dict[str, str]
    client: openai.AsyncOpenAI


async def browser_for(gw: RunningGateway, dev: DevApi, external_id: str) -> Browser:
    customer = await dev.customer(external_id=external_id)
    r = await dev("POST", f"/v1/customers/{customer['id']}/client_tokens", json={"origin": ORIGIN})
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    headers = {"Authorization": f"Client {token}", "Origin": ORIGIN}
    client = gw.openai("unused", default_headers=headers)
    return Browser(token, customer["id"], headers, client)


# --- create / retrieve --------------------------------------------------------------------


async def test_create_and_retrieve_an_empty_thread(
    gateway: RunningGateway, dev: DevApi, client: openai.AsyncOpenAI
) -> None:
    t = await client.beta.threads.create()
    assert t.id.startswith("thread_")
    assert t.object == "thread"
    assert t.metadata == {}
    assert isinstance(t.created_at, int)
    assert await client.beta.threads.retrieve(t.id) == t

    r = await dev("GET", f"/v1/threads/{t.id}")
    validate(r.json(), "ThreadObject")
    conv = await conversation_of(gateway, t.id)
    assert conv["id"].startswith("conv_")
    assert conv["id"][5:] != t.id[7:]  # not derivable from the public id
    assert conv["developer_id"] == dev.id
    assert conv["customer_id"] is None
    assert conv["message_count"] == 0
    # The internal id never reaches the wire.
    assert "conv_" not in r.text
    assert conv["id"] not in r.text
    assert_error(await dev("GET", f"/v1/threads/{conv['id']}"), 404, "not_found")


async def test_create_with_messages_tool_resources_and_metadata(
    gateway: RunningGateway, dev: DevApi, client: openai.AsyncOpenAI
) -> None:
    t = await client.beta.threads.create(
        messages=[
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi! How can I help?"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                ],
                "metadata": {"n": "3"},
            },
        ],
        tool_resources={"code_interpreter": {"file_ids": []}},
        metadata={"source_thread_id": "thread_openai_1", "plan": "gold"},
    )
    assert t.metadata == {"source_thread_id": "thread_openai_1", "plan": "gold"}
    raw = await dev.ok("GET", f"/v1/threads/{t.id}")
    validate(raw, "ThreadObject")
    assert raw["tool_resources"] == {"code_interpreter": {"file_ids": []}}

    page = await client.beta.threads.messages.list(t.id, order="asc")
    assert [m.role for m in page.data] == ["user", "assistant", "user"]
    assert page.data[0].content[0].text.value == "Hello"  # type: ignore[union-attr]
    assert page.data[2].metadata == {"n": "3"}
    assert all(m.thread_id == t.id for m in page.data)
    listed = await dev.ok("GET", f"/v1/threads/{t.id}/messages", params={"order": "asc"})
    validate(listed, "ListMessagesResponse")
    assert listed["data"][2]["content"] == [
        {"type": "text", "text": {"value": "What is in this picture?", "annotations": []}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "auto"}},
    ]
    assert "conv_" not in str(listed)
    conv = await conversation_of(gateway, t.id)
    assert conv["message_count"] == 3
    assert conv["next_ordinal"] == 3
    ordinals = await gateway.services.db.fetch(
        "SELECT ordinal FROM thread_message WHERE conversation_id = $1 ORDER BY ordinal", conv["id"]
    )
    assert [r["ordinal"] for r in ordinals] == [0, 1, 2]


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"messages": "hello"}, "messages", "invalid_request"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role", "invalid_request"),
        ({"messages": [{"role": "user", "content": "ok"}, {"role": "user"}]},
         "messages.1.content", "invalid_request"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages.0.content", "invalid_request"),
        ({"messages": [{"role": "user", "content": [{"type": "image_file",
          "image_file": {"file_id": "file-1"}}]}]}, "messages.0.content.0", "invalid_request"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "invalid_request"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k", "invalid_request"),
        ({"tool_resources": {"file_search": {"vector_store_ids": ["vs_1"]}}},
         "tool_resources.file_search", "unsupported_tool_type"),
        ({"tool_resources": {"code_interpreter": {"file_ids": ["f"]}}},
         "tool_resources.code_interpreter", "unsupported_tool_type"),
        ({"colour": "red"}, "colour", "invalid_request"),
        ({"user": 42}, "user", "invalid_request"),
    ],
)  # fmt: skip
async def test_bad_input_creates_nothing(
    gateway: RunningGateway, dev: DevApi, body: dict[str, Any], param: str, code: str
) -> None:
    # Even with a customer named: no stub customer is left behind.
    r = await dev("POST", "/v1/threads", json=body, headers={"FC-Customer": "new-customer"})
    assert_error(r, 400, code, param)
    for table in ("conversation", "api_thread_aliases", "thread_message", "customer"):
        assert await count(gateway, table) == 0


async def test_bodies_that_are_not_objects(gateway: RunningGateway, dev: DevApi) -> None:
    for content in (b"[]", b"{not json", b'"x"'):
        r = await dev(
            "POST", "/v1/threads", content=content, headers={"Content-Type": "application/json"}
        )
        assert_error(r, 400, "invalid_request")
    # An empty body is an empty thread, as at OpenAI.
    r = await dev("POST", "/v1/threads")
    assert r.status_code == 200, r.text
    assert await count(gateway, "conversation") == 1


# --- update / delete ----------------------------------------------------------------------


async def test_update(dev: DevApi, client: openai.AsyncOpenAI) -> None:
    t = await client.beta.threads.create(metadata={"a": "1"})
    u = await client.beta.threads.update(t.id, metadata={"b": "2"})
    assert u.id == t.id
    assert u.metadata == {"b": "2"}  # replaced whole
    assert u.created_at == t.created_at
    u = await client.beta.threads.update(
        t.id, tool_resources={"code_interpreter": {"file_ids": []}}
    )
    assert u.metadata == {"b": "2"}  # untouched
    raw = await dev.ok("GET", f"/v1/threads/{t.id}")
    validate(raw, "ThreadObject")
    assert raw["tool_resources"] == {"code_interpreter": {"file_ids": []}}

    for body, param in (
        ({"metadata": {"k" * 65: "v"}}, "metadata key"),
        ({"messages": []}, "messages"),
        ({"tool_resources": {"code_interpreter": {"file_ids": ["f"]}}}, None),
    ):
        r = await dev("POST", f"/v1/threads/{t.id}", json=body)
        assert r.status_code == 400, r.text
        if param:
            assert r.json()["error"]["param"] == param
    assert await dev.ok("GET", f"/v1/threads/{t.id}") == raw
    assert_error(await dev("POST", "/v1/threads/thread_missing", json={}), 404, "not_found")


async def test_delete(gateway: RunningGateway, dev: DevApi, client: openai.AsyncOpenAI) -> None:
    t = await client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    m = (await client.beta.threads.messages.list(t.id)).data[0]
    deleted = await client.beta.threads.delete(t.id)
    assert deleted.id == t.id
    assert deleted.deleted is True
    assert deleted.object == "thread.deleted"
    for method, path, body in every_verb(t.id, m.id):
        assert_error(await dev(method, path, json=body), 404, "not_found")
    conv = await conversation_of(gateway, t.id)
    assert conv["deleted_at"] is not None  # soft: runs and usage keep their thread


async def test_delete_response_shape(dev: DevApi) -> None:
    t = await dev.ok("POST", "/v1/threads", json={})
    validate(await dev.ok("DELETE", f"/v1/threads/{t['id']}"), "DeleteThreadResponse")


async def test_a_thread_with_an_active_run_is_locked(
    gateway: RunningGateway, dev: DevApi, client: openai.AsyncOpenAI
) -> None:
    t = await client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    m = (await client.beta.threads.messages.list(t.id)).data[0]
    run_id = await insert_active_run(gateway, dev, t.id)
    r = await dev("DELETE", f"/v1/threads/{t.id}")
    assert_error(r, 409, "conversation_locked")
    assert r.json()["error"]["type"] == "conflict_error"
    r = await dev("POST", f"/v1/threads/{t.id}/messages", json={"role": "user", "content": "more"})
    assert_error(r, 409, "conversation_locked")
    assert_error(
        await dev("DELETE", f"/v1/threads/{t.id}/messages/{m.id}"), 409, "conversation_locked"
    )
    # Reading and metadata updates still work while the run holds the thread.
    await client.beta.threads.update(t.id, metadata={"x": "1"})
    await client.beta.threads.messages.update(m.id, thread_id=t.id, metadata={"y": "2"})
    conv = await conversation_of(gateway, t.id)
    assert conv["deleted_at"] is None
    assert conv["message_count"] == 1

    await gateway.services.db.execute("UPDATE run SET status = 'completed' WHERE id = $1", run_id)
    await client.beta.threads.messages.create(t.id, role="user", content="more")
    assert (await client.beta.threads.delete(t.id)).deleted is True


async def test_deleting_and_starting_a_run_serialise(
    gateway: RunningGateway, dev: DevApi, client: openai.AsyncOpenAI
) -> None:
    t = await client.beta.threads.create()
    db = gateway.services.db
    caller = Caller(developer_id=dev.id, key_id=dev.key_id, tier="developer")
    thread = await threads.get_thread(db, caller, t.id)
    answers: list[httpx.Response] = []

    async def delete() -> None:
        answers.append(await dev("DELETE", f"/v1/threads/{t.id}"))

    async with trio.open_nursery() as nursery, db.transaction() as conn:
        await threads.hold_for_run(conn, thread)
        nursery.start_soon(delete)
        # Message posts do not wait for a run being created; the delete does.
        await client.beta.threads.messages.create(t.id, role="user", content="hi")
        await trio.sleep(0.3)
        assert answers == []
        await conn.execute(
            "INSERT INTO run (id, developer_id, conversation_id, assistant_id, api_key_id,"
            " status, model, expires_at) VALUES ('run_1', $1, $2, 'asst_x', $3, 'queued',"
            " 'fc:openai/gpt-4o', now() + interval '1 minute')",
            dev.id,
            thread.conversation_id,
            dev.key_id,
        )
    assert_error(answers[0], 409, "conversation_locked")

    await db.execute("UPDATE run SET status = 'completed'")
    await client.beta.threads.delete(t.id)
    async with db.transaction() as conn:
        with pytest.raises(NotFound):
            await threads.hold_for_run(conn, thread)


# --- the thread's customer ----------------------------------------------------------------


async def test_the_thread_belongs_to_the_named_customer(
    gateway: RunningGateway, dev: DevApi, client: openai.AsyncOpenAI
) -> None:
    known = await dev.customer(external_id="acct-1")
    by_header = await client.beta.threads.create(extra_headers={"FC-Customer": "acct-1"})
    by_id = await client.beta.threads.create(extra_headers={"FC-Customer": known["id"]})
    by_user = await client.beta.threads.create(extra_body={"user": "acct-1"})
    for t in (by_header, by_id, by_user):
        assert (await conversation_of(gateway, t.id))["customer_id"] == known["id"]
    # The header wins over the body, as for chat.
    both = await client.beta.threads.create(
        extra_headers={"FC-Customer": "acct-1"}, extra_body={"user": "someone-else"}
    )
    assert (await conversation_of(gateway, both.id))["customer_id"] == known["id"]
    assert await count(gateway, "customer") == 1

    # An unknown customer is created as a stub, once however many threads race for it.
    created: list[str] = []

    async def create() -> None:
        t = await client.beta.threads.create(extra_body={"user": "newcomer"})
        created.append(t.id)

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(create)
    stubs = await gateway.services.db.fetch(
        "SELECT id, stub FROM customer WHERE external_id = 'newcomer'"
    )
    assert len(stubs) == 1
    assert stubs[0]["stub"] is True
    for thread_id in created:
        assert (await conversation_of(gateway, thread_id))["customer_id"] == stubs[0]["id"]

    r = await dev("POST", "/v1/threads", json={}, headers={"FC-Customer": "x" * 257})
    assert_error(r, 400, "invalid_request", "FC-Customer")


async def test_a_client_token_reaches_only_its_customers_threads(
    gateway: RunningGateway, dev: DevApi, client: openai.AsyncOpenAI
) -> None:
    alice = await browser_for(gateway, dev, "alice")
    bob = await browser_for(gateway, dev, "bob")
    own = await alice.client.beta.threads.create(
        messages=[{"role": "user", "content": "hi"}], metadata={"source_thread_id": "s1"}
    )
    assert (await conversation_of(gateway, own.id))["customer_id"] == alice.customer_id
    assert await alice.client.beta.threads.retrieve(own.id) == own
    await alice.client.beta.threads.update(own.id, metadata={"source_thread_id": "s1", "k": "v"})
    m = await alice.client.beta.threads.messages.create(own.id, role="user", content="again")
    assert (await alice.client.beta.threads.messages.retrieve(m.id, thread_id=own.id)).id == m.id
    assert len((await alice.client.beta.threads.messages.list(own.id)).data) == 2
    # The developer sees it too.
    assert (await client.beta.threads.retrieve(own.id)).id == own.id

    bobs = await bob.client.beta.threads.create(metadata={"source_thread_id": "s1"})
    developers = await client.beta.threads.create(
        messages=[{"role": "user", "content": "x"}], metadata={"source_thread_id": "s1"}
    )
    dev_message = (await client.beta.threads.messages.list(developers.id)).data[0]
    for other in (bobs.id, developers.id):
        for method, path, body in every_verb(other, dev_message.id):
            r = await gateway.http.request(method, path, json=body, headers=alice.headers)
            assert_error(r, 404, "not_found")
    found = await gateway.http.get(
        "/v1/threads", params={"source_thread_id": "s1"}, headers=alice.headers
    )
    assert [t["id"] for t in found.json()["data"]] == [own.id]
    assert len((await dev.ok("GET", "/v1/threads", params={"source_thread_id": "s1"}))["data"]) == 3

    # A client token's thread is always its customer's: naming another is refused.
    r = await gateway.http.post(
        "/v1/threads", json={}, headers={**alice.headers, "FC-Customer": "bob"}
    )
    assert_error(r, 403, "customer_mismatch", "FC-Customer")
    r = await gateway.http.post("/v1/threads", json={"user": "bob"}, headers=alice.headers)
    assert_error(r, 403, "customer_mismatch", "user")
    r = await gateway.http.post("/v1/threads", json={"user": "alice"}, headers=alice.headers)
    assert r.status_code == 200, r.text
    assert await count(gateway, "customer") == 2

    assert (await alice.client.beta.threads.delete(own.id)).deleted is True
    assert_error(await dev("GET", f"/v1/threads/{own.id}"), 404, "not_found")


async def test_cors_for_threads(gateway: RunningGateway, dev: DevApi) -> None:
    alice = await browser_for(gateway, dev, "alice")
    for path in ("/v1/threads", "/v1/threads/thread_x", "/v1/threads/thread_x/messages/msg_y"):
        r = await gateway.http.options(
            path,
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert r.status_code == 204, path
        assert r.headers["access-control-allow-origin"] == ORIGIN
        assert "DELETE" in r.headers["access-control-allow-methods"]
    r = await gateway.http.post("/v1/threads", json={}, headers=alice.headers)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN
    r = await gateway.http.options("/v1/assistants", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in r.headers


# --- isolation and lookup -----------------------------------------------------------------


async def test_another_developers_thread_is_a_404(
    gateway: RunningGateway, dev: DevApi, client: openai.AsyncOpenAI
) -> None:
    t = await client.beta.threads.create(
        messages=[{"role": "user", "content": "secret"}], metadata={"source_thread_id": "s"}
    )
    m = (await client.beta.threads.messages.list(t.id)).data[0]
    other = await new_dev(gateway, "other")
    for method, path, body in every_verb(t.id, m.id):
        assert_error(await other(method, path, json=body), 404, "not_found")
    assert (await other.ok("GET", "/v1/threads", params={"source_thread_id": "s"}))["data"] == []
    r = await other("GET", "/v1/threads", params={"source_thread_id": "s", "after": t.id})
    assert_error(r, 400, "invalid_request", "after")
    assert (await client.beta.threads.messages.list(t.id)).data[0] == m
    assert (await conversation_of(gateway, t.id))["message_count"] == 1


async def test_source_thread_id_lookup(dev: DevApi, client: openai.AsyncOpenAI) -> None:
    ids = [
        (await client.beta.threads.create(metadata={"source_thread_id": "thread_abc"})).id
        for _ in range(3)
    ]
    await client.beta.threads.create(metadata={"source_thread_id": "thread_other"})
    await client.beta.threads.create()
    found = await dev.ok("GET", "/v1/threads", params={"source_thread_id": "thread_abc"})
    assert found["object"] == "list"
    assert [t["id"] for t in found["data"]] == ids[::-1]
    assert found["first_id"] == ids[2]
    assert found["has_more"] is False
    for t in found["data"]:
        validate(t, "ThreadObject")
    page = await dev.ok(
        "GET", "/v1/threads", params={"source_thread_id": "thread_abc", "limit": 2, "order": "asc"}
    )
    assert [t["id"] for t in page["data"]] == ids[:2]
    assert page["has_more"] is True
    rest = await dev.ok(
        "GET",
        "/v1/threads",
        params={"source_thread_id": "thread_abc", "after": ids[1], "order": "asc"},
    )
    assert [t["id"] for t in rest["data"]] == ids[2:]
    await client.beta.threads.delete(ids[0])
    found = await dev.ok("GET", "/v1/threads", params={"source_thread_id": "thread_abc"})
    assert [t["id"] for t in found["data"]] == ids[:0:-1]
    none = await dev.ok("GET", "/v1/threads", params={"source_thread_id": "thread_nope"})
    assert none["data"] == []
    assert_error(await dev("GET", "/v1/threads"), 400, "invalid_request", "source_thread_id")
    r = await dev("GET", "/v1/threads", params={"source_thread_id": "a", "limit": "0"})
    assert_error(r, 400, "invalid_request", "limit")


async def test_the_lookup_uses_the_index(gateway: RunningGateway, dev: DevApi) -> None:
    query = (
        "EXPLAIN SELECT 1 FROM conversation AS c WHERE c.developer_id = $1"
        " AND c.deleted_at IS NULL AND c.metadata ? 'source_thread_id'"
        " AND c.metadata ->> 'source_thread_id' = $2"
    )
    async with gateway.services.db.transaction() as conn:
        # On a near-empty table the planner prefers a scan; the point is that the index fits.
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = await conn.fetch(query, dev.id, "thread_abc")
    assert "conversation_source_thread_idx" in "\n".join(r[0] for r in plan)


async def test_no_key_is_a_401(gateway: RunningGateway) -> None:
    r = await gateway.http.post("/v1/threads", json={})
    assert_error(r, 401, "invalid_api_key")
    bad = httpx.Headers({"Authorization": "Client not-a-token", "Origin": ORIGIN})
    r = await gateway.http.post("/v1/threads", json={}, headers=bad)
    assert_error(r, 401, "invalid_client_token")
    assert await count(gateway, "conversation") == 0
