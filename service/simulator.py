"""Offline fake of Meta's Graph API (templates, subscribed apps) with fault injection.

Graph routes live under `/{version}/...`; a JSON control API under `/_sim/...` lets another
process (CLI, demo) seed WABAs and templates, change statuses, inject faults and read the
call log. The control API is unauthenticated: bind the simulator to loopback only.

It imports nothing from the client it tests (header names, appsecret_proof): written from
Meta's documentation on its own, it catches a client that misreads it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 25  # Meta's default page size
MAX_LIMIT = 1000  # Meta documents no maximum; larger limits are silently capped here
DEFAULT_FIELDS = ("id", "name", "language", "status", "category")
TEMPLATE_FIELDS = frozenset({*DEFAULT_FIELDS, "rejected_reason", "quality_score"})
FAULT_KINDS = frozenset({"190", "80008", "5xx", "slow", "malformed", "error"})
USAGE_WINDOW_S = 3600.0
MAX_CALL_LOG = 10_000  # oldest calls are dropped so a long demo does not grow without bound
QUALITY_DATE = 1758754645
BUSINESS_USAGE_HEADER = "X-Business-Use-Case-Usage"
APP_USAGE_HEADER = "X-App-Usage"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Fault:
    """An injected failure; `remaining=None` makes it sticky until cleared."""

    kind: str
    target: str | None = None  # WABA or template id; None applies to every Graph call
    remaining: int | None = 1
    http_status: int | None = None
    code: int | None = None  # for kind "error"
    subcode: int | None = None
    message: str | None = None
    is_transient: bool | None = None
    delay_s: float = 1.0  # for kind "slow"
    regain_min: int = 5  # for kind "80008": estimated_time_to_regain_access
    meta_body: bool = False  # for kind "5xx": Graph JSON body with code 2, is_transient
    body: str | None = None  # for kind "malformed"

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if self.remaining is not None and self.remaining < 1:
            raise ValueError("times must be >= 1")


# The keys each control API body takes (`Simulator.fail` and `set_status`); others are a 400.
FAULT_OPTIONS = tuple(
    f.name for f in fields(Fault) if f.name not in ("kind", "target", "remaining")
)
FAULT_KEYS = ("kind", "target", "times", "sticky", *FAULT_OPTIONS)
STATUS_KEYS = ("status", "rejected_reason", "quality_score", "category")


@dataclass(frozen=True)
class CallRecord:
    """One Graph request as seen by the simulator (no tokens, no query string)."""

    method: str
    path: str
    object_id: str | None
    status: int
    at: float


@dataclass
class _State:
    wabas: dict[str, str] = field(default_factory=dict)  # id -> name
    tokens: dict[str, set[str]] = field(default_factory=dict)  # token -> WABA ids
    templates: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # by str id
    owner: dict[str, str] = field(default_factory=dict)  # template id -> WABA id
    subscribed: set[str] = field(default_factory=set)
    faults: list[Fault] = field(default_factory=list)
    windows: dict[str, deque[float]] = field(default_factory=dict)  # WABA -> call times
    calls: deque[CallRecord] = field(default_factory=lambda: deque(maxlen=MAX_CALL_LOG))


class _GraphFailure(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def meta_error(
    http_status: int,
    code: int,
    message: str,
    *,
    subcode: int | None = None,
    error_type: str = "OAuthException",
    is_transient: bool | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """A response shaped like Graph's error body."""
    error: dict[str, Any] = {"message": message, "type": error_type, "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    if is_transient is not None:
        error["is_transient"] = is_transient
    error["fbtrace_id"] = "A" + secrets.token_urlsafe(16)
    return web.json_response({"error": error}, status=http_status, headers=headers)


def _unsupported(object_id: str) -> _GraphFailure:
    return _GraphFailure(
        meta_error(
            400,
            100,
            f"Unsupported get request. Object with ID '{object_id}' does not exist, "
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
    raise _GraphFailure(meta_error(400, 131059, "(#131059) Invalid pagination cursor."))


def _parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or int(raw) < 1:
        raise _GraphFailure(meta_error(400, 100, "(#100) Param limit must be a positive integer"))
    return min(int(raw), MAX_LIMIT)


def _normalise(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate and fill defaults; ids keep their JSON type (int or str) as given."""
    template_id = raw.get("id")
    if isinstance(template_id, bool) or not isinstance(template_id, int | str) or template_id == "":
        raise ValueError("template id must be an int or a non-empty string")
    for key in ("name", "language", "status"):
        if not isinstance(raw.get(key), str):
            raise ValueError(f"template {key} must be a string")
    quality = raw.get("quality_score", "UNKNOWN")
    return {
        "id": template_id,
        "name": raw["name"],
        "language": raw["language"],
        "status": raw["status"],
        "category": raw.get("category", "UTILITY"),
        "rejected_reason": raw.get("rejected_reason") or "NONE",
        "quality_score": quality.get("score") if isinstance(quality, Mapping) else quality,
    }


def _render(template: Mapping[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in fields:
        if name == "quality_score":
            out[name] = {"score": template["quality_score"], "date": QUALITY_DATE}
        elif name in TEMPLATE_FIELDS:
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


def make_templates(
    waba_id: str, count: int, *, pending: int = 0, start_id: int | None = None
) -> list[dict[str, Any]]:
    """Deterministic templates for a WABA; the last `pending` of them are PENDING.

    Ids default to a 16-digit range derived from the WABA id, so WABAs do not collide.
    """
    if start_id is None:
        digest = hashlib.sha256(waba_id.encode()).digest()
        start_id = 10**15 + int.from_bytes(digest[:8], "big") % (8 * 10**15)
    languages, categories = ("en_US", "pt_BR", "es"), ("UTILITY", "MARKETING", "AUTHENTICATION")
    return [
        {
            "id": str(start_id + i),
            "name": f"template_{i:05d}",
            "language": languages[i % len(languages)],
            "status": "PENDING" if i >= count - pending else "APPROVED",
            "category": categories[i % len(categories)],
            "rejected_reason": "NONE",
            "quality_score": "UNKNOWN" if i >= count - pending else "GREEN",
        }
        for i in range(count)
    ]


class Simulator:
    """State and behaviour of the fake Graph API; see the module docstring."""

    def __init__(
        self,
        *,
        app_secret: str | None = None,
        app_id: str = "1000000000000001",
        app_name: str = "template-sync",
        budget_per_hour: int = 200,
        next_version: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app_secret = app_secret
        self.app_id = app_id
        self.app_name = app_name
        self.budget_per_hour = budget_per_hour
        self.next_version = next_version  # version string used in paging.next links
        self._clock = clock
        self._state = _State()

    # --- Python control API -------------------------------------------------------------

    def reset(self) -> None:
        """Forget all WABAs, tokens, templates, subscriptions, faults and calls."""
        self._state = _State()

    def add_waba(self, waba_id: str, token: str | None = None, *, name: str | None = None) -> None:
        """Register a WABA and optionally a token valid for it (tokens may cover many)."""
        self._state.wabas[waba_id] = name or f"WABA {waba_id}"
        self._state.templates.setdefault(waba_id, {})
        if token:
            self._state.tokens.setdefault(token, set()).add(waba_id)

    def add_templates(self, waba_id: str, templates: Iterable[Mapping[str, Any]]) -> int:
        """Insert or replace (by id) templates of a WABA; returns how many were given."""
        if waba_id not in self._state.wabas:
            self.add_waba(waba_id)
        items = self._state.templates[waba_id]
        count = 0
        for template in map(_normalise, templates):
            key = str(template["id"])
            if self._state.owner.setdefault(key, waba_id) != waba_id:
                raise ValueError(f"template {key} belongs to another WABA")
            items[key] = template  # replacing keeps the listing position
            count += 1
        return count

    def templates(self, waba_id: str) -> list[dict[str, Any]]:
        return [dict(t) for t in self._state.templates.get(waba_id, {}).values()]

    def set_status(
        self,
        template_id: str,
        status: str,
        *,
        rejected_reason: str | None = None,
        quality_score: str | None = None,
        category: str | None = None,
    ) -> dict[str, Any]:
        """Change a template as Meta's reviewer would; raises KeyError for unknown ids."""
        template = self._template(template_id)
        template["status"] = status
        template["rejected_reason"] = rejected_reason or "NONE"
        if quality_score is not None:
            template["quality_score"] = quality_score
        if category is not None:
            template["category"] = category
        return dict(template)

    def is_subscribed(self, waba_id: str) -> bool:
        return waba_id in self._state.subscribed

    def fail(
        self, target: str | None, kind: str, *, times: int = 1, sticky: bool = False, **opts: Any
    ) -> Fault:
        """Queue a fault for a WABA/template id (or all calls when target is None)."""
        fault = Fault(kind=kind, target=target, remaining=None if sticky else times, **opts)
        self._state.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self._state.faults.clear()

    @property
    def calls(self) -> list[CallRecord]:
        return list(self._state.calls)

    def _template(self, template_id: str) -> dict[str, Any]:
        return self._state.templates[self._state.owner[template_id]][template_id]

    # --- HTTP ---------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        version = "/{version:v[0-9]+\\.[0-9]+}"
        app.router.add_post("/_sim/reset", self._ctl_reset)
        app.router.add_post("/_sim/wabas/{waba_id}", self._ctl_add_waba)
        app.router.add_get("/_sim/wabas/{waba_id}/templates", self._ctl_templates)
        app.router.add_post("/_sim/wabas/{waba_id}/templates", self._ctl_add_templates)
        app.router.add_post("/_sim/templates/{template_id}/status", self._ctl_set_status)
        app.router.add_post("/_sim/faults", self._ctl_add_fault)
        app.router.add_delete("/_sim/faults", self._ctl_clear_faults)
        app.router.add_get("/_sim/calls", self._ctl_calls)
        app.router.add_get(version + "/{waba_id}/message_templates", self._list_templates)
        app.router.add_get(version + "/{waba_id}/subscribed_apps", self._apps)
        app.router.add_post(version + "/{waba_id}/subscribed_apps", self._apps)
        app.router.add_get(version + "/{object_id}", self._get_object)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            return await _control(request, handler)
        target = request.match_info.get("waba_id") or request.match_info.get("object_id")
        waba_id = target if target in self._state.wabas else self._state.owner.get(target or "")
        status = 499  # recorded if the client goes away mid-request
        try:
            response = await self._respond(request, handler, target, waba_id)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self._state.calls.append(
                CallRecord(request.method, request.path, target, status, self._clock())
            )
            logger.debug("sim %s %s -> %d", request.method, request.path, status)

    async def _respond(
        self, request: web.Request, handler: Handler, target: str | None, waba_id: str | None
    ) -> web.StreamResponse:
        self._count_call(waba_id)
        fault = self._take_fault(target, waba_id)
        try:
            response: web.StreamResponse | None = None
            if fault is not None:
                response = await self._apply_fault(fault, waba_id)
            if response is None:
                response = await handler(request)
        except _GraphFailure as failure:
            response = failure.response
        for name, value in self._usage_headers(waba_id).items():
            response.headers.setdefault(name, value)
        return response

    def _take_fault(self, target: str | None, waba_id: str | None) -> Fault | None:
        for fault in self._state.faults:
            if fault.target is None or fault.target in (target, waba_id):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._state.faults.remove(fault)
                return fault
        return None

    async def _apply_fault(self, fault: Fault, waba_id: str | None) -> web.Response | None:
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay_s)
            return None
        if fault.kind == "190":
            return meta_error(
                fault.http_status or 400,
                190,
                "Error validating access token: Session has expired.",
                subcode=463,
            )
        if fault.kind == "80008":
            return self._throttled(waba_id, fault.regain_min, fault.http_status or 400)
        if fault.kind == "malformed":
            body = fault.body if fault.body is not None else '{"data": [{"id": "1", "name": '
            return web.Response(
                status=fault.http_status or 200, text=body, content_type="application/json"
            )
        if fault.kind == "5xx":
            return _server_error(fault)
        return meta_error(
            fault.http_status or 400,
            fault.code or 100,
            fault.message or "Simulated error",
            subcode=fault.subcode,
            is_transient=fault.is_transient,
        )

    def _throttled(self, waba_id: str | None, regain_min: int, http_status: int) -> web.Response:
        usage = {waba_id or "0": [self._usage_entry(100, regain_min)]}
        return meta_error(
            http_status,
            80008,
            "(#80008) There have been too many calls to this WhatsApp "
            "Business account. Wait a bit and try again.",
            headers={BUSINESS_USAGE_HEADER: json.dumps(usage)},
        )

    def _count_call(self, waba_id: str | None) -> None:
        if waba_id is None:
            return
        now = self._clock()
        window = self._state.windows.setdefault(waba_id, deque())
        window.append(now)
        while window[0] <= now - USAGE_WINDOW_S:
            window.popleft()

    def _usage_entry(self, pct: int, regain_min: int = 0) -> dict[str, Any]:
        return {
            "type": "whatsapp_business_management",
            "call_count": pct,
            "total_cputime": pct // 2,
            "total_time": pct // 2,
            "estimated_time_to_regain_access": regain_min,
        }

    def _usage_headers(self, waba_id: str | None) -> dict[str, str]:
        budget = max(self.budget_per_hour, 1)
        total = sum(len(w) for w in self._state.windows.values())
        app_pct = min(100, total * 100 // (budget * max(1, len(self._state.wabas))))
        headers = {
            APP_USAGE_HEADER: json.dumps(
                {"call_count": app_pct, "total_time": app_pct // 2, "total_cputime": app_pct // 2}
            )
        }
        if waba_id is not None:
            pct = min(100, len(self._state.windows.get(waba_id, ())) * 100 // budget)
            headers[BUSINESS_USAGE_HEADER] = json.dumps({waba_id: [self._usage_entry(pct)]})
        return headers

    # --- Graph handlers -----------------------------------------------------------------

    def _token(self, request: web.Request) -> str:
        """The caller's token, checked for existence and appsecret_proof."""
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        token = token or request.query.get("access_token", "")
        if token not in self._state.tokens:
            raise _GraphFailure(
                meta_error(401, 190, "Invalid OAuth access token - Cannot parse access token")
            )
        if self.app_secret is not None:
            self._check_proof(request.query.get("appsecret_proof"), token, self.app_secret)
        return token

    @staticmethod
    def _check_proof(proof: str | None, token: str, app_secret: str) -> None:
        if proof is None:
            raise _GraphFailure(
                meta_error(
                    400,
                    100,
                    "API calls from the server require an appsecret_proof argument",
                    error_type="GraphMethodException",
                )
            )
        expected = hmac.new(app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(proof.encode(), expected.encode()):
            raise _GraphFailure(
                meta_error(
                    400,
                    100,
                    "Invalid appsecret_proof provided in the API argument",
                    error_type="GraphMethodException",
                )
            )

    def _authorize(self, request: web.Request, waba_id: str) -> str:
        token = self._token(request)
        if waba_id not in self._state.wabas:
            raise _unsupported(waba_id)
        if waba_id not in self._state.tokens[token]:
            raise _GraphFailure(meta_error(403, 200, "(#200) Permissions error"))
        return token

    async def _list_templates(self, request: web.Request) -> web.Response:
        waba_id = request.match_info["waba_id"]
        token = self._authorize(request, waba_id)
        limit = _parse_limit(request.query.get("limit"))
        offset = _decode_cursor(request.query.get("after"))
        items = [t for t in self._state.templates[waba_id].values() if _matches(t, request.query)]
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
        version = self.next_version or request.match_info["version"]
        path = f"/{version}/{request.match_info['waba_id']}/message_templates"
        return f"{request.url.origin()}{path}?{urlencode(query)}"

    async def _get_object(self, request: web.Request) -> web.Response:
        object_id = request.match_info["object_id"]
        if object_id in self._state.wabas:
            self._authorize(request, object_id)
            return web.json_response({"id": object_id, "name": self._state.wabas[object_id]})
        self._token(request)
        if object_id not in self._state.owner:
            raise _unsupported(object_id)
        self._authorize(request, self._state.owner[object_id])
        return web.json_response(_render(self._template(object_id), _fields(request.query)))

    async def _apps(self, request: web.Request) -> web.Response:
        waba_id = request.match_info["waba_id"]
        self._authorize(request, waba_id)
        if request.method == "POST":
            self._state.subscribed.add(waba_id)
            return web.json_response({"success": True})
        app = {"whatsapp_business_api_data": {"id": self.app_id, "name": self.app_name}}
        return web.json_response({"data": [app] if waba_id in self._state.subscribed else []})

    # --- control handlers ---------------------------------------------------------------

    async def _ctl_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def _ctl_add_waba(self, request: web.Request) -> web.Response:
        body = await _json_object(request, ("token", "name"))
        self.add_waba(request.match_info["waba_id"], body.get("token"), name=body.get("name"))
        return web.json_response({"ok": True})

    async def _ctl_templates(self, request: web.Request) -> web.Response:
        return web.json_response({"data": self.templates(request.match_info["waba_id"])})

    async def _ctl_add_templates(self, request: web.Request) -> web.Response:
        waba_id = request.match_info["waba_id"]
        body = await request.json()
        if isinstance(body, dict):
            _only(body, ("count", "pending") if "count" in body else ("templates",))
        if isinstance(body, dict) and "count" in body:
            body = make_templates(waba_id, int(body["count"]), pending=int(body.get("pending", 0)))
        elif isinstance(body, dict):
            body = body.get("templates")
        if not isinstance(body, list) or not all(isinstance(t, dict) for t in body):
            raise ValueError("expected a list of template objects")
        return web.json_response({"count": self.add_templates(waba_id, body)})

    async def _ctl_set_status(self, request: web.Request) -> web.Response:
        body = await _json_object(request, STATUS_KEYS)
        status = body.pop("status", None)
        if not isinstance(status, str):
            raise ValueError("status must be a string")
        return web.json_response(self.set_status(request.match_info["template_id"], status, **body))

    async def _ctl_add_fault(self, request: web.Request) -> web.Response:
        body = await _json_object(request, FAULT_KEYS)
        fault = self.fail(body.pop("target", None), body.pop("kind", None), **body)
        return web.json_response(asdict(fault))

    async def _ctl_clear_faults(self, request: web.Request) -> web.Response:
        self.clear_faults()
        return web.json_response({"ok": True})

    async def _ctl_calls(self, request: web.Request) -> web.Response:
        target = request.query.get("object_id")
        calls = [asdict(c) for c in self._state.calls if target in (None, c.object_id)]
        return web.json_response({"calls": calls})


def _server_error(fault: Fault) -> web.Response:
    status = fault.http_status or 500
    if not fault.meta_body:
        return web.Response(
            status=status, text="Service Unavailable" if status == 503 else "Internal Server Error"
        )
    return meta_error(
        status,
        2,
        "An unexpected error has occurred. Please retry your request later.",
        is_transient=True,
    )


async def _json_object(request: web.Request, accepted: Collection[str]) -> dict[str, Any]:
    body = await request.json() if request.can_read_body else {}
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    _only(body, accepted)
    return body


def _only(body: Mapping[str, Any], accepted: Collection[str]) -> None:
    """A ValueError (so a 400) naming the first key of a control body that is not accepted."""
    unknown = [key for key in body if key not in accepted]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; accepted: {', '.join(sorted(accepted))}")


async def _control(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map bad control input to 400 and unknown ids to 404, as JSON."""
    try:
        return await handler(request)
    except LookupError as exc:
        return web.json_response({"error": f"not found: {exc}"}, status=404)
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)


async def serve(sim: Simulator, host: str = "127.0.0.1", port: int = 0) -> web.AppRunner:
    """Start the simulator; stop it with `await runner.cleanup()`.

    Access logging is off because request lines would carry `access_token=` from paging links.
    """
    runner = web.AppRunner(
        sim.build_app(), access_log=None, handler_cancellation=True, shutdown_timeout=1.0
    )
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The TCP port the runner listens on (useful after `serve(..., port=0)`)."""
    return int(runner.addresses[0][1])


def base_url(runner: web.AppRunner, version: str = "v25.0") -> str:
    """Graph base URL (with version) of a running simulator."""
    host = str(runner.addresses[0][0])
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{bound_port(runner)}/{version}"
