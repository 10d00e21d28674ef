"""Subscription URLs cannot point the service at its own network, at registration or on connect."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from service.safe_urls import (
    MAX_URL_LENGTH,
    InternalAddressError,
    SafeResolver,
    UnsafeURL,
    check_url,
    check_url_resolving,
    safe_session_connector,
)
from service.simulator import bound_port, serve_app

PUBLIC_V4 = "93.184.216.34"

ACCEPTED = [
    "https://example.com/hooks/template-sync",
    "http://example.com:8080/hook?workspace=main#fragment",
    "https://BÜCHER.example/hook",
    f"https://{PUBLIC_V4}/hook",
    f"http://[::ffff:{PUBLIC_V4}]:8443/",
    "https://[2606:2800:220:1:248:1893:25c8:1946]/hook",
]

REFUSED_FORM = [
    ("ftp://example.com/hook", "https:// or http://"),
    ("example.com/hook", "https:// or http://"),
    ("//example.com/hook", "https:// or http://"),
    ("https:///hook", "must name a host"),
    ("http://", "must name a host"),
    ("https://user:password@example.com/hook", "user name or password"),
    ("https://token@example.com/hook", "user name or password"),
    ("https://example.com/" + "a" * MAX_URL_LENGTH, f"longer than {MAX_URL_LENGTH}"),
    ("https://exa mple.com/hook", "spaces or control characters"),
    ("https://example.com/hook\r\nX-Injected: 1", "spaces or control characters"),
    ("https://example.com:99999/hook", "not valid"),
    ("http://127.1/", "standard form"),
    ("http://2130706433/", "standard form"),
    ("http://0x7f000001/", "standard form"),
]

INTERNAL = [
    ("http://127.0.0.1/", "loopback"),
    ("http://127.8.9.10:8080/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://10.1.2.3/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://172.31.255.254/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://[fd00::1]/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://255.255.255.255/", "reserved"),
    ("http://240.0.0.1/", "reserved"),
    ("http://100.64.0.1/", "a shared address"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("http://[::ffff:10.0.0.1]/", "private"),
    ("http://[2002:7f00:1::]/", "loopback"),
    ("http://192.0.2.1/", "private"),
]


@pytest.mark.parametrize("url", ACCEPTED)
@pytest.mark.parametrize("allow_private", [False, True])
def test_public_urls_are_accepted_without_connecting(url: str, allow_private: bool) -> None:
    assert check_url(url, allow_private) == url


@pytest.mark.parametrize(("url", "message"), REFUSED_FORM)
@pytest.mark.parametrize("allow_private", [False, True])
def test_malformed_urls_are_refused_whatever_the_policy(
    url: str, message: str, allow_private: bool
) -> None:
    with pytest.raises(UnsafeURL, match=message):
        check_url(url, allow_private)


@pytest.mark.parametrize(("url", "kind"), INTERNAL)
def test_internal_addresses_are_refused(url: str, kind: str) -> None:
    with pytest.raises(UnsafeURL, match=f"{kind}.*WEBHOOKS_ALLOW_PRIVATE"):
        check_url(url, allow_private=False)


@pytest.mark.parametrize(("url", "kind"), INTERNAL)
def test_internal_addresses_are_accepted_when_allowed(url: str, kind: str) -> None:
    assert check_url(url, allow_private=True) == url


def test_unsafe_url_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="https:// or http://"):
        check_url("file:///etc/passwd", allow_private=False)


async def test_localhost_resolves_to_loopback_and_is_refused() -> None:
    with pytest.raises(UnsafeURL, match=r"localhost resolves to (127\.0\.0\.1|::1), a loopback"):
        await check_url_resolving("http://localhost:8080/hook", allow_private=False)
    url = "http://localhost:8080/hook"
    assert await check_url_resolving(url, allow_private=True) == url


async def test_resolving_check_keeps_the_form_and_literal_checks() -> None:
    with pytest.raises(UnsafeURL, match="user name or password"):
        await check_url_resolving("https://user:pw@localhost/", allow_private=True)
    with pytest.raises(UnsafeURL, match="link-local"):
        await check_url_resolving("http://169.254.169.254/", allow_private=False)
    literal = f"https://{PUBLIC_V4}/hook"
    assert await check_url_resolving(literal, allow_private=False) == literal


async def test_a_host_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(UnsafeURL, match=r"no-such-host\.invalid (does not|did not) resolve"):
        await check_url_resolving("https://no-such-host.invalid/hook", allow_private=True)


class FixedResolver(AbstractResolver):
    """DNS as an attacker controlling a zone could answer it."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.addresses
        ]

    async def close(self) -> None:
        pass


async def test_resolver_drops_internal_addresses_from_a_mixed_answer() -> None:
    resolver = SafeResolver(FixedResolver("127.0.0.1", PUBLIC_V4, "::ffff:10.0.0.1", "fe80::1"))
    assert [result["host"] for result in await resolver.resolve("rebind.example", 443)] == [
        PUBLIC_V4
    ]


async def test_resolver_refuses_an_answer_with_only_internal_addresses() -> None:
    resolver = SafeResolver(FixedResolver("169.254.169.254", "10.0.0.1"))
    with pytest.raises(InternalAddressError, match=r"resolves only to private addresses"):
        await resolver.resolve("rebind.example", 443)


@dataclass
class Receiver:
    port: int = 0
    requests: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        return web.Response(text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    runner = await serve_app(app)
    found.port = bound_port(runner)
    try:
        yield found
    finally:
        await runner.cleanup()


async def post(url: str, allow_private: bool) -> int:
    async with (
        aiohttp.ClientSession(connector=safe_session_connector(allow_private)) as session,
        session.post(url, json={"type": "template.created"}) as response,
    ):
        return response.status


async def test_connector_refuses_a_host_name_that_resolves_to_loopback(receiver: Receiver) -> None:
    with pytest.raises(aiohttp.ClientConnectorError, match="resolves only to private addresses"):
        await post(f"http://localhost:{receiver.port}/hook", allow_private=False)
    assert receiver.requests == 0


async def test_connector_refuses_a_literal_loopback_address(receiver: Receiver) -> None:
    with pytest.raises(aiohttp.ClientConnectorError, match=r"127\.0\.0\.1, a loopback address"):
        await post(f"http://127.0.0.1:{receiver.port}/hook", allow_private=False)
    assert receiver.requests == 0


async def test_connector_allows_loopback_when_private_addresses_are_allowed(
    receiver: Receiver,
) -> None:
    assert await post(f"http://localhost:{receiver.port}/hook", allow_private=True) == 200
    assert await post(f"http://127.0.0.1:{receiver.port}/hook", allow_private=True) == 200
    assert receiver.requests == 2
