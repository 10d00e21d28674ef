"""Outbound webhook signatures verify with the Standard Webhooks reference library as they are."""

from __future__ import annotations

import base64
import re
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from service.signing import new_secret, signature_headers

BODY = b'{"type":"template.status_changed","data":{"history_id":1234,"name":"caf\xc3\xa9"}}'
SECRET_SHAPE = re.compile(r"whsec_[A-Za-z0-9+/]{32}")


def signed_now(secret: str, body: bytes = BODY) -> dict[str, str]:
    return signature_headers(secret, "evt_1234", int(time.time()), body)


def test_reference_library_verifies_our_headers() -> None:
    secret = new_secret()
    headers = signed_now(secret)
    assert Webhook(secret).verify(BODY, headers)["data"]["history_id"] == 1234
    assert headers["webhook-id"] == "evt_1234"
    assert headers["webhook-signature"].startswith("v1,")


def test_body_is_signed_byte_for_byte() -> None:
    secret = new_secret()
    body = b"\xff\x00 not json, not utf-8"
    assert Webhook(secret).verify(body, signed_now(secret, body), json_parse=False) is None


@pytest.mark.parametrize("body", [BODY + b" ", BODY.replace(b"1234", b"1235"), b""])
def test_tampered_body_fails_verification(body: bytes) -> None:
    secret = new_secret()
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, signed_now(secret))


@pytest.mark.parametrize("shift_s", [-1, 1])
def test_tampered_timestamp_fails_verification(shift_s: int) -> None:
    secret = new_secret()
    headers = signed_now(secret)
    shifted = str(int(headers["webhook-timestamp"]) + shift_s)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**headers, "webhook-timestamp": shifted})


def test_tampered_message_id_fails_verification() -> None:
    secret = new_secret()
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**signed_now(secret), "webhook-id": "evt_1235"})


def test_another_secret_fails_verification() -> None:
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, signed_now(new_secret()))


def test_new_secret_shape() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert SECRET_SHAPE.fullmatch(secret)
        assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("c2VjcmV0LWtleS1ieXRlcw==", "must start with 'whsec_'"),
        ("whsec_not*base64!", "standard base64"),
        ("whsec_c2VjcmV", "standard base64"),  # truncated
        ("whsec_", "empty"),
    ],
)
def test_malformed_secret_is_a_clear_error_without_the_secret(secret: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as raised:
        signature_headers(secret, "evt_1", 1_780_000_000, BODY)
    key_text = secret.removeprefix("whsec_")
    assert not key_text or key_text not in str(raised.value)
