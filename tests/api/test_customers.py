"""``/v1/customers``: create, read (by id or external id), list with OpenAI pagination, PATCH,
soft DELETE; stubs; isolation between developers; validation; against real PostgreSQL rows."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.api.devapi import DevApi, assert_error, new_dev
from tests.gateway import RunningGateway

CUSTOMER_KEYS = {
    "id", "object", "external_id", "name", "email", "metadata", "monthly_budget_usd",
    "rpm_limit", "tpm_limit", "wallet_low_threshold_usd", "stub", "created",
}  # fmt: skip


@pytest.fixture
async def dev(gateway: RunningGateway) -> DevApi:
    return await new_dev(gateway)


async def test_create_and_read_a_customer(gateway: RunningGateway, dev: DevApi) -> None:
    body = {
        "external_id": "user-42",
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "metadata": {"plan": "gold", "region": "eu"},
        "monthly_budget_usd": "25.50",
        "rpm_limit": 60,
        "tpm_limit": 100000,
        "wallet_low_threshold_usd": 2,
    }
    c = await dev.customer(**body)
    assert set(c) == CUSTOMER_KEYS
    assert c["id"].startswith("cus_")
    assert c["object"] == "customer"
    assert c["monthly_budget_usd"] == "25.500000"
    assert c["wallet_low_threshold_usd"] == "2.000000"
    assert c["metadata"] == {"plan": "gold", "region": "eu"}
    assert c["stub"] is False
    assert isinstance(c["created"], int)

    row = await gateway.services.db.fetchrow("SELECT * FROM customer WHERE id = $1", c["id"])
    assert row["developer_id"] == dev.id
    assert row["monthly_budget_usd"] == Decimal("25.5")
    assert row["rpm_limit"] == 60
    assert row["deleted_at"] is None

    assert await dev.ok("GET", f"/v1/customers/{c['id']}") == c
    assert await dev.ok("GET", "/v1/customers/user-42") == c


async def test_a_minimal_customer(dev: DevApi) -> None:
    c = await dev.customer()
    assert c["external_id"] is None
    assert c["metadata"] == {}
    assert c["monthly_budget_usd"] is None
    assert c["rpm_limit"] is None


async def test_an_id_match_wins_over_an_external_id(dev: DevApi) -> None:
    a = await dev.customer(name="a")
    b = await dev.customer(name="b", external_id=a["id"])
    assert (await dev.ok("GET", f"/v1/customers/{a['id']}"))["name"] == "a"
    assert (await dev.ok("GET", f"/v1/customers/{b['id']}"))["name"] == "b"


async def test_duplicate_external_id_is_a_conflict(gateway: RunningGateway, dev: DevApi) -> None:
    await dev.customer(external_id="dup")
    r = await dev("POST", "/v1/customers", json={"external_id": "dup"})
    assert_error(r, 409, "customer_exists", "external_id")
    assert r.json()["error"]["type"] == "conflict_error"
    # Another developer may use the same external id.
    other = await new_dev(gateway, "other")
    await other.customer(external_id="dup")


async def test_creating_a_stub_customer_claims_it(gateway: RunningGateway, dev: DevApi) -> None:
    # What ringside_reserve writes when a call names an unknown customer.
    stub_id = await gateway.services.db.fetchval(
        """INSERT INTO customer (id, developer_id, external_id, stub)
           VALUES (ringside_new_id('cus'), $1, 'early-bird', true) RETURNING id""",
        dev.id,
    )
    listed = await dev.ok("GET", "/v1/customers")
    assert [(c["id"], c["stub"]) for c in listed["data"]] == [(stub_id, True)]

    c = await dev.customer(external_id="early-bird", name="Early", monthly_budget_usd="5")
    assert c["id"] == stub_id
    assert c["stub"] is False
    assert c["name"] == "Early"
    assert c["monthly_budget_usd"] == "5.000000"
    count = await gateway.services.db.fetchval(
        "SELECT count(*) FROM customer WHERE developer_id = $1", dev.id
    )
    assert count == 1
    # Now a real customer: a second create is a conflict.
    r = await dev("POST", "/v1/customers", json={"external_id": "early-bird"})
    assert_error(r, 409, "customer_exists")


async def test_patch(gateway: RunningGateway, dev: DevApi) -> None:
    c = await dev.customer(
        external_id="p1", name="Old", metadata={"a": "1"}, rpm_limit=5, monthly_budget_usd="3"
    )
    patched = await dev.ok(
        "PATCH",
        "/v1/customers/p1",
        json={"name": "New", "metadata": {"b": "2"}, "rpm_limit": None, "tpm_limit": 7},
    )
    assert patched["id"] == c["id"]
    assert patched["name"] == "New"
    assert patched["metadata"] == {"b": "2"}  # replaced whole
    assert patched["rpm_limit"] is None
    assert patched["tpm_limit"] == 7
    assert patched["monthly_budget_usd"] == "3.000000"  # untouched
    assert patched["external_id"] == "p1"

    # A JSON number is taken exactly.
    r = await dev("PATCH", f"/v1/customers/{c['id']}", content=b'{"monthly_budget_usd": 10.123456}')
    assert r.json()["monthly_budget_usd"] == "10.123456"
    assert await gateway.services.db.fetchval(
        "SELECT monthly_budget_usd FROM customer WHERE id = $1", c["id"]
    ) == Decimal("10.123456")

    cleared = await dev.ok(
        "PATCH", f"/v1/customers/{c['id']}", json={"monthly_budget_usd": None, "metadata": None}
    )
    assert cleared["monthly_budget_usd"] is None
    assert cleared["metadata"] == {}

    renamed = await dev.ok("PATCH", f"/v1/customers/{c['id']}", json={"external_id": "p2"})
    assert renamed["external_id"] == "p2"
    assert_error(await dev("GET", "/v1/customers/p1"), 404, "not_found")

    await dev.customer(external_id="taken")
    r = await dev("PATCH", f"/v1/customers/{c['id']}", json={"external_id": "taken"})
    assert_error(r, 409, "customer_exists", "external_id")
    assert_error(await dev("PATCH", "/v1/customers/cus_nope", json={}), 404, "not_found")


async def test_patching_a_stub_makes_it_a_customer(gateway: RunningGateway, dev: DevApi) -> None:
    stub_id = await gateway.services.db.fetchval(
        """INSERT INTO customer (id, developer_id, external_id, stub)
           VALUES (ringside_new_id('cus'), $1, 'u7', true) RETURNING id""",
        dev.id,
    )
    patched = await dev.ok("PATCH", "/v1/customers/u7", json={"name": "Seven"})
    assert patched["id"] == stub_id
    assert patched["stub"] is False


async def reserve(
    gateway: RunningGateway, dev: DevApi, customer_ref: str, amount: str = "0.01"
) -> str:
    """ringside_reserve as the chat path calls it; the outcome."""
    row = await gateway.services.db.fetchrow(
        """SELECT * FROM ringside_reserve($1, 'proc_test', $2, $3, $4, 'm', 'm', 'openai', 'm',
                                          false, $5, $5)""",
        f"req_{customer_ref}_{amount}",
        dev.id,
        dev.key_id,
        customer_ref,
        Decimal(amount),
    )
    return str(row["outcome"])


async def test_a_patched_budget_applies_to_the_next_reservation(
    gateway: RunningGateway, dev: DevApi
) -> None:
    c = await dev.customer(external_id="budgeted", monthly_budget_usd="0")
    assert await reserve(gateway, dev, "budgeted", "0.01") == "customer_budget_exceeded"
    await dev.ok("PATCH", f"/v1/customers/{c['id']}", json={"monthly_budget_usd": "1"})
    assert await reserve(gateway, dev, "budgeted", "0.02") == "ok"


async def test_delete_is_soft_and_frees_the_external_id(
    gateway: RunningGateway, dev: DevApi
) -> None:
    c = await dev.customer(external_id="gone")
    r = await dev("DELETE", "/v1/customers/gone")
    assert r.status_code == 200
    assert r.json() == {"id": c["id"], "object": "customer.deleted", "deleted": True}
    row = await gateway.services.db.fetchrow("SELECT * FROM customer WHERE id = $1", c["id"])
    assert row["deleted_at"] is not None
    assert row["external_id"] == "gone"

    for method in ("GET", "PATCH", "DELETE"):
        r = await dev(method, f"/v1/customers/{c['id']}", json={})
        assert_error(r, 404, "not_found")
    assert (await dev.ok("GET", "/v1/customers"))["data"] == []

    again = await dev.customer(external_id="gone")
    assert again["id"] != c["id"]
    assert (await dev.ok("GET", "/v1/customers/gone"))["id"] == again["id"]


async def test_list_pagination(dev: DevApi) -> None:
    ids = [(await dev.customer(name=f"c{i}"))["id"] for i in range(5)]
    newest_first = ids[::-1]

    page = await dev.ok("GET", "/v1/customers")
    assert page["object"] == "list"
    assert [c["id"] for c in page["data"]] == newest_first
    assert page["first_id"] == newest_first[0]
    assert page["last_id"] == newest_first[-1]
    assert page["has_more"] is False

    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = await dev.ok("GET", "/v1/customers", params=params)
        seen += [c["id"] for c in page["data"]]
        if not page["has_more"]:
            break
        params["after"] = page["last_id"]
    assert seen == newest_first
    assert len(page["data"]) == 1

    asc = await dev.ok("GET", "/v1/customers", params={"order": "asc", "limit": 3})
    assert [c["id"] for c in asc["data"]] == ids[:3]
    assert asc["has_more"] is True
    after = await dev.ok("GET", "/v1/customers", params={"order": "asc", "after": ids[2]})
    assert [c["id"] for c in after["data"]] == ids[3:]

    # before: the objects just before the cursor, still in listing order.
    before = await dev.ok("GET", "/v1/customers", params={"before": ids[1], "limit": 2})
    assert [c["id"] for c in before["data"]] == [ids[3], ids[2]]
    assert before["has_more"] is True
    before = await dev.ok("GET", "/v1/customers", params={"order": "asc", "before": ids[3]})
    assert [c["id"] for c in before["data"]] == ids[:3]
    assert before["has_more"] is False
    between = await dev.ok("GET", "/v1/customers", params={"after": ids[4], "before": ids[0]})
    assert [c["id"] for c in between["data"]] == [ids[3], ids[2], ids[1]]

    # A deleted customer stays a valid cursor.
    await dev.ok("DELETE", f"/v1/customers/{ids[2]}")
    rest = await dev.ok("GET", "/v1/customers", params={"after": ids[2]})
    assert [c["id"] for c in rest["data"]] == [ids[1], ids[0]]


async def test_list_filters_by_external_id(dev: DevApi) -> None:
    await dev.customer(external_id="x1")
    b = await dev.customer(external_id="x2")
    page = await dev.ok("GET", "/v1/customers", params={"external_id": "x2"})
    assert [c["id"] for c in page["data"]] == [b["id"]]
    page = await dev.ok("GET", "/v1/customers", params={"external_id": "nobody"})
    assert page == {
        "object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"order": "up"}, "order"),
        ({"after": "cus_nope"}, "after"),
        ({"before": "cus_nope"}, "before"),
        ({"after": ""}, "after"),
    ],
)
async def test_list_bad_parameters(dev: DevApi, params: dict[str, str], param: str) -> None:
    assert_error(await dev("GET", "/v1/customers", params=params), 400, "invalid_request", param)


async def test_another_developers_customer_is_not_found(
    gateway: RunningGateway, dev: DevApi
) -> None:
    c = await dev.customer(external_id="mine")
    other = await new_dev(gateway, "other")
    for ref in (c["id"], "mine"):
        for method, path, body in [
            ("GET", f"/v1/customers/{ref}", None),
            ("PATCH", f"/v1/customers/{ref}", {"name": "x"}),
            ("DELETE", f"/v1/customers/{ref}", None),
            ("GET", f"/v1/customers/{ref}/wallet", None),
            ("POST", f"/v1/customers/{ref}/wallet/topup", {"amount_usd": "1"}),
            ("POST", f"/v1/customers/{ref}/wallet/adjust", {"amount_usd": "1", "description": "x"}),
            ("POST", f"/v1/customers/{ref}/wallet/refund", {"request_id": "req_x"}),
            ("GET", f"/v1/customers/{ref}/usage", None),
        ]:
            r = await other(method, path, json=body)
            assert_error(r, 404, "not_found")
    assert (await other.ok("GET", "/v1/customers"))["data"] == []
    # The other developer's cursor cannot be used to page this one's list either.
    r = await other("GET", "/v1/customers", params={"after": c["id"]})
    assert_error(r, 400, "invalid_request", "after")
    # Nothing changed.
    assert await dev.ok("GET", f"/v1/customers/{c['id']}") == c
    assert await gateway.services.db.fetchval("SELECT count(*) FROM wallet") == 0


async def test_customers_need_a_developer_key(gateway: RunningGateway) -> None:
    for method, path in [("GET", "/v1/customers"), ("POST", "/v1/customers")]:
        r = await gateway.http.request(method, path, json={})
        assert_error(r, 401, "invalid_api_key")
    # Never a client token: customer CRUD is the developer's.
    r = await gateway.http.get("/v1/customers", headers={"Authorization": "Client abc"})
    assert_error(r, 403, "client_token_not_allowed")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (["x"], None),
        ({"nickname": "x"}, "nickname"),
        ({"external_id": ""}, "external_id"),
        ({"external_id": " padded"}, "external_id"),
        ({"external_id": "x" * 257}, "external_id"),
        ({"external_id": 42}, "external_id"),
        ({"external_id": "a\nb"}, "external_id"),
        ({"name": "x" * 257}, "name"),
        ({"name": "tab\there"}, "name"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "a@"}, "email"),
        ({"metadata": "x"}, "metadata"),
        ({"metadata": {"k": 1}}, "metadata.k"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"metadata": {"k" * 65: "v"}}, "metadata key"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"monthly_budget_usd": "-1"}, "monthly_budget_usd"),
        ({"monthly_budget_usd": "1.0000001"}, "monthly_budget_usd"),
        ({"monthly_budget_usd": "lots"}, "monthly_budget_usd"),
        ({"monthly_budget_usd": True}, "monthly_budget_usd"),
        ({"monthly_budget_usd": "1e13"}, "monthly_budget_usd"),
        ({"wallet_low_threshold_usd": "-0.01"}, "wallet_low_threshold_usd"),
        ({"rpm_limit": 0}, "rpm_limit"),
        ({"rpm_limit": 1.5}, "rpm_limit"),
        ({"rpm_limit": "5"}, "rpm_limit"),
        ({"tpm_limit": 2**31}, "tpm_limit"),
        ({"tpm_limit": True}, "tpm_limit"),
    ],
)
async def test_bad_customer_bodies(
    gateway: RunningGateway, dev: DevApi, body: Any, param: str | None
) -> None:
    assert_error(await dev("POST", "/v1/customers", json=body), 400, "invalid_request", param)
    c = await dev.customer(external_id="target")
    r = await dev("PATCH", f"/v1/customers/{c['id']}", json=body)
    assert_error(r, 400, "invalid_request", param)
    count = await gateway.services.db.fetchval("SELECT count(*) FROM customer")
    assert count == 1


async def test_nul_never_reaches_postgres(dev: DevApi) -> None:
    r = await dev("POST", "/v1/customers", content=b'{"name": "a\\u0000b"}')
    assert_error(r, 400, "invalid_request")
    r = await dev("POST", "/v1/customers", content=b'{"metadata": {"a\\u0000": "b"}}')
    assert_error(r, 400, "invalid_request")
    r = await dev("GET", "/v1/customers", params={"external_id": "a\x00b"})
    assert_error(r, 400, "invalid_request")
    r = await dev("GET", "/v1/customers/a%00b")
    assert_error(r, 404, "not_found")
