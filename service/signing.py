"""Standard Webhooks signatures for outbound notifications (design section 11).

Receivers verify with the Standard Webhooks reference libraries as they are, so the format is
theirs exactly: `v1,` + base64 HMAC-SHA256 keyed by the base64-decoded secret over
`{id}.{timestamp}.{body}`. Secrets never appear in exceptions or logs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
SECRET_BYTES = 24
SIGNATURE_VERSION = "v1"
TOLERANCE_S = 300  # the reference libraries' window around the receiver's clock
TIMESTAMP = re.compile(r"[0-9]{1,12}")


class VerificationError(ValueError):
    """A delivery whose signature does not verify; the message never shows the secret."""


def new_secret() -> str:
    """A fresh subscription secret; shown to the subscriber once, at registration."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signature_headers(
    secret: str, message_id: str, timestamp_s: int, body: bytes
) -> dict[str, str]:
    """The headers of one delivery attempt; `timestamp_s` is the attempt's, not the event's."""
    signed = f"{message_id}.{timestamp_s}.".encode() + body
    digest = hmac.new(_secret_key(secret), signed, hashlib.sha256).digest()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}",
    }


def verify(secret: str, headers: Mapping[str, str], body: bytes, now_s: float) -> None:
    """Check a delivery as a receiver does (the service signs; the demo's receiver and any
    Python app can verify with this): `webhook-id` present, `webhook-timestamp` within
    TOLERANCE_S of `now_s`, and one of the space-separated `webhook-signature` values made
    with `secret`. `headers` must be looked up case-insensitively (aiohttp's and Starlette's
    are). VerificationError says which check failed."""
    message_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    if not message_id or not TIMESTAMP.fullmatch(stamp):
        raise VerificationError("webhook-id or webhook-timestamp missing or malformed")
    if abs(now_s - int(stamp)) > TOLERANCE_S:
        raise VerificationError(f"webhook-timestamp {stamp} is not within 5 min of now")
    want = signature_headers(secret, message_id, int(stamp), body)["webhook-signature"]
    given = headers.get("webhook-signature", "").split()
    if not any(hmac.compare_digest(want.encode(), sig.encode()) for sig in given):
        raise VerificationError("webhook-signature does not verify with the secret")


def _secret_key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_` secret; the message names the problem, never the value."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"webhook secret must start with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"webhook secret must be {SECRET_PREFIX!r} + standard base64") from None
    if not key:
        raise ValueError("webhook secret is empty after its prefix")
    return key
