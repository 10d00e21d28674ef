"""Offline fake of Meta's Graph API (templates, subscribed apps) with fault injection.

Graph routes live under `/{version}/...`; a JSON control API under `/_sim/...` lets another
process (CLI, demo) seed WABAs and templates, change statuses, inject faults and read the
call log. The control API is unauthenticated: bind the simulator to loopback only.

This module holds the Simulator (its Python and HTTP control API, and the middleware every
Graph call passes), and serves it; simulator_graph holds the Graph endpoints,
simulator_faults Meta's errors, throttling and usage headers, simulator_state what Meta knows.

It imports nothing from the client it tests (header names, appsecret_proof): written from
Meta's documentation on its own, it catches a client that misreads it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import asdict, fields
from typing import Any

from aiohttp import web

from .simulator_faults import (
    Fault,
    GraphFailure,
    apply_fault,
    count_call,
    take_fault,
    usage_headers,
)
from .simulator_graph import GraphEndpoints
from .simulator_state import CallRecord, State, make_templates

__all__ = [
    "CallRecord",
    "Fault",
    "Handler",
    "Simulator",
    "base_url",
    "bound_port",
    "make_templates",
    "serve",
]

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The keys each control API body takes (`Simulator.fail` and `set_status`); others are a 400.
FAULT_OPTIONS = tuple(
    f.name for f in fields(Fault) if f.name not in ("kind", "target", "remaining")
)
FAULT_KEYS = ("kind", "target", "times", "sticky", *FAULT_OPTIONS)
STATUS_KEYS = ("status", "rejected_reason", "quality_score", "category")


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
        self._state = State()

    # --- Python control API -------------------------------------------------------------

    def reset(self) -> None:
        """Forget all WABAs, tokens, templates, subscriptions, faults and calls."""
        self._state = State()

    def add_waba(self, waba_id: str, token: str | None = None, *, name: str | None = None) -> None:
        """Register a WABA and optionally a token valid for it (tokens may cover many)."""
        self._state.add_waba(waba_id, token, name=name)

    def add_templates(self, waba_id: str, templates: Iterable[Mapping[str, Any]]) -> int:
        """Insert or replace (by id) templates of a WABA; returns how many were given."""
        return self._state.add_templates(waba_id, templates)

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
        template = self._state.template(template_id)
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

    @property
    def state(self) -> State:
        """What Meta knows now; `reset` replaces it, so read it afresh."""
        return self._state

    # --- HTTP ---------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/_sim/reset", self._ctl_reset)
        app.router.add_post("/_sim/wabas/{waba_id}", self._ctl_add_waba)
        app.router.add_get("/_sim/wabas/{waba_id}/templates", self._ctl_templates)
        app.router.add_post("/_sim/wabas/{waba_id}/templates", self._ctl_add_templates)
        app.router.add_post("/_sim/templates/{template_id}/status", self._ctl_set_status)
        app.router.add_post("/_sim/faults", self._ctl_add_fault)
        app.router.add_delete("/_sim/faults", self._ctl_clear_faults)
        app.router.add_get("/_sim/calls", self._ctl_calls)
        GraphEndpoints(self).add_routes(app)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            return await _control(request, handler)
        target = request.match_info.get("waba_id") or request.match_info.get("object_id")
        waba_id = self._state.waba_of(target)
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
        if waba_id is not None:
            count_call(self._state.windows, waba_id, self._clock())
        fault = take_fault(self._state.faults, target, waba_id)
        try:
            response: web.StreamResponse | None = None
            if fault is not None:
                response = await apply_fault(fault, waba_id)
            if response is None:
                response = await handler(request)
        except GraphFailure as failure:
            response = failure.response
        usage = usage_headers(
            self._state.windows, len(self._state.wabas), self.budget_per_hour, waba_id
        )
        for name, value in usage.items():
            response.headers.setdefault(name, value)
        return response

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
