"""deploy/nginx.conf with the distribution's nginx, in front of the real `serve` command.

Everything runs on loopback high ports from a temporary directory: its own nginx prefix,
config, pid and logs, never the system's nginx service. The shipped site file is used as
is; only the listen ports, certificate and log paths and upstream address are substituted
(and, for the mTLS test, the "#mtls " lines uncommented as the file tells users to; for
the compose test, the edits deploy/compose.yaml's own command makes).
The client connects from 127.0.0.2 so that the forwarded address is told apart from
nginx's own (127.0.0.1, the only address the service trusts).
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from cryptography import x509

from service import meta_webhooks
from service.config import Secret, Settings
from service.crypto import generate_key
from service.simulator import serve_app
from service.storage import open_store

from .certificates import issue
from .conftest import VERIFY_TOKEN, WABA_ID, add_template, make_tenant, sign
from .service_process import service_env
from .test_events_stream import Stream
from .waiting import eventually

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "deploy" / "nginx.conf"
COMPOSE = ROOT / "deploy" / "compose.yaml"
ACCESS_LOG = "/var/log/nginx/access.log"  # the site file's, replaced by the prefix's
HSTS = "max-age=31536000"
CLIENT_IP = "127.0.0.2"  # the "internet" client; nginx and the service are on 127.0.0.1
MAX_BODY_BYTES = 4 * 1024 * 1024  # TEMPLATE_SYNC_MAX_BODY_BYTES' default
META_CN = "client.webhooks.fbclientcerts.com"
PROVIDER_ID = "1689556908129832"

pytestmark = pytest.mark.timeout(300)  # installing nginx on a clean machine takes a while


# --- nginx binary ---------------------------------------------------------------------


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def install_nginx() -> str:
    """Install the distribution's nginx (as .ci/run does); the reason it cannot, if not."""
    if shutil.which("apt-get") is None:
        return "nginx is not installed and there is no apt-get to install it"
    if os.geteuid() != 0:
        return "nginx is not installed and installing it needs root (apt-get install nginx)"
    # Like .ci/run: a policy-rc.d that refuses keeps apt from starting the system's nginx.
    policy = Path("/usr/sbin/policy-rc.d")
    added = not policy.exists()
    if added:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        return _apt_install_nginx()
    finally:
        if added:
            policy.unlink()


def _apt_install_nginx() -> str:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "nginx"]):
        try:
            done = subprocess.run(command, env=env, capture_output=True, timeout=240, check=False)
        except subprocess.TimeoutExpired:
            return f"nginx could not be installed: {' '.join(command)} timed out"
        if done.returncode != 0:
            return f"nginx could not be installed: {done.stderr.decode()[-300:]}"
    return ""


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    found = find_nginx()
    if found is None:
        reason = install_nginx()
        found = find_nginx()
        if found is None:
            pytest.skip(reason or "nginx was installed but cannot be found")
    return found


