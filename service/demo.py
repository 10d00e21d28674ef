"""Offline demo: signed test webhooks, the Graph simulator, and the whole loop on one machine.

Plain coroutines for the CLI to wire to commands; progress goes through `say`, never a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from .crypto import generate_key
from .meta_webhooks import signed_headers, status_delivery
from .simulator import Simulator, base_url, make_templates, serve

Say = Callable[[str], None]
DEMO_WABA_ID = "102290129340398"
DEMO_TEMPLATES = 300
VERIFY_TOKEN = "demo-verify"  # noqa: S105 (the demo's published handshake token)
TOKEN_ENV = "DEMO_META_ACCESS_TOKEN"  # noqa: S105 (a variable name)
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
CLI_TIMEOUT_S = 30.0
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=30)
# How the demo says where a template's status came from (its `status_source`).
SOURCES = {"webhook": "from the webhook", "sync": "from the sync", "api": "as registered"}


class DemoError(Exception):
    """A demo step got an answer other than the one it expects (the message says both)."""


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
    headers = signed_headers(app_secret, body)
    async with contextlib.AsyncExitStack() as stack:
        if session is None:
            session = await stack.enter_async_context(aiohttp.ClientSession(timeout=HTTP_TIMEOUT))
        async with session.post(url, data=body, headers=headers, ssl=tls or True) as response:
            return response.status, await response.text()


async def run_simulator(
    host: str, port: int, *, waba_id: str | None, token: str | None, templates: int,
    pending: int, app_secret: str | None, say: Say,
) -> None:  # fmt: skip
    """Serve the Graph simulator, optionally seeded with one WABA, until cancelled."""
    sim = Simulator(app_secret=app_secret)
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
    """What the steps share: the HTTP client, both servers and the tenant being built."""

    say: Say
    http: aiohttp.ClientSession
    sim_root: str
    url: str
    secret: str
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _service_env(workdir: Path, secret: str, graph_url: str, meta_token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPLATE_SYNC_")}
    source_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source_root, env.get("PYTHONPATH")]))
    env.update(
        TEMPLATE_SYNC_DATABASE_URL=f"sqlite:///{workdir}/demo.db",
        TEMPLATE_SYNC_META_APP_SECRET=secret,
        TEMPLATE_SYNC_META_VERIFY_TOKEN=VERIFY_TOKEN,
        TEMPLATE_SYNC_GRAPH_URL=graph_url,
        TEMPLATE_SYNC_ENCRYPTION_KEYS=generate_key(),
        TEMPLATE_SYNC_POLL_ENABLED="false",
        TEMPLATE_SYNC_LOG_FORMAT="json",
    )
    env[TOKEN_ENV] = meta_token
    return env


def _prepare(workdir: Path) -> Path:
    """The working directory, created and absolute (the service runs inside it); each run
    starts from an empty database."""
    workdir.mkdir(parents=True, exist_ok=True)
    for leftover in workdir.glob("demo.db*"):
        leftover.unlink()
    return workdir.resolve()


def _tail(path: Path, lines: int = 20) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


async def _cli(workdir: Path, env: dict[str, str], *args: str) -> str:
    """Run `python -m service ARGS` as a user would; its stdout, stripped."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", *args, cwd=workdir, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise DemoError(f"template-sync {args[0]} took over {CLI_TIMEOUT_S:.0f} s") from None
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip()[-800:]
        raise DemoError(f"template-sync {' '.join(args[:2])} failed ({proc.returncode}): {tail}")
    return out.decode().strip()


async def _start_service(
    workdir: Path, env: dict[str, str], port: int, log: Path
) -> asyncio.subprocess.Process:
    with log.open("ab") as handle:  # the child keeps its own copy of the descriptor
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", "serve", "--port", str(port), cwd=workdir, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=handle,
        )  # fmt: skip


