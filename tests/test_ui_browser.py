"""The status page (GET /ui/) in a real headless Chromium, Debian's, driven by Playwright,
against the real service on loopback.

What a person sees: the templates with their chips, filters and history; a webhook that
lands changes a chip without a reload; Sync now says the seed's three answers in words; a
hostile rejection reason stays text; a wrong token, an unknown workspace and a service that
is gone are said plainly; the page fits a 375 px phone and its text is readable. And what
must not happen: the token in a URL or a log line, a Content-Security-Policy violation.

SQLite only: the page sees nothing but HTTP, and the API and event stream it uses run on
PostgreSQL in tests/test_api.py and tests/test_events_stream.py. One browser per module (a
launch costs more than a test), a fresh context per test (its own sessionStorage).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    Dialog,
    Locator,
    Page,
    Request,
    ViewportSize,
    async_playwright,
    expect,
)

from service.app import create_app
from service.config import Settings
from service.graph import GraphTemplate
from service.server import Server as ServiceServer
from service.server import ServerConfig
from service.simulator import Simulator, make_templates
from service.storage import Store
from service.times import now_ms

from .conftest import (
    APP_SECRET,
    WABA_ID,
    Server,
    Tenant,
    add_template,
    make_tenant,
    migrated_store,
    simulated,
    until_started,
)
from .test_webhooks import status_body
from .waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHROMIUM = os.environ.get("TEMPLATE_SYNC_TEST_CHROMIUM") or shutil.which("chromium") or ""
TOKEN_REFUSED = (
    "The service refused this token (401): check it, or create one with template-sync token create"
)
HOSTILE = "<img src=x onerror=alert(1)>"
FOLLOWERS = "template_sync_event_followers "
WAIT_MS = 10_000  # longest wait for something on screen (a reconnect's backoff included)
PHONE: ViewportSize = {"width": 375, "height": 740}
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PAGE_FILES = ("/ui/", "/ui/app.js", "/ui/style.css")

expect.set_options(timeout=WAIT_MS)


# --- browser, store and service, in the module's event loop ----------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM or not os.access(CHROMIUM, os.X_OK):
        pytest.skip("no chromium executable (Debian: apt-get install chromium; .ci/run does)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only (see the module's docstring)."""
    return f"sqlite:///{tmp_path}/template-sync.db"


# conftest's store, tenant and server, made in the module's event loop, where the browser is.


@pytest_asyncio.fixture(loop_scope="module")
async def store(database_url: str) -> AsyncIterator[Store]:
    async with migrated_store(database_url) as opened:
        yield opened


@pytest_asyncio.fixture(loop_scope="module")
async def tenant(store: Store, settings: Settings) -> Tenant:
    return await make_tenant(store, settings)