# --- certificates ---------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path  # signs the server certificate (what clients trust)
    server_cert: Path
    server_key: Path
    meta_ca: Path  # stands in for Meta's client CA
    meta_client: tuple[Path, Path]  # CN client.webhooks.fbclientcerts.com
    other_client: tuple[Path, Path]  # same CA, another CN


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Throwaway certificates made here: nothing is read from or written to the system."""
    directory = tmp_path_factory.mktemp("pki")
    ca_cert, ca_key, ca_path, _ = issue(directory, "ca", "template-sync test CA", None)
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    _, _, server_cert, server_key = issue(
        directory, "server", "localhost", (ca_cert, ca_key), san=san
    )
    meta_cert, meta_key, meta_ca, _ = issue(directory, "meta-ca", "Fake Meta CA", None)
    meta = issue(directory, "meta-client", META_CN, (meta_cert, meta_key))
    other = issue(directory, "other-client", "client.example.com", (meta_cert, meta_key))
    return Pki(ca_path, server_cert, server_key, meta_ca, (meta[2], meta[3]), (other[2], other[3]))


def client_tls(pki: Pki, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


# --- processes ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait (up to 20 s) until `process` listens on `port`; called outside any event loop."""

    def listening() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def not_yet() -> str:
        return f"nothing listens on {port}:\n{log.read_text()[-3000:]}"

    asyncio.run(eventually(listening, 20, message=not_yet, interval_s=0.05))


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop a process this test started, by its PID."""
    if process.poll() is None:
        os.kill(process.pid, sig)
        try:
            process.wait(timeout=25)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


def site_config(
    upstream_port: int,
    https_port: int,
    http_port: int,
    pki: Pki,
    mtls: bool = False,
    text: str | None = None,
) -> str:
    """The shipped site file (or `text`) with only ports, certificate paths and upstream
    replaced; start_nginx() replaces the log path."""
    text = SITE.read_text() if text is None else text
    for old, new in {
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{upstream_port};",
        "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "/etc/ssl/certs/template-sync.crt": str(pki.server_cert),
        "/etc/ssl/private/template-sync.key": str(pki.server_key),
        "/etc/nginx/meta-webhooks-ca.pem": str(pki.meta_ca),
    }.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    if mtls:
        # what the file's own instruction does: sed -i 's/^\(\s*\)#mtls /\1/'
        text, count = re.subn(r"^(\s*)#mtls ", r"\1", text, flags=re.MULTILINE)
        assert count == 10
    return text


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    https_port: int
    http_port: int
    prefix: Path

    @property
    def url(self) -> str:
        return f"https://localhost:{self.https_port}"

    async def access_log(self, *patterns: str) -> str:
        """nginx's access log once every pattern matches a line of it (nginx writes a line
        just after the response, so wait up to 5 s)."""
        log = self.prefix / "access.log"

        def matched() -> str | None:
            text = log.read_text()
            return text if all(re.search(p, text, re.MULTILINE) for p in patterns) else None

        def missing() -> str:
            return f"not in nginx's access log: {patterns}\n{log.read_text()[-3000:]}"

        return await eventually(matched, 5, message=missing, interval_s=0.05)


def start_nginx(binary: str, prefix: Path, site: str, https_port: int, http_port: int) -> Nginx:
    """nginx in the foreground as our child, with its own prefix, pid, logs and temp dirs."""
    prefix.mkdir(parents=True, exist_ok=True)
    assert site.count(ACCESS_LOG) == 2, "one access_log line in each server block"
    (prefix / "site.conf").write_text(site.replace(ACCESS_LOG, str(prefix / "access.log")))
    temp = " ".join(
        f"{kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    temp += f" uwsgi_temp_path {prefix / 'uwsgi'}; scgi_temp_path {prefix / 'scgi'};"
    user = "user root;" if os.geteuid() == 0 else ""  # workers must reach the temp dirs
    (prefix / "nginx.conf").write_text(
        f"{user}\nworker_processes 1;\npid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} info;\nevents {{ worker_connections 128; }}\n"
        f"http {{\n  access_log {prefix / 'access.log'};\n  {temp}\n"
        f"  include {prefix / 'site.conf'};\n}}\n"
    )
    args = [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e"]
    args += [str(prefix / "error.log")]
    checked = subprocess.run([*args, "-t"], capture_output=True, check=False)
    assert checked.returncode == 0, checked.stderr.decode()
    process = subprocess.Popen([*args, "-g", "daemon off;"], stderr=subprocess.DEVNULL)
    nginx = Nginx(process, https_port, http_port, prefix)
    try:
        wait_for_port(https_port, process, prefix / "error.log")
    except BaseException:
        stop(process)
        raise
    return nginx


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    workspace_id: str
    api_token: str

    def access_lines(self) -> list[tuple[str, str]]:
        """(client address, request line) of every access log line so far."""
        found = []
        for line in self.log.read_text().splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("logger") == "service.access":
                client, _, rest = entry["message"].partition(" ")
                found.append((client, rest))
        return found

    async def clients(self, request_line: str, at_least: int) -> list[str]:
        """Client addresses logged for a request line; the line is written just after the
        response, so wait (up to 5 s) until `at_least` of them are there."""

        def found() -> list[str]:
            return [c for c, line in self.access_lines() if line.startswith(request_line)]

        await eventually(lambda: len(found()) >= at_least, 5, message=found, interval_s=0.05)
        return found()


async def seed(database_url: str) -> tuple[str, str, Settings]:
    settings = Settings(
        database_url=database_url,
        encryption_keys=(Secret(generate_key()),),
        graph_url="http://127.0.0.1:9/v25.0",  # nothing here calls Meta
    )
    store = await open_store(database_url)
    try:
        await store.migrate()
        tenant = await make_tenant(store, settings)
        await add_template(store, tenant, PROVIDER_ID, name="order_confirmation")
    finally:
        await store.close()
    return tenant.workspace_id, tenant.token, settings


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`python -m service serve` as users run it, trusting forwarded headers from 127.0.0.1."""
    workdir = tmp_path_factory.mktemp("service")
    workspace_id, api_token, settings = asyncio.run(seed(f"sqlite:///{workdir}/template-sync.db"))
    port = free_port()
    env = service_env(
        settings, TEMPLATE_SYNC_FORWARDED_ALLOW_IPS="127.0.0.1", TEMPLATE_SYNC_LOG_LEVEL="INFO"
    )
    log = workdir / "service.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--port", str(port)],
            cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    try:
        wait_for_port(port, process, log)
        yield Service(process, port, log, workspace_id, api_token)
    finally:
        stop(process)
    # uvicorn re-raises SIGTERM once it has shut down gracefully (systemd counts it clean)
    assert process.returncode in (0, -signal.SIGTERM), log.read_text()[-3000:]
    assert "Application shutdown complete." in log.read_text()


