"""Signed outbound webhooks over the API and the CLI, on both backends: shapes, the secret
shown once, tenant isolation, refused URLs and event types, and `template-sync webhook`."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from service.api_webhooks import MAX_BODY_BYTES
from service.config import Settings
from service.crypto import TokenCipher
from service.meta_webhooks import status_delivery
from service.storage import Store
from service.subscriptions import EVENT_CHOICES, MAX_PER_WORKSPACE

from .conftest import WABA_ID, Server, Tenant, make_tenant, serving
from .service_process import run_cli, service_env
from .test_dispatch import Receiver, receiver_fixture  # noqa: F401 (a fixture)
from .waiting import eventually

# A public address, so the URL passes without WEBHOOKS_ALLOW_PRIVATE and without DNS; no test
# commits an event after registering it, so nothing is ever sent there.
PUBLIC_URL = "https://93.184.215.14/hooks/template-sync?team=7&token=t0ken"
MASKED_URL = "https://93.184.215.14/hooks/template-sync?team=***&token=***"
SECRET = re.compile(r"whsec_[A-Za-z0-9+/]{32}")  # base64 of 24 bytes: 32 characters, no padding
ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
CREATED_KEYS = {"id", "url", "events", "enabled", "secret", "created_at"}
LISTED_KEYS = {
    "id", "url", "events", "enabled", "disabled_reason", "created_at", "last_success_at",
    "failing_since",
}  # fmt: skip
DELIVERY_KEYS = {"event_id", "type", "attempt", "status_code", "error", "at", "next_attempt_at"}
NOWHERE = "00000000-0000-4000-8000-000000000000"
Run = Callable[..., Awaitable[tuple[int, str, str]]]


def webhooks_path(tenant: Tenant, suffix: str = "") -> str:
    return f"/api/v3/workspaces/{tenant.workspace_id}/webhooks{suffix}"


async def call(
    server: Server, tenant: Tenant, method: str, suffix: str = "", **kwargs: Any
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {tenant.token}", **kwargs.pop("headers", {})}
    status, body, _ = await server.request(
        method, webhooks_path(tenant, suffix), headers=headers, **kwargs
    )
    return status, body


async def created(server: Server, tenant: Tenant, **document: Any) -> dict[str, Any]:
    status, body = await call(server, tenant, "POST", json={"url": PUBLIC_URL, **document})
    assert status == 201, body
    data: dict[str, Any] = body["data"]
    return data


@pytest.fixture
async def private_server(settings: Settings, store: Store) -> AsyncIterator[Server]:
    """The service with TEMPLATE_SYNC_WEBHOOKS_ALLOW_PRIVATE: loopback receivers allowed."""
    async with serving(replace(settings, webhooks_allow_private=True)) as served:
        yield served


async def test_created_webhook_has_the_contract_shape_and_its_secret_is_stored_encrypted(
    server: Server, store: Store, tenant: Tenant, settings: Settings
) -> None:
    status, body = await call(server, tenant, "POST", json={"url": PUBLIC_URL})
    assert status == 201 and body["success"] is True
    data = body["data"]
    assert set(data) == CREATED_KEYS
    assert (data["url"], data["events"], data["enabled"]) == (PUBLIC_URL, None, True)
    assert SECRET.fullmatch(data["secret"]) and ISO_Z.fullmatch(data["created_at"])
    [stored] = await store.list_subscriptions(tenant.workspace_id)
    assert stored.id == data["id"] and stored.events == ()
    assert data["secret"] not in stored.secret_enc
    assert TokenCipher(settings.encryption_keys).decrypt(stored.secret_enc) == data["secret"]


async def test_events_are_kept_each_once_in_order(server: Server, tenant: Tenant) -> None:
    events = ["template.status_changed", "template.created", "template.status_changed"]
    data = await created(server, tenant, events=events)
    assert data["events"] == ["template.status_changed", "template.created"]
    assert (await created(server, tenant, events=None))["events"] is None


async def test_the_secret_is_shown_only_at_creation(server: Server, tenant: Tenant) -> None:
    first = await created(server, tenant)
    second = await created(server, tenant, events=["template.quality_changed"])
    assert first["secret"] != second["secret"]
    status, body = await call(server, tenant, "GET")
    assert status == 200 and [item["id"] for item in body["data"]] == [first["id"], second["id"]]
    for item in body["data"]:
        assert set(item) == LISTED_KEYS
        assert (item["enabled"], item["disabled_reason"]) == (True, None)
        assert (item["last_success_at"], item["failing_since"]) == (None, None)
    assert body["data"][1]["events"] == ["template.quality_changed"]
    _, enabled = await call(server, tenant, "POST", f"/{first['id']}/enable")
    _, deliveries = await call(server, tenant, "GET", f"/{first['id']}/deliveries")
    for answer in (body, enabled, deliveries):
        assert "whsec_" not in json.dumps(answer)


async def test_delete_drops_the_webhook(server: Server, tenant: Tenant) -> None:
    data = await created(server, tenant)
    assert await call(server, tenant, "DELETE", f"/{data['id']}") == (200, {"success": True})
    assert (await call(server, tenant, "GET"))[1]["data"] == []
    for method, suffix in [("DELETE", ""), ("POST", "/enable"), ("GET", "/deliveries")]:
        status, body = await call(server, tenant, method, f"/{data['id']}{suffix}")
        assert (status, body) == (404, {"success": False, "message": "Webhook not found"})


@pytest.mark.parametrize("webhook_id", ["wh_000000000000", "x" * 65, "a%00b", "a.b"])
async def test_an_unknown_webhook_is_404(server: Server, tenant: Tenant, webhook_id: str) -> None:
    for method, suffix in [("DELETE", ""), ("POST", "/enable"), ("GET", "/deliveries")]:
        status, body = await call(server, tenant, method, f"/{webhook_id}{suffix}")
        assert (status, body) == (404, {"success": False, "message": "Webhook not found"})


async def test_another_workspace_sees_none_of_them(
    server: Server, store: Store, tenant: Tenant, settings: Settings
) -> None:
    data = await created(server, tenant)
    other = await make_tenant(store, settings, waba_id="999999999999999")
    assert (await call(server, other, "GET"))[1]["data"] == []
    for method, suffix in [("DELETE", ""), ("POST", "/enable"), ("GET", "/deliveries")]:
        status, body = await call(server, other, method, f"/{data['id']}{suffix}")
        assert (status, body["message"]) == (404, "Webhook not found")
        for workspace_id in (tenant.workspace_id, NOWHERE):  # other's token, not its workspace
            path = f"/api/v3/workspaces/{workspace_id}/webhooks/{data['id']}{suffix}"
            headers = {"Authorization": f"Bearer {other.token}"}
            status, body, _ = await server.request(method, path, headers=headers)
            assert (status, body["message"]) == (404, "Workspace not found")
    status, body, headers = await server.request("POST", webhooks_path(tenant), json={})
    assert (status, body["message"], headers["WWW-Authenticate"]) == (
        401, "Unauthenticated", "Bearer",
    )  # fmt: skip
    assert len(await store.list_subscriptions(tenant.workspace_id)) == 1


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        (b"not json", "body", "JSON object"),
        (b"[]", "body", "JSON object"),
        (b'"https://93.184.215.14/"', "body", "JSON object"),
        (b"\xff\xfe", "body", "JSON object"),
        (b"[" * 10_000, "body", "JSON object"),  # nested too deep to parse
        (b"{}", "url", "required"),
        (b'{"url": null}', "url", "required"),
        (b'{"url": 42}', "url", "string"),
        (b'{"url": "ftp://93.184.215.14/"}', "url", "https:// or http://"),
        (b'{"url": "https://"}', "url", "host"),
        (b'{"url": "https://user:pw@93.184.215.14/"}', "url", "password"),
        (b'{"url": "http://127.0.0.1:9/hook"}', "url", "loopback"),
        (b'{"url": "http://localhost:9/hook"}', "url", "loopback"),
        (b'{"url": "http://169.254.169.254/latest"}', "url", "link-local"),
        (b'{"url": "http://10.0.0.1/"}', "url", "private"),
        (b'{"url": "https://name.invalid/hook"}', "url", "does not resolve"),
        (b'{"url": "https://93.184.215.14/", "events": []}', "events", "name an event"),
        (b'{"url": "https://93.184.215.14/", "events": "template.created"}', "events", "list"),
        (b'{"url": "https://93.184.215.14/", "events": [1]}', "events", "list"),
        (b'{"url": "https://93.184.215.14/", "events": ["template.deleted"]}', "events",
         "'template.deleted' is unknown"),
        (b'{"url": "https://93.184.215.14/", "secret": "whsec_x"}', "secret", "Unknown field"),
    ],
)  # fmt: skip
async def test_refused_registrations_are_422_naming_the_field(
    server: Server, store: Store, tenant: Tenant, body: bytes, field: str, says: str
) -> None:
    status, answer = await call(
        server, tenant, "POST", data=body, headers={"Content-Type": "application/json"}
    )
    assert status == 422 and answer["success"] is False, answer
    assert list(answer["errors"]) == [field] and says in answer["errors"][field][0], answer
    assert answer["message"] == answer["errors"][field][0]
    assert await store.list_subscriptions(tenant.workspace_id) == []


async def test_a_body_over_the_cap_is_413(server: Server, tenant: Tenant) -> None:
    document = {"url": PUBLIC_URL + "&pad=" + "x" * MAX_BODY_BYTES}
    status, body = await call(server, tenant, "POST", json=document)
    assert (status, body["success"]) == (413, False)


async def test_every_bad_field_is_named_at_once(server: Server, tenant: Tenant) -> None:
    document = {"url": "gopher://x", "events": ["nope"]}
    status, body = await call(server, tenant, "POST", json=document)
    assert status == 422 and set(body["errors"]) == {"url", "events"}


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://localhost:9/hook"])
async def test_internal_urls_are_taken_with_allow_private(
    private_server: Server, tenant: Tenant, url: str
) -> None:
    status, body = await call(private_server, tenant, "POST", json={"url": url})
    assert status == 201 and body["data"]["url"] == url


async def test_a_workspace_has_at_most_so_many_webhooks(server: Server, tenant: Tenant) -> None:
    for _ in range(MAX_PER_WORKSPACE):
        await created(server, tenant)
    status, body = await call(server, tenant, "POST", json={"url": PUBLIC_URL})
    assert status == 422 and f"{MAX_PER_WORKSPACE} webhooks" in body["message"], body
    assert len((await call(server, tenant, "GET"))[1]["data"]) == MAX_PER_WORKSPACE


async def test_deliveries_and_enable_after_a_410(
    private_server: Server,
    tenant: Tenant,
    receiver: Receiver,
) -> None:
    """A receiver answering 410 disables the webhook; its attempt is in the deliveries log;
    once enabled, events are sent again."""
    receiver.statuses = [410]
    data = await created(private_server, tenant, url=f"{receiver.url}/hook")
    await status_change(private_server, "APPROVED", 1_780_000_000)

    async def listed() -> dict[str, Any] | None:
        _, answer = await call(private_server, tenant, "GET")
        return None if answer["data"][0]["enabled"] else answer["data"][0]

    disabled = await eventually(listed, message=lambda: receiver.receipts)
    assert disabled["disabled_reason"] == "410 Gone from the URL"
    status, log = await call(private_server, tenant, "GET", f"/{data['id']}/deliveries")
    assert status == 200 and all(set(item) == DELIVERY_KEYS for item in log["data"]), log
    assert [item["at"] for item in log["data"]] == sorted(
        (item["at"] for item in log["data"]), reverse=True
    )
    [gone] = [item for item in log["data"] if item["status_code"] == 410]
    assert re.fullmatch(r"evt_\d+", gone["event_id"]) and gone["attempt"] == 1
    assert gone["type"] in EVENT_CHOICES and ISO_Z.fullmatch(gone["at"])

    status, enabled = await call(private_server, tenant, "POST", f"/{data['id']}/enable")
    assert status == 200 and set(enabled["data"]) == LISTED_KEYS
    assert (enabled["data"]["enabled"], enabled["data"]["disabled_reason"]) == (True, None)
    sent = len(receiver.receipts)
    await status_change(private_server, "PAUSED", 1_780_000_100)
    await eventually(lambda: len(receiver.receipts) > sent, message=lambda: receiver.receipts)


async def status_change(server: Server, event: str, entry_time: int) -> None:
    """Meta's signed webhook: one template's status changes (it becomes known first)."""
    body = status_delivery(
        waba_id=WABA_ID, template_id="1689556908129832", event=event, name="order",
        language="en_US", entry_time=entry_time,
    )  # fmt: skip
    assert (await server.deliver(body))[0] == 200


# --- the command line ---------------------------------------------------------------------


@pytest.fixture
def cli(settings: Settings, store: Store, tmp_path: Path) -> Run:
    """`template-sync ARGS` in a subprocess against the (migrated) test store."""
    env = service_env(settings)

    async def run(*args: str, **extra: str) -> tuple[int, str, str]:
        return await run_cli(env | extra, tmp_path, *args)

    return run


def table(out: str) -> list[list[str]]:
    return [re.split(r" {2,}", line) for line in out.splitlines()]


async def test_cli_add_prints_the_secret_alone_and_list_shows_it_masked(
    cli: Run, store: Store, tenant: Tenant
) -> None:
    events = "template.status_changed,template.created"
    code, out, err = await cli("webhook", "add", "--workspace", tenant.workspace_id, PUBLIC_URL,
                               "--events", events)  # fmt: skip
    assert code == 0, err
    assert SECRET.fullmatch(out.removesuffix("\n")) and out.count("\n") == 1, out
    [stored] = await store.list_subscriptions(tenant.workspace_id)
    assert stored.id in err and stored.events == tuple(events.split(","))

    code, out, err = await cli("webhook", "list", "--workspace", tenant.workspace_id)
    assert code == 0, err
    header, row = table(out)
    assert header == ["ID", "URL", "EVENTS", "ENABLED", "LAST_SUCCESS", "FAILING_SINCE", "CREATED"]
    assert row[:5] == [stored.id, MASKED_URL, events, "yes", "-"]
    code, out, _ = await cli("webhook", "list", "--workspace", tenant.workspace_id, "--json")
    [item] = json.loads(out)
    assert set(item) == LISTED_KEYS and item["url"] == MASKED_URL and "secret" not in out


async def test_cli_add_refuses_what_the_api_refuses(cli: Run, tenant: Tenant) -> None:
    for args, says in [
        (("http://127.0.0.1:9/hook",), "loopback"),
        ((PUBLIC_URL, "--events", "template.created,nope"), "'nope' is unknown"),
        (("ftp://93.184.215.14/",), "https:// or http://"),
    ]:
        code, out, err = await cli("webhook", "add", "--workspace", tenant.workspace_id, *args)
        assert (code, out) == (1, "") and says in err and "Traceback" not in err, err
    code, out, err = await cli("webhook", "add", "--workspace", NOWHERE, PUBLIC_URL)
    assert (code, out) == (1, "") and "does not exist" in err
    code, out, err = await cli(
        "webhook", "add", "--workspace", tenant.workspace_id, "http://127.0.0.1:9/hook",
        TEMPLATE_SYNC_WEBHOOKS_ALLOW_PRIVATE="true",
    )  # fmt: skip
    assert code == 0 and SECRET.fullmatch(out.strip()), err


async def test_cli_enable_and_remove_find_the_webhook_in_any_workspace(
    cli: Run, store: Store, tenant: Tenant
) -> None:
    code, _, err = await cli("webhook", "add", "--workspace", tenant.workspace_id, PUBLIC_URL)
    assert code == 0, err
    [stored] = await store.list_subscriptions(tenant.workspace_id)
    code, out, err = await cli("webhook", "enable", stored.id)
    assert (code, out) == (0, "") and f"enabled webhook {stored.id}" in err
    code, out, err = await cli("webhook", "remove", stored.id)
    assert (code, out) == (1, "") and "--yes" in err  # no terminal to confirm on
    assert len(await store.list_subscriptions(tenant.workspace_id)) == 1
    code, out, err = await cli("webhook", "remove", stored.id, "--yes")
    assert (code, out) == (0, "") and f"removed webhook {stored.id}" in err
    assert await store.list_subscriptions(tenant.workspace_id) == []
    for args in (("remove", stored.id, "--yes"), ("enable", stored.id)):
        code, out, err = await cli("webhook", *args)
        assert (code, out) == (1, "") and f"no webhook {stored.id}" in err
