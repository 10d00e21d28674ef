"""The server's own limits (service/server.py) against the real `template-sync serve`, reached
directly over loopback TCP: the header cap, the header and body deadlines, the connection
cap, and ordinary traffic (signed webhooks, API calls, kept-alive connections) unharmed.

Connections are driven by hand so that floods, stalls and half-sent headers are what the
server really receives. Deadlines are short (TIMEOUT_S) through the settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from service.config import Settings
from service.meta_webhooks import status_delivery
from service.storage import Store, TemplateFilter

from .conftest import WABA_ID, Tenant, make_tenant, sign
from .service_process import ServiceProcess, service_env
from .waiting import eventually

TIMEOUT_S = 0.5  # TEMPLATE_SYNC_REQUEST_TIMEOUT_S of these tests
WAIT_S = 5.0  # longest any expected answer or close may take
HEADER_CAP = 64 * 1024  # the default TEMPLATE_SYNC_MAX_HEADER_BYTES


class Harness:
    """Starts `serve` with TIMEOUT_S and opens connections to it; the fixture closes both."""

    def __init__(self, settings: Settings, cwd: Path) -> None:
        self.settings = settings
        self.cwd = cwd
        self.services: list[ServiceProcess] = []
        self.connections: list[Connection] = []

    async def start(self, **extra: str) -> ServiceProcess:
        variables = {"TEMPLATE_SYNC_REQUEST_TIMEOUT_S": str(TIMEOUT_S), **extra}
        service = ServiceProcess(service_env(self.settings, **variables), self.cwd)
        self.services.append(service)
        await service.start()
        return service

    async def connect(self, service: ServiceProcess) -> Connection:
        connection = Connection(*await asyncio.open_connection("127.0.0.1", service.port))
        self.connections.append(connection)
        return connection

    async def close(self) -> None:
        for connection in self.connections:
            await connection.close()
        for service in self.services:
            await service.stop()


@pytest.fixture
async def harness(settings: Settings, tmp_path: Path) -> AsyncIterator[Harness]:
    opened = Harness(settings, tmp_path)
    try:
        yield opened
    finally:
        await opened.close()


class Connection:
    """One TCP connection to the service. Everything received is collected as it arrives,
    so an answer the server sends just before it resets the connection is not lost."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.received = bytearray()
        self.opened_at = time.monotonic()
        self.collector = asyncio.create_task(self._collect(reader))

    async def _collect(self, reader: asyncio.StreamReader) -> None:
        try:
            while chunk := await reader.read(65536):
                self.received += chunk
        except ConnectionError:
            pass  # a reset after the answer: what came before it is kept

    async def send(self, data: bytes) -> None:
        """Send what the server still reads; a server that closed stops the sending."""
        try:
            self.writer.write(data)
            await self.writer.drain()
        except ConnectionError:
            pass

    async def response(self) -> tuple[int, bytes]:
        """The next complete response: (status, body)."""

        def parsed() -> tuple[int, bytes] | None:
            if (answer := self._take_response()) is None:
                assert not self.collector.done(), f"closed without an answer: {self.received!r}"
            return answer

        return await eventually(parsed, WAIT_S, message=lambda: f"no answer: {self.received!r}")

    def _take_response(self) -> tuple[int, bytes] | None:
        head, found, rest = bytes(self.received).partition(b"\r\n\r\n")
        if not found:
            return None
        lines = head.decode("latin-1").split("\r\n")
        fields = dict(line.lower().split(": ", 1) for line in lines[1:])
        length = int(fields.get("content-length", "0"))
        if len(rest) < length:
            return None
        del self.received[: len(head) + 4 + length]
        return int(lines[0].split()[1]), rest[:length]

    async def closed(self) -> float:
        """Seconds from opening until the server closed the connection."""
        await asyncio.wait_for(self.collector, WAIT_S)
        return time.monotonic() - self.opened_at

    async def close(self) -> None:
        self.collector.cancel()
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def get(path: str, *headers: bytes) -> bytes:
    return b"\r\n".join([b"GET " + path.encode() + b" HTTP/1.1", b"Host: t", *headers, b"", b""])


def webhook_request(body: bytes, signature: str | None = None) -> bytes:
    head = (
        b"POST /webhooks/meta HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"X-Hub-Signature-256: %s\r\nContent-Length: %d\r\n\r\n"
    )
    return head % ((signature or sign(body)).encode(), len(body))


def approval(index: int, padding: int = 0) -> bytes:
    body = status_delivery(waba_id=WABA_ID, template_id=str(7_000 + index), event="APPROVED",
                           name=f"hardening_{index}", language="en_US",
                           entry_time=1_751_000_000 + index)  # fmt: skip
    return body[:-1] + b',"padding":"' + b"x" * padding + b'"}' if padding else body


async def healthz_latencies(service: ServiceProcess, until: asyncio.Future[object]) -> list[float]:
    """Seconds each /healthz took, one after another, while `until` runs."""
    latencies = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_S)) as session:
        while not until.done():
            started = time.monotonic()
            async with session.get(service.url + "/healthz") as response:
                assert response.status == 200
            latencies.append(time.monotonic() - started)
    return latencies


async def flood(harness: Harness, service: ServiceProcess, header: bytes) -> tuple[int, float]:
    """Send `header` (never finished) on a new connection: (status answered, seconds until
    the server closed)."""
    connection = await harness.connect(service)
    for start in range(0, len(header), 65536):
        if connection.collector.done():
            break  # refused: the rest is never read
        await connection.send(header[start : start + 65536])
    status, _ = await connection.response()
    return status, await connection.closed()