@asynccontextmanager
async def running(settings: Settings, port: int = 0) -> AsyncIterator[Server]:
    """The app on loopback `port` (0: any) as `serve` runs it: service.server's Server ends
    open event streams when it stops, so a test can take the service away from a page. The
    port can be bound again at once after a stop."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    app = create_app(replace(settings, port=port))
    config = ServerConfig(app, settings, log_config=None, access_log=False, lifespan="on")
    config.timeout_graceful_shutdown = 5
    server = ServiceServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await until_started(server, task)
    try:
        async with aiohttp.ClientSession() as session:
            yield Server(f"http://127.0.0.1:{port}", session)
    finally:
        server.should_exit = True
        await task


@pytest_asyncio.fixture(loop_scope="module")
async def server(settings: Settings, store: Store) -> AsyncIterator[Server]:
    async with running(settings) as served:
        yield served


# --- the page, as a person uses it -------------------------------------------------------


@dataclass
class StatusPage:
    """One tab on the status page, recording what it asked the network and what it said."""

    page: Page
    base_url: str
    requests: list[Request] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    loads: list[str] = field(default_factory=list)  # documents loaded, not history changes

    async def open(self, workspace: str, token: str) -> None:
        await self.page.goto(f"{self.base_url}/ui/#workspace={workspace}&token={token}")

    async def open_for(self, tenant: Tenant) -> None:
        """Open with the tenant's token; return once events flow and the list is shown."""
        await self.open(tenant.workspace_id, tenant.token)
        await expect(self.live).to_have_text(re.compile("^Live"))
        await expect(self.shown).to_have_text(re.compile(r"^(Showing|No templates)"))

    def row_of(self, provider_id: str) -> Locator:
        """The row of Meta's template `provider_id`, by the id it shows."""
        shown = self.page.get_by_text(f"Meta id {provider_id}", exact=True)
        return self.page.locator("#templates tbody tr", has=shown)

    def chip(self, row: Locator) -> Locator:
        return row.locator(".chip").first

    def cell(self, row: Locator, column: str) -> Locator:
        """A cell by its column (the label a phone shows before its text)."""
        return row.locator(f'[data-label="{column}"]')

    @property
    def live(self) -> Locator:
        return self.page.locator("#live")

    @property
    def shown(self) -> Locator:
        return self.page.locator("#shown")

    @property
    def alert(self) -> Locator:
        return self.page.get_by_role("alert")

    @property
    def sync_result(self) -> Locator:
        return self.page.locator("#sync-result")

    async def sync_now(self) -> None:
        await self.page.get_by_role("button", name="Sync now").click()
        await expect(self.sync_result).not_to_have_text(re.compile("^(Syncing.*)?$"))

    async def history_of(self, row: Locator) -> Locator:
        """Open the row's history drawer; the drawer once it has loaded."""
        await row.get_by_role("button", name=re.compile("^History of")).click()
        drawer = self.page.get_by_role("dialog")
        await expect(drawer.get_by_role("status")).to_have_text(re.compile(r"^\d+ events?$"))
        return drawer

    async def session_token(self) -> str | None:
        token: str | None = await self.page.evaluate(
            "sessionStorage.getItem('template-sync.token')"
        )
        return token

    def urls(self) -> list[str]:
        return [request.url for request in self.requests]

    async def dismiss(self, dialog: Dialog) -> None:
        """Note an alert() or the like (none may come), and close it."""
        self.dialogs.append(dialog.message)
        await dialog.dismiss()


@asynccontextmanager
async def status_page(
    browser: Browser, base_url: str, viewport: ViewportSize = DESKTOP
) -> AsyncIterator[StatusPage]:
    """A fresh browser context (its own sessionStorage) with one tab; afterwards, nothing
    the Content-Security-Policy refused was attempted."""
    context = await browser.new_context(viewport=viewport)
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    tab = StatusPage(page, base_url)
    page.on("request", lambda request: tab.requests.append(request))
    page.on("console", lambda message: tab.console.append(message.text))
    page.on("dialog", tab.dismiss)
    page.on("load", lambda loaded: tab.loads.append(loaded.url))
    try:
        yield tab
    finally:
        await context.close()
    assert not csp_reports(tab), tab.console


def csp_reports(tab: StatusPage) -> list[str]:
    """What the browser said the Content-Security-Policy refused."""
    return [line for line in tab.console if "Content Security Policy" in line]


async def followers(server: Server) -> float:
    """Event streams open in the service (its metric)."""
    _, text, _ = await server.request("GET", "/metrics")
    [value] = [line.split()[1] for line in text.splitlines() if line.startswith(FOLLOWERS)]
    return float(value)


async def deliver(
    server: Server, event: str, provider_id: str, entry_time: int, **value: Any
) -> None:
    """Meta's signed status webhook for template `provider_id`, with the test's values."""
    body = status_body(event, template_id=provider_id, entry_time=entry_time, **value)
    status, answer, _ = await server.deliver(body)
    assert status == 200, answer


async def seed_meta(
    sim: Simulator, store: Store, tenant: Tenant, count: int, pending: int
) -> list[str]:
    """`count` templates at Meta and here, the last `pending` PENDING: their Meta ids."""
    templates = make_templates(WABA_ID, count, pending=pending)
    sim.add_templates(WABA_ID, templates)
    remote = [GraphTemplate.from_graph(t) for t in templates]
    await store.apply_remote(tenant.workspace_id, WABA_ID, remote, now_ms(), create=True)
    return [t["id"] for t in templates]


# --- what the page shows ---------------------------------------------------------------------


