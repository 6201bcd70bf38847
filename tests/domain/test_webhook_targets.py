"""The webhook SSRF guard's address classifier, as a pure unit: no lookup, no connection."""

from __future__ import annotations

import ipaddress
import socket

import httpx
import pytest

from ringside.domain.webhook_targets import (
    TargetNotAllowed,
    address_allowed,
    check_target,
    parse_url,
)
from ringside.errors import InvalidRequest

REFUSED = [
    "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.254", "192.168.1.1",
    "169.254.169.254", "127.0.0.1", "127.8.9.10", "0.0.0.0", "100.64.0.1", "224.0.0.1",
    "255.255.255.255", "::1", "::", "fc00::1", "fd12:3456::1", "fe80::1", "ff02::1", "ff0e::1",
    "::ffff:10.0.0.1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "2002:a00:1::1",
    "64:ff9b::a00:1",
]  # fmt: skip
ALLOWED = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "172.32.0.1", "2606:4700::1111",
           "::ffff:8.8.8.8", "2001:4860:4860::8888"]  # fmt: skip


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kw: object) -> None:
        raise AssertionError("the classifier must not touch the network")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_allowed(ipaddress.ip_address(address))


async def test_a_literal_address_is_checked_without_a_lookup() -> None:
    with pytest.raises(TargetNotAllowed) as info:
        await check_target(httpx.URL("https://10.1.2.3/hook"), allow_private=False)
    assert info.value.code == "webhook_url_not_allowed"
    target = await check_target(httpx.URL("https://8.8.8.8:8443/hook"), allow_private=False)
    assert str(target.address) == "8.8.8.8"
    assert str(target.pinned_url()) == "https://8.8.8.8:8443/hook"
    v6 = await check_target(httpx.URL("http://[::1]:9/x"), allow_private=True)
    assert str(v6.pinned_url()) == "http://[::1]:9/x"


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "example.com/hook", "https://", "https://u:p@example.com/"]
)
def test_only_plain_http_and_https_urls_parse(url: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_url(url)
