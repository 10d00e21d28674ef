"""The demo's steps after A and B: templates created through the API (design section 12)
and reviewed by Meta's reviewer in the simulator, which sends its verdict as Meta's signed
status webhook. C) the webhook arrives; D) it is lost, and the poller repairs the status.

Each step waits for the verdict with the API's own long-polling GET (`wait_for`), which
answers as soon as the status changes: no sleeping, and bounded by its `timeout`.
"""

from __future__ import annotations

import json
import time
from dataclasses import fields
from typing import Any

from .config import PREFIX, Settings
from .demo_process import POLL_SETTINGS, DemoError
from .demo_receivers import Notified
from .demo_steps import STATUS_CHANGED, Demo, expect, notified, origin
from .events import API, SYNC, WEBHOOK

REVIEW_DELAY_S = 1.0  # Meta's review in the simulator; shorter than the poller's grace
WAIT_S = 20  # the GET's wait for a verdict (C's comes after ~1 s, D's after ~3 s)
FINAL = "APPROVED,REJECTED"


def draft(name: str) -> dict[str, Any]:
    """A template as a client asks the API to create it."""
    body = [{"type": "BODY", "text": "Your order has shipped."}]
    return {"name": name, "language": "en_US", "category": "UTILITY", "components": body}


async def approve_created(demo: Demo, name: str) -> None:
    """C) Created through the API; Meta's reviewer approves it and its webhook sets it."""
    demo.say(f"C) {name}: created through the API, approved by Meta, which sends the webhook")
    hook = demo.url + "/webhooks/meta"
    await _set_reviewer(demo, url=hook, drop_webhooks=False)
    demo.say(f"Meta's reviewer (simulator) decides {REVIEW_DELAY_S:g} s after a create and "
             f"sends the verdict to {hook}, signed with the app secret")  # fmt: skip
    demo.say(f"  curl -X POST {demo.templates_url} -H \"Authorization: Bearer $TOKEN\" "
             f"-d '{json.dumps(draft(name))}'")  # fmt: skip
    created = await _create(demo, name)
    await _verdict(demo, f"template {name}", created, WEBHOOK)
    await notified(
        demo,
        Notified(STATUS_CHANGED, name, None, "PENDING", API),
        Notified(STATUS_CHANGED, name, "PENDING", "APPROVED", WEBHOOK),
    )


async def repair_by_poller(demo: Demo, name: str) -> None:
    """D) Created through the API; Meta approves it but the webhook is lost, and the poller
    (`template-sync poll`, started for this step) repairs the status."""
    demo.say(f"D) {name}: created through the API, approved by Meta, but the webhook is lost")
    await _set_reviewer(demo, drop_webhooks=True)
    demo.say(f"Meta's reviewer (simulator) now drops its webhooks; template-sync poll runs "
             f"with {_poll_settings()} (log: {demo.service.poll_log})")  # fmt: skip
    async with demo.service.polling():
        created = await _create(demo, name)
        await _verdict(demo, f"template {name}", created, SYNC)
    await _check_dropped(demo, created["provider_id"])
    status, body = await demo.call("GET", demo.templates_url + "/sync")
    expect("last sync", status, body, 200, success=True)
    expect("last sync", status, body["data"] or {}, 200, trigger="poller")
    demo.say("  GET .../templates/sync: the sync that repaired it was the poller's "
             "(trigger poller)")  # fmt: skip
    await notified(
        demo,
        Notified(STATUS_CHANGED, name, None, "PENDING", API),
        Notified(STATUS_CHANGED, name, "PENDING", "APPROVED", SYNC),
    )


def _poll_settings() -> str:
    """The demo's poller settings, and the defaults they stand in for."""
    defaults = {field.name: field.default for field in fields(Settings)}
    short = {key.removeprefix(PREFIX): value for key, value in POLL_SETTINGS.items()}
    shown = " ".join(f"{name}={value}" for name, value in short.items())
    usual = " ".join(f"{defaults[name.lower()]:g}" for name in short)
    return f"{shown}, short for the demo (defaults {usual})"


async def _set_reviewer(demo: Demo, **settings: Any) -> None:
    """Where the simulator's reviewer sends its webhooks, through its control API."""
    status, body = await demo.call("POST", demo.sim_root + "/_sim/webhook", json=settings)
    expect("simulator webhook settings", status, body, 200, signed=True, **settings)


async def _create(demo: Demo, name: str) -> dict[str, Any]:
    """POST the template to the API; the created template, PENDING at Meta."""
    status, body = await demo.call("POST", demo.templates_url, json=draft(name))
    expect(f"create {name}", status, body, 201, success=True)
    template: dict[str, Any] = body["data"]
    expect(f"create {name}", status, template, 201, status="PENDING")
    demo.say(f"  created {name}: PENDING, Meta id {template['provider_id']} (201)")
    return template


async def _verdict(demo: Demo, step: str, template: dict[str, Any], source: str) -> None:
    """Wait for the template's verdict with the GET that returns when it changes; DemoError
    unless it came as APPROVED from `source`."""
    query = {"wait_for": FINAL, "timeout": str(WAIT_S)}
    started = time.monotonic()
    status, body = await demo.call("GET", f"{demo.templates_url}/{template['id']}", params=query)
    took_s = time.monotonic() - started
    expect(step, status, body, 200, success=True)
    got = body["data"]
    demo.say(f"  GET .../templates/{got['id']}?wait_for={FINAL}&timeout={WAIT_S} -> "
             f"{got['status']} after {took_s:.1f} s ({origin(got)})")  # fmt: skip
    expect(step, status, got, 200, status="APPROVED", status_source=source)


async def _check_dropped(demo: Demo, provider_id: str) -> None:
    """DemoError unless the simulator's webhook log shows the verdict's webhook dropped."""
    status, body = await demo.call("GET", demo.sim_root + "/_sim/webhook")
    expect("simulator webhook log", status, body, 200)
    sent = [d for d in body["deliveries"] if d["template_id"] == provider_id]
    if [(d["event"], d["dropped"]) for d in sent] != [("APPROVED", True)]:
        raise DemoError(f"simulator webhook log: expected one dropped APPROVED, got {sent}")
    demo.say("  simulator webhook log: its APPROVED webhook was dropped, never sent")