async def test_lists_templates_with_chips_waiting_and_webhooks(
    browser: Browser, server: Server, store: Store, tenant: Tenant
) -> None:
    await add_template(store, tenant, "1001", name="order_confirmation")
    await add_template(store, tenant, "1002", "APPROVED", name="password_reset")
    await add_template(store, tenant, "1003", "PAUSED", name="spring_sale")
    await deliver(server, "IN_APPEAL", "1004", 1_780_000_000)  # an unknown id: the webhook adds it
    async with status_page(browser, server.base_url) as ui:
        await ui.open_for(tenant)
        assert "#" not in ui.page.url and tenant.token not in ui.page.url  # off the address bar
        assert await ui.session_token() == tenant.token
        await expect(ui.page.get_by_role("table", name=re.compile("^Templates of"))).to_be_visible()
        await expect(ui.shown).to_have_text("Showing 4 of 4 templates.")
        chips = [("1001", "PENDING", "PENDING"), ("1002", "APPROVED", "APPROVED"),
                 ("1003", "PAUSED", "PAUSED"), ("1004", "IN_APPEAL", "IN APPEAL")]  # fmt: skip
        for provider_id, status, text in chips:
            await expect(ui.chip(ui.row_of(provider_id))).to_have_attribute("data-status", status)
            await expect(ui.chip(ui.row_of(provider_id))).to_have_text(text)
        pending, approved, appeal = ui.row_of("1001"), ui.row_of("1002"), ui.row_of("1004")
        await expect(ui.cell(pending, "Waiting")).to_have_text(re.compile(r"pending for \d+ days$"))
        await expect(ui.cell(appeal, "Waiting")).to_have_text(re.compile(r"in appeal for "))
        await expect(ui.cell(approved, "Waiting")).to_have_text("-")
        await expect(ui.cell(pending, "Webhook")).to_have_text("no webhook yet")
        await expect(ui.cell(appeal, "Webhook")).to_have_text(
            re.compile(r"webhook (just now|1 min ago)$")
        )
        names = await ui.page.locator("#templates tbody th .name").all_text_contents()
        expected = ["order_confirmation", "order_confirmation", "password_reset", "spring_sale"]
        assert names == expected  # by name: the webhook's template has the first one's name


async def test_filters_by_status_and_name(
    browser: Browser, server: Server, store: Store, tenant: Tenant
) -> None:
    await add_template(store, tenant, "2001", name="order_confirmation")
    await add_template(store, tenant, "2002", name="order_shipped")
    await add_template(store, tenant, "2003", "APPROVED", name="order_delivered")
    async with status_page(browser, server.base_url) as ui:
        await ui.open_for(tenant)
        visible = ui.page.locator("#templates tbody tr:visible")
        await ui.page.get_by_label("Status").select_option("PENDING")
        await expect(visible).to_have_count(2)
        await expect(ui.shown).to_have_text("Showing 2 of 3 templates.")
        await ui.page.get_by_label("Name contains").fill("SHIPPED")
        await expect(visible).to_have_count(1)
        await expect(visible.locator("th")).to_contain_text("order_shipped")
        await ui.page.get_by_label("Status").select_option("")
        await ui.page.get_by_label("Name contains").fill("")
        await expect(visible).to_have_count(3)


async def test_history_drawer_lists_the_events_and_esc_returns_focus(
    browser: Browser, server: Server, store: Store, tenant: Tenant
) -> None:
    await add_template(store, tenant, "3001", name="order_confirmation")
    await deliver(server, "REJECTED", "3001", 1_780_000_000, reason="INVALID_FORMAT")
    await deliver(server, "APPROVED", "3001", 1_779_000_000)  # older than REJECTED: not applied
    async with status_page(browser, server.base_url) as ui:
        await ui.open_for(tenant)
        row = ui.row_of("3001")
        drawer = await ui.history_of(row)
        await expect(drawer).to_have_accessible_name("History of order_confirmation (en_US)")
        await expect(drawer.get_by_role("status")).to_have_text("4 events")  # CREATED, PENDING
        rejected, stale = drawer.locator("tbody tr").nth(2), drawer.locator("tbody tr").nth(3)
        await expect(ui.cell(rejected, "Change")).to_have_text("PENDING → REJECTED")
        await expect(ui.cell(rejected, "Reason")).to_have_text("INVALID_FORMAT")
        await expect(ui.cell(rejected, "Source")).to_have_text("webhook")
        await expect(ui.cell(stale, "Applied")).to_have_text("no: older than the current state")
        await ui.page.keyboard.press("Escape")
        await expect(drawer).to_be_hidden()
        await expect(row.get_by_role("button", name=re.compile("^History of"))).to_be_focused()


