"""Template writes through the API (design section 12), end to end on both backends: the
service over real HTTP, the Meta simulator on loopback, its reviewer's signed webhooks."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web

from service.config import Secret, Settings
from service.crypto import TokenCipher, generate_key, new_bearer_token
from service.simulator import Handler
from service.simulator_rules import CREATES_PER_HOUR
from service.storage import Store, TemplateFilter

from .conftest import (
    APP_SECRET,
    META_TOKEN,
    NOW_MS,
    WABA_ID,
    Server,
    Tenant,
    add_template,
    make_tenant,
    serving,
    simulated,
)
from .test_api import READ_ONLY, read_only_token
from .waiting import GatedSimulator, eventually

OTHER_WABA = "555000111"
BODY = [{"type": "BODY", "text": "Order {{1}} is on its way."}]
TEMPLATE = {"name": "order_update", "language": "en_US", "category": "UTILITY", "components": BODY}
INVALID = "The given data was invalid."
EXISTS = "Template already exists"


class Meta(GatedSimulator):
    """The simulator, gated, whose next Graph call can lose its answer (`lose`): "after"
    Meta did the work (the connection drops), "before" Meta saw it; or Meta did it and
    answered something unreadable ("garbled") or a 500 ("failed")."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.lose: str | None = None

    def build_app(self) -> web.Application:
        app = super().build_app()
        app.middlewares.insert(0, self._lose)
        return app

    @web.middleware
    async def _lose(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.lose is None or request.path.startswith("/_sim/"):
            return await handler(request)
        lose, self.lose = self.lose, None
        response = await handler(request) if lose != "before" else web.Response()
        if lose == "garbled":
            return web.Response(text="<html>upstream</html>", content_type="text/html")
        if lose == "failed":
            return web.Response(status=500, text="Internal Server Error")
        assert request.transport is not None
        request.transport.abort()
        return response

    def creates(self) -> int:
        return sum(c.method == "POST" and c.path.endswith("/message_templates") for c in self.calls)


@pytest.fixture
async def sim() -> AsyncIterator[tuple[Meta, str]]:
    async with simulated(Meta(app_secret=APP_SECRET, review_delay_s=None), WABA_ID) as running:
        yield running


@pytest.fixture
def meta(sim: tuple[Meta, str]) -> Meta:
    return sim[0]


@pytest.fixture
def settings(settings: Settings, sim: tuple[Meta, str]) -> Settings:
    return replace(settings, graph_url=sim[1])


@pytest.fixture(autouse=True)
def no_secret_logged(caplog: pytest.LogCaptureFixture, tenant: Tenant) -> Iterator[None]:
    """No token, secret or request body in any log line, at any level."""
    caplog.set_level(logging.DEBUG)
    yield
    for secret in (META_TOKEN, APP_SECRET, tenant.token, BODY[0]["text"]):
        assert secret not in caplog.text


async def write(
    server: Server, tenant: Tenant, method: str, path: str = "", key: str | None = None,
    **kwargs: Any,
) -> tuple[int, Any, Any]:  # fmt: skip
    """A write of `tenant`'s templates; never a 500, never a secret in the answer."""
    headers = {"Authorization": f"Bearer {tenant.token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    url = f"/api/v3/workspaces/{tenant.workspace_id}/templates{path}"
    status, body, response_headers = await server.request(method, url, headers=headers, **kwargs)
    assert status < 500 or status in (502, 503), (status, body)
    assert isinstance(body, dict) and "success" in body, (status, body)
    for secret in (META_TOKEN, APP_SECRET, tenant.token):
        assert secret not in str(body)
    return status, body, response_headers


async def create(
    server: Server, tenant: Tenant, key: str | None = None, **fields: Any
) -> tuple[int, Any, Any]:
    return await write(server, tenant, "POST", key=key, json={**TEMPLATE, **fields})


async def templates(store: Store, tenant: Tenant) -> list[Any]:
    found, _ = await store.list_templates(tenant.workspace_id, TemplateFilter(), 0, 100)
    return found


async def history(server: Server, tenant: Tenant, template_id: int) -> list[tuple[Any, ...]]:
    status, body, _ = await server.api(tenant, f"/templates/{template_id}/history")
    assert status == 200
    return [(r["field"], r["event"], r["new_status"], r["source"]) for r in body["data"]]


def review(meta: Meta, template: dict[str, Any]) -> None:
    """Meta's reviewer approves `template` now: after the create's answer was stored, so
    its webhook finds the template here (when it comes first, it is stored, and the create
    finds it: test_template_writes_store.py)."""
    meta.review_delay_s = 0.0
    meta.reviews.submit(meta.state.template(str(template["id"])))


# --- create --------------------------------------------------------------------------------


async def test_a_create_is_stored_with_metas_id_then_approved_by_metas_webhook(
    server: Server, store: Store, tenant: Tenant, meta: Meta
) -> None:
    meta.set_webhook(server.base_url + "/webhooks/meta")
    status, body, _ = await create(server, tenant)
    assert status == 201 and body["success"] is True
    created = body["data"]
    [at_meta] = meta.templates(WABA_ID)
    review(meta, at_meta)
    assert created["provider_id"] == str(at_meta["id"]) and created["waba_id"] == WABA_ID
    assert (created["name"], created["language"], created["category"]) == (
        "order_update", "en_US", "UTILITY",
    )  # fmt: skip
    assert (created["status"], created["status_source"]) == ("PENDING", "api")
    assert (await history(server, tenant, created["id"]))[:2] == [
        ("template", "CREATED", "PENDING", "api"), ("status", "PENDING", "PENDING", "api"),
    ]  # fmt: skip

    async def approved() -> Any:
        _, found, _ = await server.api(tenant, f"/templates/{created['id']}")
        return found["data"] if found["data"]["status"] == "APPROVED" else None

    template = await eventually(approved)
    assert template["status_source"] == "webhook"
    await eventually(lambda: [(w.status, w.dropped) for w in meta.webhooks] == [(200, False)])
    assert meta.creates() == 1 and len(await templates(store, tenant)) == 1


async def test_a_dropped_verdict_is_repaired_by_the_poller(
    settings: Settings, store: Store, tenant: Tenant, meta: Meta
) -> None:
    polling = replace(settings, poll_enabled=True, poll_tick_s=0.05, poll_grace_s=0.2,
                      poll_interval_s=0.2)  # fmt: skip
    async with serving(polling) as server:
        meta.set_webhook(server.base_url + "/webhooks/meta", drop_webhooks=True)
        status, body, _ = await create(server, tenant)
        assert status == 201 and body["data"]["status"] == "PENDING"
        review(meta, meta.templates(WABA_ID)[0])

        async def repaired() -> Any:
            [template] = await templates(store, tenant)
            return template if template.status == "APPROVED" else None

        template = await eventually(repaired)
    assert template.status_source == "sync" and template.last_webhook_at is None
    assert [w.dropped for w in meta.webhooks] == [True]


async def test_waba_id_may_be_left_out_only_with_one_channel(
    server: Server, store: Store, tenant: Tenant, meta: Meta
) -> None:
    status, body, _ = await create(server, tenant, waba_id=WABA_ID, name="named_waba")
    assert status == 201 and body["data"]["waba_id"] == WABA_ID
    await store.add_channel(tenant.workspace_id, OTHER_WABA, "unused", NOW_MS)
    for fields in ({}, {"waba_id": "999"}):
        status, body, _ = await create(server, tenant, **fields)
        assert (status, body["message"]) == (422, INVALID) and list(body["errors"]) == ["waba_id"]
    bare = await store.create_workspace("Bare", NOW_MS)
    token = new_bearer_token()
    await store.create_token(bare.id, token.token_id, token.token_hash, "t", NOW_MS)
    status, body, _ = await create(server, Tenant(bare.id, token.token, token.token_id, ""))
    assert (status, body["message"]) == (422, INVALID) and list(body["errors"]) == ["waba_id"]
    assert meta.creates() == 1


BAD_CREATES = [
    ({"name": None}, "name"), ({"name": "Order-Update"}, "name"), ({"name": "x" * 513}, "name"),
    ({"name": 7}, "name"), ({"language": "english"}, "language"), ({"language": None}, "language"),
    ({"category": "PROMOTION"}, "category"), ({"category": None}, "category"),
    ({"components": []}, "components"), ({"components": None}, "components"),
    ({"components": {"type": "BODY"}}, "components"),
    ({"components": [{"type": "HEADER", "text": "x"}]}, "components"),
    ({"components": [*BODY, *BODY]}, "components"), ({"components": [{"text": "x"}]}, "components"),
    ({"components": [BODY[0]] * 11}, "components"), ({"waba_id": "abc"}, "waba_id"),
    ({"allow_category_change": "yes"}, "allow_category_change"),
    ({"parameter_format": "braces"}, "parameter_format"), ({"status": "APPROVED"}, "status"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "wrong"), BAD_CREATES)
async def test_every_invalid_create_is_422_naming_the_field_before_any_graph_call(
    server: Server, tenant: Tenant, meta: Meta, fields: dict[str, Any], wrong: str
) -> None:
    document = {k: v for k, v in {**TEMPLATE, **fields}.items() if v is not None}
    status, body, _ = await write(server, tenant, "POST", json=document)
    assert (status, body["success"], body["message"]) == (422, False, INVALID)
    assert list(body["errors"]) == [wrong] and all(body["errors"][wrong])
    assert meta.calls == []


@pytest.mark.parametrize(
    "raw", [b"", b"not json", b"[1]", b'"x"', b"[" * 100_000, b'{"name": "\xff"}']
)
async def test_a_body_that_is_no_json_object_is_422(
    server: Server, tenant: Tenant, meta: Meta, raw: bytes
) -> None:
    status, body, _ = await write(server, tenant, "POST", data=raw)
    assert (status, body["message"], list(body["errors"])) == (422, INVALID, ["body"])
    assert meta.calls == []


async def test_a_body_over_the_cap_is_413(server: Server, tenant: Tenant, meta: Meta) -> None:
    huge = {**TEMPLATE, "components": [{"type": "BODY", "text": "x" * 300_000}]}
    status, _, _ = await write(server, tenant, "POST", json=huge)
    assert status == 413 and meta.calls == []


async def test_the_same_name_and_language_is_409_here_or_at_meta(
    server: Server, store: Store, tenant: Tenant, meta: Meta
) -> None:
    assert (await create(server, tenant))[0] == 201
    status, body, _ = await create(server, tenant)
    assert (status, body) == (409, {"success": False, "message": EXISTS})
    assert meta.creates() == 1  # refused here, before Meta
    meta.add_templates(WABA_ID, [{"id": "777", "name": "made_elsewhere", "language": "en_US",
                                  "status": "APPROVED", "category": "UTILITY"}])  # fmt: skip
    status, body, _ = await create(server, tenant, name="made_elsewhere")
    assert (status, body["message"], body["error"]["subcode"]) == (409, EXISTS, 2388023)
    assert len(await templates(store, tenant)) == 1


async def test_a_name_meta_still_holds_after_a_delete_is_409(
    server: Server, tenant: Tenant, meta: Meta
) -> None:
    meta.create_status = "APPROVED"
    _, created, _ = await create(server, tenant)
    assert (await write(server, tenant, "DELETE", f"/{created['data']['id']}"))[0] == 200
    status, body, _ = await create(server, tenant)  # the DELETED row here is no conflict
    assert (status, body["message"], body["error"]["subcode"]) == (409, EXISTS, 2388024)
    assert meta.creates() == 2


async def test_metas_refusal_is_422_with_its_error(
    server: Server, store: Store, tenant: Tenant, meta: Meta
) -> None:
    status, body, _ = await create(server, tenant, components=[{"type": "BODY"}])
    assert (status, body["message"]) == (422, "Meta refused the template")
    error = body["error"]
    assert set(error) == {"code", "subcode", "detail", "fbtrace_id"}
    assert (error["code"], error["subcode"]) == (100, 2388044)
    assert error["detail"] == "The BODY component needs a text." and error["fbtrace_id"]
    assert await templates(store, tenant) == []


async def test_parameter_format_reaches_meta_as_it_takes_it(
    server: Server, tenant: Tenant, meta: Meta
) -> None:
    status, body, _ = await create(server, tenant, parameter_format="positional")
    assert status == 201, body
    [at_meta] = meta.templates(WABA_ID)
    assert at_meta["parameter_format"] == "POSITIONAL"


async def test_metas_hourly_limit_is_429_and_its_window_keeps_the_next_write_away(
    server: Server, store: Store, tenant: Tenant, meta: Meta
) -> None:
    meta.state.created[WABA_ID] = deque([meta.now()] * CREATES_PER_HOUR)
    status, body, headers = await create(server, tenant)
    assert (status, body["error"]["code"]) == (429, 80008)
    assert 3500 <= int(headers["Retry-After"]) <= 3600
    calls = len(meta.calls)
    template_id = await add_template(store, tenant, "4242", status="APPROVED")
    for method, path, document in [("POST", "", TEMPLATE), ("DELETE", f"/{template_id}", None),
                                   ("POST", f"/{template_id}", {"components": BODY})]:  # fmt: skip
        status, body, headers = await write(server, tenant, method, path, json=document)
        assert status == 429 and int(headers["Retry-After"]) > 3000
    assert len(meta.calls) == calls and await templates(store, tenant) == [
        await store.get_template(tenant.workspace_id, template_id)
    ]


async def test_a_throttle_fault_is_429_with_retry_after(
    server: Server, tenant: Tenant, meta: Meta
) -> None:
    meta.fail(WABA_ID, "80008")
    status, body, headers = await create(server, tenant)
    assert (status, body["message"], headers["Retry-After"]) == (
        429, "Meta rate limit: retry later", "300",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fault", "options", "kind"),
    [("190", {}, "token_invalid"), ("5xx", {}, "transient"),
     ("error", {"code": 200, "http_status": 403}, "permission"),
     ("error", {"code": 10, "http_status": 403}, "permission")],
)  # fmt: skip
async def test_meta_failing_is_502_with_the_errors_kind(
    server: Server, store: Store, tenant: Tenant, meta: Meta, fault: str,
    options: dict[str, Any], kind: str,
) -> None:  # fmt: skip
    meta.fail(WABA_ID, fault, **options)
    status, body, _ = await create(server, tenant)
    assert status == 502 and body["error"]["kind"] == kind
    assert set(body["error"]) == {"code", "subcode", "kind", "detail", "fbtrace_id"}
    assert await templates(store, tenant) == [] and meta.templates(WABA_ID) == []


async def test_meta_unreachable_is_502_network(settings: Settings, tenant: Tenant) -> None:
    async with serving(replace(settings, graph_url="http://127.0.0.1:9/v25.0")) as server:
        status, body, _ = await create(server, tenant)
    assert status == 502 and body["error"]["kind"] == "network"


@pytest.mark.parametrize("lose", ["after", "garbled", "failed"])
async def test_a_create_whose_answer_is_lost_is_found_by_name_and_language(
    server: Server, store: Store, tenant: Tenant, meta: Meta, lose: str
) -> None:
    meta.lose = lose
    status, body, _ = await create(server, tenant)
    assert status == 201, body
    [at_meta] = meta.templates(WABA_ID)
    [stored] = await templates(store, tenant)
    assert body["data"]["provider_id"] == stored.provider_id == str(at_meta["id"])
    assert [c.method for c in meta.calls] == ["POST", "GET"]  # the create, then the lookup


async def test_a_create_lost_before_meta_saw_it_is_502_and_stores_nothing(
    server: Server, store: Store, tenant: Tenant, meta: Meta
) -> None:
    meta.lose = "before"
    status, body, _ = await create(server, tenant)
    assert status == 502 and body["error"]["kind"] == "network"
    assert await templates(store, tenant) == [] and meta.templates(WABA_ID) == []


async def test_an_undecryptable_channel_token_is_503_without_a_graph_call(
    server: Server, store: Store, tenant: Tenant, meta: Meta
) -> None:
    stale = TokenCipher((Secret(generate_key()),)).encrypt(META_TOKEN)
    [channel] = await store.list_channels(tenant.workspace_id)
    await store.set_channel_token(channel.id, stale)
    status, body, _ = await create(server, tenant)
    assert status == 503 and "decrypt" in body["message"]
    assert meta.calls == []


# --- Idempotency-Key -----------------------------------------------------------------------


async def test_a_repeated_key_replays_the_answer_and_meta_is_called_once(
    server: Server, tenant: Tenant, meta: Meta
) -> None:
    first = await create(server, tenant, key="order-1")
    again = await create(server, tenant, key="order-1")
    assert first[0] == again[0] == 201 and first[1] == again[1]
    assert "Idempotent-Replayed" not in first[2] and again[2]["Idempotent-Replayed"] == "true"
    assert meta.creates() == 1
    status, body, _ = await create(server, tenant, key="order-1", name="another_one")
    assert (status, list(body["errors"])) == (422, ["Idempotency-Key"])
    assert meta.creates() == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9"])
async def test_a_malformed_key_is_422(server: Server, tenant: Tenant, meta: Meta, key: str) -> None:
    raw = key.encode().decode("latin-1")
    status, body, _ = await write(server, tenant, "POST", key=raw, json=TEMPLATE)
    assert (status, list(body["errors"])) == (422, ["Idempotency-Key"]) and meta.calls == []


async def test_a_key_still_running_is_409(server: Server, tenant: Tenant, meta: Meta) -> None:
    meta.shut()
    first = asyncio.create_task(create(server, tenant, key="k"))
    await eventually(lambda: meta.waiting == 1)
    status, body, _ = await create(server, tenant, key="k")
    assert (status, body["success"]) == (409, False)
    meta.open()
    assert (await first)[0] == 201
    assert (await create(server, tenant, key="k"))[0] == 201 and meta.creates() == 1


async def test_a_502_is_not_kept_a_retry_calls_meta_again(
    server: Server, tenant: Tenant, meta: Meta
) -> None:
    meta.fail(WABA_ID, "190")
    assert (await create(server, tenant, key="k"))[0] == 502
    status, _, headers = await create(server, tenant, key="k")
    assert status == 201 and "Idempotent-Replayed" not in headers and meta.creates() == 2


async def test_a_request_refused_before_meta_is_not_kept_so_the_corrected_one_goes_through(
    server: Server, tenant: Tenant, meta: Meta
) -> None:
    assert (await create(server, tenant, key="k", category="NEWS"))[0] == 422
    status, _, headers = await create(server, tenant, key="k")  # corrected, same key
    assert status == 201 and "Idempotent-Replayed" not in headers and meta.creates() == 1
    again, _, headers = await create(server, tenant, key="k")
    assert again == 201 and headers["Idempotent-Replayed"] == "true" and meta.creates() == 1


async def test_keys_are_per_workspace(
    server: Server, store: Store, settings: Settings, tenant: Tenant, meta: Meta
) -> None:
    other = await make_tenant(store, settings, waba_id=OTHER_WABA)
    meta.add_waba(OTHER_WABA, META_TOKEN)
    ours, theirs = await create(server, tenant, key="k"), await create(server, other, key="k")
    assert ours[0] == theirs[0] == 201 and ours[1]["data"]["id"] != theirs[1]["data"]["id"]
    assert theirs[1]["data"]["workspace_id"] == other.workspace_id and meta.creates() == 2


# --- edit and delete -----------------------------------------------------------------------


async def approved(server: Server, tenant: Tenant, meta: Meta) -> dict[str, Any]:
    """A template created through the API that Meta approved at once."""
    meta.create_status = "APPROVED"
    status, body, _ = await create(server, tenant)
    assert status == 201 and body["data"]["status"] == "APPROVED"
    return dict(body["data"])


async def test_an_edit_sends_the_template_back_to_review(
    server: Server, tenant: Tenant, meta: Meta
) -> None:
    template = await approved(server, tenant, meta)
    components = [{"type": "BODY", "text": "Order {{1}} has shipped."}]
    status, body, _ = await write(
        server, tenant, "POST", f"/{template['id']}", json={"components": components}
    )
    assert status == 200 and body["success"] is True
    assert (body["data"]["id"], body["data"]["status"]) == (template["id"], "PENDING")
    assert (await history(server, tenant, template["id"]))[-1] == (
        "status", "PENDING", "PENDING", "api",
    )  # fmt: skip
    [at_meta] = meta.templates(WABA_ID)
    assert (at_meta["status"], at_meta["components"]) == ("PENDING", components)


@pytest.mark.parametrize(
    ("method", "document", "fault", "expected"),
    [("POST", {"category": "MARKETING"}, None, (422, 2388046)),  # approved: category locked
     ("POST", {"components": BODY}, "190", (502, 463)), ("DELETE", None, "190", (502, 463))],
)  # fmt: skip
async def test_a_change_meta_refuses_changes_nothing_here(
    server: Server, store: Store, tenant: Tenant, meta: Meta, method: str, document: Any,
    fault: str | None, expected: tuple[int, int],
) -> None:  # fmt: skip
    template = await approved(server, tenant, meta)
    before = await templates(store, tenant)
    if fault is not None:
        meta.fail(WABA_ID, fault)
    status, body, _ = await write(server, tenant, method, f"/{template['id']}", json=document)
    assert (status, body["error"]["subcode"]) == expected
    assert await templates(store, tenant) == before
    assert [t["status"] for t in meta.templates(WABA_ID)] == ["APPROVED"]


@pytest.mark.parametrize(
    ("document", "wrong"),
    [({}, "components"), ({"name": "x"}, "name"), ({"components": []}, "components"),
     ({"category": "PROMO"}, "category")],
)  # fmt: skip
async def test_an_invalid_edit_is_422_before_any_graph_call(
    server: Server, store: Store, tenant: Tenant, meta: Meta, document: Any, wrong: str
) -> None:
    template_id = await add_template(store, tenant, "4242", status="APPROVED")
    status, body, _ = await write(server, tenant, "POST", f"/{template_id}", json=document)
    assert (status, body["message"], list(body["errors"])) == (422, INVALID, [wrong])
    assert meta.calls == []


async def test_a_delete_keeps_the_row_and_its_history(
    server: Server, tenant: Tenant, meta: Meta
) -> None:
    template = await approved(server, tenant, meta)
    status, body, _ = await write(server, tenant, "DELETE", f"/{template['id']}")
    assert (status, body) == (200, {"success": True, "message": "Template deleted successfully"})
    _, found, _ = await server.api(tenant, f"/templates/{template['id']}")
    assert found["data"]["status"] == "DELETED"
    rows = await history(server, tenant, template["id"])
    assert rows[0][:2] == ("template", "CREATED") and rows[-1] == (
        "status", "DELETED", "DELETED", "api",
    )  # fmt: skip
    assert [t["status"] for t in meta.templates(WABA_ID)] == ["DELETED"]
    again = await write(server, tenant, "DELETE", f"/{template['id']}")
    assert again[0] == 200 and [c.method for c in meta.calls].count("DELETE") == 1


async def test_deleting_a_template_meta_no_longer_has_is_200(
    server: Server, store: Store, tenant: Tenant, meta: Meta
) -> None:
    template_id = await add_template(store, tenant, "4242", status="APPROVED")
    status, body, _ = await write(server, tenant, "DELETE", f"/{template_id}")
    assert (status, body["success"]) == (200, True)
    found = await store.get_template(tenant.workspace_id, template_id)
    assert found is not None and found.status == "DELETED"


@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_an_unknown_template_is_404(
    server: Server, tenant: Tenant, meta: Meta, method: str
) -> None:
    for template_id in ("999999", "abc"):
        status, body, _ = await write(
            server, tenant, method, f"/{template_id}", json={"components": BODY}
        )
        assert (status, body) == (404, {"success": False, "message": "Template not found"})
    assert meta.calls == []


@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_a_template_removed_here_while_meta_changes_it_is_404(
    server: Server, store: Store, tenant: Tenant, meta: Meta, method: str
) -> None:
    template = await approved(server, tenant, meta)
    meta.shut()
    path = f"/{template['id']}"
    change = asyncio.create_task(write(server, tenant, method, path, json={"components": BODY}))
    await eventually(lambda: meta.waiting == 1)
    await store.remove_template(tenant.workspace_id, template["id"])
    meta.open()
    status, body, _ = await change
    assert (status, body["message"]) == (404, "Template not found")


async def test_a_read_only_token_changes_nothing(
    server: Server, store: Store, tenant: Tenant, meta: Meta
) -> None:
    template_id = await add_template(store, tenant, "4242", status="APPROVED")
    before = await templates(store, tenant)
    reader = await read_only_token(store, tenant)
    for method, path, document in [("POST", "", TEMPLATE), ("DELETE", f"/{template_id}", None),
                                   ("POST", f"/{template_id}", {"components": BODY})]:  # fmt: skip
        status, body, _ = await write(server, reader, method, path, json=document)
        assert (status, body) == (403, READ_ONLY)
    assert meta.calls == [] and await templates(store, tenant) == before
