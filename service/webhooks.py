"""Meta webhooks: signature verification (pure), payload parsing (pure) and the endpoints."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from .config import PREFIX
from .errors import ApiError
from .events import (
    CATEGORY_FIELD,
    QUALITY_FIELD,
    STATUS_FIELD,
    WEBHOOK_FIELDS,
    Change,
    normalise_reason,
)
from .logs import LOG_DETAIL, LogLimiter
from .state import Services, services
from .storage import StoreUnavailable
from .times import now_ms

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-hub-signature-256"
SIGNATURE_KEY = SIGNATURE_HEADER.encode()  # as ASGI names headers: lower-case bytes
CHALLENGE = re.compile(r"[A-Za-z0-9_-]{1,64}")
HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
RETRY_AFTER_S = "5"
MAX_TEXT = 1024
ACKNOWLEDGED = b'{"success":true}'
ACKNOWLEDGED_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(ACKNOWLEDGED)).encode()),
]
MAX_ERRORS_LISTED = 20
MAX_INT_DIGITS = 4300  # Python's int-from-text limit (sys.get_int_max_str_digits)
MISMATCH = "signature mismatch"
# What an operator can do about a refused signature, by SignatureError message.
SIGNATURE_FIXES = {
    MISMATCH: f"signed with another secret: compare {PREFIX}META_APP_SECRET with the App "
    "secret in Meta's App Dashboard (App settings > Basic); while rotating, list both, "
    "comma-separated",
}
SIGNATURE_FIX = (
    "not signed as Meta signs: a sender other than Meta, or a proxy that drops or rewrites "
    "X-Hub-Signature-256"
)


class SignatureError(Exception):
    """The request is not signed by any configured app secret (the message says how)."""


class PayloadError(Exception):
    """A signed body, or one part of it, is not a template delivery we can use."""


def verify_signature(body: bytes, header: str | None, secrets: Sequence[bytes]) -> None:
    """Accept when `header` is `sha256=<hex>` of HMAC-SHA256(secret, body) for any secret.

    Hex digits are compared case-insensitively (Meta sends lowercase). Every other
    input raises SignatureError; nothing else is raised.
    """
    if not header:
        raise SignatureError("missing signature")
    scheme, _, digest = header.partition("=")
    if scheme.strip().lower() != "sha256" or not HEX_DIGEST.fullmatch(digest.strip()):
        raise SignatureError("malformed signature")
    given = bytes.fromhex(digest.strip())
    matched = False
    for secret in secrets:  # no early exit: time does not tell which secret matched
        matched |= hmac.compare_digest(hmac.digest(secret, body, hashlib.sha256), given)
    if not matched:
        raise SignatureError(MISMATCH)


class ParsedDelivery(NamedTuple):
    changes: list[Change]  # the template changes
    errors: list[str]  # one per template change that could not be read
    fields: frozenset[str]  # of every change, template or not (relay filters choose by them)


def parse_delivery(body: bytes) -> ParsedDelivery:
    """A delivery's template changes, an error per one that could not be read, and the
    fields of all its changes.

    Raises PayloadError when the body as a whole is unusable.
    """
    return read_delivery(_decode(body))


def read_delivery(document: Any) -> ParsedDelivery:
    """parse_delivery's reading of a decoded body."""
    if not isinstance(document, dict) or not isinstance(document.get("entry"), list):
        raise PayloadError("body has no entry list")
    parsed = ParsedDelivery([], [], frozenset())
    fields: set[str] = set()
    for index, entry in enumerate(document["entry"]):
        try:
            parsed.changes.extend(_entry_changes(entry, index, parsed.errors, fields))
        except PayloadError as error:
            parsed.errors.append(f"entry[{index}]: {error}")
    return parsed._replace(fields=frozenset(fields))


def _decode(body: bytes) -> Any:
    """The body's JSON: orjson's reading where it is exactly the strict decoder's, else the
    strict decoder's (RFC 8259 JSON in any of its encodings, NaN and Infinity refused,
    integers of any size, lone surrogates kept for the fields to report).

    orjson refuses what it cannot read exactly (other encodings, a BOM, lone surrogates,
    deep nesting), but reads an integer beyond 64 bits as a float: the only integers read
    here are entry.id, entry.time and the template id, so a float in one of those sends the
    body to the strict decoder too."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    else:
        if _exact(document):
            return document
    return decode_strictly(body)


def decode_strictly(body: bytes) -> Any:
    """The body's JSON by the standard library's decoder, NaN and Infinity refused and
    integers of any size kept (as text past Python's limit); PayloadError if it is none."""
    try:
        return _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    except (ValueError, RecursionError) as error:
        raise PayloadError(f"body is not valid JSON: {type(error).__name__}") from None


def _exact(document: Any) -> bool:
    """No float where the parser reads an integer (see _decode)."""
    entries = document.get("entry") if isinstance(document, dict) else None
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("id"), float) or isinstance(entry.get("time"), float):
            return False
        changes = entry.get("changes")
        for change in changes if isinstance(changes, list) else ():
            value = change.get("value") if isinstance(change, dict) else None
            if isinstance(value, dict) and isinstance(value.get("message_template_id"), float):
                return False
    return True


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_int(digits: str) -> int | str:
    """An integer, or its digits as text when Python refuses to convert that many: the
    field it sits in is then reported on its own and the rest of the delivery applies."""
    return int(digits) if len(digits) <= MAX_INT_DIGITS else digits


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_int=_parse_int)


