"""``/v1/threads/{id}/messages`` through the official openai SDK
(``client.beta.threads.messages``): create (OpenAI's content-part shapes), list (thread order,
pagination, ``run_id``), retrieve, update (metadata), delete; the 5,000-message cap under
concurrent posts; stable order; the domain calls runs make (add_message, update_message,
prompt_messages); bad input answered with the SPEC §6 envelope and no change."""

from __future__ import annotations

import contextlib
from typing import Any

import openai
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from ringside.domain import threads
from ringside.domain.auth import Caller
from ringside.errors import Conflict, InvalidRequest, NotFound
from tests.api.devapi import DevApi, assert_error, new_dev
from tests.api.test_threads import conversation_of, count, insert_active_run
from tests.gateway import RunningGateway
from tests.simulator.openapi import validate

pytestmark = pytest.mark.filterwarnings(
    "ignore:(deprecated|The Assistants API is deprecated):DeprecationWarning"
)


@pytest.fixture
async def dev(gateway: RunningGateway) -> DevApi:
    return await new_dev(gateway)


@pytest.fixture
def client(gateway: RunningGateway, dev: DevApi) -> openai.AsyncOpenAI:
    return gateway.openai(dev.key)


@pytest.fixture
async def thread_id(client: openai.AsyncOpenAI) -> str:
    return (await client.beta.threads.create()).id


def caller_of(dev: DevApi) -> Caller:
    return Caller(developer_id=dev.id, key_id=dev.key_id, tier="developer")


async def test_create_and_retrieve(
    gateway: RunningGateway, dev: DevApi, client: openai.AsyncOpenAI, thread_id: str
) -> None:
    m = await client.beta.threads.messages.create(
        thread_id, role="user", content="Hello\nthere", metadata={"k": "v"}
    )
    assert m.id.startswith("msg_")
    assert m.object == "thread.message"
    assert m.thread_id == thread_id
    assert m.role == "user"
    assert m.status == "completed"
    assert m.content[0].type == "text"
    assert m.content[0].text.value == "Hello\nthere"  # type: ignore[union-attr]
    assert m.content[0].text.annotations == []  # type: ignore[union-attr]
    assert m.assistant_id is None
    assert m.run_id is None
    assert m.metadata == {"k": "v"}
    assert await client.beta.threads.messages.retrieve(m.id, thread_id=thread_id) == m
    raw = await dev.ok("GET", f"/v1/threads/{thread_id}/messages/{m.id}")
    validate(raw, "MessageObject")
    assert raw["attachments"] == []
    assert raw["incomplete_details"] is None
    assert "conv_" not in str(raw)
    row = await gateway.services.db.fetchrow("SELECT * FROM thread_message WHERE id = $1", m.id)
    assert row["ordinal"] == 0
    assert (await conversation_of(gateway, thread_id))["message_count"] == 1


