"""The OpenAPI 3.1 description served at /openapi.json. Keep it true to api.py and app.py."""

from __future__ import annotations

from typing import Any

from . import __version__
from .api import (
    DEFAULT_WAIT_S,
    FILTER_STATUSES,
    LIST_PARAMS,
    MAX_ID,
    MAX_PAGE,
    MAX_TEXT_PARAM,
    MAX_WAIT_S,
)
from .api_events import KEEP_ALIVE_S
from .api_webhooks import MAX_BODY_BYTES, MAX_DELIVERIES
from .events import EVENT_TYPES
from .safe_urls import MAX_URL_LENGTH
from .subscriptions import EVENT_CHOICES, MAX_PER_WORKSPACE


def _status_list_pattern(at_least_one: bool = False) -> str:
    """Comma-separated FILTER_STATUSES in any case, spaces around each, empty items allowed:
    exactly what the list endpoint accepts; `at_least_one` (wait_for): one status or more."""
    any_case = "|".join("".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in status)
                        for status in FILTER_STATUSES)  # fmt: skip
    item = f" *(?:(?:{any_case}) *)?"
    if at_least_one:  # empty items, then a status, then any items
        return f"^(?: *,)* *(?:{any_case}) *(?:,{item})*$"
    return f"^{item}(?:,{item})*$"


STRING = {"type": "string"}
TEXT_PARAM = {"type": "string", "maxLength": MAX_TEXT_PARAM, "pattern": "^[^\\x00]*$"}
STATUS_LIST = {"type": "string", "maxLength": MAX_TEXT_PARAM, "pattern": _status_list_pattern()}
WAIT_FOR = {"type": "string", "maxLength": MAX_TEXT_PARAM, "pattern": _status_list_pattern(True)}
NULLABLE_STRING = {"type": ["string", "null"]}
TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(properties), "properties": properties}


TEMPLATE = _object(
    {
        "id": {"type": "integer"},
        "workspace_id": STRING,
        "waba_id": STRING,
        "provider_id": {"type": "string", "description": "Meta's template id"},
        "name": STRING,
        "language": STRING,
        "category": NULLABLE_STRING,
        "status": {"type": "string", "examples": ["PENDING", "APPROVED", "REJECTED", "PAUSED"]},
        "rejected_reason": NULLABLE_STRING,
        "quality_score": NULLABLE_STRING,
        "flagged": {"type": "boolean"},
        "status_source": {"type": "string", "enum": ["webhook", "sync", "api"]},
        "status_updated_at": TIME,
        "last_webhook_at": NULLABLE_TIME,
        "last_synced_at": NULLABLE_TIME,
        "created_at": TIME,
        "updated_at": TIME,
    }
)
HISTORY_EVENT = _object(
    {
        "id": {"type": "integer"},
        "field": {
            "type": "string",
            "enum": list(EVENT_TYPES),
            "description": "What the event concerns, whatever its source; `template` (event "
            "CREATED): the template became known here, its first row",
        },
        "event": STRING,
        "old_status": NULLABLE_STRING,
        "new_status": NULLABLE_STRING,
        "source": {"type": "string", "enum": ["webhook", "sync", "api"]},
        "event_time": NULLABLE_TIME,
        "received_at": TIME,
        "reason": NULLABLE_STRING,
        "applied": {"type": "boolean"},
    }
)
PAGE_META = _object(
    {
        "current_page": {"type": "integer"},
        "from": {"type": ["integer", "null"]},
        "last_page": {"type": "integer"},
        "per_page": {"type": "integer"},
        "to": {"type": ["integer", "null"]},
        "total": {"type": "integer"},
    }
)
ERROR = {
    "type": "object",
    "required": ["success", "message"],
    "properties": {"success": {"const": False}, "message": STRING},
}

WORKSPACE = {"name": "workspace", "in": "path", "required": True, "schema": STRING}
TEMPLATE_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
AUTH_ERRORS = {
    "401": _error("Missing, invalid or revoked token"),
    "404": _error("Workspace not found, or template not found"),
}


