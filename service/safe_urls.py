"""Outbound URL policy for notification subscriptions (design section 11).

Anyone with an API token can register a URL the service then POSTs to, so without a policy the
service is a proxy into its own network (cloud metadata at 169.254.169.254, admin ports on
loopback). URLs are checked at registration (`check_url_resolving`) and every connection is
checked again (`safe_session_connector`): DNS answers can change after registration (DNS
rebinding) and a redirect can name a literal address, which aiohttp connects to without asking
the resolver.
"""

from __future__ import annotations

import asyncio
import socket
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.connector import AddrInfoType
from aiohttp.resolver import DefaultResolver
from yarl import URL

from .config import PREFIX

MAX_URL_LENGTH = 2048
SCHEMES = frozenset({"http", "https"})
RESOLVE_TIMEOUT_S = 5.0
SHARED_ADDRESS_SPACE = ip_network("100.64.0.0/10")  # carrier-grade NAT, RFC 6598
PUBLIC_ONLY = (
    "webhooks go to public addresses only "
    f"(set {PREFIX}WEBHOOKS_ALLOW_PRIVATE=true to allow internal addresses)"
)

Address = IPv4Address | IPv6Address


class UnsafeURL(ValueError):
    """A subscription URL the service will not deliver to; the message says what to change."""


class InternalAddressError(OSError):
    """A connection to an internal address was refused (aiohttp reports it as a connect error)."""

    def __init__(self, message: str) -> None:
        # (errno, strerror): aiohttp's ClientConnectorError shows strerror in its message.
        super().__init__(None, message)


def check_url(url: str, allow_private: bool) -> str:
    """The URL if its form is acceptable and a literal IP host is public; no DNS lookup."""
    _parse(url, allow_private)
    return url


async def check_url_resolving(url: str, allow_private: bool) -> str:
    """`check_url`, then every address the host resolves to must be public (registration)."""
    parsed = _parse(url, allow_private)
    if _literal_address(parsed) is not None:
        return url
    addresses = await _resolve(parsed)
    if not allow_private:
        for address in addresses:
            problem = address_problem(address)
            if problem is not None:
                raise UnsafeURL(f"{parsed.host} resolves to {address}, {problem}; {PUBLIC_ONLY}")
    return url


def address_problem(address: Address) -> str | None:
    """Why connecting to this address is refused ("a loopback address"), or None if public."""
    inner = _embedded_ipv4(address) or address
    checks = (
        (inner.is_loopback, "a loopback address"),
        (inner.is_unspecified, "an unspecified address"),
        (inner.is_link_local, "a link-local address"),
        (inner.is_multicast, "a multicast address"),
        (isinstance(inner, IPv4Address) and inner in SHARED_ADDRESS_SPACE, "a shared address"),
        (inner.is_reserved, "a reserved address"),
        (inner.is_private, "a private address"),
        (not inner.is_global, "not a public address"),
    )
    return next((reason for refused, reason in checks if refused), None)


class SafeResolver(AbstractResolver):
    """Resolves with aiohttp's default resolver and keeps only public addresses."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [result for result in results if _host_problem(result["host"]) is None]
        if not allowed:
            found = ", ".join(sorted({result["host"] for result in results}))
            raise InternalAddressError(
                f"{host} resolves only to private addresses ({found}); {PUBLIC_ONLY}"
            )
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def safe_session_connector(allow_private: bool) -> aiohttp.TCPConnector:
    """A connector that cannot reach internal addresses, unless they are allowed.

    The resolver filters host names; the socket factory covers literal addresses (a URL or a
    redirect to `http://127.0.0.1/`), which aiohttp never passes to the resolver.
    """
    if allow_private:
        return aiohttp.TCPConnector()
    return aiohttp.TCPConnector(resolver=SafeResolver(), socket_factory=_public_socket)


def _public_socket(addr_info: AddrInfoType) -> socket.socket:
    family, kind, proto, _, sockaddr = addr_info
    host = str(sockaddr[0])
    problem = _host_problem(host)
    if problem is not None:
        raise InternalAddressError(f"refusing to connect to {host}, {problem}; {PUBLIC_ONLY}")
    return socket.socket(family, kind, proto)


def _parse(url: str, allow_private: bool) -> URL:
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeURL(f"URL is longer than {MAX_URL_LENGTH} characters")
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        raise UnsafeURL("URL must not contain spaces or control characters")
    try:
        parsed = URL(url)
    except ValueError as exc:
        raise UnsafeURL(f"URL is not valid: {exc}") from None
    if parsed.scheme not in SCHEMES:
        raise UnsafeURL("URL must start with https:// or http://")
    if not parsed.raw_host:
        raise UnsafeURL("URL must name a host, as in https://example.com/hook")
    if parsed.raw_user is not None or parsed.raw_password is not None:
        raise UnsafeURL(
            "URL must not contain a user name or password (URLs end up in logs); "
            "requests are signed with the subscription secret instead"
        )
    address = _literal_address(parsed)
    if address is None:
        _refuse_numeric_name(parsed.raw_host)
    elif not allow_private:
        problem = address_problem(address)
        if problem is not None:
            raise UnsafeURL(f"{address} is {problem}; {PUBLIC_ONLY}")
    return parsed


def _refuse_numeric_name(host: str) -> None:
    """`127.1` or `0x7f000001` would resolve to loopback: no real host name ends that way."""
    last_label = host.rstrip(".").rsplit(".", 1)[-1].lower()
    if last_label.isdigit() or last_label.startswith("0x"):
        raise UnsafeURL(f"{host} is neither a host name nor an IP address in standard form")


def _literal_address(parsed: URL) -> Address | None:
    try:
        return ip_address(parsed.host or "")
    except ValueError:
        return None


def _host_problem(host: str) -> str | None:
    try:
        return address_problem(ip_address(host))
    except ValueError:
        return "not an IP address"


def _embedded_ipv4(address: Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (::ffff:127.0.0.1, 6to4), judged as itself."""
    if isinstance(address, IPv4Address):
        return None
    return address.ipv4_mapped or address.sixtofour


async def _resolve(parsed: URL) -> list[Address]:
    host = parsed.raw_host or ""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            infos = await loop.getaddrinfo(host, parsed.port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise UnsafeURL(f"{host} did not resolve within {RESOLVE_TIMEOUT_S:g} s") from None
    except OSError as exc:
        raise UnsafeURL(f"{host} does not resolve ({exc.strerror or exc})") from None
    return [ip_address(info[4][0]) for info in infos]
