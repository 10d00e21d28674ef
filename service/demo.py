"""Offline demo: signed test webhooks, the Graph simulator, and the whole loop on one machine.

Plain coroutines for the CLI to wire to commands; progress goes through `say`, never a secret.
The service runs as a child process (demo_process.py); the application it relays to and
notifies is stood in for by loopback receivers (demo_receivers.py); the steps are in
demo_steps.py (set-up, A and B) and demo_reviews.py (C and D).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from pathlib import Path
from typing import Any

import aiohttp

from .demo_process import DemoError, ServiceProcess, prepare, service_env
from .demo_receivers import Apps, receiving
from .demo_reviews import REVIEW_DELAY_S, approve_created, repair_by_poller
from .demo_steps import (
    DEMO_WABA_ID,
    Demo,
    Say,
    approve_by_webhook,
    connect_apps,
    create_tenant,
    handshake,
    repair_by_sync,
)  # fmt: skip
from .demo_webhooks import HTTP_TIMEOUT, post_delivery, send_webhook
from .simulator import Simulator, base_url, make_templates, serve

# DemoError is the CLI's to catch; it lives with the service process, which raises it too.
__all__ = ["DemoError", "post_delivery", "run_demo", "run_simulator", "send_webhook"]

DEMO_TEMPLATES = 300


async def run_simulator(
    host: str, port: int, *, waba_id: str | None, token: str | None, templates: int,
    pending: int, app_secret: str | None, say: Say, **options: Any,
) -> None:  # fmt: skip
    """Serve the Graph simulator, optionally seeded with one WABA, until cancelled."""
    sim = Simulator(app_secret=app_secret, **options)  # options: its reviewer's settings
    if waba_id is not None:
        sim.add_waba(waba_id, token)
        seeded = make_templates(waba_id, templates, pending=min(pending, templates))
        sim.add_templates(waba_id, seeded)
        waiting = [t["id"] for t in seeded if t["status"] == "PENDING"]
        say(f"seeded WABA {waba_id}: {templates} templates, {len(waiting)} PENDING")
        if waiting:
            say(f"pending template ids: {' '.join(waiting[:10])}{' ...' * (len(waiting) > 10)}")
    runner = await serve(sim, host, port)
    try:
        _explain_simulator(base_url(runner), app_secret is not None, say)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        say("simulator stopped")


def _explain_simulator(graph_url: str, checks_proof: bool, say: Say) -> None:
    root = graph_url.rsplit("/", 1)[0]
    say(f"Graph API simulator on {root}")
    say(f"use it with: export TEMPLATE_SYNC_GRAPH_URL={graph_url}")
    if checks_proof:
        say("Graph calls need appsecret_proof: use the same TEMPLATE_SYNC_META_APP_SECRET")
    say("control API (unauthenticated: keep it on loopback):")
    say(f'  curl -X POST {root}/_sim/templates/ID/status -d \'{{"status": "APPROVED"}}\'')
    say(f"  curl {root}/_sim/wabas/WABA_ID/templates    curl {root}/_sim/calls")
    say(f'  curl -X POST {root}/_sim/faults -d \'{{"kind": "80008", "target": "WABA_ID"}}\'')
    say("press Ctrl-C to stop")


async def run_demo(workdir: Path, say: Say) -> None:
    """The whole loop offline: simulator, service, CLI set-up, a relay and a subscribed app,
    webhook, lost webhook and sync, then templates created through the API and reviewed by
    the simulator: its webhook, then a lost one and the poller."""
    started = time.monotonic()
    workdir = await asyncio.to_thread(prepare, workdir)
    secret, meta_token = secrets.token_hex(16), "EAAG" + secrets.token_urlsafe(24)
    sim = Simulator(app_secret=secret, review_delay_s=REVIEW_DELAY_S)
    sim.add_waba(DEMO_WABA_ID, meta_token, name="Demo WABA")
    seeded = make_templates(DEMO_WABA_ID, DEMO_TEMPLATES, pending=2)
    sim.add_templates(DEMO_WABA_ID, seeded)
    async with contextlib.AsyncExitStack() as stack:
        runner = await serve(sim, "127.0.0.1", 0)
        stack.push_async_callback(runner.cleanup)
        graph_url = base_url(runner)
        say(f"Graph simulator on {graph_url}: WABA {DEMO_WABA_ID}, {len(seeded)} templates")
        apps = Apps(
            await stack.enter_async_context(receiving("your webhook handler", "/webhook")),
            await stack.enter_async_context(receiving("the subscribed app", "/template-events")),
        )
        service = ServiceProcess(workdir, service_env(workdir, secret, graph_url, meta_token))
        http = await stack.enter_async_context(aiohttp.ClientSession(timeout=HTTP_TIMEOUT))
        url = await stack.enter_async_context(service.serving(http))
        say(f"service running on {url} (log: {service.log})")
        demo = Demo(say, http, graph_url.rsplit("/", 1)[0], url, secret, service, apps)
        local_ids = await create_tenant(demo, seeded[-2:])
        await handshake(demo)
        await connect_apps(demo)
        await approve_by_webhook(demo, seeded[-2], local_ids[0])
        await repair_by_sync(demo, seeded[-1], local_ids[1])
        await approve_created(demo, "demo_order_shipped")
        await repair_by_poller(demo, "demo_order_delayed")
    say(f"demo complete in {time.monotonic() - started:.0f} s: webhooks were applied at once "
        "and relayed, a lost one was repaired by sync and another by the poller, templates "
        "created through the API reached APPROVED, and the subscribed app was notified of "
        "each change")  # fmt: skip
