"""A fake upstream for tests: our own API's shape for one workspace (design section 5), on a
loopback port, with answers a test can queue or fix: errors, garbage, a 50 MB stream, a hang.
It stands for a LancePilot-compatible platform misbehaving; the well-behaved upstream in
tests is a real template-sync (tests/test_upstream_mode.py)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from service.simulator import serving_app

REMOTE = "9ca711b1-14ca-4bd5-9457-751db9c052ac"
TOKEN = "ts_upstream-secret-token-0123456789"
WABA = "102290129340398"
LIST_PATH = f"/api/v3/workspaces/{REMOTE}/templates"
SYNC_PATH = f"{LIST_PATH}/sync"
MIB = 1024 * 1024
HUGE_BYTES = 50 * MIB
SYNC_FAILED = {
    "success": False,
    "message": "Failed to sync the templates",
    "error": {"waba_id": WABA, "code": 190, "detail": "Error validating access token"},
}

Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]


def remote(n: int, **fields: Any) -> dict[str, Any]:
    """A template as our API lists it (design section 5)."""
    return {
        "id": n + 1,
        "workspace_id": REMOTE,
        "waba_id": WABA,
        "provider_id": str(1_689_556_908_000_000 + n),
        "name": f"template_{n}",
        "language": "en_US",
        "category": "UTILITY",
        "status": "PENDING",
        "rejected_reason": None,
        "quality_score": None,
        "flagged": False,
        **fields,
    }


@dataclass(frozen=True)
class Seen:
    method: str
    raw_path: str
    query: dict[str, str]
    authorization: str | None


class FakeUpstream:
    """Our API for one workspace. Queued `answers` are used first, one per request, then
    `sticky`, then the normal answers; `stated_last_page` lets a test lie in meta."""

    def __init__(self, count: int = 250) -> None:
        self.templates = [remote(n) for n in range(count)]
        self.seen: list[Seen] = []
        self.answers: list[Answer] = []
        self.sticky: Answer | None = None
        self.stated_last_page: Callable[[int, int], int] | None = None
        self.release = asyncio.Event()  # lets hanging handlers go at teardown
        self.streamed = 0
        self.stream_ended = asyncio.Event()
        self.base_url = ""  # set once it listens

    def gets(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "GET"]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(
            Seen(
                request.method,
                request.raw_path.split("?")[0],
                dict(request.query),
                request.headers.get("Authorization"),
            )
        )
        if self.answers:
            return await self.answers.pop(0)(request)
        if self.sticky is not None:
            return await self.sticky(request)
        if request.method == "POST":
            return web.json_response({"success": True, "message": "Templates synced successfully"})
        return self.page(int(request.query.get("page", "1")), int(request.query["per_page"]))

    def page(self, page: int, per_page: int) -> web.Response:
        items = self.templates[(page - 1) * per_page : page * per_page]
        last_page = max(1, math.ceil(len(self.templates) / per_page))
        if self.stated_last_page is not None:
            last_page = self.stated_last_page(page, last_page)
        meta = {"current_page": page, "last_page": last_page, "total": len(self.templates)}
        return web.json_response({"success": True, "data": items, "meta": meta})

    async def hang(self, request: web.Request) -> web.StreamResponse:
        await self.release.wait()
        return web.json_response({"success": True})

    async def stream(self, request: web.Request, declared: bool = False) -> web.StreamResponse:
        """HUGE_BYTES of JSON whitespace, chunk by chunk, counting what left."""
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if declared:
            response.content_length = HUGE_BYTES
        await response.prepare(request)
        try:
            while self.streamed < HUGE_BYTES:
                await response.write(b" " * 65536)
                self.streamed += 65536
        except ConnectionResetError:
            pass  # the client hung up: what this test wants to see
        finally:
            self.stream_ended.set()
        return response


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Answer:
    """A fixed answer: `body` as JSON, or as it is when bytes."""

    async def respond(request: web.Request) -> web.StreamResponse:
        if isinstance(body, bytes):
            return web.Response(status=status, body=body, headers=headers)
        return web.json_response(body, status=status, headers=headers)

    return respond


def failing(message: str, status: int = 404) -> Answer:
    return answer(status, {"success": False, "message": message})


@asynccontextmanager
async def serving_fake() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream.handle)
    async with serving_app(app) as origin:
        upstream.base_url = origin + "/"
        try:
            yield upstream
        finally:
            upstream.release.set()