@pytest.fixture(scope="module")
def nginx(
    nginx_binary: str, service: Service, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Nginx]:
    https_port, http_port = free_port(), free_port()
    site = site_config(service.port, https_port, http_port, pki)
    prefix = tmp_path_factory.mktemp("nginx")
    started = start_nginx(nginx_binary, prefix, site, https_port, http_port)
    try:
        yield started
    finally:
        stop(started.process)


@pytest.fixture
async def client(pki: Pki) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(ssl=client_tls(pki), local_addr=(CLIENT_IP, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


# --- helpers --------------------------------------------------------------------------


def status_webhook(event: str, entry_time: int, ensure_ascii: bool = True) -> bytes:
    """A template status webhook; Meta escapes non-ASCII, but raw UTF-8 must verify too."""
    info = {"title": "UNPAUSE", "description": "Confirmação do pedido ✓"}
    change = meta_webhooks.status_change(
        event, int(PROVIDER_ID), "order_confirmation", "pt_BR", reason=None, other_info=info
    )
    document = meta_webhooks.delivery(meta_webhooks.entry(WABA_ID, entry_time, change))
    if ensure_ascii:
        return meta_webhooks.encode(document)
    return json.dumps(document, ensure_ascii=False).encode()  # not as Meta sends it


async def post_webhook(
    client: aiohttp.ClientSession, url: str, body: bytes, **headers: str
) -> tuple[int, str, Any]:
    sent = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body), **headers}
    data = io.BytesIO(body)  # aiohttp warns about large bytes bodies
    async with client.post(url + "/webhooks/meta", data=data, headers=sent) as response:
        return response.status, await response.text(), response.headers


async def template_status(client: aiohttp.ClientSession, nginx: Nginx, service: Service) -> Any:
    path = f"/api/v3/workspaces/{service.workspace_id}/templates"
    headers = {"Authorization": f"Bearer {service.api_token}"}
    params = {"provider_id": PROVIDER_ID}
    async with client.get(nginx.url + path, headers=headers, params=params) as response:
        assert response.status == 200
        return (await response.json())["data"][0]


# --- tests ----------------------------------------------------------------------------


async def test_signed_webhooks_verify_and_apply_through_nginx(
    client: aiohttp.ClientSession, nginx: Nginx, service: Service
) -> None:
    query = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "c-42"}
    async with client.get(nginx.url + "/webhooks/meta", params=query) as response:
        assert (response.status, await response.text()) == (200, "c-42")

    spoofed = {"X-Forwarded-For": "203.0.113.9"}  # a client cannot choose its logged address
    body = status_webhook("APPROVED", 1_780_000_000)
    assert b"\\u00e7" in body  # escaped like Meta sends it
    assert (await post_webhook(client, nginx.url, body, **spoofed))[:2] == (200, '{"success":true}')
    assert (await template_status(client, nginx, service))["status"] == "APPROVED"

    raw_utf8 = status_webhook("PAUSED", 1_780_000_100, ensure_ascii=False)
    assert "ç".encode() in raw_utf8
    assert (await post_webhook(client, nginx.url, raw_utf8))[0] == 200
    assert (await template_status(client, nginx, service))["status"] == "PAUSED"

    forged = status_webhook("REJECTED", 1_780_000_200)
    status, _, _ = await post_webhook(client, nginx.url, forged, **{"X-Hub-Signature-256": "x"})
    assert status == 401
    assert (await template_status(client, nginx, service))["status"] == "PAUSED"

    async with client.get(
        f"http://127.0.0.1:{nginx.http_port}/healthz", allow_redirects=False
    ) as r:
        assert (r.status, r.headers["Location"]) == (301, "https://127.0.0.1/healthz")

    async with client.get(nginx.url + "/metrics") as response:
        assert response.status == 403  # for the monitoring network only; 127.0.0.2 is not
    posts = await service.clients('"POST /webhooks/meta"', at_least=3)
    assert posts == [CLIENT_IP] * 3  # the forwarded address, not nginx's, not the spoofed one


