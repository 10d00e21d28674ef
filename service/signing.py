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
import secrets

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
SECRET_BYTES = 24
SIGNATURE_VERSION = "v1"


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
