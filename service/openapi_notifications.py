"""The OpenAPI description of the notification endpoints (design section 11): webhook
subscriptions and the event stream; openapi.py puts it in the document."""

from __future__ import annotations

from typing import Any

from .api import (
    MAX_ID,
)
from .api_events import KEEP_ALIVE_S
from .api_webhooks import MAX_BODY_BYTES, MAX_DELIVERIES
from .openapi_schema import (
    AUTH_ERRORS,
    CREATED_IDS,
    NULLABLE_STRING,
    NULLABLE_TIME,
    READ_ONLY,
    STRING,
    TIME,
    WORKSPACE,
    error,
    links,
    obj,
    operation,
    query,
    ref,
    success,
)
from .safe_urls import MAX_URL_LENGTH
from .subscriptions import EVENT_CHOICES, MAX_PER_WORKSPACE

WEBHOOKS = "/api/v3/workspaces/{workspace}/webhooks"
EVENT_LIST = {
    "type": ["array", "null"],
    "items": {"type": "string", "enum": list(EVENT_CHOICES)},
    "minItems": 1,
    "description": "The event types sent; null (or left out): every type",
}
WEBHOOK_FIELDS = {
    "id": STRING,
    "url": STRING,
    "events": EVENT_LIST,
    "enabled": {"type": "boolean"},
    "created_at": TIME,
}
WEBHOOK = obj(
    {
        **WEBHOOK_FIELDS,
        "disabled_reason": NULLABLE_STRING,
        "last_success_at": NULLABLE_TIME,
        "failing_since": {**NULLABLE_TIME, "description": "The first failure since a success"},
    }
)
NEW_WEBHOOK = obj(
    {**WEBHOOK_FIELDS, "secret": {"type": "string", "description": "Shown only here"}}
)
WEBHOOK_DELIVERY = obj(
    {
        "event_id": {"type": "string", "description": "evt_<history id>, the webhook-id header"},
        "type": {"type": "string", "enum": list(EVENT_CHOICES)},
        "attempt": {"type": "integer"},
        "status_code": {"type": ["integer", "null"]},
        "error": NULLABLE_STRING,
        "at": TIME,
        "next_attempt_at": NULLABLE_TIME,
    }
)
WEBHOOK_BODY = {
    "type": "object",
    "required": ["url"],
    "additionalProperties": False,
    "properties": {
        "url": {
            "type": "string",
            "maxLength": MAX_URL_LENGTH,
            "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]",
        },
        "events": EVENT_LIST,
    },
}
WEBHOOK_UNPROCESSABLE = (
    "The body is not a JSON object of `url` and `events`; the URL is not http(s), has a user "
    "or password, or its host resolves to an internal address (unless "
    "TEMPLATE_SYNC_WEBHOOKS_ALLOW_PRIVATE); an event type is unknown or the list is empty; or "
    f"the workspace has {MAX_PER_WORKSPACE} webhooks already. `errors` names the field"
)
WEBHOOK_ID = {"name": "id", "in": "path", "required": True, "schema": STRING}
WEBHOOK_ERRORS = {
    "401": error("Missing, invalid or revoked token"),
    "404": error("Workspace not found, or webhook not found"),
}
WEBHOOK_WRITE_ERRORS = {**WEBHOOK_ERRORS, "403": READ_ONLY}


def webhooks_paths() -> dict[str, Any]:
    """Design section 11's signed outbound webhooks; the 201 links to what takes its id."""
    one = [WORKSPACE, WEBHOOK_ID]
    listed = success({"type": "array", "items": ref("Webhook")})
    attempts = success({"type": "array", "items": ref("WebhookDelivery")})
    removed = obj({"success": {"const": True}})
    others = {
        "deleteWebhook": ("delete", "", operation(
            "Remove a webhook; its queued events are dropped", one, removed, WEBHOOK_WRITE_ERRORS,
        )),
        "webhookDeliveries": ("get", "/deliveries", operation(
            f"Latest delivery attempts, newest first (at most {MAX_DELIVERIES})", one, attempts,
            WEBHOOK_ERRORS,
        )),
        "enableWebhook": ("post", "/enable", operation(
            "Enable a disabled webhook; the events it missed are sent", one,
            success(ref("Webhook")), WEBHOOK_WRITE_ERRORS,
        )),
    }  # fmt: skip
    paths: dict[str, Any] = {
        WEBHOOKS: {
            "get": operation("Webhooks, without secrets", [WORKSPACE], listed, WEBHOOK_ERRORS),
            "post": _create_webhook(list(others)),
        }
    }
    for operation_id, (method, suffix, spec) in others.items():
        paths[f"{WEBHOOKS}/{{id}}{suffix}"] = {method: {"operationId": operation_id, **spec}}
    return paths


def _create_webhook(linked: list[str]) -> dict[str, Any]:
    created = operation(
        "Register a webhook; its signing secret is in this answer only",
        [WORKSPACE],
        success(NEW_WEBHOOK),
        WEBHOOK_WRITE_ERRORS,
        "201",
        **{
            "400": error("Invalid Content-Length, or incomplete body"),
            "413": error(f"Body over {MAX_BODY_BYTES} bytes"),
            "422": error(WEBHOOK_UNPROCESSABLE),
        },
    )
    created["responses"]["201"]["links"] = links(linked, CREATED_IDS)
    body = {"application/json": {"schema": WEBHOOK_BODY}}
    return {
        "operationId": "createWebhook",
        **created,
        "requestBody": {"required": True, "content": body},
    }


EVENTS = "/api/v3/workspaces/{workspace}/events"
EVENT_ID = {"type": "integer", "minimum": 0, "maximum": MAX_ID}
EVENTS_UNPROCESSABLE = (
    "`after`, `template_id` or `Last-Event-ID` is not a non-negative integer; `errors` names it"
)


def events_path() -> dict[str, Any]:
    """Design section 11's server-sent events."""
    params = [
        WORKSPACE,
        query("after", EVENT_ID, "Replay the events after this id first; default: from now"),
        query("template_id", EVENT_ID, "Only this template's events"),
        {"name": "Last-Event-ID", "in": "header", "required": False,
         "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"},
         "description": "The last id received (an EventSource sends it when it reconnects); "
         "wins over `after`"},
    ]  # fmt: skip
    stream = {
        "description": "Server-sent events, without end: each `id: <history id>`, `event: "
        "<type>` and `data: <the signed webhooks' payload, one line of JSON>`, then a blank "
        f"line; a comment `: keep-alive` after {KEEP_ALIVE_S:g} s without an event",
        "content": {"text/event-stream": {"schema": STRING}},
    }
    return {
        "get": {
            "summary": "The workspace's events as they happen",
            "security": [{"bearer": []}],
            "parameters": params,
            "responses": {"200": stream, **AUTH_ERRORS, "422": error(EVENTS_UNPROCESSABLE)},
        }
    }
