"""create_app(settings): routes, middleware, error handlers and the lifespan that owns the store."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, nullcontext
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import api, api_events, api_templates, api_webhooks, ui, webhooks
from .assembly import StoreOpener, assembled
from .config import PREFIX, Settings
from .errors import ApiError
from .logs import LOG_DETAIL, silence_leaky_loggers
from .metrics import Metrics
from .openapi import openapi_document
from .responses import JSONResponse
from .retention import pruning
from .state import Services, services
from .storage import StoreUnavailable, open_store
from .template_writes import TemplateWriter
from .times import now_ms
from .watch import EventWatch

Endpoint = Callable[[Request], Awaitable[Response]]
logger = logging.getLogger(__name__)
access_logger = logging.getLogger("service.access")


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"success": True, "status": "alive"})


async def readyz(request: Request) -> JSONResponse:
    try:
        await services(request).store.ping(now_ms())
    except StoreUnavailable:
        return JSONResponse({"success": False, "message": "Store unavailable"}, status_code=503)
    return JSONResponse({"success": True, "status": "ready"})


async def metrics(request: Request) -> Response:
    body = services(request).metrics.render()
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(openapi_document())


def by_method(name: str, **handlers: Endpoint) -> Endpoint:
    """One endpoint for several methods of a path, so a 405 lists every allowed method."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    endpoint.__name__ = name  # the `route` label of the latency metric
    return endpoint


TEMPLATES = "/api/v3/workspaces/{workspace}/templates"
WEBHOOKS = "/api/v3/workspaces/{workspace}/webhooks"
# Routes are tried in order, each a regular expression: the busiest go first (the webhook,
# then a template's GET; bench/RESULTS.md, "Why the code is as it is"), and /sync before
# /{id}, which would match it too.
ROUTES = [
    Route("/webhooks/meta", webhooks.WebhookRoute(), methods=["GET", "POST"]),
    Route(
        TEMPLATES + "/sync",
        by_method("templates_sync", GET=api.last_sync, POST=api.sync_templates),
        methods=["GET", "POST"],
    ),
    Route(
        TEMPLATES + "/{id}",
        by_method(
            "template",
            GET=api.get_template,
            POST=api_templates.edit_template,
            DELETE=api_templates.delete_template,
        ),
        methods=["GET", "POST", "DELETE"],
    ),
    Route(
        TEMPLATES,
        by_method("templates", GET=api.list_templates, POST=api_templates.create_template),
        methods=["GET", "POST"],
    ),
    Route(TEMPLATES + "/{id}/history", api.template_history, methods=["GET"]),
    Route(
        WEBHOOKS,
        by_method("webhooks", GET=api_webhooks.list_webhooks, POST=api_webhooks.create_webhook),
        methods=["GET", "POST"],
    ),
    Route(WEBHOOKS + "/{id}", api_webhooks.delete_webhook, methods=["DELETE"]),
    Route(WEBHOOKS + "/{id}/deliveries", api_webhooks.webhook_deliveries, methods=["GET"]),
    Route(WEBHOOKS + "/{id}/enable", api_webhooks.enable_webhook, methods=["POST"]),
    Route("/api/v3/workspaces/{workspace}/events", api_events.stream_events, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error = ApiError(exc.status_code, exc.detail, headers=exc.headers)
    return error.response()


async def store_unavailable(request: Request, exc: Exception) -> Response:
    logger.error("store unavailable: %s", exc)
    return ApiError(503, "Store unavailable, retry later", headers={"Retry-After": "5"}).response()


async def server_error(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return ApiError(500, "Internal server error").response()


class AccessLog:
    """Times each request for metrics and logs it, without query string or body."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - started
            endpoint = scope.get("endpoint")
            route = getattr(endpoint, "__name__", "unmatched")
            self.metrics.request(scope["method"], route, status, elapsed)
            if access_logger.isEnabledFor(logging.INFO):
                client = scope.get("client") or ("-", 0)
                detail = scope.get(LOG_DETAIL)
                access_logger.info(
                    '%s "%s %s" %d %.1fms%s', client[0], scope["method"], scope["path"], status,
                    elapsed * 1000, f" {detail()}" if detail else "",
                )  # fmt: skip


def create_app(settings: Settings, store_opener: StoreOpener = open_store) -> Starlette:
    """The ASGI app; its lifespan assembles the store, syncer, poller and dispatcher
    (service.assembly), adds the event watch, and runs the loops.

    `store_opener` lets a test wrap the store (for example to crash after a commit).
    """
    silence_leaky_loggers()
    app_metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with assembled(settings, app_metrics, store_opener) as parts:
            watch = EventWatch(parts.store)
            app_metrics.event_followers.set_function(lambda: watch.following)
            async with (
                parts.poller.running() if settings.poll_enabled else nullcontext(),
                parts.dispatcher.running(),
                watch.running(),
                pruning(parts.store, settings, app_metrics),
            ):
                announce(settings)
                svc = Services(
                    settings, parts.store, parts.metrics, parts.syncer, parts.dispatcher,
                    parts.cipher, watch, TemplateWriter(parts.syncer),
                )  # fmt: skip
                yield {"services": svc}

    app = Starlette(
        routes=[*ROUTES, *ui.routes()],  # the status page's files are read here, once
        lifespan=lifespan,
        exception_handlers={
            ApiError: api_error,
            HTTPException: http_error,
            StoreUnavailable: store_unavailable,
            Exception: server_error,
        },
    )
    app.add_middleware(AccessLog, metrics=app_metrics)
    return app


def announce(settings: Settings) -> None:
    """Say where Meta should send webhooks and what is still to configure."""
    logger.info("webhook URL: http://%s:%d/webhooks/meta", settings.host, settings.port)
    logger.info(
        "status page: http://%s:%d/ui/#workspace=WS&token=TOKEN", settings.host, settings.port
    )
    if not settings.poll_enabled:
        logger.info("polling fallback disabled (%sPOLL_ENABLED=false)", PREFIX)
    for name in settings.unset_variables():
        logger.warning("%s is not set; see README 'Configuration'", name)