# --- live updates, and the stream's reconnect -----------------------------------------------


async def test_a_webhook_changes_a_chip_without_a_reload(
    browser: Browser, server: Server, store: Store, tenant: Tenant
) -> None:
    await add_template(store, tenant, "4001", name="order_confirmation")
    async with status_page(browser, server.base_url) as ui:
        await ui.open_for(tenant)
        await ui.page.evaluate("window.notReloaded = true")
        await eventually(lambda: followers(server), message="the page's stream never opened")
        row = ui.row_of("4001")
        await expect(ui.chip(row)).to_have_attribute("data-status", "PENDING")
        await deliver(server, "APPROVED", "4001", 1_780_000_000)
        await expect(ui.chip(row)).to_have_attribute("data-status", "APPROVED")
        await expect(ui.chip(row)).to_have_text("APPROVED")
        await expect(ui.cell(row, "Waiting")).to_have_text("-")
        await expect(ui.cell(row, "Webhook")).to_have_text(re.compile("^webhook "))
        assert await ui.page.evaluate("window.notReloaded") is True
        assert len(ui.loads) == 1  # the first load, nothing since
        assert len([url for url in ui.urls() if "/templates?" in url]) == 1  # not re-read


async def test_the_stream_reconnects_with_last_event_id_and_replays_what_it_missed(
    browser: Browser, settings: Settings, store: Store, tenant: Tenant
) -> None:
    await add_template(store, tenant, "5001", name="order_confirmation")
    async with running(settings) as other, AsyncExitStack() as tabs:  # `other`: a second replica
        async with running(settings) as first:
            ui = await tabs.enter_async_context(status_page(browser, first.base_url))
            await ui.open_for(tenant)
            await eventually(lambda: followers(first), message="the page's stream never opened")
            await deliver(first, "PAUSED", "5001", 1_780_000_000)
            await expect(ui.chip(ui.row_of("5001"))).to_have_attribute("data-status", "PAUSED")
        # The page's service has stopped: the page says so and keeps trying.
        await expect(ui.live).to_have_text(re.compile("^Reconnecting"))
        await expect(ui.alert).to_have_text(f"Cannot reach the service at {first.base_url}")
        await deliver(other, "APPROVED", "5001", 1_780_000_100)  # while the page is away
        [*_, paused, approved] = await store.events_after(0, 100, tenant.workspace_id)
        async with running(settings, port_of(first)):
            await expect(ui.chip(ui.row_of("5001"))).to_have_attribute("data-status", "APPROVED")
            await expect(ui.live).to_have_text(re.compile("^Live"))
            await expect(ui.alert).to_be_hidden()
            # (read while the stream is open: after this block the page tries again)
            streams = [r for r in ui.requests if r.url.endswith("/events")]
            sent = [(await r.all_headers()).get("last-event-id") for r in streams]
        assert sent[0] is None and sent[-1] == str(paused.event.id)
        assert approved.event.row.event == "APPROVED"  # the event replayed to the page
        assert len([url for url in ui.urls() if "/templates?" in url]) == 1  # not re-read
        assert len(ui.loads) == 1


def port_of(server: Server) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


# --- Sync now: the seed's three answers, in words --------------------------------------------


@asynccontextmanager
async def with_meta(settings: Settings) -> AsyncIterator[tuple[Simulator, Settings]]:
    """The Meta simulator, and settings that point the service at it."""
    async with simulated(Simulator(app_secret=APP_SECRET), WABA_ID) as (sim, graph_url):
        yield sim, replace(settings, graph_url=graph_url)


