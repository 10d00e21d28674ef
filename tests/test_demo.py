"""The demo helpers: signed webhooks sent to the service, the simulator command, the receivers
standing for the application, and the whole loop as `make demo` runs it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from standardwebhooks import Webhook

from service import demo, demo_receivers
from service.crypto import TOKEN_PREFIX
from service.demo import DemoError, post_delivery, run_demo, run_simulator, send_webhook
from service.demo_process import ServiceProcess, service_env
from service.demo_receivers import Notified, check_notification, check_relayed, receiving
from service.meta_webhooks import status_delivery
from service.signing import new_secret
from service.simulator import make_templates
from service.storage import Store
from tests.conftest import APP_SECRET, WABA_ID, Server, Tenant, add_template
from tests.service_process import REPO, run_cli
from tests.waiting import eventually

TEMPLATE_ID = "1689556908129832"


async def test_send_webhook_changes_the_template(
    server: Server, store: Store, tenant: Tenant
) -> None:
    local_id = await add_template(store, tenant, TEMPLATE_ID, name="order_confirmation")
    url = server.base_url + "/webhooks/meta"
    status, text = await send_webhook(
        url, APP_SECRET, waba_id=WABA_ID, template_id=TEMPLATE_ID, event="REJECTED",
        name="order_confirmation", language="en_US", reason="INVALID_FORMAT",
    )  # fmt: skip
    assert (status, json.loads(text)) == (200, {"success": True})
    _, body, _ = await server.api(tenant, f"/templates/{local_id}")
    assert body["data"]["status"] == "REJECTED"
    assert body["data"]["rejected_reason"] == "INVALID_FORMAT"
    assert body["data"]["status_source"] == "webhook"

    status, _ = await send_webhook(
        url, APP_SECRET, waba_id=WABA_ID, template_id=TEMPLATE_ID, event="APPROVED",
        name="order_confirmation", language="en_US", session=server.session,
    )  # fmt: skip
    assert status == 200
    _, body, _ = await server.api(tenant, f"/templates/{local_id}")
    assert (body["data"]["status"], body["data"]["rejected_reason"]) == ("APPROVED", None)


async def test_send_webhook_with_a_wrong_secret_is_refused(server: Server, tenant: Tenant) -> None:
    status, text = await send_webhook(
        server.base_url + "/webhooks/meta", "not-the-secret", waba_id=WABA_ID,
        template_id=TEMPLATE_ID, event="APPROVED", name="x", language="en_US",
    )  # fmt: skip
    assert status == 401
    assert json.loads(text)["success"] is False


async def test_send_webhook_creates_unknown_template_with_non_ascii_name(
    server: Server, tenant: Tenant
) -> None:
    status, _ = await send_webhook(
        server.base_url + "/webhooks/meta", APP_SECRET, waba_id=WABA_ID, template_id="77",
        event="APPROVED", name="bestätigung_ü", language="de",
    )  # fmt: skip
    assert status == 200
    _, body, _ = await server.api(tenant, "/templates", params={"provider_id": "77"})
    assert [(t["name"], t["status"]) for t in body["data"]] == [("bestätigung_ü", "APPROVED")]


async def test_run_simulator_serves_seeded_waba_until_cancelled() -> None:
    lines: list[str] = []
    simulator = run_simulator(
        "127.0.0.1", 0, waba_id=WABA_ID, token="sim-token", templates=30, pending=3,
        app_secret=None, say=lines.append,
    )  # fmt: skip
    task = asyncio.create_task(simulator)
    try:
        graph_url = await _printed_graph_url(lines, task)
        root = graph_url.rsplit("/", 1)[0]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{root}/_sim/wabas/{WABA_ID}/templates") as response:
                seeded = (await response.json())["data"]
            headers = {"Authorization": "Bearer sim-token"}
            params = {"status": "PENDING", "limit": "100"}
            async with http.get(
                f"{graph_url}/{WABA_ID}/message_templates", headers=headers, params=params
            ) as response:
                pending = (await response.json())["data"]
        assert len(seeded) == 30
        expected = [t["id"] for t in make_templates(WABA_ID, 30, pending=3)[-3:]]
        assert [t["id"] for t in pending] == expected
        assert any(" ".join(expected) in line for line in lines)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert lines[-1] == "simulator stopped"
    assert "sim-token" not in "\n".join(lines)


async def _printed_graph_url(lines: list[str], task: asyncio.Task[None]) -> str:
    def printed() -> str | None:
        for line in lines:
            if match := re.search(r"TEMPLATE_SYNC_GRAPH_URL=(\S+)", line):
                return match.group(1)
        assert not task.done(), task
        return None

    return await eventually(printed, message=lambda: f"no Graph URL printed: {lines}")


@pytest.mark.timeout(60)
async def test_make_demo_runs_the_whole_loop(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code, out, err = await run_cli(env, tmp_path, "demo", "--workdir", str(tmp_path / "demo"))
    print(out, err)  # shown by pytest when the test fails
    assert code == 0
    lines = out.splitlines()
    text = "\n".join(lines)
    assert "is PENDING (status as registered)" in text
    assert "is APPROVED (status from the webhook)" in text
    assert "is REJECTED (status from the sync, reason INVALID_FORMAT)" in text
    assert re.search(r'templates/sync -> 200 \{.*"updated": 1', text)
    assert "No pending templates found" in text
    assert re.search(r"the sync made (1 Graph API call|[2-9][0-9]* Graph API calls) ", text)
    assert re.search(r"relay added: .* to http://127\.0\.0\.1:\d+/webhook, standing for", text)
    assert re.search(r"webhook added: http://127\.0\.0\.1:\d+/\S+, standing for an app", text)
    assert re.search(
        r"relay: your handler got Meta's exact \d+ bytes \(delivery \d+\), and their "
        r"X-Hub-Signature-256 verifies with the app secret", text,
    )  # fmt: skip
    signed = "; its webhook-signature verifies with the subscription's secret"
    approved = r"template\.status_changed, \w+ PENDING -> APPROVED \(from the webhook\)"
    rejected = r"template\.status_changed, \w+ PENDING -> REJECTED \(from the sync\)"
    assert re.search(f"notification: the app got {approved}{re.escape(signed)}", text)
    assert re.search(f"notification: the app got {rejected}{re.escape(signed)}", text)
    _assert_created_and_reviewed(text)
    assert [line for line in lines if "None" in line] == []  # Python's None is not an answer
    assert "whsec_" not in text  # the subscription's secret is never shown
    assert re.fullmatch(r"demo complete in \d+ s: .*by the poller.*reached APPROVED.*", lines[-1])
    assert (tmp_path / "demo" / "demo.db").exists()
    log = (tmp_path / "demo" / "service.log").read_text()
    assert "Finished server process" in log  # stopped gracefully
    poll_log = (tmp_path / "demo" / "poller.log").read_text()
    assert "1 repaired" in poll_log
    for written in (log, poll_log):
        assert "EAAG" not in written  # the Meta token never reaches a log
        assert "whsec_" not in written
    for port in re.findall(r"http://127\.0\.0\.1:(\d+)[/ ]", text):  # service and receivers
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()


def _assert_created_and_reviewed(text: str) -> None:
    """Steps C and D: created through the API, approved by the reviewer's webhook, then
    approved with the webhook dropped and the poller repairing it."""
    workspaces = r"http://127\.0\.0\.1:\d+/api/v3/workspaces/[0-9a-f-]+"
    auth = r'-H "Authorization: Bearer \$TOKEN"'
    assert re.search(f'curl -X POST {workspaces}/templates {auth} -d \'{{"name": ', text)
    assert TOKEN_PREFIX not in text  # the demo's bearer token is never shown
    verdict = r"wait_for=APPROVED,REJECTED&timeout=\d+ -> APPROVED after \d+\.\d s "
    signed = "; each webhook-signature verifies with the subscription's secret"
    for name, source in [("demo_order_shipped", "webhook"), ("demo_order_delayed", "sync")]:
        assert re.search(f"created {name}: PENDING, Meta id \\d+ \\(201\\)", text)
        change = f"{name} new -> PENDING \\(as registered\\), then PENDING -> APPROVED"
        assert re.search(f"notifications: the app got template\\.status_changed, {change} "
                         f"\\(from the {source}\\){re.escape(signed)}", text)  # fmt: skip
    webhook, poller = re.findall(f"{verdict}\\(status from the (\\w+)\\)", text)
    assert (webhook, poller) == ("webhook", "sync")
    assert "POLL_GRACE_S=2 POLL_INTERVAL_S=2 POLL_TICK_S=0.5" in text
    assert "its APPROVED webhook was dropped, never sent" in text
    assert "the sync that repaired it was the poller's (trigger poller)" in text


async def test_run_demo_reports_a_service_that_does_not_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_env = demo.service_env

    def broken_env(*args: Any) -> dict[str, str]:
        return {**real_env(*args), "TEMPLATE_SYNC_DATABASE_URL": "mysql://nowhere/db"}

    monkeypatch.setattr(demo, "service_env", broken_env)
    lines: list[str] = []
    with pytest.raises(DemoError, match=r"(?s)service exited with 1.*DATABASE_URL must start"):
        await run_demo(tmp_path, say=lines.append)
    assert not any("service running" in line for line in lines)


# --- the receivers standing for the application ----------------------------------------------


async def test_relay_receiver_accepts_meta_bytes_signed_with_the_app_secret() -> None:
    body = status_delivery(
        waba_id=WABA_ID, template_id=TEMPLATE_ID, event="APPROVED", name="café", language="fr"
    )
    async with receiving("the handler", "/webhook") as handler:
        status, _ = await post_delivery(handler.url, APP_SECRET, body)
        assert status == 200
        receipt = await handler.next()
        assert check_relayed(receipt, body, APP_SECRET) == "-"  # no relay header: not relayed
        with pytest.raises(DemoError, match="X-Hub-Signature-256 does not verify"):
            check_relayed(receipt, body, "another-app-secret")
        with pytest.raises(DemoError, match="not the"):
            check_relayed(receipt, body + b" ", APP_SECRET)


@pytest.mark.parametrize(("previous", "before"), [({"status": "PENDING"}, "PENDING"), (None, None)])
async def test_subscriber_verifies_what_the_reference_library_signs(
    previous: dict[str, str] | None, before: str | None
) -> None:
    secret = new_secret()
    sent = {
        "type": "template.status_changed",
        "data": {"source": "sync", "previous": previous,
                 "template": {"name": "bestätigung", "status": "REJECTED"}},
    }  # fmt: skip
    body = json.dumps(sent)
    stamp = datetime.now(UTC)
    headers = {
        "webhook-id": "evt_7",
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": Webhook(secret).sign("evt_7", stamp, body),
    }
    async with receiving("the app", "/events") as app, aiohttp.ClientSession() as http:
        async with http.post(app.url, data=body.encode(), headers=headers) as response:
            assert response.status == 200
        receipt = await app.next()
    got = check_notification(receipt, secret, time.time())
    assert got == Notified("template.status_changed", "bestätigung", before, "REJECTED", "sync")
    with pytest.raises(DemoError, match="does not verify with the secret"):
        check_notification(receipt, new_secret(), time.time())
    with pytest.raises(DemoError, match="not within 5 min"):
        check_notification(receipt, secret, time.time() + 301)


async def test_receiver_says_when_nothing_arrives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_receivers, "RECEIVE_TIMEOUT_S", 0.05)
    async with receiving("your webhook handler", "/webhook") as handler:
        with pytest.raises(DemoError, match="your webhook handler received nothing"):
            await handler.next()


# --- the poller the demo runs for step D -------------------------------------------------------


def _poller(workdir: Path, **env: str) -> ServiceProcess:
    workdir.mkdir()
    demo_env = service_env(workdir, APP_SECRET, "http://127.0.0.1:9/v25.0", "EAAG-unused")
    return ServiceProcess(workdir, {**demo_env, **env})


async def test_polling_adds_the_poller_log_to_an_error_once_it_exited(tmp_path: Path) -> None:
    service = _poller(tmp_path / "demo", TEMPLATE_SYNC_DATABASE_URL="mysql://nowhere/db")
    with pytest.raises(DemoError, match=r"(?s)^no verdict\nthe poller had exited with 1.*DATABASE"):
        async with service.polling() as process:
            await asyncio.wait_for(process.wait(), 30)
            raise DemoError("no verdict")


@pytest.mark.timeout(60)
async def test_polling_passes_an_error_on_and_stops_the_running_poller(tmp_path: Path) -> None:
    service = _poller(tmp_path / "demo")

    def started() -> bool:
        return "polling every 0.5 s" in service.poll_log.read_text()

    with pytest.raises(DemoError, match=r"^no verdict$"):
        async with service.polling() as process:
            await eventually(started, 30, message=lambda: service.poll_log.read_text())
            raise DemoError("no verdict")
    assert process.returncode == 0  # stopped gracefully by SIGTERM