async def test_plain_http_refuses_the_api_in_its_shape_and_redirects_the_rest(
    client: aiohttp.ClientSession, nginx: Nginx, service: Service
) -> None:
    plain = f"http://127.0.0.1:{nginx.http_port}"
    path = f"/api/v3/workspaces/{service.workspace_id}/templates"
    headers = {"Authorization": f"Bearer {service.api_token}"}
    for method in ("GET", "POST"):
        async with client.request(
            method, plain + path, headers=headers, allow_redirects=False
        ) as response:
            assert (response.status, response.content_type) == (403, "application/json")
            assert "Location" not in response.headers  # no second trip for the token
            assert "Strict-Transport-Security" not in response.headers  # ignored over http
            body = await response.json()
        assert body["success"] is False and body["message"].startswith("Use https")
    async with client.get(plain + "/ui/?x=1", allow_redirects=False) as response:
        assert (response.status, response.headers["Location"]) == (301, "https://127.0.0.1/ui/?x=1")


async def test_https_answers_carry_strict_transport_security(
    client: aiohttp.ClientSession, nginx: Nginx, service: Service
) -> None:
    statuses = []
    for path in ("/readyz", f"/api/v3/workspaces/{service.workspace_id}/templates", "/metrics"):
        async with client.get(nginx.url + path) as response:
            statuses.append(response.status)  # the service's 200 and 401, nginx's own 403
            assert response.headers.getall("Strict-Transport-Security") == [HSTS]
    assert statuses == [200, 401, 403]


async def test_the_status_page_keeps_its_headers_through_nginx(
    client: aiohttp.ClientSession, nginx: Nginx, service: Service
) -> None:
    """The shipped config serves /ui/ unchanged: the page's bytes and its security headers,
    with nginx's HSTS added."""
    async with client.get(nginx.url + "/ui/") as response:
        assert (response.status, response.content_type) == (200, "text/html")
        page, headers = await response.read(), response.headers
    assert page == (ROOT / "service" / "ui" / "index.html").read_bytes()
    policy = headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert (headers["X-Content-Type-Options"], headers["Referrer-Policy"],
            headers["X-Frame-Options"]) == ("nosniff", "no-referrer", "DENY")  # fmt: skip
    assert headers.getall("Strict-Transport-Security") == [HSTS]
    async with client.get(nginx.url + "/ui", allow_redirects=False) as response:
        assert (response.status, response.headers["Location"]) == (308, "ui/")
    await nginx.access_log(r'"GET /ui/ HTTP/1\.1" 200 ')


async def test_access_log_leaves_out_the_verify_token(
    client: aiohttp.ClientSession, nginx: Nginx, service: Service
) -> None:
    query = {"hub.mode": "subscribe", "hub.verify_token": "SECRETVALUE", "hub.challenge": "c-7"}
    async with client.get(nginx.url + "/webhooks/meta", params=query) as response:
        assert response.status == 403  # a wrong token is a secret someone tried, too
    right = {**query, "hub.verify_token": VERIFY_TOKEN}
    async with client.get(nginx.url + "/webhooks/meta", params=right) as response:
        assert (response.status, await response.text()) == (200, "c-7")
    plain = f"http://127.0.0.1:{nginx.http_port}/webhooks/meta"
    async with client.get(plain, params=query, allow_redirects=False) as response:
        assert response.status == 301

    line = rf'^{re.escape(CLIENT_IP)} - - \[[^]]+\] "GET /webhooks/meta HTTP/1\.1" '
    log = await nginx.access_log(*(line + f"{status} " for status in (403, 200, 301)))
    assert "SECRETVALUE" not in log and VERIFY_TOKEN not in log and "hub." not in log
    assert "SECRETVALUE" not in service.log.read_text()  # the service logs paths only


