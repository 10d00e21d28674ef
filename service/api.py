"""The bearer-token template API, in LancePilot v3's shapes."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from functools import partial
from typing import Any

from starlette.requests import Request

from .crypto import token_id_of, token_matches
from .errors import ApiError
from .events import STATUS_EVENTS, UNKNOWN_STATUS
from .responses import JSONResponse
from .state import services
from .storage import ApiToken, HistoryEvent, SyncRun, Template, TemplateFilter
from .sync import NoPendingTemplates, report_json
from .template_json import template_json
from .times import iso
from .watch import wait_until

MAX_PER_PAGE = 100
STATUS_LIST = re.compile(r"[A-Za-z_]+")  # one status of a comma-separated list, any case
MAX_ID = 2**63 - 1
MAX_TEXT_PARAM = 512
MAX_PAGE = MAX_ID // MAX_PER_PAGE
# The list endpoint's query parameters; any other is refused, as a typo would filter nothing.
LIST_PARAMS = ("page", "per_page", "status", "name", "language", "provider_id")
FILTER_STATUSES = tuple(sorted(STATUS_EVENTS | {UNKNOWN_STATUS}))  # statuses templates have
# GET of one template with `wait_for`: the longest and the default wait.
MAX_WAIT_S = 60
DEFAULT_WAIT_S = 30


def history_json(event: HistoryEvent) -> dict[str, Any]:
    row = event.row
    return {
        "id": event.id, **row._asdict(),
        "event_time": iso(row.event_time), "received_at": iso(row.received_at),
    }  # fmt: skip


async def authorise(request: Request) -> str:
    """The workspace of the request's bearer token; 401 without one, 404 for another tenant's."""
    return (await _authorised(request)).workspace_id


async def authorise_write(request: Request) -> str:
    """`authorise` for an endpoint that writes (all but the sync endpoint, which a read-only
    token may call: design section 12); then 403 for a read-only token."""
    found = await _authorised(request)
    if found.read_only:
        raise ApiError(403, "This token is read-only")
    return found.workspace_id


async def _authorised(request: Request) -> ApiToken:
    """The request's bearer token after `_check`'s checks."""
    token, token_id = _bearer(request)
    found = await services(request).store.find_token(token_id) if token_id else None
    _check(request, token, found)
    assert found is not None  # _check refused it otherwise
    return found


def _bearer(request: Request) -> tuple[str, str | None]:
    """The request's bearer token, and its id (None when it is not one of ours)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token, token_id_of(token) if scheme.lower() == "bearer" else None


def _check(request: Request, token: str, found: ApiToken | None) -> str:
    """`found`'s workspace when `token` is it and the path names that workspace."""
    if found is None or found.revoked_at is not None or not token_matches(token, found.token_hash):
        raise ApiError(401, "Unauthenticated", headers={"WWW-Authenticate": "Bearer"})
    if request.path_params["workspace"] != found.workspace_id:
        raise ApiError(404, "Workspace not found")
    return found.workspace_id


def _int_param(request: Request, name: str, default: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    return default if raw is None else int_value(raw, name, 1, maximum)


def int_value(raw: str, name: str, minimum: int, maximum: int) -> int:
    """`raw` (a query parameter's or a header's text) as an integer in range; else 422
    naming `name`."""
    if not _digits(raw, maximum) or not minimum <= int(raw) <= maximum:
        message = f"The {name} field must be an integer between {minimum} and {maximum}."
        raise ApiError(422, message, errors={name: [message]})
    return int(raw)


def _digits(raw: str, maximum: int) -> bool:
    """ASCII digits, no longer than `maximum` (int() of a huge string is slow, then fails)."""
    return raw.isascii() and raw.isdecimal() and len(raw) <= len(str(maximum))


def _text_param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is not None and (len(value) > MAX_TEXT_PARAM or "\x00" in value):
        message = f"The {name} field must be at most {MAX_TEXT_PARAM} characters, without NUL."
        raise ApiError(422, message, errors={name: [message]})
    return value


def _known_params(request: Request) -> None:
    """422 naming each query parameter the list endpoint does not take."""
    accepted = ", ".join(LIST_PARAMS)
    errors = {
        name: [f"Unknown query parameter {name!r}; accepted: {accepted}."]
        for name in request.query_params
        if name not in LIST_PARAMS
    }
    if errors:
        raise ApiError(422, next(iter(errors.values()))[0], errors=errors)


def _statuses(request: Request, name: str = "status") -> tuple[str, ...]:
    """Query parameter `name` as a status list: comma-separated, any case, each one a status
    templates have (the list's `status` filter, and `wait_for`)."""
    raw = _text_param(request, name) or ""
    parts = [part.strip(" ") for part in raw.split(",") if part.strip(" ")]
    allowed = ", ".join(FILTER_STATUSES)
    for part in parts:
        if not STATUS_LIST.fullmatch(part) or part.upper() not in FILTER_STATUSES:
            message = f"The selected {name} {part!r} is invalid; allowed: {allowed}."
            raise ApiError(422, message, errors={name: [message]})
    return tuple(part.upper() for part in parts)


def _filter(request: Request) -> TemplateFilter:
    return TemplateFilter(
        statuses=_statuses(request),
        name=_text_param(request, "name"),
        language=_text_param(request, "language"),
        provider_id=_text_param(request, "provider_id"),
    )


def template_id_param(request: Request) -> int:
    """The path's template id; 404 for one that is not a positive integer."""
    template_id = _parsed_id(request)
    if not template_id:
        raise ApiError(404, "Template not found")
    return template_id


def _parsed_id(request: Request) -> int:
    """The path's template id, or 0 (which no template has) when it is not an id."""
    raw = request.path_params["id"]
    return int(raw) if _digits(raw, MAX_ID) and 0 < int(raw) <= MAX_ID else 0


async def list_templates(request: Request) -> JSONResponse:
    workspace_id = await authorise(request)
    _known_params(request)
    page = _int_param(request, "page", 1, MAX_PAGE)
    per_page = _int_param(request, "per_page", 10, MAX_PER_PAGE)
    where = _filter(request)
    templates, total = await services(request).store.list_templates(
        workspace_id, where, (page - 1) * per_page, per_page
    )
    first = (page - 1) * per_page + 1
    meta = {
        "current_page": page,
        "from": first if templates else None,
        "last_page": max(1, math.ceil(total / per_page)),
        "per_page": per_page,
        "to": first + len(templates) - 1 if templates else None,
        "total": total,
    }
    data = [template_json(template) for template in templates]
    return JSONResponse({"success": True, "data": data, "meta": meta})


async def get_template(request: Request) -> JSONResponse:
    """`authorise`'s checks, with the template read in the token's statement; with `wait_for`,
    read again until its status is one of those or the wait is over."""
    token, token_id = _bearer(request)
    template_id = _parsed_id(request)
    template = await _read_template(request, token, token_id, template_id)
    if request.scope["query_string"]:  # most GETs have no query: nothing more to parse
        wait_for, timeout_s = _wait_params(request)
        if wait_for and template.status not in wait_for:
            read = partial(_read_template, request, token, token_id, template_id)
            template = await wait_until(
                services(request).watch, template, read, lambda t: t.status in wait_for,
                timeout_s, partial(_disconnected, request),
            )  # fmt: skip
    return JSONResponse({"success": True, "data": template_json(template)})


async def _read_template(
    request: Request, token: str, token_id: str | None, template_id: int
) -> Template:
    """The token's checks and its workspace's template, in one statement; 404 without one."""
    found, template = (
        await services(request).store.find_token_and_template(token_id, template_id)
        if token_id
        else (None, None)
    )
    _check(request, token, found)
    if template is None:
        raise ApiError(404, "Template not found")
    return template


def _wait_params(request: Request) -> tuple[tuple[str, ...], int]:
    """`wait_for`'s statuses (none when it is absent) and `timeout`, checked even alone."""
    timeout_s = _int_param(request, "timeout", DEFAULT_WAIT_S, MAX_WAIT_S)
    if "wait_for" not in request.query_params:
        return (), timeout_s
    statuses = _statuses(request, "wait_for")
    if not statuses:
        message = f"The wait_for field must name a status of: {', '.join(FILTER_STATUSES)}."
        raise ApiError(422, message, errors={"wait_for": [message]})
    return statuses, timeout_s


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone: a GET's body is read, so the next message is that."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def template_history(request: Request) -> JSONResponse:
    workspace_id = await authorise(request)
    events = await services(request).store.template_history(
        workspace_id, template_id_param(request)
    )
    if events is None:
        raise ApiError(404, "Template not found")
    return JSONResponse({"success": True, "data": [history_json(event) for event in events]})


async def sync_templates(request: Request) -> JSONResponse:
    """The seed's endpoint: bring pending templates to Meta's current status (sooner than
    SYNC_MIN_GAP_S after the last sync: that one's answer again, so no loop spends Meta's
    budget)."""
    workspace_id = await authorise(request)
    svc = services(request)
    try:
        report = await svc.syncer.sync(workspace_id, "api", svc.settings.sync_min_gap_s)
    except NoPendingTemplates:
        raise ApiError(404, "No pending templates found") from None
    if report.failures:
        failure = report.failures[0]
        headers = {}
        if failure.retry_after_s is not None:
            headers["Retry-After"] = str(math.ceil(failure.retry_after_s))
        error = {"waba_id": failure.waba_id, "code": failure.code, "kind": failure.kind,
                 "detail": failure.detail, "fbtrace_id": failure.fbtrace_id}  # fmt: skip
        raise ApiError(
            500, "Failed to sync the templates", headers=headers, error=error,
            data=report_json(report),
        )  # fmt: skip
    return JSONResponse(
        {"success": True, "message": "Templates synced successfully", "data": report_json(report)}
    )


def run_json(run: SyncRun) -> dict[str, Any]:
    data = dataclasses.asdict(run)
    del data["lease_until"], data["workspace_id"]
    data.update(
        started_at=iso(run.started_at),
        finished_at=iso(run.finished_at),
        errors=json.loads(run.error or "[]"),
    )
    del data["error"]
    return data


async def last_sync(request: Request) -> JSONResponse:
    """The workspace's latest sync run (null before the first)."""
    workspace_id = await authorise(request)
    run = await services(request).store.last_sync_run(workspace_id)
    return JSONResponse({"success": True, "data": run_json(run) if run else None})