async def test_sync_now_200_says_synced_with_the_counts(
    browser: Browser, settings: Settings, store: Store, tenant: Tenant
) -> None:
    async with with_meta(settings) as (sim, meta_settings), running(meta_settings) as server:
        ids = await seed_meta(sim, store, tenant, 3, pending=2)
        sim.set_status(ids[-1], "APPROVED")
        async with status_page(browser, server.base_url) as ui:
            await ui.open_for(tenant)
            await expect(ui.page.locator("#last-sync")).to_have_text(
                "No sync has run in this workspace yet."
            )
            await ui.sync_now()
            await expect(ui.sync_result).to_have_text(
                "Templates synced successfully: checked 2, updated 1, unchanged 1, missing 0."
            )
            await expect(ui.chip(ui.row_of(ids[-1]))).to_have_attribute("data-status", "APPROVED")
            await expect(ui.chip(ui.row_of(ids[-2]))).to_have_attribute("data-status", "PENDING")
            await expect(ui.page.locator("#last-sync")).to_contain_text(
                re.compile(
                    r"^Last sync succeeded, started by Sync now or the API, finished .*: "
                    r"checked 2, updated 1, unchanged 1, missing 0; 1 call to the source\.$"
                )
            )


async def test_sync_now_500_says_failed_with_the_errors_kind_and_detail(
    browser: Browser, settings: Settings, store: Store, tenant: Tenant
) -> None:
    async with with_meta(settings) as (sim, meta_settings), running(meta_settings) as server:
        await seed_meta(sim, store, tenant, 3, pending=2)
        sim.fail(WABA_ID, "190", sticky=True)
        async with status_page(browser, server.base_url) as ui:
            await ui.open_for(tenant)
            await ui.sync_now()
            failure = (
                rf"WABA {WABA_ID}: Meta refused the access token \(token_invalid, code 190\): "
                r"\S.*"
            )
            await expect(ui.sync_result).to_have_text(
                re.compile(rf"^Failed to sync the templates: {failure}\.$")
            )
            last_sync = ui.page.locator("#last-sync")
            await expect(last_sync).to_contain_text("Last sync failed")
            await expect(last_sync.get_by_role("listitem")).to_have_text(re.compile(f"^{failure}$"))
            await expect(ui.alert).to_be_hidden()  # a failed sync is no session error


async def test_sync_now_404_says_there_is_nothing_to_sync(
    browser: Browser, server: Server, store: Store, tenant: Tenant
) -> None:
    await add_template(store, tenant, "7001", "APPROVED", name="order_confirmation")
    async with status_page(browser, server.base_url) as ui:
        await ui.open_for(tenant)
        await ui.sync_now()
        await expect(ui.sync_result).to_have_text("No pending templates found: nothing to sync")
        await expect(ui.page.get_by_role("button", name="Sync now")).to_be_enabled()


# --- hostile values, refusals -----------------------------------------------------------------


async def test_a_hostile_rejection_reason_and_name_render_as_text(
    browser: Browser, server: Server, store: Store, tenant: Tenant
) -> None:
    await add_template(store, tenant, "6001", name="order_confirmation")
    await add_template(store, tenant, "6002", name="order_shipped")
    await deliver(server, "REJECTED", "6001", 1_780_000_000, reason=HOSTILE)  # before: the list
    hostile_name = "<script>alert(2)</script>"
    async with status_page(browser, server.base_url) as ui:
        await ui.open_for(tenant)
        await eventually(lambda: followers(server), message="the page's stream never opened")
        await deliver(server, "REJECTED", "6002", 1_780_000_000, reason=HOSTILE)  # live: the stream
        await deliver(server, "PENDING", "6003", 1_780_000_000, message_template_name=hostile_name)
        for provider_id in ("6001", "6002"):
            reason = ui.cell(ui.row_of(provider_id), "Rejection reason")
            await expect(reason).to_have_text(HOSTILE)
        await expect(ui.row_of("6003").locator("th .name")).to_have_text(hostile_name)
        drawer = await ui.history_of(ui.row_of("6002"))
        await expect(drawer.get_by_text(HOSTILE, exact=True)).to_be_visible()
        assert await ui.page.locator("img").count() == 0
        assert await ui.page.locator("body script").count() == 0
        assert ui.dialogs == []
        assert not [url for url in ui.urls() if url.endswith("/x")]  # no image was fetched


async def test_the_policy_stops_an_inline_handler_should_markup_ever_get_in(
    browser: Browser, server: Server
) -> None:
    """The second line of defence, in the browser itself: were a value ever parsed as HTML,
    the Content-Security-Policy would still run none of its script."""
    page = status_page(browser, server.base_url)
    with pytest.raises(AssertionError, match="Content Security Policy"):
        async with page as ui:
            await ui.page.goto(f"{server.base_url}/ui/")
            await ui.page.evaluate(
                "document.body.insertAdjacentHTML('beforeend', '<img src=x onerror=alert(1)>')"
            )
            await eventually(lambda: csp_reports(ui), message=lambda: ui.console)
            assert ui.dialogs == []


