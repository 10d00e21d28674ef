"""The simulator's JSON control API under `/_sim/`: seed WABAs and templates, change statuses,
inject faults, read the call log, point the reviewer's webhooks somewhere and choose its
verdicts. Unauthenticated: the simulator listens on loopback only.

Bad input is a 400 naming what is wrong, an unknown id a 404; both as `{"error": ...}`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import asdict, fields
from typing import Any, Protocol

from aiohttp import web

from .simulator_faults import Fault
from .simulator_review import Reviewer
from .simulator_state import CallRecord, State, Verdict, WebhookRecord, make_templates

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The keys each control API body takes; others are a 400.
FAULT_OPTIONS = tuple(
    f.name for f in fields(Fault) if f.name not in ("kind", "target", "remaining")
)
FAULT_KEYS = ("kind", "target", "times", "sticky", *FAULT_OPTIONS)
STATUS_KEYS = ("status", "rejected_reason", "quality_score", "category")
WEBHOOK_KEYS = ("url", "app_secret", "drop_webhooks")
REVIEW_KEYS = ("delay_s", "verdicts", "create_status")
VERDICT_KEYS = ("status", "reason", "category")


class Controlled(Protocol):
    """The simulator's Python control API, as the routes below use it (simulator.Simulator)."""

    webhook_url: str | None
    drop_webhooks: bool
    review_delay_s: float | None
    create_status: str
    reviews: Reviewer

    def reset(self) -> None: ...
    def add_waba(
        self, waba_id: str, token: str | None = None, *, name: str | None = None
    ) -> None: ...
    def add_templates(self, waba_id: str, templates: Iterable[Mapping[str, Any]]) -> int: ...
    def templates(self, waba_id: str) -> list[dict[str, Any]]: ...
    def set_status(
        self,
        template_id: str,
        status: str,
        *,
        rejected_reason: str | None = None,
        quality_score: str | None = None,
        category: str | None = None,
    ) -> dict[str, Any]: ...
    def fail(
        self, target: str | None, kind: str, *, times: int = 1, sticky: bool = False, **opts: Any
    ) -> Fault: ...
    def clear_faults(self) -> None: ...
    def set_webhook(
        self, url: str | None, *, app_secret: str | None = None, drop_webhooks: bool | None = None
    ) -> None: ...
    def queue_verdicts(self, *verdicts: Verdict) -> None: ...
    @property
    def calls(self) -> list[CallRecord]: ...
    @property
    def webhooks(self) -> list[WebhookRecord]: ...
    @property
    def webhook_secret(self) -> str | None: ...
    @property
    def state(self) -> State: ...


