"""Template writes through the API (design section 12): create, edit and delete at Meta.

The endpoints parse and check the request (template_drafts), run the write
(template_writes.TemplateWriter) and map its refusals to the contract's answers. With an
`Idempotency-Key`, the first answer is stored for 24 h and a repeat gets it again without
calling Meta; answers a retry should redo (429, 502, 503) are not kept.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .api import authorise_write, template_id_param
from .errors import ApiError
from .responses import JSONResponse
from .state import Services, services
from .storage import IdempotencyBusy, IdempotencyMismatch, idempotency_key, request_fingerprint
from .template_drafts import DraftError, draft, edit
from .template_json import template_json
from .template_writes import WriteRefused
from .times import now_ms
from .webhooks import read_body

INVALID = "The given data was invalid."
STATUS = {
    "not_found": 404, "exists": 409, "refused": 422, "throttled": 429, "unavailable": 502,
    "config": 503,
}  # fmt: skip
REDO = frozenset({429, 502, 503})  # answers a retry with the same key must not replay
HEADER = "idempotency-key"
# Room for any template Meta takes (a carousel of ten cards, each with its media handle and
# buttons, is a few tens of KB); the body is read whole before it is checked.
MAX_BODY_BYTES = 256 * 1024


async def create_template(request: Request) -> Response:
    workspace_id = await authorise_write(request)

    async def create(svc: Services, body: object) -> JSONResponse:
        template = await svc.writer.create(workspace_id, draft(body), now_ms())
        return JSONResponse({"success": True, "data": template_json(template)}, status_code=201)

    return await _answer(request, workspace_id, create)


async def edit_template(request: Request) -> Response:
    workspace_id = await authorise_write(request)
    template_id = template_id_param(request)

    async def change(svc: Services, body: object) -> JSONResponse:
        template = await svc.writer.edit(workspace_id, template_id, edit(body), now_ms())
        return JSONResponse({"success": True, "data": template_json(template)})

    return await _answer(request, workspace_id, change)


async def delete_template(request: Request) -> Response:
    workspace_id = await authorise_write(request)
    template_id = template_id_param(request)

    async def delete(svc: Services, body: object) -> JSONResponse:
        await svc.writer.delete(workspace_id, template_id, now_ms())
        return JSONResponse({"success": True, "message": "Template deleted successfully"})

    return await _answer(request, workspace_id, delete, needs_body=False)


Write = Callable[[Services, object], Awaitable[JSONResponse]]


async def _answer(
    request: Request, workspace_id: str, write: Write, *, needs_body: bool = True
) -> Response:
    """`write`'s answer, or the stored one for a repeated `Idempotency-Key`."""
    raw = await read_body(request, MAX_BODY_BYTES)
    key = request.headers.get(HEADER)
    if key is None:
        return (await _run(request, write, raw, needs_body))[0]
    store = services(request).store
    key = _key(key)
    fingerprint = request_fingerprint(request.method, request.url.path, raw)
    try:
        stored = await store.begin_idempotent(workspace_id, key, fingerprint, now_ms())
    except IdempotencyMismatch:
        message = "This Idempotency-Key was used with another request."
        raise ApiError(422, message, errors={"Idempotency-Key": [message]}) from None
    except IdempotencyBusy:
        raise ApiError(409, "A request with this Idempotency-Key is still running.") from None
    if stored is not None:
        return Response(stored.body, stored.status, media_type="application/json",
                        headers={"Idempotent-Replayed": "true"})  # fmt: skip
    try:
        response, keep = await _run(request, write, raw, needs_body)
    except BaseException:
        await store.abandon_idempotent(workspace_id, key)
        raise
    if keep:
        await store.finish_idempotent(
            workspace_id, key, response.status_code, bytes(response.body), now_ms()
        )
    else:
        await store.abandon_idempotent(workspace_id, key)
    return response


async def _run(
    request: Request, write: Write, raw: bytes, needs_body: bool
) -> tuple[Response, bool]:
    """The write's answer, its refusals answered as the contract says (not raised), and
    whether a repeat with the same key gets it again: only when Meta was asked and a retry
    must not ask again (done, or refused for good); a request refused before any Graph call
    (bad input, unknown template) or one a retry should redo (429, 502, 503) is not kept,
    so the client can correct it or try again under the same key."""
    try:
        return await write(services(request), _json(raw) if needs_body else None), True
    except DraftError as error:
        return ApiError(422, INVALID, errors=error.errors).response(), False
    except WriteRefused as refused:
        answer = _refused(refused)
        return answer.response(), refused.error is not None and answer.status not in REDO
    except ApiError as error:
        return error.response(), False


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deep
        raise DraftError({"body": ["The body must be a JSON object."]}) from None


def _key(raw: str) -> str:
    try:
        return idempotency_key(raw)
    except ValueError as error:
        message = f"The Idempotency-Key header {error}."
        raise ApiError(422, INVALID, errors={"Idempotency-Key": [message]}) from None


def _refused(refused: WriteRefused) -> ApiError:
    status = STATUS[refused.reason]
    extra: dict[str, Any] = {}
    if refused.error is not None:
        detail = refused.error.to_detail()
        detail["detail"] = refused.error.user_message or detail["detail"]
        if status != 502:
            detail.pop("kind")
        extra["error"] = detail
    headers = {}
    if refused.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(refused.retry_after_s)))
    return ApiError(status, refused.message, headers=headers, **extra)
