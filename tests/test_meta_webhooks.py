"""The builder of Meta's webhook bodies: Meta's own examples rebuilt byte for byte, signed."""

from __future__ import annotations

import json
import time

import pytest

from service import meta_webhooks as meta
from service.webhooks import SignatureError, parse_delivery, verify_signature

from .conftest import APP_SECRET, WABA_ID, fixture_body

TEMPLATE_ID = 1689556908129832
PAUSED_FOR_6_HOURS = (
    "Your template has been paused for 6 hours because it continued to have issues."
)
REJECTION_INFO = {
    "reason": "Parameters are placed next to each other without text between them.",
    "recommendation": "Separate parameters with descriptive text.",
}

FIXTURES = {
    "webhook-status-approved.json": meta.entry(
        WABA_ID, 1751247548,
        meta.status_change("APPROVED", TEMPLATE_ID, "order_confirmation", "en_US",
                           category="UTILITY"),
    ),
    "webhook-status-rejected.json": meta.entry(
        WABA_ID, 1751247548,
        meta.status_change("REJECTED", 1689556908129835, "abandoned_cart", "en",
                           reason="INVALID_FORMAT", category="MARKETING",
                           rejection_info=REJECTION_INFO),
    ),
    "webhook-status-flagged.json": meta.entry(
        WABA_ID, 1751260000,
        meta.status_change("FLAGGED", TEMPLATE_ID, "order_confirmation", "en_US",
                           disable_info={"disable_date": 1751864800}),
    ),
    "webhook-quality-update.json": meta.entry(
        WABA_ID, 1674864290,
        meta.quality_change(806312974732579, "welcome_template", "en-US", "YELLOW", "GREEN"),
    ),
    "webhook-category-changed.json": meta.entry(
        WABA_ID, 1746169200,
        meta.category_change(278077987957091, "welcome_template", "en-US", "MARKETING",
                             previous_category="UTILITY"),
    ),
    "webhook-category-notice.json": meta.entry(
        WABA_ID, 1746082800,
        meta.category_change(278077987957091, "welcome_template", "en-US", "UTILITY",
                             correct_category="MARKETING", category_update_timestamp=1746169200),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_metas_examples_are_rebuilt_byte_for_byte(name: str) -> None:
    assert meta.encode(meta.delivery(FIXTURES[name])) == fixture_body(name)


def test_a_paused_template_whose_id_meta_sent_as_a_string() -> None:
    """Meta's example of a pause orders its keys otherwise: equal as JSON, not as bytes."""
    info = {"title": "SECOND_PAUSE", "description": PAUSED_FOR_6_HOURS}
    change = meta.status_change("PAUSED", "1054512345678901", "testing_template", "en",
                                other_info=info)  # fmt: skip
    body = meta.encode(meta.delivery(meta.entry(WABA_ID, 1751250000, change)))
    assert json.loads(body) == json.loads(fixture_body("webhook-status-paused.json"))


def test_a_batch_of_fields_and_wabas() -> None:
    fixture = fixture_body("webhook-batch-mixed.json")
    messages = json.loads(fixture)["entry"][1]["changes"][1]  # not a template field
    pause = {"title": "FIRST_PAUSE", "description": "Paused for 3 hours."}
    batch = meta.delivery(
        meta.entry(
            WABA_ID, 1751247548,
            meta.status_change("PAUSED", 111, "promo", "en", other_info=pause),
            meta.quality_change(111, "promo", "en", "RED", "YELLOW"),
        ),
        meta.entry(
            "102290129340399", 1751247549,
            meta.status_change("APPROVED", 222, "otp", "en_US", category="AUTHENTICATION"),
            messages,
        ),
    )  # fmt: skip
    assert meta.encode(batch) == fixture


def test_status_delivery_is_compact_escaped_and_parses() -> None:
    body = meta.status_delivery(
        waba_id="1", template_id="3", event="APPROVED", name="b\u00e4", language="de",
        entry_time=2,
    )  # fmt: skip
    assert body == (
        b'{"object":"whatsapp_business_account","entry":[{"id":"1","time":2,"changes":[{"field":'
        b'"message_template_status_update","value":{"event":"APPROVED","message_template_id":3,'
        b'"message_template_name":"b\\u00e4","message_template_language":"de","reason":"NONE"}}]}]}'
    )
    [change], errors, _ = parse_delivery(body)
    assert errors == [] and (change.template_id, change.name) == ("3", "b\u00e4")
    other = meta.status_delivery(
        waba_id="1", template_id="abc", event="REJECTED", name="n", language="en", reason=None
    )
    assert b'"message_template_id":"abc",' in other and b'"reason":null' in other
    assert abs(json.loads(other)["entry"][0]["time"] - time.time()) < 60  # no entry_time: now


def test_signature_is_metas_and_the_service_verifies_it() -> None:
    # the HMAC-SHA256 example of RFC 2104's Wikipedia article (key "key")
    fox = b"The quick brown fox jumps over the lazy dog"
    assert meta.signature("key", fox) == (
        "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    )
    body = fixture_body("webhook-status-approved.json")
    headers = meta.signed_headers(APP_SECRET, body)
    assert headers["Content-Type"] == "application/json"
    verify_signature(body, headers["X-Hub-Signature-256"], [APP_SECRET.encode()])
    with pytest.raises(SignatureError):
        verify_signature(body, headers["X-Hub-Signature-256"], [b"another-secret"])
    with pytest.raises(SignatureError):
        verify_signature(body + b" ", headers["X-Hub-Signature-256"], [APP_SECRET.encode()])
