"""The bearer-token template API: shapes, pagination, filters and tenant isolation."""

from __future__ import annotations

import dataclasses
import itertools
import re
from typing import Any

import pytest

from service.config import Settings
from service.crypto import new_bearer_token
from service.storage import Store, TemplateFilter

from .conftest import NOW_MS, Server, Tenant, add_template, make_tenant
from .raw_sql import execute, run_sql
from .test_api_webhooks import PUBLIC_URL
from .test_events_stream import opened

ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
TEMPLATE_KEYS = {
    "id", "workspace_id", "waba_id", "provider_id", "name", "language", "category", "status",
    "rejected_reason", "quality_score", "flagged", "status_source", "status_updated_at",
    "last_webhook_at", "last_synced_at", "created_at", "updated_at",
}  # fmt: skip


async def test_template_object_has_the_contract_shape(
    server: Server, store: Store, tenant: Tenant
) -> None:
    local_id = await add_template(store, tenant, "1689556908129832", name="order_confirmation")
    status, body, _ = await server.api(tenant, f"/templates/{local_id}")
    assert status == 200 and body["success"] is True
    template = body["data"]
    assert set(template) == TEMPLATE_KEYS
    assert template["id"] == local_id and isinstance(template["id"], int)
    assert template["provider_id"] == "1689556908129832"
    assert (template["status"], template["status_source"], template["flagged"]) == (
        "PENDING",
        "api",
        False,
    )
    assert ISO_Z.fullmatch(template["created_at"]) and template["last_webhook_at"] is None


async def test_pagination_meta_like_lancepilot(
    server: Server, store: Store, tenant: Tenant
) -> None:
    for index in range(23):
        await add_template(store, tenant, str(1000 + index))
    status, body, _ = await server.api(tenant, "/templates", params={"page": 3, "per_page": 10})
    assert status == 200
    assert body["meta"] == {
        "current_page": 3, "from": 21, "last_page": 3, "per_page": 10, "to": 23, "total": 23,
    }  # fmt: skip
    assert [t["provider_id"] for t in body["data"]] == ["1020", "1021", "1022"]
    _, beyond, _ = await server.api(tenant, "/templates", params={"page": 9})
    assert beyond["data"] == [] and beyond["meta"]["from"] is None and beyond["meta"]["to"] is None
    _, default, _ = await server.api(tenant, "/templates")
    assert default["meta"]["per_page"] == 10 and len(default["data"]) == 10


async def test_empty_workspace_lists_nothing(server: Server, tenant: Tenant) -> None:
    status, body, _ = await server.api(tenant, "/templates")
    assert status == 200
    assert body["meta"] == {
        "current_page": 1, "from": None, "last_page": 1, "per_page": 10, "to": None, "total": 0,
    }  # fmt: skip


async def test_filters(server: Server, store: Store, tenant: Tenant) -> None:
    await add_template(store, tenant, "1", status="PENDING", name="a", language="en_US")
    await add_template(store, tenant, "2", status="APPROVED", name="a", language="pt_BR")
    await add_template(store, tenant, "3", status="IN_APPEAL", name="b", language="en_US")
    await add_template(store, tenant, "4", status="REJECTED", name="c", language="en_US")

    async def ids(**params: Any) -> list[str]:
        status, body, _ = await server.api(tenant, "/templates", params=params)
        assert status == 200, body
        return [t["provider_id"] for t in body["data"]]

    assert await ids(status="PENDING,in_appeal") == ["1", "3"]
    assert await ids(name="a") == ["1", "2"]
    assert await ids(name="a", language="en_US") == ["1"]
    assert await ids(provider_id="4") == ["4"]
    assert await ids(status="PAUSED") == []


