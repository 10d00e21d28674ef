"""The OpenAPI description of the template writes (design section 12): create, edit and delete
at Meta through the service; openapi.py puts them in the document.

The request bodies' schemas are built from template_drafts' own rules (name, language and
WABA id patterns, categories, parameter formats, the components' limits), so the document
says what is refused with 422 before any Graph call; tests/test_openapi.py checks that the
two agree, body by body.
"""

from __future__ import annotations

from typing import Any, get_args

from .api_templates import MAX_BODY_BYTES
from .events import CATEGORIES, LANGUAGE_CODE
from .graph_errors import ErrorKind
from .openapi_schema import (
    AUTH_ERRORS,
    CREATED_IDS,
    NULLABLE_STRING,
    READ_ONLY,
    STRING,
    TEMPLATE_ID,
    WORKSPACE,
    any_case,
    error,
    json_body,
    links,
    obj,
    operation,
    ref,
    retry_after,
    success,
)
from .storage.idempotency import MAX_KEY_CHARS
from .template_drafts import MAX_COMPONENTS, NAME, PARAMETER_FORMATS, WABA_ID


def _full(pattern: str) -> str:
    """A pattern of template_drafts (matched whole there) as a JSON Schema pattern."""
    return f"^(?:{pattern})$"


CATEGORY = {
    "type": "string",
    "pattern": _full(any_case(sorted(CATEGORIES))),
    "description": "MARKETING, UTILITY or AUTHENTICATION, in any case",
    "examples": sorted(CATEGORIES),
}
BODY_TYPE = {"type": "string", "pattern": _full(any_case(["BODY"]))}
COMPONENTS = {
    "type": "array",
    "minItems": 1,
    "maxItems": MAX_COMPONENTS,
    "items": {
        "type": "object",
        "required": ["type"],
        "properties": {"type": STRING},
        "description": "One of Meta's components; all but its `type` is Meta's to judge",
    },
    "contains": {"type": "object", "required": ["type"], "properties": {"type": BODY_TYPE}},
    "minContains": 1,
    "maxContains": 1,
    "description": "Meta's components, exactly one of type BODY (any case)",
    "examples": [[{"type": "BODY", "text": "Your order {{1}} has shipped."}]],
}
TEMPLATE_DRAFT = {
    "type": "object",
    "required": ["name", "language", "category", "components"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": _full(NAME.pattern)},
        "language": {"type": "string", "pattern": _full(LANGUAGE_CODE.pattern),
                     "examples": ["en_US", "pt_BR", "fil"]},
        "category": CATEGORY,
        "components": COMPONENTS,
        "waba_id": {"type": ["string", "null"], "pattern": _full(WABA_ID.pattern),
                    "description": "The channel's WABA; may be left out when the workspace "
                    "has one channel"},
        "allow_category_change": {"type": ["boolean", "null"]},
        "parameter_format": {"type": ["string", "null"],
                             "pattern": _full(any_case(PARAMETER_FORMATS)),
                             "description": "named or positional, in any case"},
    },
}  # fmt: skip
TEMPLATE_EDIT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "components": {**COMPONENTS, "type": ["array", "null"]},
        "category": {**CATEGORY, "type": ["string", "null"]},
    },
    "anyOf": [
        {"required": ["components"], "properties": {"components": {"type": "array"}}},
        {"required": ["category"], "properties": {"category": {"type": "string"}}},
    ],
    "description": "The components, the category or both (null: left as they are)",
}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    # Printable ASCII; HTTP drops spaces at either end, so a key has none there.
    "schema": {"type": "string", "maxLength": MAX_KEY_CHARS, "pattern": "^[!-~](?:[ -~]*[!-~])?$"},
    "description": "A repeat within 24 h gets the first answer again (with "
    "`Idempotent-Replayed: true`) and Meta is called once; the same key with another request "
    "is 422, and 409 while the first still runs. 429, 502 and 503 are not kept: a retry runs",
}

