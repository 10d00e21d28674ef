"""The OpenAPI 3.1 description served at /openapi.json. Keep it true to api.py and app.py."""

from __future__ import annotations

from typing import Any

from . import __version__
from .api import (
    DEFAULT_WAIT_S,
    FILTER_STATUSES,
    LIST_PARAMS,
    MAX_PAGE,
    MAX_WAIT_S,
)
from .openapi_notifications import EVENTS, WEBHOOK, WEBHOOK_DELIVERY, events_path, webhooks_paths
from .openapi_schema import (
    AUTH_ERRORS,
    ERROR,
    HISTORY_EVENT,
    NULLABLE_TIME,
    PAGE_META,
    STATUS_LIST,
    STRING,
    TEMPLATE,
    TEMPLATE_ID,
    TEXT_PARAM,
    TIME,
    WAIT_FOR,
    WORKSPACE,
    api_get,
    error,
    json_body,
    obj,
    query,
    ref,
    success,
)
from .openapi_templates import create_template, delete_template, edit_template

LIST_QUERY = [
    WORKSPACE,
    query("page", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1}, "Page"),
    query(
        "per_page", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}, "Page size"
    ),
    query(
        "status",
        STATUS_LIST,
        "Comma-separated statuses, any case, e.g. PENDING,IN_APPEAL; each one of "
        f"{', '.join(FILTER_STATUSES)}",
    ),
    query("name", TEXT_PARAM, "Exact template name"),
    query("language", TEXT_PARAM, "Exact language code"),
    query("provider_id", TEXT_PARAM, "Meta's template id"),
]
WAIT_QUERY = [
    query(
        "wait_for",
        WAIT_FOR,
        "Answer once the template's status is one of these (comma-separated, any case, e.g. "
        "APPROVED,REJECTED), or when `timeout` has passed, with the template as it is then",
    ),
    query(
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
                "400": error("Malformed handshake"),
                "403": error("Verify token does not match"),
                "503": error("Verify token not configured"),
            },
        },
        "post": {
            "summary": "A signed delivery from Meta; stored before it is acknowledged",
            "parameters": [signature],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {}}}},
            "responses": {
                "200": json_body(obj({"success": {"const": True}}), "Stored"),
                "401": error("Missing, malformed, repeated or wrong signature"),
                "413": error("Body over TEMPLATE_SYNC_MAX_BODY_BYTES"),
                "503": error("Secret not configured, or store unavailable (Retry-After)"),
            },
        },
    }


SYNC_DATA = obj(
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
        "graph_calls": {
            "type": "integer",
            "description": "Calls to the workspace's source: Graph, or its upstream.",
        },
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}


def _sync_paths() -> dict[str, Any]:
    synced = obj({"success": {"const": True}, "message": STRING, "data": ref("SyncResult")})
    failed = json_body(
        obj({"success": {"const": False}, "message": STRING, "error": {"type": "object"},
                 "data": ref("SyncResult")}),
        "Failed to sync the templates: error names the WABA, Graph code and detail; for a "
        "workspace with an upstream, kind is upstream_<kind> and code the upstream's HTTP "
        "status",
    )  # fmt: skip
    return {
        "post": {
            "summary": "Sync pending templates with Meta, or the workspace's upstream (the "
            "seed's endpoint)",
            "security": [{"bearer": []}],
            "parameters": [WORKSPACE],
            "responses": {
                "200": json_body(synced, "Templates synced successfully"),
                **AUTH_ERRORS,
                "404": error("No pending templates found, or workspace not found"),
                "500": failed,
            },
        },
        **api_get("The latest sync run, or null", [WORKSPACE], success(SYNC_RUN)),
    }


def _probe(summary: str, *extra: str) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": "OK"}}
    responses.update({code: {"description": "Not ready"} for code in extra})
    return {"get": {"summary": summary, "responses": responses}}


# What a created template's id is for: the 201's links name these operations.
TEMPLATE_OPERATIONS = ("getTemplate", "editTemplate", "deleteTemplate", "templateHistory")


def _named(operation_id: str, path: dict[str, Any]) -> dict[str, Any]:
    """`path`'s one operation, with `operation_id`, the name links use."""
    [(method, spec)] = path.items()
    return {method: {"operationId": operation_id, **spec}}


def openapi_document() -> dict[str, Any]:
    history = success({"type": "array", "items": ref("HistoryEvent")})
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
            BASE: {
                **api_get(
                    "List templates",
                    LIST_QUERY,
                    success({"type": "array", "items": ref("Template")}, meta=ref("PageMeta")),
                    **{"422": error(UNPROCESSABLE)},
                ),
                "post": create_template(list(TEMPLATE_OPERATIONS)),
            },
            BASE + "/sync": _sync_paths(),
            BASE + "/{id}": {
                **_named(
                    "getTemplate",
                    api_get(
                        "One template; with wait_for, once its status is one of those",
                        [WORKSPACE, TEMPLATE_ID, *WAIT_QUERY],
                        success(ref("Template")),
                        **{"422": error(WAIT_UNPROCESSABLE)},
                    ),
                ),
                "post": edit_template(),
                "delete": delete_template(),
            },
            BASE + "/{id}/history": _named(
                "templateHistory",
                api_get("Status history, oldest first", [WORKSPACE, TEMPLATE_ID], history),
            ),
            **webhooks_paths(),
            EVENTS: events_path(),
            "/webhooks/meta": _webhook_paths(),
            "/healthz": _probe("Process alive"),
            "/readyz": _probe("Store reachable", "503"),
            "/metrics": _probe("Prometheus metrics"),
            "/openapi.json": _probe("This document"),
        },
    }