@pytest.mark.parametrize(
    "params",
    [{"per_page": "101"}, {"per_page": "0"}, {"page": "0"}, {"page": "x"}, {"page": "-1"},
     {"per_page": "1e3"}, {"status": "PENDING;DROP"}, {"page": "9" * 30},
     {"status": "BOGUS"}, {"status": "\tPENDING"}, {"sort": "name"}],
)  # fmt: skip
async def test_bad_query_parameters_get_422(
    server: Server, tenant: Tenant, params: dict[str, str]
) -> None:
    status, body, _ = await server.api(tenant, "/templates", params=params)
    assert status == 422
    assert body["success"] is False and body["message"] and body["errors"]


async def test_a_status_templates_cannot_have_is_422_naming_it_and_the_allowed_ones(
    server: Server, store: Store, tenant: Tenant
) -> None:
    await add_template(store, tenant, "1", status="PENDING")
    status, body, _ = await server.api(tenant, "/templates", params={"status": "PENDING,BOGUS"})
    assert status == 422 and body["success"] is False
    [message] = body["errors"]["status"]
    assert body["message"] == message and "'BOGUS'" in message
    assert "APPROVED" in message and "IN_APPEAL" in message and "UNKNOWN" in message


async def test_an_unknown_query_parameter_is_422_naming_it_and_the_accepted_ones(
    server: Server, tenant: Tenant
) -> None:
    status, body, _ = await server.api(tenant, "/templates", params={"statuses": "PENDING"})
    assert status == 422 and body["success"] is False
    assert list(body["errors"]) == ["statuses"] and "'statuses'" in body["message"]
    assert "page, per_page, status, name, language, provider_id" in body["message"]


async def test_every_accepted_parameter_together_is_200(
    server: Server, store: Store, tenant: Tenant
) -> None:
    await add_template(store, tenant, "7", status="IN_APPEAL", name="a", language="en_US")
    params = {"page": "1", "per_page": "5", "status": " pending , in_appeal,,unknown",
              "name": "a", "language": "en_US", "provider_id": "7"}  # fmt: skip
    status, body, _ = await server.api(tenant, "/templates", params=params)
    assert status == 200, body
    assert [t["provider_id"] for t in body["data"]] == ["7"]


@pytest.mark.parametrize("template_id", ["999999", "abc", "0", "-1", "9" * 40])
async def test_unknown_template_is_404(server: Server, tenant: Tenant, template_id: str) -> None:
    for suffix in ("", "/history"):
        status, body, _ = await server.api(tenant, f"/templates/{template_id}{suffix}")
        assert (status, body) == (404, {"success": False, "message": "Template not found"})


async def test_history_shape_and_order(server: Server, store: Store, tenant: Tenant) -> None:
    local_id = await add_template(store, tenant, "1689556908129832")
    status, body, _ = await server.api(tenant, f"/templates/{local_id}/history")
    assert status == 200
    created, registered = body["data"]  # its creation first, then the status it came with
    assert (created["field"], created["event"]) == ("template", "CREATED")
    assert (registered["field"], registered["event"]) == ("status", "PENDING")
    assert created["id"] < registered["id"]
    for row in (created, registered):
        assert (row["source"], row["old_status"], row["new_status"]) == ("api", None, "PENDING")
        assert set(row) >= {"old_status", "new_status", "event", "source", "event_time",
                            "received_at", "reason", "applied"}  # fmt: skip
        assert ISO_Z.fullmatch(row["event_time"])


# --- tenant isolation: every endpoint x {own, other tenant's, nonexistent} x token states --

ENDPOINTS = ["/templates", "/templates/{id}", "/templates/{id}/history"]
READ_ONLY = {"success": False, "message": "This token is read-only"}


async def read_only_token(store: Store, tenant: Tenant, revoked: bool = False) -> Tenant:
    """`tenant` with a read-only token of its workspace instead of its own."""
    new = new_bearer_token()
    await store.create_token(
        tenant.workspace_id, new.token_id, new.token_hash, "ro", NOW_MS, read_only=True
    )
    if revoked:
        await store.revoke_token(new.token_id, NOW_MS)
    return dataclasses.replace(tenant, token=new.token, token_id=new.token_id)


