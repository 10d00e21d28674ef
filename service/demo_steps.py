"""The demo's shared state and its first steps: the tenant set up with the CLI, Meta's
handshake, the application's receivers connected, then A) a webhook applied at once and
B) a lost webhook repaired by the sync endpoint. demo_reviews.py has the steps after them;
demo.py runs them all."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from .demo_process import TOKEN_ENV, VERIFY_TOKEN, DemoError, ServiceProcess
from .demo_receivers import Apps, Notified, check_notification, check_relayed
from .demo_webhooks import post_delivery
from .events import API, EVENT_TYPES, STATUS, SYNC, WEBHOOK
from .meta_webhooks import status_delivery

Say = Callable[[str], None]
DEMO_WABA_ID = "102290129340398"
STATUS_CHANGED = EVENT_TYPES[STATUS]
# How the demo says where a template's status came from (its `status_source`).
SOURCES = {WEBHOOK: "from the webhook", SYNC: "from the sync", API: "as registered"}


@dataclass
class Demo:
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

    @property
    def templates_url(self) -> str:
        return f"{self.url}/api/v3/workspaces/{self.workspace}/templates"

    async def call(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        if self.bearer and url.startswith(self.url + "/api/"):
            kwargs["headers"] = {"Authorization": f"Bearer {self.bearer}"}
        async with self.http.request(method, url, **kwargs) as response:
            text = await response.text()
            is_json = response.content_type == "application/json"
            return response.status, json.loads(text) if is_json else text

    async def template(self, step: str, local_id: str, **want: Any) -> None:
        """GET the template from the API, say what it shows, check the `want` fields."""
        status, body = await self.call("GET", f"{self.templates_url}/{local_id}")
        expect(step, status, body, 200, success=True)
        data = body["data"]
        self.say(f"  API: template {data['name']} is {data['status']} ({origin(data)})")
        expect(step, status, data, 200, **want)

    async def sim_calls(self) -> int:
        status, body = await self.call("GET", self.sim_root + "/_sim/calls")
        expect("simulator call log", status, body, 200)
        return len(body["calls"])


def origin(template: dict[str, Any]) -> str:
    """Where the template's status came from, and its rejection reason when it has one."""
    source = template["status_source"]
    shown = f"status {SOURCES.get(source, f'from {source}')}"
    reason = template["rejected_reason"]
    return f"{shown}, reason {reason}" if reason else shown


def expect(step: str, status: int, body: Any, want: int, /, **fields: Any) -> None:
    """Raise DemoError unless the answer has status `want` and these top-level fields."""
    got = {k: body.get(k) for k in fields} if isinstance(body, dict) else body
    if status != want or got != fields:
        raise DemoError(f"{step}: expected {want} with {fields}, got {status}: {str(body)[:500]}")


async def create_tenant(demo: Demo, pair: list[dict[str, Any]]) -> list[str]:
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


async def handshake(demo: Demo) -> None:
    query = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "demo-42"}
    status, body = await demo.call("GET", demo.url + "/webhooks/meta", params=query)
    if (status, body) != (200, "demo-42"):
        raise DemoError(f"handshake: expected 200 'demo-42', got {status}: {str(body)[:200]}")
    demo.say("Meta's subscription handshake: the service echoed the challenge")


async def connect_apps(demo: Demo) -> None:
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


async def _set_at_meta(demo: Demo, template: dict[str, Any], status: str, **extra: str) -> None:
    url = f"{demo.sim_root}/_sim/templates/{template['id']}/status"
    code, body = await demo.call("POST", url, json={"status": status, **extra})
    expect("simulator set status", code, body, 200, status=status)
    demo.say(f"Meta's reviewer set {template['name']} to {status} (in the simulator)")


async def approve_by_webhook(demo: Demo, template: dict[str, Any], local_id: str) -> None:
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
    await notified(demo, Notified(STATUS_CHANGED, template["name"], "PENDING", "APPROVED", WEBHOOK))


async def repair_by_sync(demo: Demo, template: dict[str, Any], local_id: str) -> None:
    demo.say(f"B) {template['name']}: rejected at Meta, but the webhook is lost")
    await _set_at_meta(demo, template, "REJECTED", rejected_reason="INVALID_FORMAT")
    await demo.template("template B before sync", local_id, status="PENDING")
    sync_url = demo.templates_url + "/sync"
    calls_before = await demo.sim_calls()
    status, body = await demo.call("POST", sync_url)
    expect("sync", status, body, 200, success=True, message="Templates synced successfully")
    result = body.get("data") or {}
    demo.say(f"  POST .../templates/sync -> 200 {json.dumps(result)}")
    if result.get("updated") != 1:
        raise DemoError(f"sync: expected 1 updated template, got {json.dumps(result)}")
    await demo.template("template B after sync", local_id, status="REJECTED", status_source="sync")
    await notified(demo, Notified(STATUS_CHANGED, template["name"], "PENDING", "REJECTED", SYNC))
    status, body = await demo.call("POST", sync_url)
    expect("second sync", status, body, 404, success=False, message="No pending templates found")
    demo.say("  a second sync answers 404 'No pending templates found': nothing left to repair")
    used = await demo.sim_calls() - calls_before
    demo.say(f"the sync made {used} Graph API call{'s' * (used != 1)} (simulator call log)")


async def notified(demo: Demo, *wants: Notified) -> None:
    """Take the subscribed app's next notifications, check each tells what its `want` says,
    and say so in one line (they are of one type and template)."""
    changes = []
    for want in wants:
        got = check_notification(await demo.apps.subscriber.next(), demo.apps.secret, time.time())
        if got != want:
            raise DemoError(f"notification: expected {want}, got {got}")
        changes.append(f"{got.before or 'new'} -> {got.after} ({SOURCES[got.source]})")
    several = len(wants) > 1
    demo.say(f"  notification{'s' * several}: the app got {wants[0].type}, {wants[0].name} "
             f"{', then '.join(changes)}; {'each' if several else 'its'} webhook-signature "
             "verifies with the subscription's secret")  # fmt: skip
