"""Where a webhook may be sent (SSRF guard): an ``http``/``https`` URL whose host resolves only
to public addresses, checked when the endpoint is registered and again before every attempt,
since DNS can change in between. The worker then connects to the very address it checked
(:class:`Target` carries it), so a second lookup cannot swap it.

``RINGSIDE_WEBHOOKS_ALLOW_PRIVATE=1`` lets every address through (local receivers, tests).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import httpx
import trio

from ringside.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class TargetNotAllowed(InvalidRequest):
    code = "webhook_url_not_allowed"


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_allowed(ip: IPAddress) -> bool:
    """Whether a webhook may connect to ``ip``: a globally routable unicast address. Refused:
    private (10/8, 172.16/12, 192.168/16, fc00::/7), loopback, link-local (169.254/16,
    fe80::/10), shared (100.64/10), unspecified, reserved, documentation, multicast — and an
    IPv6 address embedding any of those IPv4 ones. Pure: opens nothing."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return address_allowed(embedded)
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class Target:
    """A checked URL and the address to connect to."""

    url: httpx.URL
    address: IPAddress

    def pinned_url(self) -> httpx.URL:
        """The URL with the checked address as its host (the Host header and TLS server name
        keep the original name: see :meth:`host`)."""
        return self.url.copy_with(host=str(self.address))

    @property
    def host(self) -> str:
        return self.url.host


def parse_url(raw: str, param: str = "url") -> httpx.URL:
    """A syntactically acceptable webhook URL (no lookup)."""
    try:
        url = httpx.URL(raw)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise InvalidRequest("'url' must be an absolute http or https URL.", param=param) from None
    if url.scheme not in ("http", "https") or not url.host:
        raise InvalidRequest("'url' must be an absolute http or https URL.", param=param)
    if url.userinfo:
        raise InvalidRequest("'url' must not carry credentials.", param=param)
    return url


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def resolve(url: httpx.URL) -> list[IPAddress]:
    """Every address the URL's host resolves to (a literal address is itself)."""
    literal = _literal(url.host)
    if literal is not None:
        return [literal]
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = await trio.socket.getaddrinfo(url.host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetNotAllowed(
            f"The webhook host {url.host!r} does not resolve: {exc}", param="url"
        ) from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    return addresses


async def check_target(url: httpx.URL, *, allow_private: bool) -> Target:
    """The address to send to; refused (``webhook_url_not_allowed``) when the host resolves to
    any address that is not public — one private answer among public ones is enough to
    refuse, or a rebinding resolver could pick it."""
    addresses = await resolve(url)
    if not addresses:
        raise TargetNotAllowed(f"The webhook host {url.host!r} does not resolve.", param="url")
    if not allow_private:
        refused = [ip for ip in addresses if not address_allowed(ip)]
        if refused:
            raise TargetNotAllowed(
                f"The webhook URL resolves to a non-public address ({refused[0]}); "
                "private, loopback and link-local targets are not allowed.",
                param="url",
            )
    return Target(url, addresses[0])