@pytest.fixture
async def two_tenants(store: Store, settings: Settings, tenant: Tenant) -> dict[str, Any]:
    other = await make_tenant(store, settings, waba_id="555000111")
    own_id = await add_template(store, tenant, "1689556908129832")
    other_id = await add_template(store, other, "1689556908129999")
    revoked = await make_tenant(store, settings, waba_id="555000222")
    await store.revoke_token(revoked.token_id, NOW_MS)
    return {"own": tenant, "other": other, "own_id": own_id, "other_id": other_id,
            "revoked": revoked, "read_only": await read_only_token(store, tenant),
            "revoked_read_only": await read_only_token(store, tenant, revoked=True)}  # fmt: skip


@pytest.mark.parametrize(
    ("endpoint", "workspace", "template"),
    list(itertools.product(ENDPOINTS, ["own", "other", "nonexistent"], ["own", "other"])),
)
async def test_isolation_matrix(
    server: Server,
    two_tenants: dict[str, Any],
    endpoint: str,
    workspace: str,
    template: str,
) -> None:
    own: Tenant = two_tenants["own"]
    workspace_id = {"own": own.workspace_id, "other": two_tenants["other"].workspace_id,
                    "nonexistent": "00000000-0000-4000-8000-000000000000"}[workspace]  # fmt: skip
    template_id = two_tenants[f"{template}_id"]
    path = f"/api/v3/workspaces/{workspace_id}" + endpoint.format(id=template_id)
    for token, expected_status in [(own.token, None), (two_tenants["read_only"].token, None),
                                   (two_tenants["revoked"].token, 401),
                                   (two_tenants["revoked_read_only"].token, 401),
                                   (None, 401), (own.token + "x", 401),
                                   ("tsk_nothere.abc", 401)]:  # fmt: skip
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        status, body, response_headers = await server.request("GET", path, headers=headers)
        if expected_status == 401:
            assert (status, body) == (401, {"success": False, "message": "Unauthenticated"})
            assert response_headers["WWW-Authenticate"] == "Bearer"
        elif workspace != "own":
            assert (status, body) == (404, {"success": False, "message": "Workspace not found"})
        elif template == "other" and endpoint != "/templates":
            assert (status, body) == (404, {"success": False, "message": "Template not found"})
        else:
            assert status == 200
            assert two_tenants["other"].workspace_id not in str(body)


@pytest.mark.parametrize(
    "header",
    ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "bearer tsk_x", "Token abc", "Bearer \u00e4"],
)
async def test_malformed_authorization_is_401(server: Server, tenant: Tenant, header: str) -> None:
    path = f"/api/v3/workspaces/{tenant.workspace_id}/templates"
    status, body, headers = await server.request(
        "GET", path, headers={"Authorization": header.encode("utf-8").decode("latin-1")}
    )
    assert (status, body["message"]) == (401, "Unauthenticated")
    assert headers["WWW-Authenticate"] == "Bearer"


async def test_bearer_scheme_is_case_insensitive(server: Server, tenant: Tenant) -> None:
    path = f"/api/v3/workspaces/{tenant.workspace_id}/templates"
    status, _, _ = await server.request(
        "GET", path, headers={"Authorization": f"bearer {tenant.token}"}
    )
    assert status == 200