async def test_content_parts(dev: DevApi, thread_id: str) -> None:
    parts = [
        {"type": "text", "text": "Describe both."},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    raw = await dev.ok(
        "POST", f"/v1/threads/{thread_id}/messages", json={"role": "assistant", "content": parts}
    )
    validate(raw, "MessageObject")
    assert raw["role"] == "assistant"
    assert raw["content"] == [
        {"type": "text", "text": {"value": "Describe both.", "annotations": []}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
        {
            "type": "image_url",
            "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"},
        },
    ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"content": "x"}, "role"),
        ({"role": "system", "content": "x"}, "role"),
        ({"role": "user"}, "content"),
        ({"role": "user", "content": ""}, "content"),
        ({"role": "user", "content": []}, "content"),
        ({"role": "user", "content": 5}, "content"),
        ({"role": "user", "content": [{"type": "text"}]}, "content.0.text"),
        ({"role": "user", "content": [{"type": "text", "text": ""}]}, "content.0.text"),
        ({"role": "user", "content": [{"type": "video"}]}, "content.0.type"),
        ({"role": "user", "content": [{"type": "image_file", "image_file": {"file_id": "f"}}]},
         "content.0"),
        ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]},
         "content.0.image_url.url"),
        ({"role": "user", "content": [{"type": "image_url",
          "image_url": {"url": "https://x", "detail": "max"}}]}, "content.0.image_url.detail"),
        ({"role": "user", "content": "x", "attachments": [{"file_id": "f", "tools": []}]},
         "attachments"),
        ({"role": "user", "content": "x", "metadata": {f"k{i}": "v" for i in range(17)}},
         "metadata"),
        ({"role": "user", "content": "x", "metadata": {"k" * 65: "v"}}, "metadata key"),
        ({"role": "user", "content": "x", "metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"role": "user", "content": "x", "assistant_id": "asst_1"}, "assistant_id"),
        ({"role": "user", "content": "x" * 256_001}, "content"),
    ],
)  # fmt: skip
async def test_bad_input_changes_nothing(
    gateway: RunningGateway, dev: DevApi, thread_id: str, body: dict[str, Any], param: str
) -> None:
    r = await dev("POST", f"/v1/threads/{thread_id}/messages", json=body)
    assert_error(r, 400, "invalid_request", param)
    assert await count(gateway, "thread_message") == 0
    assert (await conversation_of(gateway, thread_id))["message_count"] == 0


async def test_metadata_at_the_limits(client: openai.AsyncOpenAI, thread_id: str) -> None:
    fits = {f"k{i:02d}" + "x" * 61: "v" * 512 for i in range(16)}
    m = await client.beta.threads.messages.create(
        thread_id, role="user", content="x", metadata=fits
    )
    assert m.metadata == fits


async def test_update_metadata(dev: DevApi, client: openai.AsyncOpenAI, thread_id: str) -> None:
    m = await client.beta.threads.messages.create(
        thread_id, role="user", content="x", metadata={"a": "1"}
    )
    u = await client.beta.threads.messages.update(m.id, thread_id=thread_id, metadata={"b": "2"})
    assert u.metadata == {"b": "2"}
    assert u.content == m.content
    assert u.created_at == m.created_at
    url = f"/v1/threads/{thread_id}/messages/{m.id}"
    validate(await dev.ok("GET", url), "MessageObject")
    assert_error(await dev("POST", url, json={"content": "new"}), 400, "invalid_request", "content")
    assert_error(
        await dev("POST", url, json={"metadata": {"k": 5}}), 400, "invalid_request", "metadata.k"
    )
    assert (await dev.ok("POST", url, json={}))["metadata"] == {"b": "2"}
    assert (await dev.ok("POST", url, json={"metadata": None}))["metadata"] == {}
    r = await dev("POST", f"/v1/threads/{thread_id}/messages/msg_nope", json={"metadata": {}})
    assert_error(r, 404, "not_found")


async def test_delete(
    gateway: RunningGateway, dev: DevApi, client: openai.AsyncOpenAI, thread_id: str
) -> None:
    a = await client.beta.threads.messages.create(thread_id, role="user", content="a")
    b = await client.beta.threads.messages.create(thread_id, role="user", content="b")
    deleted = await client.beta.threads.messages.delete(a.id, thread_id=thread_id)
    assert deleted.id == a.id
    assert deleted.deleted is True
    assert deleted.object == "thread.message.deleted"
    raw = await dev.ok("DELETE", f"/v1/threads/{thread_id}/messages/{b.id}")
    validate(raw, "DeleteMessageResponse")
    for method in ("GET", "POST", "DELETE"):
        r = await dev(method, f"/v1/threads/{thread_id}/messages/{a.id}", json={"metadata": {}})
        assert_error(r, 404, "not_found")
    conv = await conversation_of(gateway, thread_id)
    assert conv["message_count"] == 0
    assert conv["next_ordinal"] == 2  # ordinals never go back
    c = await client.beta.threads.messages.create(thread_id, role="user", content="c")
    row = await gateway.services.db.fetchrow(
        "SELECT ordinal FROM thread_message WHERE id = $1", c.id
    )
    assert row["ordinal"] == 2


