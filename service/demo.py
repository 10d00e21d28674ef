"""Offline demo: signed test webhooks, the Graph simulator, and the whole loop on one machine.

Plain coroutines for the CLI to wire to commands; progress goes through `say`, never a secret.
The service runs as a child process (demo_process.py); the application it relays to and
notifies is stood in for by loopback receivers (demo_receivers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from .demo_process import TOKEN_ENV, VERIFY_TOKEN, DemoError, ServiceProcess, prepare, service_env
from .demo_receivers import Apps, Notified, check_notification, check_relayed, receiving
from .events import API, EVENT_TYPES, STATUS, SYNC, WEBHOOK
from .meta_webhooks import signed_headers, status_delivery
from .simulator import Simulator, base_url, make_templates, serve

# DemoError is the CLI's to catch; it lives with the service process, which raises it too.
__all__ = ["DemoError", "post_delivery", "run_demo", "run_simulator", "send_webhook"]

Say = Callable[[str], None]
DEMO_WABA_ID = "102290129340398"
DEMO_TEMPLATES = 300
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=30)
STATUS_CHANGED = EVENT_TYPES[STATUS]
# How the demo says where a template's status came from (its `status_source`).
SOURCES = {WEBHOOK: "from the webhook", SYNC: "from the sync", API: "as registered"}


async def send_webhook(
    url: str, app_secret: str, *, waba_id: str, template_id: str, event: str, name: str,
    language: str, entry_time: int | None = None, reason: str | None = None,
    session: aiohttp.ClientSession | None = None, tls: ssl.SSLContext | None = None,
) -> tuple[int, str]:  # fmt: skip
    """POST a signed status delivery to `url`; returns the status and the response text.

    An https URL's certificate is checked against `tls`'s CAs, or the system's.
    """
    body = status_delivery(
        waba_id=waba_id, template_id=template_id, event=event, name=name,
        language=language, entry_time=entry_time, reason=reason,
    )  # fmt: skip
    return await post_delivery(url, app_secret, body, session=session, tls=tls)


async def post_delivery(
    url: str, app_secret: str, body: bytes, *, session: aiohttp.ClientSession | None = None,
    tls: ssl.SSLContext | None = None,
) -> tuple[int, str]:  # fmt: skip
    """POST `body` signed as Meta signs it; the status and the response text."""
    async with contextlib.AsyncExitStack() as stack:
        if session is None:
            session = await stack.enter_async_context(aiohttp.ClientSession(timeout=HTTP_TIMEOUT))
        headers = signed_headers(app_secret, body)
        async with session.post(url, data=body, headers=headers, ssl=tls or True) as response:
            return response.status, await response.text()


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


@dataclass
class _Demo:
    """What the steps share: the HTTP client, the servers and the tenant being built."""

    say: Say
    http: aiohttp.ClientSession
    sim_root: str
    url: str
    secret: str
    service: ServiceProcess
    apps: Apps
    workspace: str = ""
    bearer: str = ""

    async def call(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        if self.bearer and url.startswith(self.url + "/api/"):
            kwargs["headers"] = {"Authorization": f"Bearer {self.bearer}"}
        async with self.http.request(method, url, **kwargs) as response:
            text = await response.text()
            is_json = response.content_type == "application/json"
            return response.status, json.loads(text) if is_json else text

    async def template(self, step: str, local_id: str, **want: Any) -> None:
        """GET the template from the API, say what it shows, check the `want` fields."""
        path = f"/api/v3/workspaces/{self.workspace}/templates/{local_id}"
        status, body = await self.call("GET", self.url + path)
        _expect(step, status, body, 200, success=True)
        data = body["data"]
        self.say(f"  API: template {data['name']} is {data['status']} ({_origin(data)})")
        _expect(step, status, data, 200, **want)

    async def sim_calls(self) -> int:
        status, body = await self.call("GET", self.sim_root + "/_sim/calls")
        _expect("simulator call log", status, body, 200)
        return len(body["calls"])


def _origin(template: dict[str, Any]) -> str:
    """Where the template's status came from, and its rejection reason when it has one."""
    source = template["status_source"]
    shown = f"status {SOURCES.get(source, f'from {source}')}"
    reason = template["rejected_reason"]
    return f"{shown}, reason {reason}" if reason else shown


