"""A workspace's signed outbound webhooks over the bearer-token API (design section 11)."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request

from .api import authorise, authorise_write
from .errors import ApiError
from .responses import JSONResponse
from .state import services
from .storage import NotFound, NotificationAttempt
from .subscriptions import InvalidSubscription, subscribe, subscription_json
from .times import iso, now_ms
from .webhooks import read_body

# Room for any body the schema allows: a URL of 2,048 characters, each up to 12 bytes as JSON
# escapes ("\\ud852\\ude3a"), and the event types.
MAX_BODY_BYTES = 64 * 1024
MAX_DELIVERIES = 100
FIELDS = ("url", "events")
# What a subscription id can be; anything else is not one, and is not sent to the store.
SUBSCRIPTION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# The 201 answer, as design section 11 has it: the secret is shown here and nowhere else.
CREATED_FIELDS = ("id", "url", "events", "enabled", "created_at")


async def create_webhook(request: Request) -> JSONResponse:
    workspace_id = await authorise_write(request)
    document = _json_object(await read_body(request, MAX_BODY_BYTES))
    svc = services(request)
    try:
        registered = await subscribe(
            svc.store, svc.cipher, workspace_id, document.get("url"),
            document.get("events"), allow_private=svc.settings.webhooks_allow_private,
            now_ms=now_ms(),
        )  # fmt: skip
    except InvalidSubscription as error:
        raise ApiError(422, str(error), errors=error.errors) from None
    shown = subscription_json(registered.subscription)
    data = {name: shown[name] for name in CREATED_FIELDS} | {"secret": registered.secret}
    return JSONResponse({"success": True, "data": data}, status_code=201)


def _json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object of the accepted fields only; 422 in the API's shape if not."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deep
        document = None
    if not isinstance(document, dict):
        message = 'The body must be a JSON object such as {"url": "https://example.com/hook"}.'
        raise ApiError(422, message, errors={"body": [message]})
    accepted = ", ".join(FIELDS)
    errors = {
        name: [f"Unknown field {name!r}; accepted: {accepted}."]
        for name in document
        if name not in FIELDS
    }
    if errors:
        raise ApiError(422, next(iter(errors.values()))[0], errors=errors)
    return document


async def list_webhooks(request: Request) -> JSONResponse:
    workspace_id = await authorise(request)
    found = await services(request).store.list_subscriptions(workspace_id)
    return JSONResponse({"success": True, "data": [subscription_json(item) for item in found]})


async def delete_webhook(request: Request) -> JSONResponse:
    """Its queued events are dropped with it."""
    workspace_id = await authorise_write(request)
    try:
        await services(request).store.remove_subscription(workspace_id, _subscription_id(request))
    except NotFound:
        raise _not_found() from None
    return JSONResponse({"success": True})


async def enable_webhook(request: Request) -> JSONResponse:
    """Deliver again after the subscription was disabled, including the events committed
    meanwhile."""
    workspace_id = await authorise_write(request)
    try:
        enabled = await services(request).store.enable_subscription(
            workspace_id, _subscription_id(request)
        )
    except NotFound:
        raise _not_found() from None
    return JSONResponse({"success": True, "data": subscription_json(enabled)})


async def webhook_deliveries(request: Request) -> JSONResponse:
    """The latest attempts, newest first."""
    workspace_id = await authorise(request)
    try:
        attempts = await services(request).store.subscription_attempts(
            workspace_id, _subscription_id(request), MAX_DELIVERIES
        )
    except NotFound:
        raise _not_found() from None
    return JSONResponse({"success": True, "data": [attempt_json(item) for item in attempts]})


def attempt_json(attempt: NotificationAttempt) -> dict[str, Any]:
    return {
        "event_id": f"evt_{attempt.history_id}",
        "type": attempt.event_type,
        "attempt": attempt.attempt,
        "status_code": attempt.status_code,
        "error": attempt.error,
        "at": iso(attempt.at),
        "next_attempt_at": iso(attempt.next_attempt_at),
    }


def _subscription_id(request: Request) -> str:
    raw: str = request.path_params["id"]
    if not SUBSCRIPTION_ID.fullmatch(raw):
        raise _not_found()
    return raw


def _not_found() -> ApiError:
    return ApiError(404, "Webhook not found")
