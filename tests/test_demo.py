"""The demo helpers: signed webhooks sent to the service, the simulator command, the whole loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from service import demo
from service.demo import DemoError, run_demo, run_simulator, send_webhook
from service.simulator import make_templates
from service.storage import Store
from tests.conftest import APP_SECRET, WABA_ID, Server, Tenant, add_template
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
async def test_run_demo_runs_the_whole_loop(tmp_path: Path) -> None:
    lines: list[str] = []
    try:
        await run_demo(tmp_path, say=lines.append)
    finally:
        print("\n".join(lines))  # shown by pytest when the test fails
    text = "\n".join(lines)
    assert "is PENDING (status as registered)" in text
    assert "is APPROVED (status from the webhook)" in text
    assert "is REJECTED (status from the sync, reason INVALID_FORMAT)" in text
    assert re.search(r'templates/sync -> 200 \{.*"updated": 1', text)
    assert "No pending templates found" in text
    assert re.search(r"the sync made (1 Graph API call|[2-9][0-9]* Graph API calls) ", text)
    assert [line for line in lines if "None" in line] == []  # Python's None is not an answer
    assert lines[-1].startswith("demo complete")
    assert (tmp_path / "demo.db").exists()
    log = (tmp_path / "service.log").read_text()
    assert "Finished server process" in log  # stopped gracefully
    assert "EAAG" not in log  # the Meta token never reaches the log
    port = int(re.findall(r"service running on http://127.0.0.1:(\d+)", text)[0])
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


async def test_run_demo_reports_a_service_that_does_not_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_env = demo._service_env

    def broken_env(*args: Any) -> dict[str, str]:
        return {**real_env(*args), "TEMPLATE_SYNC_DATABASE_URL": "mysql://nowhere/db"}

    monkeypatch.setattr(demo, "_service_env", broken_env)
    lines: list[str] = []
    with pytest.raises(DemoError, match=r"(?s)service exited with 1.*DATABASE_URL must start"):
        await run_demo(tmp_path, say=lines.append)
    assert not any("service running" in line for line in lines)