async def test_a_message_of_another_thread_is_a_404(
    gateway: RunningGateway, dev: DevApi, client: openai.AsyncOpenAI, thread_id: str
) -> None:
    m = await client.beta.threads.messages.create(thread_id, role="user", content="x")
    other = (await client.beta.threads.create()).id
    for method in ("GET", "POST", "DELETE"):
        r = await dev(method, f"/v1/threads/{other}/messages/{m.id}", json={"metadata": {}})
        assert_error(r, 404, "not_found")
    r = await dev("GET", f"/v1/threads/{other}/messages", params={"after": m.id})
    assert_error(r, 400, "invalid_request", "after")
    assert (await client.beta.threads.messages.retrieve(m.id, thread_id=thread_id)).metadata == {}


async def test_list_pagination(dev: DevApi, client: openai.AsyncOpenAI, thread_id: str) -> None:
    ids = [
        (await client.beta.threads.messages.create(thread_id, role="user", content=f"m{i}")).id
        for i in range(7)
    ]
    page = await dev.ok("GET", f"/v1/threads/{thread_id}/messages")
    validate(page, "ListMessagesResponse")
    assert [m["id"] for m in page["data"]] == ids[::-1]  # newest first, as at OpenAI
    assert page["first_id"] == ids[6]
    assert page["last_id"] == ids[0]
    assert page["has_more"] is False

    msgs = client.beta.threads.messages
    first = await msgs.list(thread_id, limit=3, order="asc")
    assert [m.id for m in first.data] == ids[:3]
    assert first.has_more is True
    assert [m.id async for m in msgs.list(thread_id, limit=3, order="asc")] == ids
    assert [m.id async for m in msgs.list(thread_id, limit=2)] == ids[::-1]
    after = await msgs.list(thread_id, after=ids[2], limit=2, order="asc")
    assert [m.id for m in after.data] == ids[3:5]
    assert after.has_more is True
    before = await msgs.list(thread_id, before=ids[5], limit=2, order="asc")
    assert [m.id for m in before.data] == ids[3:5]
    assert before.has_more is True
    desc = await msgs.list(thread_id, before=ids[1], limit=10)
    assert [m.id for m in desc.data] == ids[:1:-1]
    between = await dev.ok(
        "GET",
        f"/v1/threads/{thread_id}/messages",
        params={"after": ids[1], "before": ids[5], "order": "asc"},
    )
    assert [m["id"] for m in between["data"]] == ids[2:5]
    for params, param in (
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"order": "sideways"}, "order"),
        ({"after": "msg_nope"}, "after"),
        ({"before": "msg_nope"}, "before"),
    ):
        r = await dev("GET", f"/v1/threads/{thread_id}/messages", params=params)
        assert_error(r, 400, "invalid_request", param)


async def test_list_by_run_id(
    gateway: RunningGateway, dev: DevApi, client: openai.AsyncOpenAI, thread_id: str
) -> None:
    db = gateway.services.db
    thread = await threads.get_thread(db, caller_of(dev), thread_id)
    user = threads.parse_new_message({"role": "user", "content": "q"})
    answer = threads.parse_new_message({"role": "assistant", "content": "a"})
    await threads.add_message(db, thread, user)
    ran = await threads.add_message(db, thread, answer, assistant_id="asst_1", run_id="run_1")
    await threads.add_message(db, thread, answer, assistant_id="asst_1", run_id="run_2")
    page = await client.beta.threads.messages.list(thread_id, run_id="run_1")
    assert [m.id for m in page.data] == [ran.id]
    assert page.data[0].assistant_id == "asst_1"
    assert page.data[0].run_id == "run_1"
    assert len((await client.beta.threads.messages.list(thread_id)).data) == 3
    assert (await client.beta.threads.messages.list(thread_id, run_id="run_none")).data == []