def _expect(step: str, status: int, body: Any, want: int, /, **fields: Any) -> None:
    """Raise DemoError unless the answer has status `want` and these top-level fields."""
    got = {k: body.get(k) for k in fields} if isinstance(body, dict) else body
    if status != want or got != fields:
        raise DemoError(f"{step}: expected {want} with {fields}, got {status}: {str(body)[:500]}")


async def _create_tenant(demo: _Demo, pair: list[dict[str, Any]]) -> list[str]:
    """Workspace, channel, token and the two templates, made with the CLI; local ids."""
    cli = demo.service.cli
    demo.workspace = await cli("workspace", "create", "Demo")
    demo.say(f"created workspace {demo.workspace}")
    ws = ("--workspace", demo.workspace)
    await cli("channel", "add", *ws, "--waba-id", DEMO_WABA_ID, "--access-token-env", TOKEN_ENV,
              "--subscribe")  # fmt: skip
    demo.say(f"added WABA {DEMO_WABA_ID}: token checked with Meta, app subscribed to its "
             "webhooks, token encrypted at rest")  # fmt: skip
    demo.bearer = await cli("token", "create", *ws, "--name", "demo")
    demo.say("created an API bearer token (shown once; kept in memory by the demo)")
    local_ids = []
    for t in pair:
        local_ids.append(await cli(
            "template", "add", *ws, "--waba-id", DEMO_WABA_ID, "--provider-id", t["id"],
            "--name", t["name"], "--language", t["language"], "--category", t["category"],
        ))  # fmt: skip
        demo.say(f"registered template {t['name']} (Meta id {t['id']}) as PENDING")
    return local_ids


async def _handshake(demo: _Demo) -> None:
    query = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "demo-42"}
    status, body = await demo.call("GET", demo.url + "/webhooks/meta", params=query)
    if (status, body) != (200, "demo-42"):
        raise DemoError(f"handshake: expected 200 'demo-42', got {status}: {str(body)[:200]}")
    demo.say("Meta's subscription handshake: the service echoed the challenge")


async def _connect_apps(demo: _Demo) -> None:
    """Relay Meta's deliveries to the app's handler; subscribe the other app to changes."""
    apps = demo.apps
    await demo.service.cli("relay", "add", apps.handler.url, "--name", "existing handler")
    demo.say(f"relay added: Meta's deliveries go on, unchanged, to {apps.handler.url}, "
             "standing for your existing webhook handler")  # fmt: skip
    apps.secret = await demo.service.cli(
        "webhook", "add", "--workspace", demo.workspace, apps.subscriber.url,
        "--events", STATUS_CHANGED,
    )  # fmt: skip
    demo.say(f"webhook added: {apps.subscriber.url}, standing for an app, subscribes to "
             f"{STATUS_CHANGED} (its secret, shown once, kept in memory by the demo)")  # fmt: skip


async def _set_at_meta(demo: _Demo, template: dict[str, Any], status: str, **extra: str) -> None:
    url = f"{demo.sim_root}/_sim/templates/{template['id']}/status"
    code, body = await demo.call("POST", url, json={"status": status, **extra})
    _expect("simulator set status", code, body, 200, status=status)
    demo.say(f"Meta's reviewer set {template['name']} to {status} (in the simulator)")


