"""Reference webhook endpoints the service is measured against (bench only).

uvicorn bench.apps:bare    a Starlette endpoint answering 200 without reading the body
uvicorn bench.apps:pywa    pywa's async handler: signature check and parsing, stores nothing
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

SECRET = os.environ.get("BENCH_APP_SECRET", "bench-secret")


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


def make_pywa() -> Starlette:
    from pywa_async import WhatsApp  # bench-only dependency

    wa = WhatsApp(phone_id="1", token="bench", server=None, app_secret=SECRET, verify_token="bench")

    async def handle(request: Request) -> Response:
        body = await request.body()
        refused = await wa.webhook_update_validator(
            body, request.headers.get("x-hub-signature-256")
        )
        if refused:
            return PlainTextResponse(refused[0], status_code=refused[1])
        text, status = await wa.webhook_update_handler(body)
        return PlainTextResponse(text, status_code=status)

    return Starlette(routes=[Route("/webhooks/meta", handle, methods=["POST"])])


bare = Starlette(routes=[Route("/webhooks/meta", ok, methods=["POST"])])
pywa = make_pywa() if os.environ.get("BENCH_TARGET") == "pywa" else None
