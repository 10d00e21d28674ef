"""Offline fake of Meta's Graph API (templates and their writes, subscribed apps) with fault
injection, and Meta's reviewer, which sends signed status webhooks.

Graph routes live under `/{version}/...`; a JSON control API under `/_sim/...` lets another
process (CLI, demo) seed WABAs and templates, change statuses, inject faults, read the call
log, set the webhook URL and choose verdicts. The control API is unauthenticated: bind the
simulator to loopback only.

This module holds the Simulator (its Python control API, and the middleware every Graph call
passes), and serves it; simulator_graph holds the Graph reads, simulator_writes the template
writes and simulator_rules their rules, simulator_review the reviewer, simulator_control the
HTTP control API, simulator_faults Meta's errors, throttling and usage headers,
simulator_state what Meta knows.

It imports nothing from the client it tests (header names, appsecret_proof): written from
Meta's documentation on its own, it catches a client that misreads it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from yarl import URL

from .simulator_control import ControlEndpoints, Handler, control
from .simulator_faults import (
    Fault,
    GraphFailure,
    apply_fault,
    count_call,
    take_fault,
    usage_headers,
)
from .simulator_graph import GraphEndpoints
from .simulator_review import Reviewer
from .simulator_state import CallRecord, State, Verdict, WebhookRecord, make_templates
from .simulator_writes import WriteEndpoints

__all__ = [
    "CallRecord",
    "Fault",
    "Handler",
    "Simulator",
    "Verdict",
    "WebhookRecord",
    "base_url",
    "bound_port",
    "make_templates",
    "serve",
]

logger = logging.getLogger(__name__)


class Simulator:
    """State and behaviour of the fake Graph API; see the module docstring.

    Reviews: each created (when `create_status` is PENDING) or edited template gets its
    verdict `review_delay_s` seconds later (None: only through `set_status`), and the signed
    status webhook goes to `webhook_url`, signed with `webhook_secret` (default: the app
    secret); `drop_webhooks` keeps them from being sent (the poller must repair the status).
    """

    def __init__(
        self,
        *,
        app_secret: str | None = None,
        app_id: str = "1000000000000001",
        app_name: str = "template-sync",
        budget_per_hour: int = 200,
        next_version: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        review_delay_s: float | None = 1.0,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        drop_webhooks: bool = False,
        create_status: str = "PENDING",
    ) -> None:
        self.app_secret = app_secret
        self.app_id = app_id
        self.app_name = app_name
        self.budget_per_hour = budget_per_hour
        self.next_version = next_version  # version string used in paging.next links
        self.review_delay_s = review_delay_s
        self.create_status = create_status
        self.webhook_url: str | None = None
        self._webhook_secret: str | None = None
        self.drop_webhooks = drop_webhooks
        self._clock = clock
        self._state = State()
        self.reviews = Reviewer(self)
        if webhook_url is not None or webhook_secret is not None:
            self.set_webhook(webhook_url, app_secret=webhook_secret)

    def now(self) -> float:
        """The simulator's clock (monotonic seconds unless a test injects one)."""
        return self._clock()

    # --- Python control API -------------------------------------------------------------

    def reset(self) -> None:
        """Forget all WABAs, tokens, templates, subscriptions, faults, calls, queued verdicts,
        sent webhooks and the reviews still waiting (not the webhook or review settings)."""
        self.reviews.forget()
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

    def set_webhook(
        self, url: str | None, *, app_secret: str | None = None, drop_webhooks: bool | None = None
    ) -> None:
        """Where reviews send their status webhooks (None: nowhere), signed with `app_secret`
        (kept when None; the simulator's app secret when never given)."""
        if url is not None and URL(url).scheme not in ("http", "https"):
            raise ValueError("url must be an http or https URL")
        if app_secret is not None and not app_secret:
            raise ValueError("app_secret must not be empty")
        secret = app_secret or self.webhook_secret
        if url is not None and secret is None:
            raise ValueError("set app_secret (or the simulator's) to sign the webhooks with")
        if drop_webhooks is not None and not isinstance(drop_webhooks, bool):
            raise ValueError("drop_webhooks must be true or false")
        self.webhook_url, self._webhook_secret = url, app_secret or self._webhook_secret
        self.drop_webhooks = self.drop_webhooks if drop_webhooks is None else drop_webhooks

    @property
    def webhook_secret(self) -> str | None:
        """The secret status webhooks are signed with: Meta signs with the app secret."""
        return self._webhook_secret or self.app_secret

    @property
    def webhooks(self) -> list[WebhookRecord]:
        """The status webhooks sent or dropped, oldest first."""
        return list(self._state.webhooks)

    def queue_verdicts(self, *verdicts: Verdict) -> None:
        """The reviewer's next verdicts, in order, before its rules (see simulator_review)."""
        self._state.verdicts.extend(verdicts)

    @property
    def state(self) -> State:
        """What Meta knows now; `reset` replaces it, so read it afresh."""
        return self._state

    # --- HTTP ---------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        ControlEndpoints(self).add_routes(app)
        graph = GraphEndpoints(self)
        WriteEndpoints(self, graph, self.reviews).add_routes(app)
        graph.add_routes(app)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, app: web.Application) -> None:
        await self.reviews.close()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            return await control(request, handler)
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


async def serve(sim: Simulator, host: str = "127.0.0.1", port: int = 0) -> web.AppRunner:
    """Start the simulator; stop it with `await runner.cleanup()`.

    Access logging is off because request lines would carry `access_token=` from paging links.
    """
    return await serve_app(sim.build_app(), host, port)


async def serve_app(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> web.AppRunner:
    """Serve an aiohttp app (port 0: a free one), without an access log; stop it with
    `await runner.cleanup()`. The simulator, the demo's receivers and the tests' fakes."""
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


@asynccontextmanager
async def serving_app(app: web.Application) -> AsyncIterator[str]:
    """`app` on a free loopback port for the block; its origin, `http://127.0.0.1:PORT`."""
    runner = await serve_app(app)
    try:
        yield f"http://127.0.0.1:{bound_port(runner)}"
    finally:
        await runner.cleanup()


def bound_port(runner: web.AppRunner) -> int:
    """The TCP port the runner listens on (useful after `serve(..., port=0)`)."""
    return int(runner.addresses[0][1])


def base_url(runner: web.AppRunner, version: str = "v25.0") -> str:
    """Graph base URL (with version) of a running simulator."""
    host = str(runner.addresses[0][0])
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{bound_port(runner)}/{version}"