async def test_a_wrong_token_is_refused_in_words_then_the_form_opens_the_page(
    browser: Browser, server: Server, store: Store, tenant: Tenant
) -> None:
    await add_template(store, tenant, "8001", name="order_confirmation")
    async with status_page(browser, server.base_url) as ui:
        await ui.open(tenant.workspace_id, "tsk_wrong-token")
        await expect(ui.alert).to_have_text(TOKEN_REFUSED)
        assert await ui.session_token() is None  # a refused token is not kept
        await expect(ui.page.get_by_label("Workspace id")).to_have_value(tenant.workspace_id)
        await expect(ui.page.get_by_label("API token")).to_be_focused()
        await ui.page.get_by_label("API token").fill(tenant.token)
        await ui.page.get_by_label("API token").press("Enter")
        await expect(ui.live).to_have_text(re.compile("^Live"))
        await expect(ui.alert).to_be_hidden()
        await expect(ui.chip(ui.row_of("8001"))).to_have_attribute("data-status", "PENDING")
        assert all("?" not in url or "/templates?" in url for url in ui.urls())  # no form GET
        await ui.page.get_by_role("button", name="Forget token").click()
        await expect(ui.page.get_by_label("Workspace id")).to_be_visible()
        assert await ui.session_token() is None
        await expect(ui.page.locator("#templates tbody tr")).to_have_count(0)


async def test_an_unknown_workspace_is_refused_in_words(
    browser: Browser, server: Server, tenant: Tenant
) -> None:
    async with status_page(browser, server.base_url) as ui:
        await ui.open("00000000-0000-4000-8000-000000000000", tenant.token)
        await expect(ui.alert).to_have_text("Workspace not found for this token")
        await expect(ui.live).to_have_text("Not connected")


async def test_the_token_is_never_in_a_url_or_a_log_line(
    browser: Browser, server: Server, store: Store, tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await add_template(store, tenant, "9001", name="order_confirmation")
    async with status_page(browser, server.base_url) as ui:
        await ui.open_for(tenant)
        await eventually(lambda: followers(server), message="the page's stream never opened")
        await deliver(server, "APPROVED", "9001", 1_780_000_000)
        await expect(ui.chip(ui.row_of("9001"))).to_have_attribute("data-status", "APPROVED")
        await ui.sync_now()
        await ui.history_of(ui.row_of("9001"))
        api_calls = [r for r in ui.requests if "/api/" in r.url]
        assert {r.url.split("/api/v3/workspaces/")[1].split("?")[0] for r in api_calls} >= {
            f"{tenant.workspace_id}/events", f"{tenant.workspace_id}/templates",
            f"{tenant.workspace_id}/templates/sync",
        }  # fmt: skip
        for request in api_calls:  # the token goes in the header, and only there
            assert (await request.all_headers())["authorization"] == f"Bearer {tenant.token}"
        for request in ui.requests:
            assert tenant.token not in request.url
            assert "referer" not in await request.all_headers()

    def access() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "service.access"]

    stream = f'"GET /api/v3/workspaces/{tenant.workspace_id}/events"'
    await eventually(lambda: any(stream in line for line in access()), message=access)  # its end
    assert any('"GET /ui/"' in line for line in access())  # the log was there to leak into
    assert tenant.token not in caplog.text and tenant.token_id not in caplog.text


# --- phone width, contrast, weight and first paint ---------------------------------------------