def _entry_changes(entry: Any, index: int, errors: list[str], fields: set[str]) -> list[Change]:
    if not isinstance(entry, dict) or not isinstance(entry.get("changes"), list):
        raise PayloadError("entry has no changes list")
    waba_id = _identifier(entry.get("id"), "entry.id")
    entry_time = entry.get("time")
    if type(entry_time) is not int or not 0 < entry_time < 2**42:
        raise PayloadError("entry.time is not a unix time")
    result = []
    for position, item in enumerate(entry["changes"]):
        field = item.get("field") if isinstance(item, dict) else None
        if isinstance(field, str):
            fields.add(field)
        if field not in WEBHOOK_FIELDS:
            continue  # other fields are stored with the delivery, acknowledged and relayed
        try:
            result.append(_change(waba_id, entry_time, field, item.get("value")))
        except PayloadError as error:
            errors.append(f"entry[{index}].changes[{position}]: {error}")
    return result


def _change(waba_id: str, entry_time: int, field: str, value: Any) -> Change:
    if not isinstance(value, dict):
        raise PayloadError("value is not an object")
    key = {STATUS_FIELD: "event", QUALITY_FIELD: "new_quality_score"}.get(field, "new_category")
    event = _text(value.get(key), key)
    if not event:
        raise PayloadError(f"{key} is missing")
    category = value.get("message_template_category")
    return Change(
        waba_id=waba_id,
        field=field,
        event=event.upper(),
        template_id=_identifier(value.get("message_template_id"), "message_template_id"),
        name=_text(value.get("message_template_name"), "message_template_name"),
        language=_text(value.get("message_template_language"), "message_template_language"),
        category=_text(category if field != CATEGORY_FIELD else event, "category"),
        reason=normalise_reason(_text(value.get("reason"), "reason")),
        entry_time=entry_time,
        previous=_text(value.get("previous_category"), "previous_category"),
    )


def _identifier(value: Any, name: str) -> str:
    """Meta ids come as integers or strings of digits; never through a float."""
    if type(value) is int and value >= 0:
        value = str(value)
    if (
        not isinstance(value, str)
        or not value.isdecimal()
        or not value.isascii()
        or len(value) > 32
    ):
        raise PayloadError(f"{name} is not an id")
    return value


def _text(value: Any, name: str) -> str | None:
    """A string that every store can hold (UTF-8, no NUL, bounded), or None when absent."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT or "\x00" in value:
        raise PayloadError(f"{name} is not a short string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadError(f"{name} is not valid Unicode") from None
    return value


async def handshake(request: Request) -> Response:
    """Meta's subscription check: echo the challenge when the verify token matches."""
    expected = services(request).settings.meta_verify_token
    params = request.query_params
    mode, token, challenge = (params.get(f"hub.{k}") for k in ("mode", "verify_token", "challenge"))
    if (
        mode != "subscribe"
        or token is None
        or challenge is None
        or not CHALLENGE.fullmatch(challenge)
    ):
        raise ApiError(400, "Expected hub.mode=subscribe, hub.verify_token and hub.challenge")
    if expected is None:
        logger.error("webhook handshake refused: set %sMETA_VERIFY_TOKEN", PREFIX)
        raise ApiError(503, f"Verify token not configured: set {PREFIX}META_VERIFY_TOKEN")
    if not hmac.compare_digest(token.encode(), expected.value.encode()):
        raise ApiError(403, "Verify token does not match")
    return PlainTextResponse(challenge)


class WebhookRoute:
    """/webhooks/meta as an ASGI app: GET (Meta's handshake) through Starlette's Request;
    POST, the hot path, on the raw ASGI messages (`receive_delivery`)."""

    __name__ = "webhooks_meta"  # the `route` label of the latency metric

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "POST":
            await receive_delivery(scope, receive, send)
            return
        response = await handshake(Request(scope, receive))
        await response(scope, receive, send)