@pytest.mark.parametrize(
    ("method", "workspace"),
    list(itertools.product(["GET", "POST"], ["own", "other", "nonexistent"])),
)
async def test_isolation_matrix_of_the_sync_endpoints(
    server: Server, two_tenants: dict[str, Any], method: str, workspace: str
) -> None:
    """The sync endpoint and its last-run view: same tenancy rules, nothing of others shown;
    a read-only token may call both (design section 12)."""
    own: Tenant = two_tenants["own"]
    workspace_id = {"own": own.workspace_id, "other": two_tenants["other"].workspace_id,
                    "nonexistent": "00000000-0000-4000-8000-000000000000"}[workspace]  # fmt: skip
    path = f"/api/v3/workspaces/{workspace_id}/templates/sync"
    for token in [two_tenants["revoked"].token, two_tenants["revoked_read_only"].token, None,
                  own.token + "x", "tsk_nothere.abc"]:  # fmt: skip
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        status, body, response_headers = await server.request(method, path, headers=headers)
        assert (status, body) == (401, {"success": False, "message": "Unauthenticated"})
        assert response_headers["WWW-Authenticate"] == "Bearer"
    for token in (own.token, two_tenants["read_only"].token):
        headers = {"Authorization": f"Bearer {token}"}
        status, body, _ = await server.request(method, path, headers=headers)
        if workspace != "own":
            assert (status, body) == (404, {"success": False, "message": "Workspace not found"})
        elif method == "POST":  # a pending template, and no Meta to reach in this test
            assert (status, body["message"]) == (500, "Failed to sync the templates")
            assert body["error"]["kind"] == "network"
        else:
            assert (status, body) == (200, {"success": True, "data": None})  # no sync ran yet
        assert two_tenants["other"].workspace_id not in str(body)


# The template writes (design section 12): method, path and body. The fixture's Graph URL is
# closed, so a write that gets past every check reaches no Meta: 502, kind "network".
TEMPLATE_WRITES = [
    ("POST", "/templates", {"name": "order_update", "language": "en_US", "category": "UTILITY",
                            "components": [{"type": "BODY", "text": "Hi"}]}),
    ("POST", "/templates/{id}", {"components": [{"type": "BODY", "text": "Hi"}]}),
    ("DELETE", "/templates/{id}", None),
]  # fmt: skip
WRITE_CASES = [
    (*write, workspace, template)
    for write, workspace, template in itertools.product(
        TEMPLATE_WRITES, ["own", "other", "nonexistent"], ["own", "other"]
    )
    if "{id}" in write[1] or template == "own"  # a create names no template
]


@pytest.mark.parametrize(("method", "endpoint", "document", "workspace", "template"), WRITE_CASES)
async def test_isolation_matrix_of_the_template_writes(
    server: Server, store: Store, two_tenants: dict[str, Any], method: str, endpoint: str,
    document: Any, workspace: str, template: str,
) -> None:  # fmt: skip
    """401, then another workspace's 404, then a read-only token's 403, then another tenant's
    template's 404; none of them changes a template of either tenant."""
    own: Tenant = two_tenants["own"]
    tenants = (own, two_tenants["other"])
    before = [await store.list_templates(t.workspace_id, TemplateFilter(), 0, 10) for t in tenants]
    workspace_id = {"own": own.workspace_id, "other": two_tenants["other"].workspace_id,
                    "nonexistent": "00000000-0000-4000-8000-000000000000"}[workspace]  # fmt: skip
    path = f"/api/v3/workspaces/{workspace_id}" + endpoint.format(id=two_tenants[f"{template}_id"])
    not_workspace = (404, {"success": False, "message": "Workspace not found"})
    expected = {
        "read_only": not_workspace if workspace != "own" else (403, READ_ONLY),
        "own": not_workspace if workspace != "own" else (
            (404, {"success": False, "message": "Template not found"})
            if template == "other" else (502, "network")
        ),
    }  # fmt: skip
    for token, answer in [(two_tenants["revoked"].token, 401),
                          (two_tenants["revoked_read_only"].token, 401), (None, 401),
                          (own.token + "x", 401), ("tsk_nothere.abc", 401),
                          (two_tenants["read_only"].token, expected["read_only"]),
                          (own.token, expected["own"])]:  # fmt: skip
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        status, body, _ = await server.request(method, path, headers=headers, json=document)
        if answer == 401:
            assert (status, body) == (401, {"success": False, "message": "Unauthenticated"})
        elif answer == (502, "network"):
            assert (status, body["error"]["kind"]) == answer
        else:
            assert (status, body) == answer
        assert two_tenants["other"].workspace_id not in str(body)
    after = [await store.list_templates(t.workspace_id, TemplateFilter(), 0, 10) for t in tenants]
    assert after == before


