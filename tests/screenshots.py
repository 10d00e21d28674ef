"""Screenshots of the status page for the README: `python -m tests.screenshots [OUT_DIR]`.

Serves the app on loopback over a throwaway SQLite store, with the Meta simulator as Graph,
seeds a workspace the way a small team's looks (templates in most statuses, a rejection
reason, quality scores, webhooks, a pending template Meta has decided on meanwhile), opens
/ui/ in headless Chromium (Debian's, as tests/test_ui_browser.py does), presses Sync now,
and writes status-page-desktop.png (1280 px wide) and status-page-phone.png (375 px) to
OUT_DIR (default docs/).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, async_playwright, expect

from service import meta_webhooks
from service.config import Secret, Settings
from service.crypto import generate_key
from service.graph import GraphTemplate
from service.simulator import Simulator
from service.storage import Store, open_store
from service.times import now_ms

from .conftest import APP_SECRET, VERIFY_TOKEN, WABA_ID, Server, Tenant, make_tenant, serving
from .conftest import simulated as simulated_meta

ROOT = Path(__file__).resolve().parents[1]
MINUTE_MS = 60_000
# (Meta id, name, language, category, status, quality, rejection reason)
TEMPLATES = [
    ("1689556908129801", "order_confirmation", "en_US", "UTILITY", "APPROVED", "GREEN", None),
    ("1689556908129802", "shipping_update", "en_US", "UTILITY", "APPROVED", "YELLOW", None),
    ("1689556908129803", "password_reset", "en_US", "AUTHENTICATION", "APPROVED", "GREEN", None),
    ("1689556908129804", "appointment_reminder", "pt_BR", "UTILITY", "PENDING", None, None),
    ("1689556908129805", "spring_sale_2027", "es", "MARKETING", "PENDING", None, None),
    ("1689556908129806", "winter_promo", "en_US", "MARKETING", "REJECTED", None, "PROMOTIONAL"),
    ("1689556908129807", "loyalty_points", "en_US", "MARKETING", "PAUSED", "RED", None),
    ("1689556908129808", "feedback_request", "en_US", "MARKETING", "IN_APPEAL", None, None),
]


def graph_template(row: tuple[str, str, str, str, str, str | None, str | None]) -> dict[str, Any]:
    provider_id, name, language, category, status, quality, reason = row
    return {
        "id": provider_id, "name": name, "language": language, "category": category,
        "status": status, "quality_score": quality or "UNKNOWN",
        "rejected_reason": reason or "NONE",
    }  # fmt: skip


async def seed(store: Store, settings: Settings, sim: Simulator) -> Tenant:
    """The workspace: imported 40 minutes ago; Meta has since approved appointment_reminder
    (Sync now will find it)."""
    tenant = await make_tenant(store, settings)
    templates = [graph_template(row) for row in TEMPLATES]
    sim.add_templates(WABA_ID, templates)
    remote = [GraphTemplate.from_graph(t) for t in templates]
    imported_at = now_ms() - 40 * MINUTE_MS
    await store.apply_remote(tenant.workspace_id, WABA_ID, remote, imported_at, create=True)
    sim.set_status("1689556908129804", "APPROVED", quality_score="UNKNOWN")
    return tenant


async def webhooks(server: Server) -> None:
    """Meta's webhooks of the last minutes: a pending template's, and a quality change."""
    now_s = now_ms() // 1000
    changes = [
        meta_webhooks.status_change("PENDING", "1689556908129805", "spring_sale_2027", "es"),
        meta_webhooks.quality_change("1689556908129802", "shipping_update", "en_US", "YELLOW"),
        meta_webhooks.status_change("IN_APPEAL", "1689556908129808", "feedback_request", "en_US"),
    ]
    body = meta_webhooks.encode(
        meta_webhooks.delivery(meta_webhooks.entry(WABA_ID, now_s, *changes))
    )
    status, answer, _ = await server.deliver(body)
    assert status == 200, answer


async def shoot(browser: Browser, url: str, path: Path, width: int, height: int) -> None:
    """The whole page on a desktop, after Sync now; a phone's first screen (at twice the
    pixels, as phones draw it) with the first template cards."""
    phone = width < 600
    context = await browser.new_context(
        viewport={"width": width, "height": height}, device_scale_factor=2 if phone else 1
    )
    page = await context.new_page()
    await page.goto(url)
    await expect(page.locator("#live")).to_have_text("Live: statuses update as webhooks land")
    await expect(page.locator("#shown")).to_have_text(
        f"Showing {len(TEMPLATES)} of {len(TEMPLATES)} templates."
    )
    if phone:
        top = "document.getElementById('templates-heading').getBoundingClientRect().top"
        await page.evaluate(f"window.scrollTo(0, {top} - 12)")
    else:
        await page.get_by_role("button", name="Sync now").click()
        await expect(page.locator("#sync-result")).to_have_text(
            "Templates synced successfully: checked 3, updated 1, unchanged 2, missing 0."
        )
    await page.screenshot(path=str(path), full_page=not phone)
    await context.close()


async def main(out: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("no chromium executable (Debian: apt-get install chromium)")
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        async with simulated_meta(Simulator(app_secret=APP_SECRET), WABA_ID) as (sim, graph_url):
            settings = Settings(
                database_url=f"sqlite:///{tmp}/template-sync.db",
                meta_app_secrets=(Secret(APP_SECRET),),
                meta_verify_token=Secret(VERIFY_TOKEN),
                encryption_keys=(Secret(generate_key()),),
                data_dir=Path(tmp) / "data",
                graph_url=graph_url,
                poll_enabled=False,
            )
            store = await open_store(settings.database_url)
            await store.migrate()
            try:
                tenant = await seed(store, settings, sim)
            finally:
                await store.close()
            async with serving(settings) as server, async_playwright() as playwright:
                await webhooks(server)
                url = f"{server.base_url}/ui/#workspace={tenant.workspace_id}&token={tenant.token}"
                browser = await playwright.chromium.launch(executable_path=chromium, headless=True)
                try:
                    await shoot(browser, url, out / "status-page-desktop.png", 1280, 800)
                    await shoot(browser, url, out / "status-page-phone.png", 375, 812)
                finally:
                    await browser.close()
    print(f"wrote {out / 'status-page-desktop.png'} and {out / 'status-page-phone.png'}")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs"))