async def test_forwarded_headers_are_believed_only_from_the_configured_proxy(
    service: Service,
) -> None:
    forwarded = {"X-Forwarded-For": "198.51.100.7"}
    direct = f"http://127.0.0.1:{service.port}/healthz"
    for source in (CLIENT_IP, "127.0.0.1"):  # not a configured proxy, then the one that is
        connector = aiohttp.TCPConnector(local_addr=(source, 0))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(direct, headers=forwarded) as response,
        ):
            assert response.status == 200
    health = await service.clients('"GET /healthz"', at_least=2)
    assert health == [CLIENT_IP, "198.51.100.7"]


async def test_body_cap_is_the_services_and_enforced_by_nginx(
    client: aiohttp.ClientSession, nginx: Nginx, service: Service
) -> None:
    status, text, headers = await post_webhook(client, nginx.url, b"x" * (MAX_BODY_BYTES + 1))
    assert status == 413 and "nginx" in text.lower() and headers["Server"] == "nginx"

    body = status_webhook("APPROVED", 1_780_000_300)
    padded = body[:-1] + b" " * (MAX_BODY_BYTES - len(body)) + b"}"
    assert len(padded) == MAX_BODY_BYTES  # exactly at the cap: through, verified, applied
    assert (await post_webhook(client, nginx.url, padded))[0] == 200
    assert (await template_status(client, nginx, service))["status"] == "APPROVED"
    assert not [line for _, line in service.access_lines() if " 413 " in line]  # nginx's 413


def trickle_header(port: int, pki: Pki) -> tuple[float, bytes]:
    """Send a header one byte per second: it never completes within client_header_timeout."""
    sock = socket.create_connection(("127.0.0.1", port), source_address=(CLIENT_IP, 0))
    with client_tls(pki).wrap_socket(sock, server_hostname="localhost") as tls:
        started = time.monotonic()
        tls.sendall(b"POST /webhooks/meta HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        return _until_closed(tls, started, lambda: tls.sendall(b"a"))


def stall_body(port: int, pki: Pki) -> tuple[float, bytes]:
    """Complete headers, 100 of 1000 body bytes, then silence beyond client_body_timeout."""
    sock = socket.create_connection(("127.0.0.1", port), source_address=(CLIENT_IP, 0))
    with client_tls(pki).wrap_socket(sock, server_hostname="localhost") as tls:
        started = time.monotonic()
        tls.sendall(
            b"POST /webhooks/meta HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n"
            b"X-Hub-Signature-256: sha256=00\r\nContent-Type: application/json\r\n\r\n" + b"{" * 100
        )
        return _until_closed(tls, started, lambda: None)


def _until_closed(tls: ssl.SSLSocket, started: float, tick: Any) -> tuple[float, bytes]:
    tls.settimeout(1.0)
    received = b""
    while time.monotonic() - started < 30:
        try:
            chunk = tls.recv(4096)
        except TimeoutError:
            try:
                tick()
            except OSError:
                break
            continue
        except (OSError, ssl.SSLError):
            break
        if not chunk:
            break
        received += chunk
    return time.monotonic() - started, received


async def test_slow_clients_are_cut_off_by_nginx(nginx: Nginx, service: Service, pki: Pki) -> None:
    await asyncio.sleep(0.5)  # earlier tests' access lines are written by now
    before = len(service.access_lines())
    (header_s, header_reply), (body_s, body_reply) = await asyncio.gather(
        asyncio.to_thread(trickle_header, nginx.https_port, pki),
        asyncio.to_thread(stall_body, nginx.https_port, pki),
    )
    assert 9 <= header_s < 15, header_s
    assert 9 <= body_s < 15, body_s
    # nginx 1.22 closes without an answer; its documentation mentions a 408 for the body
    assert header_reply == b""
    assert body_reply == b"" or body_reply.startswith(b"HTTP/1.1 408")
    assert len(service.access_lines()) == before  # the service never saw either


# --- the body and headers nginx hands on, and the optional mTLS block ----------------------


@dataclass
class Recorder:
    """An upstream that records what nginx sends it."""

    port: int
    requests: list[tuple[dict[str, str], bytes]]


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    requests: list[tuple[dict[str, str], bytes]] = []

    async def record(request: web.Request) -> web.Response:
        requests.append((dict(request.headers), await request.read()))
        return web.Response(text="recorded")

    app = web.Application(client_max_size=MAX_BODY_BYTES * 2)
    app.router.add_route("*", "/{tail:.*}", record)
    port = free_port()
    runner = await serve_app(app, port=port)
    try:
        yield Recorder(port, requests)
    finally:
        await runner.cleanup()


async def start_in_thread(
    nginx_binary: str, recorder: Recorder, pki: Pki, prefix: Path, mtls: bool
) -> Nginx:
    https_port, http_port = free_port(), free_port()
    site = site_config(recorder.port, https_port, http_port, pki, mtls=mtls)
    return await asyncio.to_thread(start_nginx, nginx_binary, prefix, site, https_port, http_port)


async def test_body_and_headers_reach_the_upstream_unaltered(
    nginx_binary: str, recorder: Recorder, pki: Pki, tmp_path: Path
) -> None:
    proxy = await start_in_thread(nginx_binary, recorder, pki, tmp_path / "nginx", mtls=False)
    odd = (
        '{"entry": [ {"id":"1", "note":"caf\u00e9 \\u00e9 \\\\ \\"\\r\\n"}\r\n\t],'
        + " " * 2_000_000
        + '"object":"whatsapp_business_account"}  \n'
    ).encode()
    connector = aiohttp.TCPConnector(ssl=client_tls(pki), local_addr=(CLIENT_IP, 0))
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            headers = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "http"}
            assert (await post_webhook(session, proxy.url, odd, **headers))[0] == 200

            async def chunks() -> AsyncIterator[bytes]:
                for start in range(0, len(odd), 65_536):
                    yield odd[start : start + 65_536]

            sent = {"X-Hub-Signature-256": sign(odd)}  # chunked: no Content-Length from us
            async with session.post(proxy.url + "/webhooks/meta", data=chunks(), headers=sent) as r:
                assert r.status == 200
    finally:
        await asyncio.to_thread(stop, proxy.process)
    for seen, body in recorder.requests:
        assert body == odd
        assert seen["X-Hub-Signature-256"] == sign(odd)
        assert seen["Host"] == "localhost"
        assert seen["X-Forwarded-For"] == CLIENT_IP
        assert seen["X-Forwarded-Proto"] == "https"
        assert seen["Content-Length"] == str(len(odd))
    assert recorder.requests[0][0]["Content-Type"] == "application/json"
    assert len(recorder.requests) == 2