async def test_a_read_only_token_streams_events(
    server: Server, two_tenants: dict[str, Any]
) -> None:
    async with opened(server.session, server.base_url, two_tenants["read_only"]):
        pass  # 200, text/event-stream: `opened` checks them


# --- the webhooks API: reads for any token of the workspace, writes for read-write ones ----

WEBHOOK_READS = [("GET", ""), ("GET", "/{id}/deliveries")]
# Each write, and what it answers a read-write token of the workspace.
WEBHOOK_WRITES = [("POST", "", 201), ("DELETE", "/{id}", 200), ("POST", "/{id}/enable", 200)]


async def disabled_subscription(store: Store, tenant: Tenant) -> str:
    """A subscription of `tenant`'s workspace, disabled (so `enable` would change it)."""
    added = await store.add_subscription(tenant.workspace_id, PUBLIC_URL, [], "enc", NOW_MS)
    await run_sql(store, execute(
        "UPDATE webhook_subscriptions SET enabled = ?, disabled_reason = ? WHERE id = ?",
        False, "410 Gone", added.id,
    ))  # fmt: skip
    return added.id


def webhooks_path(workspace_id: str, suffix: str, subscription_id: str) -> str:
    return f"/api/v3/workspaces/{workspace_id}/webhooks" + suffix.format(id=subscription_id)


@pytest.mark.parametrize(("method", "suffix", "done"), WEBHOOK_WRITES)
@pytest.mark.parametrize("workspace", ["own", "other", "nonexistent"])
async def test_a_read_only_token_gets_403_on_every_write_and_changes_nothing(
    server: Server, store: Store, two_tenants: dict[str, Any], method: str, suffix: str,
    done: int, workspace: str,
) -> None:  # fmt: skip
    """401 first, then another workspace's 404, then 403: the order `authorise` has."""
    own: Tenant = two_tenants["own"]
    subscription_id = await disabled_subscription(store, own)
    before = await store.list_subscriptions(own.workspace_id)
    workspace_id = {"own": own.workspace_id, "other": two_tenants["other"].workspace_id,
                    "nonexistent": "00000000-0000-4000-8000-000000000000"}[workspace]  # fmt: skip
    path = webhooks_path(workspace_id, suffix, subscription_id)
    document = {"url": PUBLIC_URL} if suffix == "" else None
    expected = (403, READ_ONLY) if workspace == "own" else (
        404, {"success": False, "message": "Workspace not found"}
    )  # fmt: skip
    for token, answer in [(two_tenants["revoked_read_only"].token, 401),
                          (two_tenants["read_only"].token, expected)]:  # fmt: skip
        headers = {"Authorization": f"Bearer {token}"}
        status, body, _ = await server.request(method, path, headers=headers, json=document)
        if answer == 401:
            assert (status, body["message"]) == (401, "Unauthenticated")
        else:
            assert (status, body) == answer
    assert await store.list_subscriptions(own.workspace_id) == before
    if workspace == "own":  # the same write with a read-write token does change something
        headers = {"Authorization": f"Bearer {own.token}"}
        status, body, _ = await server.request(method, path, headers=headers, json=document)
        assert status == done, body
        assert await store.list_subscriptions(own.workspace_id) != before


@pytest.mark.parametrize(("method", "suffix"), WEBHOOK_READS)
async def test_a_read_only_token_reads_the_webhooks(
    server: Server, store: Store, two_tenants: dict[str, Any], method: str, suffix: str
) -> None:
    own: Tenant = two_tenants["own"]
    path = webhooks_path(own.workspace_id, suffix, await disabled_subscription(store, own))
    answers = []
    for tenant in (own, two_tenants["read_only"]):
        headers = {"Authorization": f"Bearer {tenant.token}"}
        status, body, _ = await server.request(method, path, headers=headers)
        answers.append((status, body))
    assert answers[0][0] == 200 and answers[1] == answers[0]
