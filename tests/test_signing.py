"""Outbound webhook signatures verify with the Standard Webhooks reference library as they are."""

from __future__ import annotations

import base64
import re
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from service.signing import TOLERANCE_S, VerificationError, new_secret, signature_headers, verify

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


# --- verify: what a receiver does, held to the reference library's signing -----------------


def reference_signed(secret: str, at_s: int, body: bytes = BODY) -> dict[str, str]:
    """Headers as the reference library signs a delivery at `at_s`."""
    stamp = datetime.fromtimestamp(at_s, tz=UTC)
    signature = Webhook(secret).sign("evt_1234", stamp, body.decode())
    return {
        "webhook-id": "evt_1234",
        "webhook-timestamp": str(at_s),
        "webhook-signature": signature,
    }


def test_verify_accepts_what_the_reference_library_signs_and_several_signatures() -> None:
    secret, now_s = new_secret(), int(time.time())
    headers = reference_signed(secret, now_s)
    verify(secret, headers, BODY, now_s)
    rotated = f"v1,{base64.b64encode(b'x' * 32).decode()} {headers['webhook-signature']}"
    verify(secret, {**headers, "webhook-signature": rotated}, BODY, now_s + TOLERANCE_S)


@pytest.mark.parametrize(
    ("change", "message"),
    [({"webhook-id": ""}, "webhook-id or webhook-timestamp missing or malformed"),
     ({"webhook-timestamp": "soon"}, "webhook-id or webhook-timestamp missing or malformed"),
     ({"webhook-timestamp": "1"}, "not within 5 min of now"),
     ({"webhook-id": "evt_1235"}, "does not verify with the secret"),
     ({"webhook-signature": ""}, "does not verify with the secret")],
)  # fmt: skip
def test_verify_says_which_check_failed(change: dict[str, str], message: str) -> None:
    secret, now_s = new_secret(), int(time.time())
    with pytest.raises(VerificationError, match=message) as raised:
        verify(secret, {**reference_signed(secret, now_s), **change}, BODY, now_s)
    assert secret not in str(raised.value)


def test_verify_refuses_another_secret_a_tampered_body_and_an_old_stamp() -> None:
    secret, now_s = new_secret(), int(time.time())
    headers = reference_signed(secret, now_s)
    for other_secret, body, at_s in ((new_secret(), BODY, now_s), (secret, BODY + b" ", now_s),
                                     (secret, BODY, now_s + TOLERANCE_S + 1)):  # fmt: skip
        with pytest.raises(VerificationError):
            verify(other_secret, headers, body, at_s)