META_ERROR_FIELDS = {
    "code": {"type": ["integer", "null"]},
    "subcode": {"type": ["integer", "null"]},
    "detail": {"type": "string", "description": "Meta's reason for people when it gave one"},
    "fbtrace_id": NULLABLE_STRING,
}
# Exactly these fields: `kind` is the service's own word, given with a 502 only.
META_ERROR = {**obj(META_ERROR_FIELDS), "additionalProperties": False}
FAILED = {"success": {"const": False}, "message": STRING}
# 409 and 429 carry Meta's error when Meta said so, and none when the service knew already.
MAYBE_META = {"type": "object", "required": list(FAILED),
              "properties": {**FAILED, "error": META_ERROR}}  # fmt: skip
FIELD_ERRORS = obj(
    {
        **FAILED,
        "errors": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": STRING, "minItems": 1},
            "description": "Each wrong field (or the Idempotency-Key header) and why",
        },
    }
)
REFUSED = obj({**FAILED, "error": META_ERROR})
KIND = {"enum": list(get_args(ErrorKind))}
UNAVAILABLE = obj(
    {**FAILED, "error": {**obj({**META_ERROR_FIELDS, "kind": KIND}), "additionalProperties": False}}
)
REPLAYED = {
    "Idempotent-Replayed": {
        "required": False,
        "schema": {"const": "true"},
        "description": "The stored answer of an earlier request with this Idempotency-Key",
    }
}


def write_errors(not_found: str) -> dict[str, Any]:
    """The answers every template write has besides its success."""
    return {
        "400": error("Invalid Content-Length, or incomplete body"),
        "401": AUTH_ERRORS["401"],
        "403": READ_ONLY,
        "404": error(not_found),
        "409": json_body(MAYBE_META, "The name and language exist in the WABA (Meta's "
                         "`error` when Meta said so, also for a name deleted in the last ~30 "
                         "days), or the Idempotency-Key's first request still runs"),
        "413": error(f"Body over {MAX_BODY_BYTES} bytes"),
        "422": json_body({"oneOf": [FIELD_ERRORS, REFUSED]},
                         "Invalid input, refused before any Graph call (`errors` names each "
                         "field), the Idempotency-Key used with another request or malformed "
                         "(`errors` names it), or Meta refused the write (`error`)"),
        "429": retry_after(json_body(MAYBE_META, "Meta throttles this WABA")),
        "502": json_body(UNAVAILABLE, "Meta unreachable, answering 5xx, refusing the token "
                         "or permission (codes 10, 200-299): `error` says which, in `kind`"),
        "503": retry_after(error("Store unavailable, retry later (with Retry-After), or "
                                 "the channel's Meta token cannot be decrypted (without)"),
                           required=False),
    }  # fmt: skip


def _write(
    operation_id: str, summary: str, params: list[dict[str, Any]], ok: dict[str, Any],
    not_found: str, status: str = "200", body: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    spec = operation(summary, [*params, IDEMPOTENCY_KEY], ok, write_errors(not_found), status)
    spec["responses"][status]["headers"] = REPLAYED
    if body is not None:
        content = {"application/json": {"schema": body}}
        spec["requestBody"] = {"required": True, "content": content}
    return {"operationId": operation_id, **spec}


def create_template(linked: list[str]) -> dict[str, Any]:
    """POST .../templates; the 201 links to the operations that take the new id."""
    created = _write(
        "createTemplate",
        "Create a template at Meta (POST /{waba_id}/message_templates) and store it",
        [WORKSPACE], success(ref("Template")), "Workspace not found", "201", TEMPLATE_DRAFT,
    )  # fmt: skip
    created["responses"]["201"]["links"] = links(linked, CREATED_IDS)
    return created


def edit_template() -> dict[str, Any]:
    return _write(
        "editTemplate",
        "Edit a template at Meta (POST /{provider_id}); its status becomes PENDING",
        [WORKSPACE, TEMPLATE_ID], success(ref("Template")),
        "Workspace not found, or template not found", body=TEMPLATE_EDIT,
    )  # fmt: skip


def delete_template() -> dict[str, Any]:
    deleted = obj(
        {"success": {"const": True}, "message": {"const": "Template deleted successfully"}}
    )
    return _write(
        "deleteTemplate",
        "Delete this language of a template at Meta; it stays here, DELETED, with its history",
        [WORKSPACE, TEMPLATE_ID], deleted, "Workspace not found, or template not found",
    )  # fmt: skip
