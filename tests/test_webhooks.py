"""Design section 6, rule by rule, over real HTTP on both backends; plus the pure parts."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service import meta_webhooks
from service.config import Secret, Settings
from service.storage import Store
from service.webhooks import PayloadError, SignatureError, parse_delivery, verify_signature

from .conftest import (
    APP_SECRET,
    VERIFY_TOKEN,
    WABA_ID,
    Server,
    Tenant,
    add_template,
    compact,
    fixture_body,
    make_tenant,
    sign,
    start_server,
)
from .waiting import eventually

SECRETS = (APP_SECRET.encode(),)


def status_body(
    event: str,
    template_id: Any = "1689556908129832",
    entry_time: int = 1751247548,
    waba_id: str = WABA_ID,
    **value: Any,
) -> bytes:
    change = meta_webhooks.status_change(event, template_id, "order_confirmation", "en_US")
    change["value"].update(value)  # the test's own values, Meta's or not
    entry = meta_webhooks.entry(waba_id, entry_time, change)
    return meta_webhooks.encode(meta_webhooks.delivery(entry))


async def template_by_provider(server: Server, tenant: Tenant, provider_id: str) -> dict[str, Any]:
    status, body, _ = await server.api(tenant, f"/templates?provider_id={provider_id}")
    assert status == 200 and body["meta"]["total"] == 1, body
    template: dict[str, Any] = body["data"][0]
    return template


async def history(server: Server, tenant: Tenant, template_id: int) -> list[dict[str, Any]]:
    status, body, _ = await server.api(tenant, f"/templates/{template_id}/history")
    assert status == 200
    events: list[dict[str, Any]] = body["data"]
    return events


# --- verify_signature: pure -------------------------------------------------------------


def test_signature_over_raw_bytes_is_accepted() -> None:
    body = fixture_body("webhook-status-approved.json")
    verify_signature(body, sign(body), SECRETS)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha256",
        "sha1=" + "a" * 40,
        "sha256=" + "g" * 64,
        "sha256=" + "a" * 63,
        "sha256=" + "a" * 65,
        "sha256=" + "a" * 64,
        "md5=" + "a" * 64,
        "sha256=\u00e4" + "a" * 63,
    ],
)
def test_malformed_or_wrong_signatures_are_rejected(header: str | None) -> None:
    with pytest.raises(SignatureError):
        verify_signature(b'{"entry":[]}', header, SECRETS)


def test_uppercase_hex_is_the_same_signature() -> None:
    body = b'{"entry":[]}'
    verify_signature(body, sign(body).upper().replace("SHA256=", "sha256="), SECRETS)


def test_any_configured_secret_verifies_during_rotation() -> None:
    body = b'{"entry":[]}'
    secrets = (b"new-secret", APP_SECRET.encode())
    verify_signature(body, sign(body, "new-secret"), secrets)
    verify_signature(body, sign(body, APP_SECRET), secrets)
    with pytest.raises(SignatureError):
        verify_signature(body, sign(body, "retired-secret"), secrets)


def test_reserialised_json_does_not_verify() -> None:
    original = compact({"entry": [{"name": "pr\u00e4sentation"}]})  # \u00e4 escaped, as Meta signs
    assert b"\\u00e4" in original
    reserialised = json.dumps(json.loads(original), ensure_ascii=False).encode()
    with pytest.raises(SignatureError):
        verify_signature(reserialised, sign(original), SECRETS)


@given(header=st.one_of(st.none(), st.text(max_size=80)), body=st.binary(max_size=512))
def test_verifier_only_accepts_or_raises_signature_error(header: str | None, body: bytes) -> None:
    try:
        verify_signature(body, header, SECRETS)
    except SignatureError:
        return
    assert header is not None and hmac.compare_digest(
        header.partition("=")[2].strip().lower(),
        hmac.new(SECRETS[0], body, hashlib.sha256).hexdigest(),
    )


@given(body=st.binary(max_size=256))
def test_verifier_accepts_every_correctly_signed_body(body: bytes) -> None:
    verify_signature(body, sign(body), SECRETS)


# --- parse_delivery: pure ----------------------------------------------------------------


def test_template_id_as_int_and_as_string_parse_to_the_same_string() -> None:
    as_int, _, _ = parse_delivery(status_body("APPROVED", template_id=1689556908129832))
    as_str, _, _ = parse_delivery(status_body("APPROVED", template_id="1689556908129832"))
    assert as_int == as_str and as_int[0].template_id == "1689556908129832"


@pytest.mark.parametrize("digits", [20, 21, 25, 32])
def test_integer_ids_past_64_bits_are_read_exactly(digits: int) -> None:
    """orjson would read these as floats: the body goes to the strict decoder instead."""
    template_id = int("9" * digits)
    [change], errors, _ = parse_delivery(status_body("APPROVED", template_id=template_id))
    assert (change.template_id, errors) == ("9" * digits, [])
    waba_id = "1" * digits
    as_text = status_body("APPROVED", waba_id=waba_id)
    body = as_text.replace(f'"id":"{waba_id}"'.encode(), f'"id":{waba_id}'.encode())
    assert body != as_text and parse_delivery(body).changes[0].waba_id == waba_id


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b'{"entry": 5}', b"\xff\xfe\x00", b"[" * 100_000 + b"]" * 100_000],
)
def test_unusable_bodies_raise_payload_error(body: bytes) -> None:
    with pytest.raises(PayloadError):
        parse_delivery(body)


@pytest.mark.parametrize(
    "template_id", [1.689556908129832e15, True, -1, "12a", "", None, "1" * 40, "\u0661\u0662"]
)
def test_bad_template_ids_are_reported_per_change(template_id: Any) -> None:
    changes, errors, _ = parse_delivery(status_body("APPROVED", template_id=template_id))
    assert changes == [] and len(errors) == 1 and "message_template_id" in errors[0]


def test_non_template_fields_are_skipped_without_error_and_named_for_relays() -> None:
    changes, errors, fields = parse_delivery(fixture_body("webhook-batch-mixed.json"))
    assert [c.field for c in changes] == [
        "message_template_status_update",
        "message_template_quality_update",
        "message_template_status_update",
    ]
    assert errors == []
    assert fields == {
        "message_template_status_update", "message_template_quality_update", "messages",
    }  # fmt: skip


# --- the endpoint: handshake ---------------------------------------------------------------


async def test_handshake_echoes_the_challenge_as_plain_text(server: Server) -> None:
    query = {
        "hub.mode": "subscribe",
        "hub.verify_token": VERIFY_TOKEN,
        "hub.challenge": "1158201444",
    }
    status, body, headers = await server.request("GET", "/webhooks/meta", params=query)
    assert (status, body) == (200, "1158201444")
    assert headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "abc"}, 403),
        ({"hub.mode": "subscribe", "hub.challenge": "abc"}, 400),
        ({"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "a"}, 400),
        ({"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "a b"}, 400),
        (
            {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "x" * 65},
            400,
        ),
        ({"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "<a>"}, 400),
        ({}, 400),
    ],
)
async def test_bad_handshakes(server: Server, query: dict[str, str], expected: int) -> None:
    status, body, _ = await server.request("GET", "/webhooks/meta", params=query)
    assert status == expected
    assert body["success"] is False and body["message"]


# --- the endpoint: deliveries ----------------------------------------------------------------


async def test_missing_secret_answers_503_and_stores_nothing(
    settings: Settings, store: Store
) -> None:
    uv, task, base = await start_server(replace(settings, meta_app_secrets=()))
    try:
        async with aiohttp.ClientSession() as session:
            body = fixture_body("webhook-status-approved.json")
            headers = {"X-Hub-Signature-256": sign(body)}
            async with session.post(base + "/webhooks/meta", data=body, headers=headers) as resp:
                assert resp.status == 503
                assert "TEMPLATE_SYNC_META_APP_SECRET" in (await resp.json())["message"]
    finally:
        uv.should_exit = True
        await task
    assert await store.list_deliveries(None, 10) == []


@pytest.mark.parametrize(
    "signature", ["", "sha256=", "sha256=zz", "sha256=" + "0" * 64, "sha1=" + "0" * 40]
)
async def test_unsigned_deliveries_get_401_and_nothing_is_stored(
    server: Server, store: Store, tenant: Tenant, signature: str
) -> None:
    status, body, _ = await server.deliver(fixture_body("webhook-status-approved.json"), signature)
    assert status == 401 and body["success"] is False
    assert await store.list_deliveries(None, 10) == []


async def test_delivery_without_signature_header_gets_401(server: Server, store: Store) -> None:
    body = fixture_body("webhook-status-approved.json")
    status, _, _ = await server.request("POST", "/webhooks/meta", data=body)
    assert status == 401
    assert await store.list_deliveries(None, 10) == []


async def test_non_ascii_escaped_body_verifies_over_raw_bytes(
    server: Server, store: Store, tenant: Tenant
) -> None:
    body = status_body("APPROVED", message_template_name="pr\u00e4sentation_\u00fcber")
    assert b"\\u00e4" in body
    status, _, _ = await server.deliver(body)
    assert status == 200
    template = await template_by_provider(server, tenant, "1689556908129832")
    assert template["name"] == "pr\u00e4sentation_\u00fcber" and template["status"] == "APPROVED"
    stored = await store.list_deliveries(None, 1)
    assert stored[0].body == body


async def test_body_over_the_cap_gets_413(settings: Settings, store: Store) -> None:
    uv, task, base = await start_server(replace(settings, max_body_bytes=1024))
    big = compact({"entry": [], "pad": "x" * 2000})

    async def chunks() -> Any:
        for start in range(0, len(big), 256):
            yield big[start : start + 256]

    try:
        async with aiohttp.ClientSession() as session:
            url, headers = base + "/webhooks/meta", {"X-Hub-Signature-256": sign(big)}
            async with session.post(url, data=big, headers=headers) as resp:
                assert resp.status == 413  # by Content-Length
            async with session.post(url, data=chunks(), headers=headers) as resp:
                assert resp.status == 413  # chunked: counted while reading
                assert (await resp.json())["success"] is False
    finally:
        uv.should_exit = True
        await task
    assert await store.list_deliveries(None, 10) == []


async def test_acknowledged_delivery_is_committed_and_applied(
    server: Server, store: Store, tenant: Tenant
) -> None:
    local_id = await add_template(store, tenant, "1689556908129832")
    body = fixture_body("webhook-status-approved.json")
    status, answer, _ = await server.deliver(body)
    assert (status, answer) == (200, {"success": True})
    [delivery] = await store.list_deliveries(None, 10)
    assert (delivery.body, delivery.outcome, delivery.error) == (body, "processed", None)
    template = await store.get_template(tenant.workspace_id, local_id)
    assert template is not None and template.status == "APPROVED"
    assert template.status_source == "webhook" and template.last_webhook_at is not None


async def test_batch_across_two_wabas_applies_every_change(
    server: Server, store: Store, settings: Settings, tenant: Tenant
) -> None:
    other = await make_tenant(store, settings, waba_id="102290129340399")
    await add_template(store, tenant, "111", status="APPROVED")
    await add_template(store, other, "222", status="PENDING")
    status, _, _ = await server.deliver(fixture_body("webhook-batch-mixed.json"))
    assert status == 200
    promo = await template_by_provider(server, tenant, "111")
    otp = await template_by_provider(server, other, "222")
    assert (promo["status"], promo["quality_score"]) == ("PAUSED", "RED")
    assert (otp["status"], otp["category"]) == ("APPROVED", "UTILITY")
    [delivery] = await store.list_deliveries(None, 10)
    assert delivery.outcome == "processed"  # the "messages" change is stored, not an error


async def test_same_delivery_twice_has_one_effect_and_one_history_row(
    server: Server, store: Store, tenant: Tenant
) -> None:
    local_id = await add_template(store, tenant, "1689556908129832")
    body = fixture_body("webhook-status-approved.json")
    assert (await server.deliver(body))[0] == 200
    assert (await server.deliver(body))[0] == 200
    rows = await history(server, tenant, local_id)
    assert [(r["source"], r["event"]) for r in rows] == [
        ("api", "CREATED"),
        ("api", "PENDING"),
        ("webhook", "APPROVED"),
    ]
    assert len(await store.list_deliveries(None, 10)) == 1  # the same bytes: stored once
    _, metrics, _ = await server.request("GET", "/metrics")
    assert 'template_sync_template_events_total{result="duplicate"} 1.0' in metrics


async def test_replays_of_a_large_body_are_acknowledged_and_stored_once(
    server: Server, store: Store, tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    """20 replays of a 1 MB delivery used to grow the store by 24 MB."""
    local_id = await add_template(store, tenant, "1689556908129832")
    body = status_body("APPROVED", other_info={"description": "x" * 1_000_000})
    answers = await asyncio.gather(*(server.deliver(body) for _ in range(10)))  # one batch
    answers += [await server.deliver(body) for _ in range(10)]  # one after another
    assert [(status, answer) for status, answer, _ in answers] == [(200, {"success": True})] * 20
    [delivery] = await store.list_deliveries(None, 10)
    assert delivery.body == body and delivery.outcome == "processed"
    assert [(r["source"], r["event"]) for r in await history(server, tenant, local_id)] == [
        ("api", "CREATED"),
        ("api", "PENDING"),
        ("webhook", "APPROVED"),
    ]
    _, metrics, _ = await server.request("GET", "/metrics")
    assert 'template_sync_webhook_deliveries_total{outcome="processed"} 1.0' in metrics
    assert 'template_sync_webhook_deliveries_total{outcome="replayed"} 19.0' in metrics
    caplog.set_level("INFO")
    caplog.clear()
    assert (await server.deliver(body))[0] == 200
    line = await access_line(caplog)
    assert line.endswith(  # the replay is logged as the delivery it repeats
        f"delivery {delivery.id} replayed: 1 changes, 0 applied, 0 stale, 1 duplicate, "
        "0 unknown WABA"
    )


async def test_older_event_after_newer_is_recorded_but_not_applied(
    server: Server, store: Store, tenant: Tenant
) -> None:
    local_id = await add_template(store, tenant, "1689556908129832")
    assert (await server.deliver(status_body("APPROVED", entry_time=1751247600)))[0] == 200
    assert (await server.deliver(status_body("PENDING", entry_time=1751247500)))[0] == 200
    template = await store.get_template(tenant.workspace_id, local_id)
    assert template is not None and template.status == "APPROVED"
    last = (await history(server, tenant, local_id))[-1]
    assert (last["event"], last["applied"], last["old_status"], last["new_status"]) == (
        "PENDING",
        False,
        "APPROVED",
        "APPROVED",
    )


@pytest.mark.parametrize("template_id", [1689556908129832, "1689556908129832"])
async def test_template_id_as_int_or_string_reaches_the_same_template(
    server: Server, store: Store, tenant: Tenant, template_id: Any
) -> None:
    local_id = await add_template(store, tenant, "1689556908129832")
    assert (await server.deliver(status_body("REJECTED", template_id, reason="SCAM")))[0] == 200
    template = await store.get_template(tenant.workspace_id, local_id)
    assert template is not None
    assert (template.status, template.rejected_reason) == ("REJECTED", "SCAM")


async def test_unparseable_signed_body_is_quarantined_with_200(
    server: Server, store: Store, tenant: Tenant
) -> None:
    body = b'{"object": "whatsapp_business_account", "entry": [ NaN ]'
    status, answer, _ = await server.deliver(body)
    assert (status, answer) == (200, {"success": True})
    [delivery] = await store.list_deliveries("quarantined", 10)
    assert delivery.body == body and delivery.error and "JSON" in delivery.error


async def test_one_bad_change_does_not_block_the_others(
    server: Server, store: Store, tenant: Tenant
) -> None:
    local_id = await add_template(store, tenant, "1689556908129832")
    document = json.loads(status_body("APPROVED"))
    bad = {"field": "message_template_status_update", "value": {"event": "APPROVED"}}
    document["entry"][0]["changes"].insert(0, bad)
    assert (await server.deliver(compact(document)))[0] == 200
    template = await store.get_template(tenant.workspace_id, local_id)
    assert template is not None and template.status == "APPROVED"
    [delivery] = await store.list_deliveries(None, 10)
    assert delivery.outcome == "quarantined" and "changes[0]" in (delivery.error or "")


async def test_the_stored_error_of_a_delivery_is_bounded(server: Server, store: Store) -> None:
    status, _, _ = await server.deliver(compact({"entry": [{}] * 10_000}))
    assert status == 200
    [delivery] = await store.list_deliveries("quarantined", 10)
    error = delivery.error or ""
    assert error.startswith("entry[0]: entry has no changes list; entry[1]: ")
    assert error.endswith("; and 9,980 more") and len(error) < 1000


async def test_unknown_waba_is_stored_counted_and_acknowledged(
    server: Server, store: Store, tenant: Tenant
) -> None:
    status, _, _ = await server.deliver(status_body("APPROVED", waba_id="999999"))
    assert status == 200
    assert len(await store.list_deliveries("processed", 10)) == 1
    _, metrics, _ = await server.request("GET", "/metrics")
    assert 'template_sync_template_events_total{result="unknown_waba"} 1.0' in metrics
    _, listing, _ = await server.api(tenant, "/templates")
    assert listing["meta"]["total"] == 0


async def test_a_delivery_is_logged_on_its_access_log_line_by_id(
    server: Server, store: Store, tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    assert (await server.deliver(status_body("APPROVED")))[0] == 200
    [delivery] = await store.list_deliveries(None, 10)
    line = await access_line(caplog)
    assert line == (
        f'127.0.0.1 "POST /webhooks/meta" 200 {line.split()[4]} delivery {delivery.id} '
        "processed: 1 changes, 1 applied, 0 stale, 0 duplicate, 0 unknown WABA"
    )


async def access_line(caplog: pytest.LogCaptureFixture) -> str:
    """The one access log line captured, once the response has been sent and it is written."""

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "service.access"]

    written = await eventually(lines, message="no access log line was written")
    assert len(written) == 1, written
    return written[0]


async def test_unknown_template_of_known_waba_is_created_from_the_event(
    server: Server, tenant: Tenant
) -> None:
    assert (await server.deliver(fixture_body("webhook-status-rejected.json")))[0] == 200
    template = await template_by_provider(server, tenant, "1689556908129835")
    assert (template["name"], template["language"], template["category"]) == (
        "abandoned_cart",
        "en",
        "MARKETING",
    )
    assert (template["status"], template["rejected_reason"]) == ("REJECTED", "INVALID_FORMAT")


async def test_flag_reinstate_archive_unarchive_through_webhooks(
    server: Server, store: Store, tenant: Tenant
) -> None:
    local_id = await add_template(store, tenant, "1689556908129832", status="APPROVED")
    steps = [("FLAGGED", "APPROVED", True), ("REINSTATED", "APPROVED", False),
             ("PAUSED", "PAUSED", False), ("ARCHIVED", "ARCHIVED", False),
             ("UNARCHIVED", "PAUSED", False), ("LOCKED", "PAUSED", False)]  # fmt: skip
    for offset, (event, status, flagged) in enumerate(steps):
        assert (await server.deliver(status_body(event, entry_time=1751247548 + offset)))[0] == 200
        template = await store.get_template(tenant.workspace_id, local_id)
        assert template is not None and (template.status, template.flagged) == (status, flagged)
    rows = await history(server, tenant, local_id)
    assert [(r["source"], r["event"]) for r in rows[:2]] == [
        ("api", "CREATED"),
        ("api", "APPROVED"),
    ]
    assert [r["applied"] for r in rows[2:]] == [True, True, True, True, True, False]


async def test_quality_and_category_updates(server: Server, store: Store, tenant: Tenant) -> None:
    await add_template(store, tenant, "806312974732579", category="UTILITY")
    await add_template(store, tenant, "278077987957091", category="UTILITY")
    for name in ("webhook-quality-update.json", "webhook-category-notice.json"):
        assert (await server.deliver(fixture_body(name)))[0] == 200
    assert (await template_by_provider(server, tenant, "806312974732579"))[
        "quality_score"
    ] == "YELLOW"
    assert (await template_by_provider(server, tenant, "278077987957091"))["category"] == "UTILITY"
    assert (await server.deliver(fixture_body("webhook-category-changed.json")))[0] == 200
    assert (await template_by_provider(server, tenant, "278077987957091"))[
        "category"
    ] == "MARKETING"


async def test_rejected_reason_is_cleared_when_approved_later(
    server: Server, store: Store, tenant: Tenant
) -> None:
    local_id = await add_template(store, tenant, "1689556908129832")
    await server.deliver(status_body("REJECTED", entry_time=1751247500, reason="INVALID_FORMAT"))
    await server.deliver(status_body("APPROVED", entry_time=1751247600))
    template = await store.get_template(tenant.workspace_id, local_id)
    assert template is not None and (template.status, template.rejected_reason) == (
        "APPROVED",
        None,
    )


def test_settings_secret_never_shows_in_repr() -> None:
    settings = Settings(meta_app_secrets=(Secret(APP_SECRET),))
    assert APP_SECRET not in repr(settings) and APP_SECRET not in str(settings)