async def test_header_floods_get_431_at_once_and_healthz_stays_fast(harness: Harness) -> None:
    service = await harness.start(TEMPLATE_SYNC_REQUEST_TIMEOUT_S="5")  # no 408 before 431
    huge_value = get("/healthz", b"X-Flood: " + b"a" * 1_000_000)[:-4]
    many_small = get("/healthz", *(b"X-Flood-%d: v" % i for i in range(20_000)))
    headers = (huge_value, many_small, huge_value)
    floods = asyncio.gather(*(flood(harness, service, header) for header in headers))
    latencies = await healthz_latencies(service, asyncio.ensure_future(floods))

    for status, seconds in floods.result():
        assert status == 431
        assert seconds < 1
    assert latencies and max(latencies) < 0.5


async def test_a_header_under_the_cap_and_a_large_body_are_served(
    harness: Harness, store: Store
) -> None:
    service = await harness.start()
    connection = await harness.connect(service)
    await connection.send(get("/healthz", b"X-Big: " + b"a" * (HEADER_CAP - 200)))
    assert (await connection.response())[0] == 200

    body = approval(1, padding=1_000_000)  # one read carries the header and 64 KiB more
    await connection.send(webhook_request(body) + body)
    assert await connection.response() == (200, b'{"success":true}')
    assert len(await store.list_deliveries(None, 10)) == 1


async def test_an_idle_connection_is_closed_after_the_deadline(harness: Harness) -> None:
    service = await harness.start()
    connection = await harness.connect(service)
    assert TIMEOUT_S * 0.8 < await connection.closed() < TIMEOUT_S + 2
    assert connection.received == b""  # nothing asked, nothing answered


async def test_a_half_sent_header_gets_408_and_is_closed(harness: Harness) -> None:
    service = await harness.start()
    fresh = await harness.connect(service)
    await fresh.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
    kept_alive = await harness.connect(service)
    await kept_alive.send(get("/healthz"))
    assert (await kept_alive.response())[0] == 200
    await kept_alive.send(b"GET /healthz HTTP/1.1\r\nHo")  # then stops, kept alive or not

    for connection in (fresh, kept_alive):
        assert (await connection.response())[0] == 408
        assert await connection.closed() < TIMEOUT_S + 2


async def test_a_stalled_webhook_body_gets_408_and_nothing_is_stored(
    harness: Harness, store: Store
) -> None:
    service = await harness.start()
    body = approval(2)
    stalled = await harness.connect(service)
    await stalled.send(webhook_request(body) + body[:100])
    assert (await stalled.response())[0] == 408
    assert await stalled.closed() < TIMEOUT_S + 2
    assert await store.list_deliveries(None, 10) == []

    slow = await harness.connect(service)  # slower in all than the deadline, never stalled
    await slow.send(webhook_request(body))
    size = len(body) // 6 + 1
    for part in range(0, len(body), size):
        await asyncio.sleep(TIMEOUT_S * 0.3)
        await slow.send(body[part : part + size])
    assert await slow.response() == (200, b'{"success":true}')
    assert len(await store.list_deliveries(None, 10)) == 1


async def test_over_the_connection_limit_a_request_gets_503(harness: Harness) -> None:
    service = await harness.start(
        TEMPLATE_SYNC_LIMIT_CONCURRENCY="3", TEMPLATE_SYNC_REQUEST_TIMEOUT_S="30"
    )
    held = [await harness.connect(service) for _ in range(2)]
    for connection in held:  # answered, so accepted; then kept alive and idle
        await connection.send(get("/healthz"))
        assert (await connection.response())[0] == 200
    refused = await harness.connect(service)
    await refused.send(get("/healthz"))
    assert (await refused.response())[0] == 503
    await refused.closed()

    for connection in held:
        await connection.close()

    async def served_again() -> bool:  # once the held connections are gone
        again = await harness.connect(service)
        await again.send(get("/healthz"))
        return (await again.response())[0] == 200

    await eventually(served_again, WAIT_S, interval_s=0.05)


async def test_one_kept_alive_connection_serves_webhooks_and_api_calls(
    harness: Harness, store: Store, settings: Settings
) -> None:
    tenant: Tenant = await make_tenant(store, settings)
    service = await harness.start()
    connection = await harness.connect(service)
    bearer = b"Authorization: Bearer " + tenant.token.encode()
    templates = f"/api/v3/workspaces/{tenant.workspace_id}/templates"
    for index in range(3):  # together longer than one deadline: each request has its own
        body = approval(index)
        await connection.send(webhook_request(body) + body)
        assert await connection.response() == (200, b'{"success":true}')
        await connection.send(get(templates, bearer))
        assert (await connection.response())[0] == 200
        await asyncio.sleep(TIMEOUT_S * 0.6)
    bad = approval(9)
    await connection.send(webhook_request(bad, signature="sha256=" + "0" * 64) + bad)
    assert (await connection.response())[0] == 401
    assert not connection.collector.done()  # still open
    templates_seen, total = await store.list_templates(tenant.workspace_id, TemplateFilter(), 0, 10)
    assert total == 3 and {t.status for t in templates_seen} == {"APPROVED"}


async def test_a_refused_client_still_sending_can_finish_and_read_its_answer(
    harness: Harness,
) -> None:
    """A refused connection is drained before it is closed (a lingering close): a client that
    is still sending its request when the 431 comes, as HTTP clients do, is not reset, which
    would fail its send and lose the answer it has not read yet."""
    service = await harness.start()
    flood = get("/healthz", b"X-Flood: " + b"a" * 1_000_000)[:-4]
    with socket.create_connection(("127.0.0.1", service.port), timeout=WAIT_S) as sock:
        sock.sendall(flood[: 2 * HEADER_CAP])  # over the cap: refused
        await asyncio.sleep(0.3)  # answered (and, without draining, closed) meanwhile
        sock.sendall(flood[2 * HEADER_CAP :])  # a reset would fail this send
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 431 ")