async def test_concurrent_posts_get_a_stable_order(
    gateway: RunningGateway, client: openai.AsyncOpenAI, thread_id: str
) -> None:
    async def post(i: int) -> None:
        await client.beta.threads.messages.create(thread_id, role="user", content=f"m{i}")

    async with trio.open_nursery() as nursery:
        for i in range(40):
            nursery.start_soon(post, i)
    rows = await gateway.services.db.fetch(
        "SELECT id, ordinal FROM thread_message ORDER BY ordinal"
    )
    assert [r["ordinal"] for r in rows] == list(range(40))
    listed = [m.id async for m in client.beta.threads.messages.list(thread_id, order="asc")]
    assert listed == [r["id"] for r in rows]
    assert (await conversation_of(gateway, thread_id))["message_count"] == 40


async def fill(gw: RunningGateway, thread_id: str, n: int) -> None:
    """``n`` messages written straight into the thread, as a long conversation would leave it."""
    conv = (await conversation_of(gw, thread_id))["id"]
    async with gw.services.db.transaction() as conn:
        await conn.execute(
            "INSERT INTO thread_message (id, conversation_id, ordinal, role, content)"
            " SELECT 'msg_fill' || g, $1, g, 'user',"
            ' \'[{"type": "text", "text": {"value": "x", "annotations": []}}]\''
            " FROM generate_series(0, $2 - 1) AS g",
            conv,
            n,
        )
        await conn.execute(
            "UPDATE conversation SET message_count = $2, next_ordinal = $2 WHERE id = $1", conv, n
        )


async def test_the_5000_message_cap_holds_under_concurrent_posts(
    gateway: RunningGateway, dev: DevApi, thread_id: str
) -> None:
    await fill(gateway, thread_id, 4990)
    statuses: list[int] = []
    codes: list[str] = []

    async def post(i: int) -> None:
        r = await dev(
            "POST", f"/v1/threads/{thread_id}/messages", json={"role": "user", "content": f"c{i}"}
        )
        statuses.append(r.status_code)
        if r.status_code != 200:
            codes.append(r.json()["error"]["code"])

    async with trio.open_nursery() as nursery:
        for i in range(30):
            nursery.start_soon(post, i)
    assert sorted(statuses) == [200] * 10 + [409] * 20
    assert set(codes) == {"conversation_full"}
    conv = await conversation_of(gateway, thread_id)
    assert conv["message_count"] == 5000
    assert await count(gateway, "thread_message") == 5000
    rows = await gateway.services.db.fetch("SELECT ordinal FROM thread_message ORDER BY ordinal")
    assert [r["ordinal"] for r in rows] == list(range(5000))

    # A run's own message is held to the cap as well.
    db = gateway.services.db
    thread = await threads.get_thread(db, caller_of(dev), thread_id)
    answer = threads.parse_new_message({"role": "assistant", "content": "a"})
    with pytest.raises(Conflict) as info:
        await threads.add_message(db, thread, answer, run_id="run_1")
    assert info.value.code == "conversation_full"
    # Deleting a message frees one slot; the next one takes a new ordinal.
    await dev.ok("DELETE", f"/v1/threads/{thread_id}/messages/msg_fill7")
    m = await dev.ok(
        "POST", f"/v1/threads/{thread_id}/messages", json={"role": "user", "content": "z"}
    )
    row = await db.fetchrow("SELECT ordinal FROM thread_message WHERE id = $1", m["id"])
    assert row["ordinal"] == 5000
    r = await dev(
        "POST", f"/v1/threads/{thread_id}/messages", json={"role": "user", "content": "z"}
    )
    assert_error(r, 409, "conversation_full")
    assert r.json()["error"]["type"] == "conflict_error"


async def test_a_thread_cannot_be_created_over_the_cap(
    gateway: RunningGateway, dev: DevApi
) -> None:
    body = {"messages": [{"role": "user", "content": "x"}] * 5001}
    assert_error(await dev("POST", "/v1/threads", json=body), 409, "conversation_full")
    assert await count(gateway, "conversation") == 0