async def _approve_by_webhook(demo: _Demo, template: dict[str, Any], local_id: str) -> None:
    demo.say(f"A) {template['name']}: approved at Meta, and Meta delivers the webhook")
    await _set_at_meta(demo, template, "APPROVED")
    body = status_delivery(
        waba_id=DEMO_WABA_ID, template_id=template["id"], event="APPROVED",
        name=template["name"], language=template["language"], reason="NONE",
    )  # fmt: skip
    status, text = await post_delivery(demo.url + "/webhooks/meta", demo.secret, body,
                                       session=demo.http)  # fmt: skip
    if status != 200:
        raise DemoError(f"signed webhook: expected 200, got {status}: {text[:300]}")
    demo.say("  signed APPROVED webhook delivered: 200, stored before acknowledged")
    await demo.template("template A after webhook", local_id, status="APPROVED",
                        status_source="webhook")  # fmt: skip
    delivery = check_relayed(await demo.apps.handler.next(), body, demo.secret)
    demo.say(f"  relay: your handler got Meta's exact {len(body)} bytes (delivery {delivery}), "
             "and their X-Hub-Signature-256 verifies with the app secret")  # fmt: skip
    await _notified(
        demo, Notified(STATUS_CHANGED, template["name"], "PENDING", "APPROVED", WEBHOOK)
    )


async def _repair_by_sync(demo: _Demo, template: dict[str, Any], local_id: str) -> None:
    demo.say(f"B) {template['name']}: rejected at Meta, but the webhook is lost")
    await _set_at_meta(demo, template, "REJECTED", rejected_reason="INVALID_FORMAT")
    await demo.template("template B before sync", local_id, status="PENDING")
    sync_url = f"{demo.url}/api/v3/workspaces/{demo.workspace}/templates/sync"
    calls_before = await demo.sim_calls()
    status, body = await demo.call("POST", sync_url)
    _expect("sync", status, body, 200, success=True, message="Templates synced successfully")
    result = body.get("data") or {}
    demo.say(f"  POST .../templates/sync -> 200 {json.dumps(result)}")
    if result.get("updated") != 1:
        raise DemoError(f"sync: expected 1 updated template, got {json.dumps(result)}")
    await demo.template("template B after sync", local_id, status="REJECTED", status_source="sync")
    await _notified(demo, Notified(STATUS_CHANGED, template["name"], "PENDING", "REJECTED", SYNC))
    status, body = await demo.call("POST", sync_url)
    _expect("second sync", status, body, 404, success=False, message="No pending templates found")
    demo.say("  a second sync answers 404 'No pending templates found': nothing left to repair")
    used = await demo.sim_calls() - calls_before
    demo.say(f"the sync made {used} Graph API call{'s' * (used != 1)} (simulator call log)")


async def _notified(demo: _Demo, want: Notified) -> None:
    """Take the subscribed app's next notification, check it tells what `want` says, and say
    so."""
    got = check_notification(await demo.apps.subscriber.next(), demo.apps.secret, time.time())
    if got != want:
        raise DemoError(f"notification: expected {want}, got {got}")
    change = f"{got.name} {got.before} -> {got.after} ({SOURCES[got.source]})"
    demo.say(f"  notification: the app got {got.type}, {change}; its webhook-signature "
             "verifies with the subscription's secret")  # fmt: skip


async def run_demo(workdir: Path, say: Say) -> None:
    """The whole loop offline: simulator, service, CLI set-up, a relay and a subscribed app,
    webhook, lost webhook, sync."""
    workdir = await asyncio.to_thread(prepare, workdir)
    secret, meta_token = secrets.token_hex(16), "EAAG" + secrets.token_urlsafe(24)
    sim = Simulator(app_secret=secret)
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
        demo = _Demo(say, http, graph_url.rsplit("/", 1)[0], url, secret, service, apps)
        local_ids = await _create_tenant(demo, seeded[-2:])
        await _handshake(demo)
        await _connect_apps(demo)
        await _approve_by_webhook(demo, seeded[-2], local_ids[0])
        await _repair_by_sync(demo, seeded[-1], local_ids[1])
    say("demo complete: the webhook was applied at once and relayed, the lost one was repaired "
        "by sync, and the subscribed app was notified of both")  # fmt: skip