class ControlEndpoints:
    """The `/_sim/` routes over a simulator's Python control API."""

    def __init__(self, sim: Controlled) -> None:
        self._sim = sim

    def add_routes(self, app: web.Application) -> None:
        route = app.router
        route.add_post("/_sim/reset", self._reset)
        route.add_post("/_sim/wabas/{waba_id}", self._add_waba)
        route.add_get("/_sim/wabas/{waba_id}/templates", self._templates)
        route.add_post("/_sim/wabas/{waba_id}/templates", self._add_templates)
        route.add_post("/_sim/templates/{template_id}/status", self._set_status)
        route.add_post("/_sim/faults", self._add_fault)
        route.add_delete("/_sim/faults", self._clear_faults)
        route.add_get("/_sim/calls", self._calls)
        route.add_get("/_sim/webhook", self._webhook)
        route.add_post("/_sim/webhook", self._set_webhook)
        route.add_get("/_sim/review", self._review)
        route.add_post("/_sim/review", self._set_review)

    async def _reset(self, request: web.Request) -> web.Response:
        self._sim.reset()
        return web.json_response({"ok": True})

    async def _add_waba(self, request: web.Request) -> web.Response:
        body = await json_object(request, ("token", "name"))
        self._sim.add_waba(request.match_info["waba_id"], body.get("token"), name=body.get("name"))
        return web.json_response({"ok": True})

    async def _templates(self, request: web.Request) -> web.Response:
        return web.json_response({"data": self._sim.templates(request.match_info["waba_id"])})

    async def _add_templates(self, request: web.Request) -> web.Response:
        waba_id = request.match_info["waba_id"]
        body = await request.json()
        if isinstance(body, dict):
            only(body, ("count", "pending") if "count" in body else ("templates",))
        if isinstance(body, dict) and "count" in body:
            body = make_templates(waba_id, int(body["count"]), pending=int(body.get("pending", 0)))
        elif isinstance(body, dict):
            body = body.get("templates")
        if not isinstance(body, list) or not all(isinstance(t, dict) for t in body):
            raise ValueError("expected a list of template objects")
        return web.json_response({"count": self._sim.add_templates(waba_id, body)})

    async def _set_status(self, request: web.Request) -> web.Response:
        body = await json_object(request, STATUS_KEYS)
        status = body.pop("status", None)
        if not isinstance(status, str):
            raise ValueError("status must be a string")
        template_id = request.match_info["template_id"]
        return web.json_response(self._sim.set_status(template_id, status, **body))

    async def _add_fault(self, request: web.Request) -> web.Response:
        body = await json_object(request, FAULT_KEYS)
        fault = self._sim.fail(body.pop("target", None), body.pop("kind", None), **body)
        return web.json_response(asdict(fault))

    async def _clear_faults(self, request: web.Request) -> web.Response:
        self._sim.clear_faults()
        return web.json_response({"ok": True})

    async def _calls(self, request: web.Request) -> web.Response:
        target = request.query.get("object_id")
        calls = [asdict(c) for c in self._sim.calls if target in (None, c.object_id)]
        return web.json_response({"calls": calls})

    async def _webhook(self, request: web.Request) -> web.Response:
        sim = self._sim
        return web.json_response({
            "url": sim.webhook_url,
            "signed": sim.webhook_secret is not None,
            "drop_webhooks": sim.drop_webhooks,
            "deliveries": [asdict(record) for record in sim.webhooks],
        })  # fmt: skip

    async def _set_webhook(self, request: web.Request) -> web.Response:
        body = await json_object(request, WEBHOOK_KEYS)
        self._sim.set_webhook(body.pop("url", self._sim.webhook_url), **body)
        return await self._webhook(request)

    async def _review(self, request: web.Request) -> web.Response:
        sim = self._sim
        return web.json_response({
            "delay_s": sim.review_delay_s,
            "create_status": sim.create_status,
            "verdicts": [asdict(v) for v in sim.state.verdicts],
            "waiting": sim.reviews.waiting,
        })  # fmt: skip

    async def _set_review(self, request: web.Request) -> web.Response:
        body = await json_object(request, REVIEW_KEYS)
        if "delay_s" in body:
            self._sim.review_delay_s = _delay(body["delay_s"])
        if "create_status" in body:
            self._sim.create_status = _text(body["create_status"], "create_status")
        self._sim.queue_verdicts(*map(_verdict, body.get("verdicts", [])))
        return await self._review(request)


async def json_object(request: web.Request, accepted: Collection[str]) -> dict[str, Any]:
    """The request's JSON object, holding only `accepted` keys."""
    body = await request.json() if request.can_read_body else {}
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    only(body, accepted)
    return body


def only(body: Mapping[str, Any], accepted: Collection[str]) -> None:
    """A ValueError (so a 400) naming the first key of a control body that is not accepted."""
    unknown = [key for key in body if key not in accepted]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; accepted: {', '.join(sorted(accepted))}")


async def control(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map bad control input to 400 and unknown ids to 404, as JSON."""
    try:
        return await handler(request)
    except LookupError as exc:
        return web.json_response({"error": f"not found: {exc}"}, status=404)
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)


def _verdict(raw: Any) -> Verdict:
    if not isinstance(raw, dict):
        raise ValueError('each verdict is an object like {"status": "REJECTED"}')
    only(raw, VERDICT_KEYS)
    category = raw.get("category")
    return Verdict(
        status=_text(raw.get("status", "APPROVED"), "status"),
        reason=_text(raw.get("reason", "NONE"), "reason"),
        category=None if category is None else _text(category, "category"),
    )


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be a non-empty string")
    return value


def _delay(value: Any) -> float | None:
    """Seconds before a review; null turns automatic reviews off."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError("delay_s must be a number of seconds >= 0, or null")
    return float(value)