def _success(data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return _object({"success": {"const": True}, "data": data, **extra})


def _api_get(
    summary: str, params: list[dict[str, Any]], ok: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return {"get": _operation(summary, params, ok, AUTH_ERRORS, **extra)}


def _operation(
    summary: str,
    params: list[dict[str, Any]],
    ok: dict[str, Any],
    errors: dict[str, Any],
    status: str = "200",
    **extra: Any,
) -> dict[str, Any]:
    """A bearer-token operation answering `ok` with `status`, `errors` and `extra`."""
    return {
        "summary": summary,
        "security": [{"bearer": []}],
        "parameters": params,
        "responses": {status: _json(ok, "OK"), **errors, **extra},
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


LIST_QUERY = [
    WORKSPACE,
    _query("page", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1}, "Page"),
    _query(
        "per_page", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}, "Page size"
    ),
    _query(
        "status",
        STATUS_LIST,
        "Comma-separated statuses, any case, e.g. PENDING,IN_APPEAL; each one of "
        f"{', '.join(FILTER_STATUSES)}",
    ),
    _query("name", TEXT_PARAM, "Exact template name"),
    _query("language", TEXT_PARAM, "Exact language code"),
    _query("provider_id", TEXT_PARAM, "Meta's template id"),
]
WAIT_QUERY = [
    _query(
        "wait_for",
        WAIT_FOR,
        "Answer once the template's status is one of these (comma-separated, any case, e.g. "
        "APPROVED,REJECTED), or when `timeout` has passed, with the template as it is then",
    ),
    _query(
        "timeout",
        {"type": "integer", "minimum": 1, "maximum": MAX_WAIT_S, "default": DEFAULT_WAIT_S},
        "Seconds `wait_for` waits at most",
    ),
]
BASE = "/api/v3/workspaces/{workspace}/templates"
WEBHOOKS = "/api/v3/workspaces/{workspace}/webhooks"
UNPROCESSABLE = (
    "A query parameter is out of range, a status is not one of the statuses above, or a "
    f"parameter is unknown (only {', '.join(LIST_PARAMS)} are accepted); `errors` names it"
)
WAIT_UNPROCESSABLE = (
    f"`timeout` is not an integer from 1 to {MAX_WAIT_S}, or `wait_for` names no status or "
    "one templates cannot have; `errors` names the parameter"
)


def _webhook_paths() -> dict[str, Any]:
    hub = [
        {"name": f"hub.{name}", "in": "query", "required": True, "schema": schema}
        for name, schema in (
            ("mode", {"type": "string", "enum": ["subscribe"]}),
            ("verify_token", STRING),
            ("challenge", {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}),
        )
    ]
    signature = {"name": "X-Hub-Signature-256", "in": "header", "required": True, "schema": STRING}
    return {
        "get": {
            "summary": "Meta's subscription handshake",
            "parameters": hub,
            "responses": {
                "200": {
                    "description": "The challenge",
                    "content": {"text/plain": {"schema": STRING}},
                },
                "400": _error("Malformed handshake"),
                "403": _error("Verify token does not match"),
                "503": _error("Verify token not configured"),
            },
        },
        "post": {
            "summary": "A signed delivery from Meta; stored before it is acknowledged",
            "parameters": [signature],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {}}}},
            "responses": {
                "200": _json(_object({"success": {"const": True}}), "Stored"),
                "401": _error("Missing, malformed, repeated or wrong signature"),
                "413": _error("Body over TEMPLATE_SYNC_MAX_BODY_BYTES"),
                "503": _error("Secret not configured, or store unavailable (Retry-After)"),
            },
        },
    }


