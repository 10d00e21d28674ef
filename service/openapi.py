"""The OpenAPI 3.1 description served at /openapi.json. Keep it true to api.py and app.py."""

from __future__ import annotations

from typing import Any

from . import __version__
from .api import (
    DEFAULT_WAIT_S,
    FILTER_STATUSES,
    LIST_PARAMS,
    MAX_PAGE,
    MAX_TEXT_PARAM,
    MAX_WAIT_S,
)
from .events import EVENT_TYPES


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
    return {
        "get": {
            "summary": summary,
            "security": [{"bearer": []}],
            "parameters": params,
            "responses": {"200": _json(ok, "OK"), **AUTH_ERRORS, **extra},
        }
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
            "/webhooks/meta": _webhook_paths(),
            "/healthz": _probe("Process alive"),
            "/readyz": _probe("Store reachable", "503"),
            "/metrics": _probe("Prometheus metrics"),
            "/openapi.json": _probe("This document"),
        },
    }
