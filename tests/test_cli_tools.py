"""The offline tools' commands run for real: `send-webhook` to an https service whose
certificate is made here and trusted only through `--cacert`."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from cryptography import x509

from service.app import create_app
from service.config import Settings
from service.storage import Store

from .certificates import issue
from .conftest import WABA_ID, Tenant, add_template, until_started
from .service_process import run_cli, service_env

# TLS is the same whatever the store: SQLite only.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
TEMPLATE_ID = "1689556908129832"


@dataclass
class TlsService:
    url: str  # https://127.0.0.1:PORT
    ca: Path  # the CA that signed its certificate, trusted by nobody else


@pytest.fixture
async def tls_service(
    settings: Settings, store: Store, tmp_path: Path
) -> AsyncIterator[TlsService]:
    """The service over https on loopback, with a certificate of a CA made for the test."""
    ca_cert, ca_key, ca_path, _ = issue(tmp_path, "ca", "send-webhook test CA", None)
    san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    _, _, cert, key = issue(tmp_path, "server", "127.0.0.1", (ca_cert, ca_key), san=san)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        create_app(settings), log_config=None, access_log=False, lifespan="on",
        ssl_certfile=str(cert), ssl_keyfile=str(key),
    )  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await until_started(server, task)
    try:
        yield TlsService(f"https://127.0.0.1:{sock.getsockname()[1]}", ca_path)
    finally:
        server.should_exit = True
        await task


def send_args(url: str, *extra: str) -> list[str]:
    return ["send-webhook", "--url", f"{url}/webhooks/meta", "--waba-id", WABA_ID,
            "--template-id", TEMPLATE_ID, "--name", "order_confirmation", *extra]  # fmt: skip


async def status_of(store: Store, tenant: Tenant, local_id: int) -> str:
    template = await store.get_template(tenant.workspace_id, local_id)
    assert template is not None
    return template.status


async def test_send_webhook_trusts_a_self_signed_service_through_cacert(
    tls_service: TlsService, settings: Settings, store: Store, tenant: Tenant, tmp_path: Path
) -> None:
    local_id = await add_template(store, tenant, TEMPLATE_ID, name="order_confirmation")
    env = service_env(settings)
    code, out, err = await run_cli(env, tmp_path, *send_args(tls_service.url))
    assert code == 1 and out == "" and "Traceback" not in err
    assert "could not verify" in err and "--cacert FILE" in err
    assert await status_of(store, tenant, local_id) == "PENDING"

    cacert = ("--cacert", str(tls_service.ca))
    code, out, err = await run_cli(env, tmp_path, *send_args(tls_service.url, *cacert))
    assert (code, out.strip()) == (0, '200 {"success":true}'), err
    assert await status_of(store, tenant, local_id) == "APPROVED"


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "No such file or directory"), (b"", "no PEM certificate"),
     (b"not a certificate\n", "no PEM certificate")],
)  # fmt: skip
async def test_send_webhook_says_what_is_wrong_with_the_cacert_file(
    settings: Settings, tmp_path: Path, content: bytes | None, message: str
) -> None:
    cacert = tmp_path / "ca.pem"
    if content is not None:
        cacert.write_bytes(content)
    args = send_args("https://127.0.0.1:9", "--cacert", str(cacert))
    code, out, err = await run_cli(service_env(settings), tmp_path, *args)
    assert code == 1 and out == "" and "Traceback" not in err
    assert f"--cacert {cacert}: {message}" in err