async def _wait_healthy(demo: _Demo, proc: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise DemoError(f"service exited with {proc.returncode}; log tail:\n{_tail(log)}")
        try:
            if (await demo.call("GET", demo.url + "/healthz"))[0] == 200:
                return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise DemoError(f"service not healthy after {START_TIMEOUT_S:.0f} s; log tail:\n{_tail(log)}")


async def _stop_service(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
    await proc.wait()


async def _create_tenant(
    demo: _Demo, workdir: Path, env: dict[str, str], pair: list[dict[str, Any]]
) -> list[str]:
    """Workspace, channel, token and the two templates, made with the CLI; local ids."""
    demo.workspace = await _cli(workdir, env, "workspace", "create", "Demo")
    demo.say(f"created workspace {demo.workspace}")
    ws = ("--workspace", demo.workspace)
    await _cli(workdir, env, "channel", "add", *ws, "--waba-id", DEMO_WABA_ID,
               "--access-token-env", TOKEN_ENV, "--subscribe")  # fmt: skip
    demo.say(f"added WABA {DEMO_WABA_ID}: token checked with Meta, app subscribed to its "
             "webhooks, token encrypted at rest")  # fmt: skip
    demo.bearer = await _cli(workdir, env, "token", "create", *ws, "--name", "demo")
    demo.say("created an API bearer token (shown once; kept in memory by the demo)")
    local_ids = []
    for t in pair:
        local_ids.append(await _cli(
            workdir, env, "template", "add", *ws, "--waba-id", DEMO_WABA_ID,
            "--provider-id", t["id"], "--name", t["name"], "--language", t["language"],
            "--category", t["category"],
        ))  # fmt: skip
        demo.say(f"registered template {t['name']} (Meta id {t['id']}) as PENDING")
    return local_ids


async def _handshake(demo: _Demo) -> None:
    query = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "demo-42"}
    status, body = await demo.call("GET", demo.url + "/webhooks/meta", params=query)
    if (status, body) != (200, "demo-42"):
        raise DemoError(f"handshake: expected 200 'demo-42', got {status}: {str(body)[:200]}")
    demo.say("Meta's subscription handshake: the service echoed the challenge")


async def _set_at_meta(demo: _Demo, template: dict[str, Any], status: str, **extra: str) -> None:
    url = f"{demo.sim_root}/_sim/templates/{template['id']}/status"
    code, body = await demo.call("POST", url, json={"status": status, **extra})
    _expect("simulator set status", code, body, 200, status=status)
    demo.say(f"Meta's reviewer set {template['name']} to {status} (in the simulator)")


async def _approve_by_webhook(demo: _Demo, template: dict[str, Any], local_id: str) -> None:
    demo.say(f"A) {template['name']}: approved at Meta, and Meta delivers the webhook")
    await _set_at_meta(demo, template, "APPROVED")
    status, text = await send_webhook(
        demo.url + "/webhooks/meta", demo.secret, waba_id=DEMO_WABA_ID, template_id=template["id"],
        event="APPROVED", name=template["name"], language=template["language"], reason="NONE",
        session=demo.http,
    )  # fmt: skip
    if status != 200:
        raise DemoError(f"signed webhook: expected 200, got {status}: {text[:300]}")
    demo.say("  signed APPROVED webhook delivered: 200, stored before acknowledged")
    await demo.template("template A after webhook", local_id, status="APPROVED",
                        status_source="webhook")  # fmt: skip


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
    status, body = await demo.call("POST", sync_url)
    _expect("second sync", status, body, 404, success=False, message="No pending templates found")
    demo.say("  a second sync answers 404 'No pending templates found': nothing left to repair")
    used = await demo.sim_calls() - calls_before
    demo.say(f"the sync made {used} Graph API call{'s' * (used != 1)} (simulator call log)")


async def run_demo(workdir: Path, say: Say) -> None:
    """The whole loop offline: simulator, service, CLI set-up, webhook, lost webhook, sync."""
    workdir = await asyncio.to_thread(_prepare, workdir)
    secret, meta_token = secrets.token_hex(16), "EAAG" + secrets.token_urlsafe(24)
    sim = Simulator(app_secret=secret)
    sim.add_waba(DEMO_WABA_ID, meta_token, name="Demo WABA")
    seeded = make_templates(DEMO_WABA_ID, DEMO_TEMPLATES, pending=2)
    sim.add_templates(DEMO_WABA_ID, seeded)
    runner = await serve(sim, "127.0.0.1", 0)
    proc: asyncio.subprocess.Process | None = None
    try:
        graph_url = base_url(runner)
        say(f"Graph simulator on {graph_url}: WABA {DEMO_WABA_ID}, {len(seeded)} templates")
        env = _service_env(workdir, secret, graph_url, meta_token)
        port, log = _free_port(), workdir / "service.log"
        proc = await _start_service(workdir, env, port, log)
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
            demo = _Demo(say, http, graph_url.rsplit("/", 1)[0], f"http://127.0.0.1:{port}", secret)
            await _wait_healthy(demo, proc, log)
            say(f"service running on {demo.url} (log: {log})")
            local_ids = await _create_tenant(demo, workdir, env, seeded[-2:])
            await _handshake(demo)
            await _approve_by_webhook(demo, seeded[-2], local_ids[0])
            await _repair_by_sync(demo, seeded[-1], local_ids[1])
        say("demo complete: the webhook was applied at once, the lost one was repaired by sync")
    finally:
        if proc is not None:
            await _stop_service(proc)
        await runner.cleanup()