async def test_optional_mtls_block_admits_only_metas_client_certificate(
    nginx_binary: str, recorder: Recorder, pki: Pki, tmp_path: Path
) -> None:
    proxy = await start_in_thread(nginx_binary, recorder, pki, tmp_path / "nginx", mtls=True)
    body = status_webhook("APPROVED", 1_780_000_000)
    outcomes = {}
    try:
        for name, cert in (("meta", pki.meta_client), ("other", pki.other_client), ("none", None)):
            connector = aiohttp.TCPConnector(ssl=client_tls(pki, cert), local_addr=(CLIENT_IP, 0))
            async with aiohttp.ClientSession(connector=connector) as session:
                outcomes[name] = (await post_webhook(session, proxy.url, body))[0]
                async with session.get(proxy.url + "/healthz") as response:
                    outcomes[name + " healthz"] = response.status
    finally:
        await asyncio.to_thread(stop, proxy.process)
    assert outcomes == {
        "meta": 200, "meta healthz": 200,
        "other": 403, "other healthz": 200,
        "none": 403, "none healthz": 200,
    }  # fmt: skip
    assert [body_ for _, body_ in recorder.requests].count(body) == 1


# --- deploy/compose.yaml's nginx: /metrics is not for the compose network ----------------


def compose_site(directory: Path) -> str:
    """The site file as compose.yaml's nginx builds it: the command's own shell line, up to
    `exec nginx`, run here with the mounted file's real path and a scratch output."""
    nginx = yaml.safe_load(COMPOSE.read_text())["services"]["nginx"]
    mounts = {m.split(":")[1]: COMPOSE.parent / m.split(":")[0] for m in nginx["volumes"]}
    shell, flag, line = nginx["command"]
    build, _, start = line.partition(" && exec ")
    assert (shell, flag, start.split()[0]) == ("sh", "-c", "nginx")
    output = re.fullmatch(r".* > (/etc/nginx/conf\.d/\S+\.conf)", build)
    assert output, build  # a file the nginx image includes in its http {} block
    build = build.replace(output[1], str(directory / "compose-site.conf"))
    for inside, outside in mounts.items():
        build = build.replace(inside, str(outside))
    assert str(SITE) in build, build  # it edits the shipped site file, mounted
    subprocess.run(["sh", "-c", build], check=True, timeout=10)
    return (directory / "compose-site.conf").read_text()