async def receive_delivery(scope: Scope, receive: Receive, send: Send) -> None:
    """A signed delivery: stored before it is acknowledged, then applied in the same commit.

    No Request or Response objects on the hot path (bench/RESULTS.md): the headers and the
    body are read from the ASGI scope and messages, and the 200 is two messages. A refusal
    raises ApiError before anything is sent, answered by the app's handler as elsewhere."""
    svc: Services = scope["state"]["services"]
    if not svc.app_secrets:
        svc.metrics.rejected.labels("not_configured").inc()
        logger.error("webhook refused: set %sMETA_APP_SECRET", PREFIX)
        raise ApiError(503, f"Webhook secret not configured: set {PREFIX}META_APP_SECRET")
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    body = await read_asgi_body(headers, receive, svc.settings.max_body_bytes)
    signatures = [value.decode("latin-1") for name, value in headers if name == SIGNATURE_KEY]
    try:
        verify_signature(body, _one_signature(signatures), svc.app_secrets)
    except SignatureError as error:
        svc.metrics.rejected.labels("signature").inc()
        _warn_refused(svc.log_limiter, str(error))
        raise ApiError(401, f"Invalid webhook signature: {error}") from None
    try:
        changes, errors, fields = parse_delivery(body)
    except PayloadError as error:
        changes, errors, fields = [], [str(error)], frozenset()
    try:
        result = await svc.store.record_delivery(
            body, now_ms(), changes, _error_summary(errors), signatures[0], fields
        )
    except StoreUnavailable as error:
        svc.metrics.rejected.labels("store_unavailable").inc()
        logger.error("webhook not stored, asking Meta to retry: %s", error)
        raise ApiError(
            503, "Store unavailable, retry later", headers={"Retry-After": RETRY_AFTER_S}
        ) from None
    svc.metrics.delivery(result)
    # Relays go at once; notifications at the dispatcher's next tick (DISPATCH_TICK_S): a
    # pass per webhook would cost ingest two transactions each. Streams learn of a change
    # at once too.
    if result.relayed:
        svc.dispatcher.nudge()
    if result.applied:
        svc.watch.nudge()
    scope[LOG_DETAIL] = lambda: (
        f"delivery {result.delivery_id} {result.outcome}: {len(changes)} changes, "
        f"{result.applied} applied, {result.stale} stale, {result.duplicate} duplicate, "
        f"{result.unknown_waba} unknown WABA"
    )  # ends the request's access log line (one line per request), formatted only if logged
    await send({"type": "http.response.start", "status": 200, "headers": ACKNOWLEDGED_HEADERS})
    await send({"type": "http.response.body", "body": ACKNOWLEDGED})


def _warn_refused(limiter: LogLimiter, reason: str) -> None:
    """Warn about a refused signature with its fix, at most once a minute per reason.

    Only the reason, from a fixed set: never the body, the header or a secret.
    """
    held_back = limiter.admit(reason)
    if held_back is None:
        return
    logger.warning(
        "webhook refused with 401, %s: %s%s", reason, SIGNATURE_FIXES.get(reason, SIGNATURE_FIX),
        f" ({held_back} more since the last such line)" if held_back else "",
    )  # fmt: skip


def _one_signature(values: list[str]) -> str | None:
    """The signature header; several of them are refused, as ambiguous (Meta sends one)."""
    if len(values) > 1:
        raise SignatureError("several signature headers")
    return values[0] if values else None


def _error_summary(errors: list[str]) -> str | None:
    """The errors of a delivery as one text of bounded size (a body of 10,000 bad entries
    would otherwise store a 370 KB error)."""
    if len(errors) <= MAX_ERRORS_LISTED:
        return "; ".join(errors) or None
    shown = "; ".join(errors[:MAX_ERRORS_LISTED])
    return f"{shown}; and {len(errors) - MAX_ERRORS_LISTED:,} more"


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, read once; 413 as soon as it is known to exceed `max_bytes`."""
    return await read_asgi_body(request.scope["headers"], request.receive, max_bytes)


async def read_asgi_body(
    headers: list[tuple[bytes, bytes]], receive: Receive, max_bytes: int
) -> bytes:
    """`read_body` on the raw ASGI messages: a declared Content-Length over the cap is 413
    before a byte is read, and so is a body found to pass it while reading."""
    declared = next((value for name, value in headers if name == b"content-length"), None)
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "Invalid Content-Length")
        if int(declared) > max_bytes:
            raise ApiError(413, f"Body larger than {max_bytes} bytes")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            logger.info("client went away before sending the whole body; nothing stored")
            raise ApiError(400, "Incomplete body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, f"Body larger than {max_bytes} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
