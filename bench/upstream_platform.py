"""LancePilot on loopback, for bench/poller_cost.py's upstream case (design section 14).

The platform answers the seed's API for each of its workspaces: `POST .../templates/sync`
(200 "Templates synced successfully" while the workspace has a template PENDING at Meta,
else the seed's 404 "No pending templates found") and `GET .../templates` page by page in
our API's list shape (design section 5). It reads Meta's state straight from the simulator,
as a platform that receives its own Meta webhooks would know it, so it never calls Graph.
Every request is recorded (kind, virtual time, status) for the bench to count.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from service.simulator import Simulator, bound_port

PATH = "/api/v3/workspaces/{workspace}/templates"
SYNCED = {"success": True, "message": "Templates synced successfully"}
NO_PENDING = {"success": False, "message": "No pending templates found"}
UNAUTHENTICATED = {"success": False, "message": "Unauthenticated"}
NOT_FOUND = {"success": False, "message": "Workspace not found"}
DEFAULT_PER_PAGE, MAX_PER_PAGE = 10, 100  # our API's (design section 5)
_ACCOUNTS = uuid.UUID("6f1c3a52-93d4-4a43-9d1f-5c0d2f7e8b10")  # names the bench's accounts


@dataclass(frozen=True)
class Account:
    """One workspace at the platform: its id there, its WABA and its API token."""

    remote_workspace: str
    waba_id: str
    token: str

    @classmethod
    def for_waba(cls, waba_id: str) -> Account:
        """The bench's deterministic account for a WABA."""
        return cls(str(uuid.uuid5(_ACCOUNTS, waba_id)), waba_id, f"lp_bench_{waba_id}")


@dataclass(frozen=True)
class Request:
    kind: str  # "sync" or "list"
    at_s: float  # the platform's clock (virtual unix seconds in the bench)
    status: int


class Platform:
    """The seed's API over the simulator's templates; see the module docstring."""

    def __init__(self, sim: Simulator, clock: Callable[[], float]) -> None:
        self._sim, self._clock = sim, clock
        self._accounts: dict[str, Account] = {}
        self.requests: list[Request] = []

    def add(self, accounts: Sequence[Account]) -> None:
        self._accounts.update((account.remote_workspace, account) for account in accounts)

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(f"{PATH}/sync", self.sync)
        app.router.add_get(PATH, self.list_page)
        return app

    async def sync(self, request: web.Request) -> web.Response:
        """The seed's sync: it has nothing to ask Meta unless a template is pending there."""
        account = self._account(request)
        if isinstance(account, web.Response):
            return self._answer("sync", account)
        templates = self._sim.templates(account.waba_id)
        if any(t["status"] == "PENDING" for t in templates):
            return self._answer("sync", web.json_response(SYNCED))
        return self._answer("sync", web.json_response(NO_PENDING, status=404))

    async def list_page(self, request: web.Request) -> web.Response:
        """One page of the workspace's templates, oldest first, as our API lists them."""
        account = self._account(request)
        if isinstance(account, web.Response):
            return self._answer("list", account)
        page, per_page = _paging(request)
        templates = self._sim.templates(account.waba_id)
        first = (page - 1) * per_page
        shown = templates[first : first + per_page]
        items = [_item(account, first + i, template) for i, template in enumerate(shown)]
        meta = _meta(page, per_page, len(templates))
        return self._answer(
            "list", web.json_response({"success": True, "data": items, "meta": meta})
        )

    def _account(self, request: web.Request) -> Account | web.Response:
        """The request's account, or the answer refusing it (unknown workspace, bad token)."""
        account = self._accounts.get(request.match_info["workspace"])
        if account is None:
            return web.json_response(NOT_FOUND, status=404)
        if request.headers.get("Authorization") != f"Bearer {account.token}":
            return web.json_response(UNAUTHENTICATED, status=401)
        return account

    def _answer(self, kind: str, response: web.Response) -> web.Response:
        self.requests.append(Request(kind, self._clock(), response.status))
        return response


def _paging(request: web.Request) -> tuple[int, int]:
    """`page` (from 1) and `per_page` (1-100) from the query; nonsense reads as the defaults."""
    page = _number(request.query.get("page"), 1)
    per_page = min(_number(request.query.get("per_page"), DEFAULT_PER_PAGE), MAX_PER_PAGE)
    return page, per_page


def _number(value: str | None, default: int) -> int:
    return int(value) if value is not None and value.isdigit() and int(value) > 0 else default


def _item(account: Account, index: int, template: dict[str, Any]) -> dict[str, Any]:
    reason = template.get("rejected_reason")
    return {
        "id": index + 1,
        "workspace_id": account.remote_workspace,
        "waba_id": account.waba_id,
        "provider_id": str(template["id"]),
        "name": template["name"],
        "language": template["language"],
        "category": template.get("category"),
        "status": template["status"],
        "rejected_reason": None if reason in (None, "NONE") else reason,
        "quality_score": template.get("quality_score"),
        "flagged": False,
    }


def _meta(page: int, per_page: int, total: int) -> dict[str, int | None]:
    first = (page - 1) * per_page
    shown = max(0, min(per_page, total - first))
    return {
        "current_page": page,
        "from": first + 1 if shown else None,
        "last_page": max(1, math.ceil(total / per_page)),
        "per_page": per_page,
        "to": first + shown if shown else None,
        "total": total,
    }


@asynccontextmanager
async def serving(platform: Platform) -> AsyncIterator[str]:
    """The platform on a loopback port for the block; yields its base URL."""
    runner = web.AppRunner(platform.build_app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{bound_port(runner)}"
    finally:
        await runner.cleanup()