def compose_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Every subnet compose.yaml declares; Docker's default pools for a network without."""
    found = []
    for network in (yaml.safe_load(COMPOSE.read_text()).get("networks") or {}).values():
        configs = ((network or {}).get("ipam") or {}).get("config") or []
        subnets = [c["subnet"] for c in configs if "subnet" in c]
        found += [ipaddress.ip_network(s) for s in subnets or ["172.16.0.0/12", "192.168.0.0/16"]]
    return found


def admits(site: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    """Whether `location = /metrics` lets any address of `network` through: nginx applies
    the first allow/deny rule that matches, and allows when none does."""
    block = re.search(r"location = /metrics \{(.*?)\}", site, re.DOTALL)
    assert block, "no location = /metrics"
    for action, source in re.findall(r"^\s*(allow|deny)\s+(\S+);", block[1], re.MULTILINE):
        rule = network if source == "all" else ipaddress.ip_network(source, strict=False)
        if rule.version != network.version:
            continue
        if action == "allow" and network.overlaps(rule):
            return True
        if action == "deny" and network.subnet_of(rule):
            return False
    return True


async def test_compose_nginx_refuses_metrics_to_everyone(
    nginx_binary: str, recorder: Recorder, pki: Pki, tmp_path: Path
) -> None:
    site = compose_site(tmp_path)
    networks = compose_networks()
    assert ipaddress.ip_network("172.30.0.0/24") in networks
    assert [str(n) for n in networks if admits(site, n)] == []
    assert not admits(site, ipaddress.ip_network("127.0.0.1/32"))  # nor through the port

    # the same text runs in nginx: /metrics refused even from nginx's own host, the rest works
    assert site.count("server app:8000;") == 1
    site = site.replace("server app:8000;", "server 127.0.0.1:8000;")
    https_port, http_port = free_port(), free_port()
    text = site_config(recorder.port, https_port, http_port, pki, text=site)
    proxy = await asyncio.to_thread(
        start_nginx, nginx_binary, tmp_path / "nginx", text, https_port, http_port
    )
    statuses = {}
    try:
        for source in (CLIENT_IP, "127.0.0.1"):
            connector = aiohttp.TCPConnector(ssl=client_tls(pki), local_addr=(source, 0))
            async with aiohttp.ClientSession(connector=connector) as session:
                for path in ("/metrics", "/healthz"):
                    async with session.get(proxy.url + path) as response:
                        statuses[source, path] = response.status
    finally:
        await asyncio.to_thread(stop, proxy.process)
    assert statuses == {
        (CLIENT_IP, "/metrics"): 403, (CLIENT_IP, "/healthz"): 200,
        ("127.0.0.1", "/metrics"): 403, ("127.0.0.1", "/healthz"): 200,
    }  # fmt: skip
    assert len(recorder.requests) == 2


async def test_an_event_reaches_a_stream_through_nginx_within_a_second(
    client: aiohttp.ClientSession, nginx: Nginx, service: Service
) -> None:
    path = f"/api/v3/workspaces/{service.workspace_id}/events"
    headers = {"Authorization": f"Bearer {service.api_token}"}
    async with client.get(nginx.url + path, headers=headers) as response:
        assert response.status == 200 and response.content_type == "text/event-stream"
        body = meta_webhooks.status_delivery(
            waba_id=WABA_ID, template_id="990000000000042", event="APPROVED", name="streamed",
            language="en_US", entry_time=1_780_000_400,
        )  # fmt: skip
        assert (await post_webhook(client, nginx.url, body))[0] == 200
        delivered_at = time.monotonic()
        events = await Stream(response).events(2)  # nginx buffers none of it
        assert time.monotonic() - delivered_at < 1.0
        assert response.connection is not None and response.connection.transport is not None
        # Gone without TLS's goodbye: nginx answers one only when it next writes (the next
        # keep-alive comment), after this test's event loop has closed.
        response.connection.transport.abort()
    assert [e["event"] for e in events] == ["template.created", "template.status_changed"]
    assert json.loads(events[1]["data"])["data"]["template"]["provider_id"] == "990000000000042"