SYNC_DATA = _object(
    {
        "checked": {"type": "integer"},
        "updated": {"type": "integer"},
        "unchanged": {"type": "integer"},
        "missing": {"type": "integer"},
        "synced_at": TIME,
    }
)
SYNC_RUN = {
    "type": ["object", "null"],
    "properties": {
        "id": {"type": "integer"},
        "trigger": {"type": "string", "enum": ["api", "cli", "poller"]},
        "status": {"type": "string", "enum": ["running", "succeeded", "partial", "failed"]},
        "started_at": TIME,
        "finished_at": NULLABLE_TIME,
        "checked": {"type": "integer"},
        "updated": {"type": "integer"},
        "unchanged": {"type": "integer"},
        "missing": {"type": "integer"},
        "graph_calls": {"type": "integer"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}


def _sync_paths() -> dict[str, Any]:
    synced = _object({"success": {"const": True}, "message": STRING, "data": _ref("SyncResult")})
    failed = _json(
        _object({"success": {"const": False}, "message": STRING, "error": {"type": "object"},
                 "data": _ref("SyncResult")}),
        "Failed to sync the templates: error names the WABA, Graph code and detail",
    )  # fmt: skip
    return {
        "post": {
            "summary": "Sync pending templates with Meta (the seed's endpoint)",
            "security": [{"bearer": []}],
            "parameters": [WORKSPACE],
            "responses": {
                "200": _json(synced, "Templates synced successfully"),
                **AUTH_ERRORS,
                "404": _error("No pending templates found, or workspace not found"),
                "500": failed,
            },
        },
        **_api_get("The latest sync run, or null", [WORKSPACE], _success(SYNC_RUN)),
    }


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
WEBHOOK = _object(
    {
        **WEBHOOK_FIELDS,
        "disabled_reason": NULLABLE_STRING,
        "last_success_at": NULLABLE_TIME,
        "failing_since": {**NULLABLE_TIME, "description": "The first failure since a success"},
    }
)
NEW_WEBHOOK = _object(
    {**WEBHOOK_FIELDS, "secret": {"type": "string", "description": "Shown only here"}}
)
WEBHOOK_DELIVERY = _object(
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
    "401": _error("Missing, invalid or revoked token"),
    "404": _error("Workspace not found, or webhook not found"),
}


def _webhooks_paths() -> dict[str, Any]:
    """Design section 11's signed outbound webhooks; the 201 links to what takes its id."""
    one = [WORKSPACE, WEBHOOK_ID]
    listed = _success({"type": "array", "items": _ref("Webhook")})
    attempts = _success({"type": "array", "items": _ref("WebhookDelivery")})
    removed = _object({"success": {"const": True}})
    others = {
        "deleteWebhook": ("delete", "", _operation(
            "Remove a webhook; its queued events are dropped", one, removed, WEBHOOK_ERRORS,
        )),
        "webhookDeliveries": ("get", "/deliveries", _operation(
            f"Latest delivery attempts, newest first (at most {MAX_DELIVERIES})", one, attempts,
            WEBHOOK_ERRORS,
        )),
        "enableWebhook": ("post", "/enable", _operation(
            "Enable a disabled webhook; the events it missed are sent", one,
            _success(_ref("Webhook")), WEBHOOK_ERRORS,
        )),
    }  # fmt: skip
    paths: dict[str, Any] = {
        WEBHOOKS: {
            "get": _operation("Webhooks, without secrets", [WORKSPACE], listed, WEBHOOK_ERRORS),
            "post": _create_webhook(list(others)),
        }
    }
    for operation_id, (method, suffix, operation) in others.items():
        paths[f"{WEBHOOKS}/{{id}}{suffix}"] = {method: {"operationId": operation_id, **operation}}
    return paths


def _create_webhook(linked: list[str]) -> dict[str, Any]:
    created = _operation(
        "Register a webhook; its signing secret is in this answer only",
        [WORKSPACE],
        _success(NEW_WEBHOOK),
        WEBHOOK_ERRORS,
        "201",
        **{
            "400": _error("Invalid Content-Length, or incomplete body"),
            "413": _error(f"Body over {MAX_BODY_BYTES} bytes"),
            "422": _error(WEBHOOK_UNPROCESSABLE),
        },
    )
    ids = {"workspace": "$request.path.workspace", "id": "$response.body#/data/id"}
    created["responses"]["201"]["links"] = {
        name: {"operationId": name, "parameters": ids} for name in linked
    }
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


def _events_path() -> dict[str, Any]:
    """Design section 11's server-sent events."""
    params = [
        WORKSPACE,
        _query("after", EVENT_ID, "Replay the events after this id first; default: from now"),
        _query("template_id", EVENT_ID, "Only this template's events"),
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
            "responses": {"200": stream, **AUTH_ERRORS, "422": _error(EVENTS_UNPROCESSABLE)},
        }
    }


def _probe(summary: str, *extra: str) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": "OK"}}
    responses.update({code: {"description": "Not ready"} for code in extra})
    return {"get": {"summary": summary, "responses": responses}}


def openapi_document() -> dict[str, Any]:
    history = _success({"type": "array", "items": _ref("HistoryEvent")})
    return {
        "openapi": "3.1.0",
        "info": {"title": "template-sync", "version": __version__},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Template": TEMPLATE,
                "HistoryEvent": HISTORY_EVENT,
                "PageMeta": PAGE_META,
                "Error": ERROR,
                "SyncResult": SYNC_DATA,
                "Webhook": WEBHOOK,
                "WebhookDelivery": WEBHOOK_DELIVERY,
            },
        },
        "paths": {
            BASE: _api_get(
                "List templates",
                LIST_QUERY,
                _success({"type": "array", "items": _ref("Template")}, meta=_ref("PageMeta")),
                **{"422": _error(UNPROCESSABLE)},
            ),
            BASE + "/sync": _sync_paths(),
            BASE + "/{id}": _api_get(
                "One template; with wait_for, once its status is one of those",
                [WORKSPACE, TEMPLATE_ID, *WAIT_QUERY],
                _success(_ref("Template")),
                **{"422": _error(WAIT_UNPROCESSABLE)},
            ),
            BASE + "/{id}/history": _api_get(
                "Status history, oldest first", [WORKSPACE, TEMPLATE_ID], history
            ),
            **_webhooks_paths(),
            EVENTS: _events_path(),
            "/webhooks/meta": _webhook_paths(),
            "/healthz": _probe("Process alive"),
            "/readyz": _probe("Store reachable", "503"),
            "/metrics": _probe("Prometheus metrics"),
            "/openapi.json": _probe("This document"),
        },
    }
