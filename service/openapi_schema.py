"""Building blocks of the OpenAPI description (openapi.py): shared schemas, parameters and
helpers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .api import (
    FILTER_STATUSES,
    MAX_TEXT_PARAM,
)
from .events import EVENT_TYPES


def any_case(words: Iterable[str]) -> str:
    """A regular expression alternation of `words`, each letter in either case."""
    return "|".join("".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)
                    for word in words)  # fmt: skip


def status_list_pattern(at_least_one: bool = False) -> str:
    """Comma-separated FILTER_STATUSES in any case, spaces around each, empty items allowed:
    exactly what the list endpoint accepts; `at_least_one` (wait_for): one status or more."""
    statuses = any_case(FILTER_STATUSES)
    item = f" *(?:(?:{statuses}) *)?"
    if at_least_one:  # empty items, then a status, then any items
        return f"^(?: *,)* *(?:{statuses}) *(?:,{item})*$"
    return f"^{item}(?:,{item})*$"


STRING = {"type": "string"}
TEXT_PARAM = {"type": "string", "maxLength": MAX_TEXT_PARAM, "pattern": "^[^\\x00]*$"}
STATUS_LIST = {"type": "string", "maxLength": MAX_TEXT_PARAM, "pattern": status_list_pattern()}
WAIT_FOR = {"type": "string", "maxLength": MAX_TEXT_PARAM, "pattern": status_list_pattern(True)}
NULLABLE_STRING = {"type": ["string", "null"]}
TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error(description: str) -> dict[str, Any]:
    return json_body(ref("Error"), description)


def obj(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(properties), "properties": properties}


TEMPLATE = obj(
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
HISTORY_EVENT = obj(
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
PAGE_META = obj(
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
    "401": error("Missing, invalid or revoked token"),
    "404": error("Workspace not found, or template not found"),
}
# Every write but the sync endpoint refuses a read-only token (design section 12).
READ_ONLY = json_body(
    obj({"success": {"const": False}, "message": {"const": "This token is read-only"}}),
    "A read-only token: it reads, streams and syncs, and writes nothing else",
)


def retry_after(response: dict[str, Any], required: bool = True) -> dict[str, Any]:
    """`response` with its Retry-After header: whole seconds to wait before a retry."""
    header = {"required": required, "schema": {"type": "integer", "minimum": 1},
              "description": "Seconds to wait before retrying"}  # fmt: skip
    return {**response, "headers": {"Retry-After": header}}


# What a 201's links pass on: the workspace of the request, the id of the new resource.
CREATED_IDS = {"workspace": "$request.path.workspace", "id": "$response.body#/data/id"}


def links(operation_ids: Iterable[str], parameters: dict[str, str]) -> dict[str, Any]:
    """OpenAPI links from an answer to the operations that take what it holds (the stateful
    phase of Schemathesis follows them)."""
    return {name: {"operationId": name, "parameters": parameters} for name in operation_ids}


def success(data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return obj({"success": {"const": True}, "data": data, **extra})


def api_get(
    summary: str, params: list[dict[str, Any]], ok: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return {"get": operation(summary, params, ok, AUTH_ERRORS, **extra)}


def operation(
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
        "responses": {status: json_body(ok, "OK"), **errors, **extra},
    }


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip
