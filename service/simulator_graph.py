"""The simulator's Graph endpoints: access tokens and appsecret_proof, template listing with
Meta's paging and filters, single objects and subscribed apps.

Errors are raised as `GraphFailure`; the simulator's middleware answers with them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import urlencode

from aiohttp import web

from .simulator_faults import GraphFailure, meta_error
from .simulator_state import State

DEFAULT_LIMIT = 25  # Meta's default page size
MAX_LIMIT = 1000  # Meta documents no maximum; larger limits are silently capped here
DEFAULT_FIELDS = ("id", "name", "language", "status", "category")
READABLE_FIELDS = frozenset(
    {*DEFAULT_FIELDS, "rejected_reason", "quality_score", "components", "parameter_format"}
)
QUALITY_DATE = 1758754645
VERSION = "/{version:v[0-9]+\\.[0-9]+}"


class Account(Protocol):
    """What the endpoints read of the simulator, afresh at each request: tests change it."""

    app_secret: str | None
    app_id: str
    app_name: str
    next_version: str | None  # version string used in paging.next links

    @property
    def state(self) -> State: ...


class GraphEndpoints:
    """Graph's routes over an account's current state."""

    def __init__(self, account: Account) -> None:
        self._account = account

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(VERSION + "/{waba_id}/message_templates", self._list_templates)
        app.router.add_get(VERSION + "/{waba_id}/subscribed_apps", self._apps)
        app.router.add_post(VERSION + "/{waba_id}/subscribed_apps", self._apps)
        app.router.add_get(VERSION + "/{object_id}", self._get_object)

    def token(self, request: web.Request) -> str:
        """The caller's token, checked for existence and appsecret_proof."""
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        token = token or request.query.get("access_token", "")
        if token not in self._account.state.tokens:
            raise GraphFailure(
                meta_error(401, 190, "Invalid OAuth access token - Cannot parse access token")
            )
        if self._account.app_secret is not None:
            _check_proof(request.query.get("appsecret_proof"), token, self._account.app_secret)
        return token

    def authorize(self, request: web.Request, waba_id: str) -> str:
        """The caller's token, checked as `token` does and for access to the WABA."""
        token = self.token(request)
        state = self._account.state
        if waba_id not in state.wabas:
            raise unsupported(waba_id, request.method)
        if waba_id not in state.tokens[token]:
            raise GraphFailure(meta_error(403, 200, "(#200) Permissions error"))
        return token

    async def _list_templates(self, request: web.Request) -> web.Response:
        waba_id = request.match_info["waba_id"]
        token = self.authorize(request, waba_id)
        limit = _parse_limit(request.query.get("limit"))
        offset = _decode_cursor(request.query.get("after"))
        templates = self._account.state.templates[waba_id].values()
        items = [t for t in templates if _matches(t, request.query)]
        page = items[offset : offset + limit]
        body: dict[str, Any] = {"data": [_render(t, _fields(request.query)) for t in page]}
        if page:
            end = offset + len(page)
            body["paging"] = {"cursors": {"before": _cursor(offset), "after": _cursor(end)}}
            if end < len(items):
                body["paging"]["next"] = self._next_link(request, token, limit, end)
        return web.json_response(body)

    def _next_link(self, request: web.Request, token: str, limit: int, offset: int) -> str:
        """Absolute next-page URL; like Meta's, it carries the access token."""
        dropped = {"after", "before", "limit", "access_token", "appsecret_proof"}
        query = {k: v for k, v in request.query.items() if k not in dropped}
        query.update(limit=str(limit), after=_cursor(offset), access_token=token)
        version = self._account.next_version or request.match_info["version"]
        path = f"/{version}/{request.match_info['waba_id']}/message_templates"
        return f"{request.url.origin()}{path}?{urlencode(query)}"

    async def _get_object(self, request: web.Request) -> web.Response:
        object_id = request.match_info["object_id"]
        state = self._account.state
        if object_id in state.wabas:
            self.authorize(request, object_id)
            return web.json_response({"id": object_id, "name": state.wabas[object_id]})
        self.token(request)
        if object_id not in state.owner:
            raise unsupported(object_id)
        self.authorize(request, state.owner[object_id])
        return web.json_response(_render(state.template(object_id), _fields(request.query)))

    async def _apps(self, request: web.Request) -> web.Response:
        waba_id = request.match_info["waba_id"]
        self.authorize(request, waba_id)
        subscribed = self._account.state.subscribed
        if request.method == "POST":
            subscribed.add(waba_id)
            return web.json_response({"success": True})
        app_id, app_name = self._account.app_id, self._account.app_name
        app = {"whatsapp_business_api_data": {"id": app_id, "name": app_name}}
        return web.json_response({"data": [app] if waba_id in subscribed else []})


def _check_proof(proof: str | None, token: str, app_secret: str) -> None:
    if proof is None:
        raise GraphFailure(
            meta_error(
                400,
                100,
                "API calls from the server require an appsecret_proof argument",
                error_type="GraphMethodException",
            )
        )
    expected = hmac.new(app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(proof.encode(), expected.encode()):
        raise GraphFailure(
            meta_error(
                400,
                100,
                "Invalid appsecret_proof provided in the API argument",
                error_type="GraphMethodException",
            )
        )


def unsupported(object_id: str, method: str = "GET") -> GraphFailure:
    """Graph's answer for an object that does not exist (or is not this caller's)."""
    return GraphFailure(
        meta_error(
            400,
            100,
            f"Unsupported {method.lower()} request. Object with ID '{object_id}' does not exist, "
            "cannot be loaded due to missing permissions, or does not support this operation.",
            subcode=33,
            error_type="GraphMethodException",
        )
    )


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"sim:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, offset = text.partition(":")
        if prefix == "sim" and offset.isdigit():
            return int(offset)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise GraphFailure(meta_error(400, 131059, "(#131059) Invalid pagination cursor."))


def _parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or int(raw) < 1:
        raise GraphFailure(meta_error(400, 100, "(#100) Param limit must be a positive integer"))
    return min(int(raw), MAX_LIMIT)


def _render(template: Mapping[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in fields:
        if name == "quality_score":
            out[name] = {"score": template["quality_score"], "date": QUALITY_DATE}
        elif name in READABLE_FIELDS:
            out[name] = template[name]
    out["id"] = template["id"]  # Graph always returns the id
    return out


def _fields(query: Mapping[str, str]) -> tuple[str, ...]:
    raw = query.get("fields")
    return tuple(f.strip() for f in raw.split(",")) if raw else DEFAULT_FIELDS


def _matches(template: Mapping[str, Any], query: Mapping[str, str]) -> bool:
    """Graph's optional `status` (comma-separated) and `name` (substring) filters."""
    statuses, name = query.get("status"), query.get("name")
    return (not statuses or template["status"] in statuses.upper().split(",")) and (
        not name or name in template["name"]
    )