async def test_a_page_of_a_long_thread(
    gateway: RunningGateway, dev: DevApi, thread_id: str
) -> None:
    await fill(gateway, thread_id, 1000)
    page = await dev.ok("GET", f"/v1/threads/{thread_id}/messages", params={"limit": 100})
    assert len(page["data"]) == 100
    assert page["first_id"] == "msg_fill999"
    assert page["has_more"] is True
    nxt = await dev.ok(
        "GET", f"/v1/threads/{thread_id}/messages", params={"limit": 100, "after": page["last_id"]}
    )
    assert nxt["first_id"] == "msg_fill899"


async def test_what_runs_use(gateway: RunningGateway, dev: DevApi, thread_id: str) -> None:
    """The domain calls the runs code makes: a run's message in progress, then finished; the
    prompt (oldest first, the newest N); a run's message while the run holds the thread."""
    db = gateway.services.db
    thread = await threads.get_thread(db, caller_of(dev), thread_id)
    for i in range(4):
        await threads.add_message(
            db, thread, threads.parse_new_message({"role": "user", "content": f"u{i}"})
        )
    await insert_active_run(gateway, dev, thread_id)
    empty = threads.NewMessage("assistant", [], None, {})
    async with db.transaction() as conn:
        m = await threads.add_message(
            conn, thread, empty, assistant_id="asst_1", run_id="run_1", status="in_progress"
        )
    assert m.status == "in_progress"
    assert m.completed_at is None
    wire = threads.message_json(m)
    validate(wire, "MessageObject")
    assert wire["content"] == []
    done = await threads.update_message(
        db, m.id, content=[{"type": "text", "text": {"value": "hi", "annotations": []}}],
        status="completed",
    )  # fmt: skip
    assert done.thread_id == thread_id
    assert done.status == "completed"
    assert done.completed_at is not None
    cut = await threads.update_message(
        db, m.id, content=done.content, status="incomplete",
        incomplete_details={"reason": "max_tokens"},
    )  # fmt: skip
    assert cut.incomplete_at is not None
    validate(threads.message_json(cut), "MessageObject")

    prompt = await threads.prompt_messages(db, thread.conversation_id)
    assert [p.ordinal for p in prompt] == [0, 1, 2, 3, 4]
    assert prompt[-1].id == m.id
    last = await threads.prompt_messages(db, thread.conversation_id, last=2)
    assert [p.ordinal for p in last] == [3, 4]
    assert all(p.thread_id == thread_id for p in last)
    with pytest.raises(NotFound, match="No message"):
        await threads.update_message(db, "msg_nope", content=[], status="completed")


async def test_another_developer_cannot_post(gateway: RunningGateway, thread_id: str) -> None:
    other = await new_dev(gateway, "other")
    r = await other(
        "POST", f"/v1/threads/{thread_id}/messages", json={"role": "user", "content": "x"}
    )
    assert_error(r, 404, "not_found")
    r = await other("GET", f"/v1/threads/{thread_id}/messages")
    assert_error(r, 404, "not_found")
    assert await count(gateway, "thread_message") == 0


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["user", "assistant", "text", "image_url", "image_file", "https://x"]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(
        st.sampled_from(
            ["role", "content", "type", "text", "image_url", "url", "detail", "messages",
             "metadata", "attachments", "tool_resources", "user", "x"]
        ),
        inner,
        max_size=4,
    ),
    max_leaves=12,
)  # fmt: skip


@given(value=_json)
@settings(max_examples=300, deadline=None)
def test_the_parsers_refuse_any_bad_value_cleanly(value: Any) -> None:
    """Whatever JSON arrives, a parser answers or raises InvalidRequest (never a 500)."""
    for parse in (
        threads.parse_new_message,
        threads.parse_thread_body,
        threads.parse_thread_update,
        threads.parse_message_update,
    ):
        with contextlib.suppress(InvalidRequest):
            parse(value)
