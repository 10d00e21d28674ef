"""Meta's template webhooks as Meta sends them: the one builder of their bodies and signatures.

The demo, the bench and the tests build deliveries here. A delivery is
`{"object": "whatsapp_business_account", "entry": [...]}`; each entry names a WABA (`id`) and
a time (unix seconds) and carries changes, one template field each. Meta sends it as compact
JSON with non-ASCII escaped (`\\u00e4`), signed in `X-Hub-Signature-256` with `sha256=` + the
hex HMAC-SHA256 of those exact bytes under the app secret. Keys come in the order of Meta's
examples (tests/fixtures/webhook-*.json).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from .events import CATEGORY_FIELD, QUALITY_FIELD, STATUS_FIELD

OBJECT = "whatsapp_business_account"
SIGNATURE_HEADER = "X-Hub-Signature-256"

Json = dict[str, Any]


def meta_id(template_id: str) -> int | str:
    """A template id as Meta's webhooks document it: an integer (exact in JSON, never a float)."""
    return int(template_id) if template_id.isdecimal() else template_id


def status_change(
    event: str, template_id: int | str, name: str, language: str, *,
    reason: str | None = "NONE", category: str | None = None, rejection_info: Json | None = None,
    other_info: Json | None = None, disable_info: Json | None = None,
) -> Json:  # fmt: skip
    """A `message_template_status_update` change; the optional parts only when given."""
    value: Json = {
        "event": event,
        "message_template_id": template_id,
        "message_template_name": name,
        "message_template_language": language,
        "reason": reason,
    }
    optional = {
        "message_template_category": category,
        "rejection_info": rejection_info,
        "other_info": other_info,
        "disable_info": disable_info,
    }
    value.update((key, part) for key, part in optional.items() if part is not None)
    return {"field": STATUS_FIELD, "value": value}


def quality_change(
    template_id: int | str, name: str, language: str, new_score: str,
    previous_score: str | None = None,
) -> Json:  # fmt: skip
    """A `message_template_quality_update` change."""
    value: Json = {} if previous_score is None else {"previous_quality_score": previous_score}
    value["new_quality_score"] = new_score
    value.update(_template(template_id, name, language))
    return {"field": QUALITY_FIELD, "value": value}


def category_change(
    template_id: int | str, name: str, language: str, new_category: str, *,
    previous_category: str | None = None, correct_category: str | None = None,
    category_update_timestamp: int | None = None,
) -> Json:  # fmt: skip
    """A `template_category_update` change: a category changed (`previous_category`), or
    Meta's notice that it will change (`correct_category` at `category_update_timestamp`)."""
    value = _template(template_id, name, language)
    if previous_category is not None:
        value["previous_category"] = previous_category
    value["new_category"] = new_category
    if correct_category is not None:
        value["correct_category"] = correct_category
    if category_update_timestamp is not None:
        value["category_update_timestamp"] = category_update_timestamp
    return {"field": CATEGORY_FIELD, "value": value}


def _template(template_id: int | str, name: str, language: str) -> Json:
    return {
        "message_template_id": template_id,
        "message_template_name": name,
        "message_template_language": language,
    }


def entry(waba_id: str, entry_time: int, *changes: Json) -> Json:
    """One entry: the WABA the changes concern, when (unix seconds), and the changes."""
    return {"id": waba_id, "time": entry_time, "changes": list(changes)}


def delivery(*entries: Json) -> Json:
    """The document of one delivery (Meta batches up to 1000 changes in it)."""
    return {"object": OBJECT, "entry": list(entries)}


def encode(document: Any) -> bytes:
    """The bytes Meta sends: compact JSON, non-ASCII escaped as `\\uXXXX`."""
    return json.dumps(document, separators=(",", ":")).encode()


def signature(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value: `sha256=` + hex HMAC-SHA256 of the bytes."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes) -> dict[str, str]:
    """The headers of a delivery of `body` as Meta posts it."""
    return {"Content-Type": "application/json", SIGNATURE_HEADER: signature(secret, body)}


def status_delivery(
    *, waba_id: str, template_id: str, event: str, name: str, language: str,
    entry_time: int | None = None, reason: str | None = "NONE",
) -> bytes:  # fmt: skip
    """The bytes of one status change in one entry (at `entry_time`, else now)."""
    change = status_change(event, meta_id(template_id), name, language, reason=reason)
    stamp = int(time.time()) if entry_time is None else entry_time
    return encode(delivery(entry(waba_id, stamp, change)))