async def test_a_375_px_phone_never_scrolls_sideways(
    browser: Browser, server: Server, store: Store, tenant: Tenant
) -> None:
    long_name = "seasonal_promotion_" + "very_long_name_" * 12
    await add_template(store, tenant, "10001", name=long_name)
    await deliver(server, "REJECTED", "10001", 1_780_000_000, reason="TAG_CONTENT_MISMATCH" * 12)
    await add_template(store, tenant, "10002", name="order_confirmation")
    async with status_page(browser, server.base_url, PHONE) as ui:
        await ui.open_for(tenant)
        width = "document.scrollingElement.scrollWidth"
        assert await ui.page.evaluate(width) <= PHONE["width"]
        # Nor inside the table's own box: on a phone each row is a card that fits.
        inner = (
            "[...document.querySelectorAll('.table-wrap')].map(e => e.scrollWidth - e.clientWidth)"
        )
        assert await ui.page.evaluate(inner) == [0, 0]
        await ui.history_of(ui.row_of("10001"))
        assert await ui.page.evaluate(width) <= PHONE["width"]
        assert await ui.page.evaluate(inner) == [0, 0]
        await ui.page.keyboard.press("Escape")
        await ui.page.get_by_role("button", name="Forget token").click()
        await expect(ui.page.get_by_label("API token")).to_be_visible()
        assert await ui.page.evaluate(width) <= PHONE["width"]


# The contrast of each visible text against the background it is drawn on (WCAG 2 ratio).
CONTRASTS = """
() => {
  const rgb = (text) => text.match(/[\\d.]+/g).map(Number);
  const channel = (c) => {
    c /= 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  };
  const luminance = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  const background = (node) => {
    for (; node; node = node.parentElement) {
      const color = rgb(getComputedStyle(node).backgroundColor);
      if (color.length === 3 || color[3] > 0) return color.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const texts = [...document.querySelectorAll("body *")].filter((node) =>
    [...node.childNodes].some((child) => child.nodeType === 3 && child.textContent.trim())
    && node.getClientRects().length);
  return texts.map((node) => {
    const [a, b] = [luminance(rgb(getComputedStyle(node).color)), luminance(background(node))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    return [node.textContent.trim().slice(0, 40), ratio];
  });
}
"""


async def test_every_text_has_a_contrast_of_at_least_4_5(
    browser: Browser, server: Server, store: Store, tenant: Tenant
) -> None:
    statuses = ["PENDING", "IN_APPEAL", "APPROVED", "REJECTED", "PAUSED", "DISABLED",
                "LIMIT_EXCEEDED", "PENDING_DELETION", "DELETED", "ARCHIVED", "UNKNOWN"]  # fmt: skip
    for number, status in enumerate(statuses):
        await add_template(store, tenant, f"{11000 + number}", status, name=status.lower())
    await deliver(server, "FLAGGED", "11002", 1_780_000_000)
    await deliver(server, "PENDING", "11099", 1_780_000_000)  # a webhook for a new template
    async with status_page(browser, server.base_url) as ui:
        await ui.open_for(tenant)
        await expect(ui.page.locator('.chip[data-status="FLAGGED"]')).to_have_count(1)
        await ui.sync_now()  # the result box, with its own background
        measured: list[tuple[str, float]] = await ui.page.evaluate(CONTRASTS)
        assert len(measured) > 50
        assert [(text, round(ratio, 2)) for text, ratio in measured if ratio < 4.5] == []
        await ui.open(tenant.workspace_id, "tsk_wrong-token")  # the alert and the form
        await expect(ui.alert).to_have_text(TOKEN_REFUSED)
        measured = await ui.page.evaluate(CONTRASTS)
        assert [(text, round(ratio, 2)) for text, ratio in measured if ratio < 4.5] == []


async def test_page_weight_and_first_contentful_paint(
    browser: Browser, server: Server, store: Store, tenant: Tenant
) -> None:
    for number in range(20):
        await add_template(store, tenant, f"{12000 + number}", name=f"template_{number:02d}")
    async with status_page(browser, server.base_url) as ui:
        await ui.open_for(tenant)
        served = [r for r in ui.requests if r.url.split("#")[0].endswith(PAGE_FILES)]
        assert sorted(r.url.split(server.base_url)[1].split("#")[0] for r in served) == sorted(
            PAGE_FILES
        )
        weight = 0
        for request in served:
            response = await request.response()
            assert response is not None
            weight += len(await response.body())
        paint = "performance.getEntriesByName('first-contentful-paint').map(e => e.startTime)"
        [first_paint_ms] = await eventually(lambda: ui.page.evaluate(paint))
    print(f"\nstatus page: {weight} bytes (/ui/ + app.js + style.css), "
          f"first contentful paint {first_paint_ms:.0f} ms in headless Chromium")  # fmt: skip
    assert weight < 64 * 1024
    assert 0 < first_paint_ms < 5000
