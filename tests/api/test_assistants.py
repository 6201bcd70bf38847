"""``/v1/assistants`` through the official openai SDK (``client.beta.assistants``): create,
retrieve, update, delete, list with OpenAI pagination; tools (function only), tool_resources,
response_format, sampling, metadata limits; model validation at create and update; isolation
between developers; client tokens refused; bad input answered with the SPEC §6 envelope and
no change."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringside.domain import assistants
from ringside.errors import InvalidRequest
from tests.api.devapi import DevApi, assert_error, new_dev
from tests.gateway import RunningGateway, open_gateway
from tests.simulator.openapi import validate
from tests.simulator.server import RunningSimulator

# The SDK marks the whole Assistants surface deprecated (OpenAI switched it off); Ringside
# serves it, so its warning is expected here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:(deprecated|The Assistants API is deprecated):DeprecationWarning"
)

MODEL = "fc:openai/gpt-4o"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
JSON_SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "schema": {"type": "object", "properties": {"a": {"type": "integer"}}},
        "strict": True,
    },
}


@pytest.fixture
async def dev(gateway: RunningGateway) -> DevApi:
    return await new_dev(gateway)


@pytest.fixture
def client(gateway: RunningGateway, dev: DevApi) -> openai.AsyncOpenAI:
    return gateway.openai(dev.key)


async def count(gw: RunningGateway) -> int:
    return int(await gw.services.db.fetchval("SELECT count(*) FROM assistant"))


async def test_create_retrieve_and_the_stored_row(
    gateway: RunningGateway, dev: DevApi, client: openai.AsyncOpenAI
) -> None:
    a = await client.beta.assistants.create(
        model=MODEL,
        name="Support Bot",
        description="Answers questions.",
        instructions="Be brief.\nAlways cite the docs.",
        tools=[WEATHER],  # type: ignore[list-item]
        temperature=0.2,
        top_p=0.9,
        response_format=JSON_SCHEMA,  # type: ignore[arg-type]
        metadata={"team": "support"},
    )
    assert a.id.startswith("asst_")
    assert a.object == "assistant"
    assert a.model == MODEL
    assert a.instructions == "Be brief.\nAlways cite the docs."
    assert a.tools[0].type == "function"
    assert a.tools[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert a.temperature == 0.2
    assert a.top_p == 0.9
    assert a.metadata == {"team": "support"}
    assert isinstance(a.created_at, int)

    raw = await dev.ok("GET", f"/v1/assistants/{a.id}")
    validate(raw, "AssistantObject")
    assert raw["response_format"] == JSON_SCHEMA
    assert raw["tools"] == [WEATHER]
    assert raw["tool_resources"] == {}
    again = await client.beta.assistants.retrieve(a.id)
    assert again == a

    row = await gateway.services.db.fetchrow("SELECT * FROM assistant WHERE id = $1", a.id)
    assert row["developer_id"] == dev.id
    assert row["model"] == MODEL
    assert row["deleted_at"] is None


async def test_a_minimal_assistant_has_openai_defaults(dev: DevApi) -> None:
    raw = await dev.ok("POST", "/v1/assistants", json={"model": MODEL})
    validate(raw, "AssistantObject")
    assert raw["name"] is None
    assert raw["description"] is None
    assert raw["instructions"] is None
    assert raw["tools"] == []
    assert raw["metadata"] == {}
    assert raw["response_format"] == "auto"
    assert raw["temperature"] == 1.0
    assert raw["top_p"] == 1.0


@pytest.mark.parametrize(
    "model",
    [
        "fc:openai/gpt-4o-mini",
        "match:openai/gpt>=4",
        "match:anthropic/sonnet>=4.5",
        "fc:groq/llama-3.1-8b-instant",
    ],
)
async def test_any_resolvable_model_ref(client: openai.AsyncOpenAI, model: str) -> None:
    a = await client.beta.assistants.create(model=model)
    assert a.model == model


@pytest.mark.parametrize(
    ("model", "code"),
    [
        ("gpt-4o", "invalid_model_ref"),
        ("fc:nosuch/model", "invalid_model_ref"),
        ("slot:missing", "invalid_model_ref"),
        ("match:openai/nothing>=9", "invalid_model_ref"),
        ("fc:openai/gpt-99-unpriced", "unknown_model_pricing"),
        ("fc:openai/text-embedding-3-small", "invalid_request"),
        ("", "invalid_model_ref"),
        (42, "invalid_model_ref"),
        (None, "invalid_model_ref"),
    ],
)
async def test_the_model_is_validated_at_create(
    gateway: RunningGateway, dev: DevApi, model: Any, code: str
) -> None:
    r = await dev("POST", "/v1/assistants", json={"model": model, "name": "x"})
    assert_error(r, 400, code, "model")
    assert await count(gateway) == 0


async def test_the_model_is_required(gateway: RunningGateway, dev: DevApi) -> None:
    assert_error(
        await dev("POST", "/v1/assistants", json={"name": "x"}), 400, "invalid_request", "model"
    )
    assert await count(gateway) == 0


async def test_a_slot_model(
    database_url: str, redis_url: str, simulator: RunningSimulator, tmp_path: Path
) -> None:
    config = tmp_path / "ringside.toml"
    config.write_text('[slots]\nfast = ["fc:openai/gpt-4o-mini", "fc:groq/llama-3.1-8b-instant"]\n')
    env = {"RINGSIDE_CONFIG": str(config)}
    async with open_gateway(database_url, redis_url, simulator, tmp_path, env) as gw:
        dev = await new_dev(gw)
        a = await gw.openai(dev.key).beta.assistants.create(model="slot:fast")
        assert a.model == "slot:fast"


@pytest.mark.parametrize(
    ("tools", "param"),
    [
        ([{"type": "code_interpreter"}], "tools.0"),
        ([WEATHER, {"type": "file_search"}], "tools.1"),
        ([{"type": "file_search", "file_search": {"max_num_results": 5}}], "tools.0"),
    ],
)
async def test_code_interpreter_and_file_search_are_unsupported(
    gateway: RunningGateway, client: openai.AsyncOpenAI, tools: list[Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.beta.assistants.create(model=MODEL, tools=tools)
    assert info.value.status_code == 400
    assert info.value.code == "unsupported_tool_type"
    assert info.value.param == param
    assert await count(gateway) == 0


@pytest.mark.parametrize(
    "resources",
    [
        {"code_interpreter": {"file_ids": ["file-1"]}},
        {"file_search": {"vector_store_ids": ["vs_1"]}},
        {"file_search": {"vector_stores": [{"file_ids": ["file-1"]}]}},
    ],
)
async def test_tool_resources_naming_files_are_unsupported(
    gateway: RunningGateway, dev: DevApi, resources: dict[str, Any]
) -> None:
    r = await dev("POST", "/v1/assistants", json={"model": MODEL, "tool_resources": resources})
    assert_error(r, 400, "unsupported_tool_type")
    assert await count(gateway) == 0


async def test_empty_tool_resources_are_kept(dev: DevApi) -> None:
    resources = {"code_interpreter": {"file_ids": []}}
    raw = await dev.ok("POST", "/v1/assistants", json={"model": MODEL, "tool_resources": resources})
    validate(raw, "AssistantObject")
    assert raw["tool_resources"] == resources


@pytest.mark.parametrize(
    "response_format", ["auto", {"type": "text"}, {"type": "json_object"}, JSON_SCHEMA]
)
async def test_response_formats(dev: DevApi, response_format: Any) -> None:
    raw = await dev.ok(
        "POST", "/v1/assistants", json={"model": MODEL, "response_format": response_format}
    )
    validate(raw, "AssistantObject")
    assert raw["response_format"] == response_format


async def test_metadata_limits(gateway: RunningGateway, dev: DevApi) -> None:
    fits = {f"k{i:02d}" + "x" * 61: "v" * 512 for i in range(16)}
    assert all(len(k) == 64 for k in fits)
    raw = await dev.ok("POST", "/v1/assistants", json={"model": MODEL, "metadata": fits})
    assert raw["metadata"] == fits
    before = await count(gateway)
    for metadata, param in (
        ({f"k{i}": "v" for i in range(17)}, "metadata"),
        ({"k" * 65: "v"}, "metadata key"),
        ({"k": "v" * 513}, "metadata.k"),
        ({"k": 1}, "metadata.k"),
        (["k"], "metadata"),
    ):
        r = await dev("POST", "/v1/assistants", json={"model": MODEL, "metadata": metadata})
        assert_error(r, 400, "invalid_request", param)
        r = await dev("POST", f"/v1/assistants/{raw['id']}", json={"metadata": metadata})
        assert_error(r, 400, "invalid_request", param)
    assert await count(gateway) == before
    assert (await dev.ok("GET", f"/v1/assistants/{raw['id']}"))["metadata"] == fits
    # Values are free text, as at OpenAI: newlines and tabs are kept; a NUL is refused.
    prose = {"note": "line one\nline two\tend", "empty": ""}
    kept = await dev.ok("POST", f"/v1/assistants/{raw['id']}", json={"metadata": prose})
    assert kept["metadata"] == prose
    r = await dev("POST", f"/v1/assistants/{raw['id']}", json={"metadata": {"k": "a\u0000b"}})
    assert_error(r, 400, "invalid_request")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL, "colour": "red"}, "colour"),
        ({"model": MODEL, "name": "n" * 257}, "name"),
        ({"model": MODEL, "description": "d" * 513}, "description"),
        ({"model": MODEL, "instructions": 5}, "instructions"),
        ({"model": MODEL, "temperature": 2.5}, "temperature"),
        ({"model": MODEL, "temperature": True}, "temperature"),
        ({"model": MODEL, "top_p": -0.1}, "top_p"),
        ({"model": MODEL, "tools": {"type": "function"}}, "tools"),
        ({"model": MODEL, "tools": [WEATHER] * 2}, "tools.1.function.name"),
        ({"model": MODEL, "tools": [{"type": "function"}]}, "tools.0.function"),
        ({"model": MODEL, "tools": [{"type": "function", "function": {"name": "a b"}}]},
         "tools.0.function.name"),
        ({"model": MODEL, "tools": [{"type": "web_search"}]}, "tools.0.type"),
        ({"model": MODEL, "tools": [{"type": "function", "function": {"name": "f",
          "parameters": []}}]}, "tools.0.function.parameters"),
        ({"model": MODEL, "tools": [WEATHER] + [{"type": "function", "function": {"name": f"f{i}"}}
          for i in range(128)]}, "tools"),
        ({"model": MODEL, "response_format": "json"}, "response_format"),
        ({"model": MODEL, "response_format": {"type": "json_schema"}},
         "response_format.json_schema"),
        ({"model": MODEL, "response_format": {"type": "json_schema", "json_schema": {}}},
         "response_format.json_schema.name"),
        ({"model": MODEL, "tool_resources": {"web": {}}}, "tool_resources.web"),
        ({"model": MODEL, "tool_resources": []}, "tool_resources"),
    ],
)  # fmt: skip
async def test_bad_input_changes_nothing(
    gateway: RunningGateway, dev: DevApi, body: dict[str, Any], param: str
) -> None:
    r = await dev("POST", "/v1/assistants", json=body)
    assert_error(r, 400, "invalid_request", param)
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert await count(gateway) == 0


async def test_bodies_that_are_not_objects(gateway: RunningGateway, dev: DevApi) -> None:
    for content in (b"[]", b"not json", b"", b'"model"'):
        r = await dev(
            "POST", "/v1/assistants", content=content, headers={"Content-Type": "application/json"}
        )
        assert_error(r, 400, "invalid_request")
    r = await dev("POST", "/v1/assistants", json={"model": MODEL, "name": "a\u0000b"})
    assert_error(r, 400, "invalid_request")
    assert await count(gateway) == 0


async def test_update(dev: DevApi, client: openai.AsyncOpenAI) -> None:
    a = await client.beta.assistants.create(
        model=MODEL,
        name="one",
        instructions="i",
        tools=[WEATHER],
        metadata={"a": "1", "b": "2"},  # type: ignore[list-item]
    )
    b = await client.beta.assistants.update(
        a.id, name="two", metadata={"c": "3"}, temperature=0.5, model="fc:openai/gpt-4o-mini"
    )
    assert b.id == a.id
    assert b.name == "two"
    assert b.metadata == {"c": "3"}  # replaced whole, as at OpenAI
    assert b.temperature == 0.5
    assert b.model == "fc:openai/gpt-4o-mini"
    assert b.instructions == "i"  # untouched
    assert len(b.tools) == 1
    assert b.created_at == a.created_at
    c = await client.beta.assistants.update(a.id, tools=[], name=None)  # type: ignore[arg-type]
    assert c.tools == []
    assert c.name is None
    assert await client.beta.assistants.retrieve(a.id) == c

    r = await dev("POST", f"/v1/assistants/{a.id}", json={"model": "fc:openai/nope-1"})
    assert_error(r, 400, "unknown_model_pricing", "model")
    r = await dev("POST", f"/v1/assistants/{a.id}", json={"model": None})
    assert_error(r, 400, "invalid_model_ref", "model")
    r = await dev("POST", f"/v1/assistants/{a.id}", json={"tools": [{"type": "code_interpreter"}]})
    assert_error(r, 400, "unsupported_tool_type", "tools.0")
    assert await client.beta.assistants.retrieve(a.id) == c
    r = await dev("POST", "/v1/assistants/asst_missing", json={"name": "x"})
    assert_error(r, 404, "not_found")


async def test_delete(gateway: RunningGateway, dev: DevApi, client: openai.AsyncOpenAI) -> None:
    a = await client.beta.assistants.create(model=MODEL)
    deleted = await client.beta.assistants.delete(a.id)
    assert deleted.id == a.id
    assert deleted.deleted is True
    assert deleted.object == "assistant.deleted"
    r = await dev("DELETE", f"/v1/assistants/{a.id}")
    assert_error(r, 404, "not_found")
    for method in ("GET", "POST"):
        r = await dev(method, f"/v1/assistants/{a.id}", json={"name": "x"})
        assert_error(r, 404, "not_found")
    assert (await dev.ok("GET", "/v1/assistants"))["data"] == []
    # Soft: runs keep naming the assistant they ran.
    row = await gateway.services.db.fetchrow("SELECT deleted_at FROM assistant WHERE id = $1", a.id)
    assert row["deleted_at"] is not None


async def test_delete_response_shape(dev: DevApi) -> None:
    a = await dev.ok("POST", "/v1/assistants", json={"model": MODEL})
    body = await dev.ok("DELETE", f"/v1/assistants/{a['id']}")
    validate(body, "DeleteAssistantResponse")


async def test_list_pagination(dev: DevApi, client: openai.AsyncOpenAI) -> None:
    ids = [(await client.beta.assistants.create(model=MODEL, name=f"a{i}")).id for i in range(5)]
    page = await dev.ok("GET", "/v1/assistants")
    validate(page, "ListAssistantsResponse")
    assert [a["id"] for a in page["data"]] == ids[::-1]  # newest first by default
    assert page["first_id"] == ids[4]
    assert page["last_id"] == ids[0]
    assert page["has_more"] is False

    first = await client.beta.assistants.list(limit=2, order="asc")
    assert [a.id for a in first.data] == ids[:2]
    assert first.has_more is True
    assert [a.id async for a in client.beta.assistants.list(limit=2, order="asc")] == ids
    assert [a.id async for a in client.beta.assistants.list(limit=2)] == ids[::-1]

    after = await client.beta.assistants.list(after=ids[1], order="asc", limit=2)
    assert [a.id for a in after.data] == ids[2:4]
    assert after.has_more is True
    before = await client.beta.assistants.list(before=ids[3], order="asc", limit=2)
    assert [a.id for a in before.data] == ids[1:3]
    assert before.has_more is True
    between = await dev.ok(
        "GET", "/v1/assistants", params={"after": ids[0], "before": ids[4], "order": "asc"}
    )
    assert [a["id"] for a in between["data"]] == ids[1:4]
    desc = await dev.ok("GET", "/v1/assistants", params={"after": ids[3], "limit": 10})
    assert [a["id"] for a in desc["data"]] == ids[2::-1]
    assert desc["has_more"] is False

    # A deleted assistant is gone from the list but still a cursor.
    await client.beta.assistants.delete(ids[2])
    rest = await dev.ok("GET", "/v1/assistants", params={"after": ids[2], "order": "asc"})
    assert [a["id"] for a in rest["data"]] == ids[3:]
    empty = await dev.ok("GET", "/v1/assistants", params={"after": ids[4], "order": "asc"})
    assert empty == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }

    for params, param in (
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"order": "up"}, "order"),
        ({"after": "asst_nope"}, "after"),
        ({"before": "asst_nope"}, "before"),
    ):
        assert_error(
            await dev("GET", "/v1/assistants", params=params), 400, "invalid_request", param
        )


async def test_another_developers_assistant_is_a_404(gateway: RunningGateway, dev: DevApi) -> None:
    mine = await dev.ok("POST", "/v1/assistants", json={"model": MODEL, "name": "mine"})
    other = await new_dev(gateway, "other")
    for method in ("GET", "POST", "DELETE"):
        r = await other(method, f"/v1/assistants/{mine['id']}", json={"name": "stolen"})
        assert_error(r, 404, "not_found")
    assert (await other.ok("GET", "/v1/assistants"))["data"] == []
    # Another developer's id is no cursor in this list either.
    r = await other("GET", "/v1/assistants", params={"after": mine["id"]})
    assert_error(r, 400, "invalid_request", "after")
    assert await dev.ok("GET", f"/v1/assistants/{mine['id']}") == mine


async def test_client_tokens_are_refused(
    database_url: str, redis_url: str, simulator: RunningSimulator, data_dir: Path
) -> None:
    env = {"RINGSIDE_CLIENT_TOKEN_KEYS": "k1:" + "s" * 40}
    async with open_gateway(database_url, redis_url, simulator, data_dir, env) as gw:
        dev = await new_dev(gw)
        customer = await dev.customer(external_id="acct-1")
        r = await dev(
            "POST",
            f"/v1/customers/{customer['id']}/client_tokens",
            json={"origin": "https://app.example"},
        )
        token = r.json()["token"]
        mine = await dev.ok("POST", "/v1/assistants", json={"model": MODEL})
        headers = {"Authorization": f"Client {token}", "Origin": "https://app.example"}
        for method, path in (
            ("POST", "/v1/assistants"),
            ("GET", "/v1/assistants"),
            ("GET", f"/v1/assistants/{mine['id']}"),
            ("POST", f"/v1/assistants/{mine['id']}"),
            ("DELETE", f"/v1/assistants/{mine['id']}"),
        ):
            r = await gw.http.request(method, path, json={"model": MODEL}, headers=headers)
            assert_error(r, 403, "client_token_not_allowed")
        assert await count(gw) == 1


async def test_no_key_is_a_401(gateway: RunningGateway) -> None:
    r = await gateway.http.get("/v1/assistants")
    assert_error(r, 401, "invalid_api_key")
    r = await gateway.http.post(
        "/v1/assistants", json={"model": MODEL}, headers={"Authorization": "Bearer sk_live_nope"}
    )
    assert_error(r, 401, "invalid_api_key")
    assert await count(gateway) == 0


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["function", "code_interpreter", "file_search", "json_schema", "auto"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["type", "function", "name", "parameters", "json_schema", "file_ids", "x"]
            ),
            inner,
            max_size=3,
        )
    ),
    max_leaves=10,
)


@given(value=_json)
@settings(max_examples=300, deadline=None)
def test_the_parsers_refuse_any_bad_value_cleanly(value: Any) -> None:
    """Whatever JSON arrives, a parser answers or raises InvalidRequest (never a 500)."""
    for parse in (
        assistants.parse_tools,
        assistants.parse_tool_resources,
        assistants.parse_response_format,
        lambda v: assistants.parse_sampling(v, "temperature", 0, 2),
    ):
        with contextlib.suppress(InvalidRequest):
            parse(value)
