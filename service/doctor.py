"""Checks with their fixes: the verdicts `template-sync doctor` prints (`Check`, `render`),
and the checks of one channel with Meta, which `channel add` and `channel subscribe` run too.
The doctor's own checks (configuration, store) and its whole run are in service.checkup.

A check FAILs when something is broken now, and WARNs when it works but is risky. A fix is
either prose or, where a command does it, that command alone on its line, as it can be
pasted. Nothing here calls Graph for a WABA Meta is throttling (calling on would extend the
block); when Meta throttles one of these calls, the block is stored, as a sync would store
it, so the service leaves that WABA alone too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from . import throttle
from .config import PREFIX, Settings
from .graph import GraphClient
from .graph_errors import GraphError, ThrottledError
from .storage import Store, Throttle
from .times import iso, now_ms

GRAPH_TIMEOUT_S = 10.0
REPLACE_ACCESS = "template-sync channel set-token --waba-id {waba} --access-token-env META_TOKEN"
NEW_ACCESS_FIX = (
    "issue a new system-user token with whatsapp_business_management (Business Settings > "
    "System users), put it in META_TOKEN and store it:\n" + REPLACE_ACCESS
)
SUBSCRIBE_FIX = "template-sync channel subscribe --waba-id {waba}"
FIX_PREFIX = "      fix: "
FIX_INDENT = " " * len(FIX_PREFIX)  # a fix's further lines, aligned under its first

Verdict = Literal["PASS", "WARN", "FAIL"]


@dataclass(frozen=True)
class Check:
    """One verdict: FAIL is broken now, WARN works but is risky; `fix` says what to do."""

    name: str
    verdict: Verdict
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict == "PASS"


def failed(checks: list[Check]) -> bool:
    return any(check.verdict == "FAIL" for check in checks)


def warned(checks: list[Check]) -> bool:
    return any(check.verdict == "WARN" for check in checks)


def render(checks: list[Check]) -> str:
    """A line per check, the fix under each one that did not pass, and a summary line."""
    width = max((len(check.name) for check in checks), default=0)
    lines = []
    for check in checks:
        lines.append(f"{check.verdict}  {check.name.ljust(width)}  {check.detail}")
        if not check.ok and check.fix:
            first, *more = check.fix.splitlines()
            lines += [FIX_PREFIX + first, *(FIX_INDENT + line for line in more)]
    count = Counter(check.verdict for check in checks)
    warnings = f"{count['WARN']} warning{'' if count['WARN'] == 1 else 's'}"
    lines.append(f"{count['PASS']} passed, {warnings}, {count['FAIL']} failed")
    return "\n".join(lines)


def graph_client(session: aiohttp.ClientSession, settings: Settings) -> GraphClient:
    """The client the checks use: one retry, a short backoff, Graph's usual timeout."""
    return GraphClient(
        session, settings.graph_url, settings.current_app_secret,
        max_attempts=2, backoff_s=0.2, timeout_s=GRAPH_TIMEOUT_S,
    )  # fmt: skip


# --- channels -------------------------------------------------------------------------


async def channel_checks(
    graph: GraphClient, waba_id: str, token: str, store: Store, *, at_ms: int | None = None
) -> list[Check]:
    """Token valid (`GET /{waba_id}`), app subscribed (`GET /{waba_id}/subscribed_apps`),
    and throttling (stored block, or Meta's usage headers)."""
    label, now = f"WABA {waba_id}", now_ms() if at_ms is None else at_ms
    if block := await throttle.blocked(store, waba_id, now):
        return [_blocked(label, block)]
    try:
        waba = await graph.get(waba_id, token, {"fields": "id,name"})
    except GraphError as error:
        return [await _graph_failure(f"{label}: access token", waba_id, error, store, now)]
    token_check = Check(f"{label}: access token", "PASS", f"valid for {waba.get('name')!r}")
    try:
        apps = await graph.get(f"{waba_id}/subscribed_apps", token)
    except GraphError as error:
        failure = await _graph_failure(f"{label}: subscribed", waba_id, error, store, now)
        return [token_check, failure]
    return [token_check, _subscribed(label, waba_id, apps), _usage(label, graph)]


async def subscribe(graph: GraphClient, waba_id: str, token: str) -> Check:
    """Subscribe the token's app to the WABA's webhooks (`POST /{waba_id}/subscribed_apps`)."""
    name = f"WABA {waba_id}: subscribe"
    try:
        answer = await graph.post(f"{waba_id}/subscribed_apps", token)
    except GraphError as error:
        return _from_graph_error(f"WABA {waba_id}: subscribe", waba_id, error)
    if answer.get("success") is not True:
        fix = (
            f"check that the token's system user has WABA {waba_id} (Business Settings > "
            "System users > Assign assets), then:\n" + SUBSCRIBE_FIX.format(waba=waba_id)
        )
        return Check(name, "FAIL", f"Meta answered {answer!r}", fix)
    return Check(name, "PASS", "app subscribed to the WABA's webhooks")


async def check_channel(
    settings: Settings, store: Store, waba_id: str, token: str, *, do_subscribe: bool = False
) -> list[Check]:
    """What `channel add` runs: the channel checks, subscribing first when asked."""
    async with aiohttp.ClientSession() as session:
        graph = graph_client(session, settings)
        checks = await channel_checks(graph, waba_id, token, store)
        if not do_subscribe or not _only_unsubscribed(checks):
            return checks
        done = await subscribe(graph, waba_id, token)
        if not done.ok:
            return [*checks, done]
        return [done, *await channel_checks(graph, waba_id, token, store)]


def _only_unsubscribed(checks: list[Check]) -> bool:
    return [c.name.rsplit(": ", 1)[-1] for c in checks if not c.ok] == ["subscribed"]


def _subscribed(label: str, waba_id: str, answer: dict[str, Any]) -> Check:
    apps = answer.get("data")
    names = [
        str((app.get("whatsapp_business_api_data") or {}).get("name") or "?")
        for app in apps or []
        if isinstance(app, dict)
    ]
    if not names:
        detail = "no app is subscribed: Meta sends this WABA's webhooks nowhere"
        return Check(f"{label}: subscribed", "FAIL", detail, SUBSCRIBE_FIX.format(waba=waba_id))
    return Check(f"{label}: subscribed", "PASS", "apps: " + ", ".join(names))


def _usage(label: str, graph: GraphClient) -> Check:
    usage = graph.last_usage
    detail = "not throttled"
    if usage is not None:
        detail += f"; {usage.call_count_pct:g}% of the hourly call budget used"
    return Check(f"{label}: throttling", "PASS", detail)


def _blocked(label: str, block: Throttle) -> Check:
    """A warning: syncs of this WABA wait until Meta's block ends; webhooks still arrive."""
    until = iso(block.blocked_until)
    detail = f"Meta throttled this WABA (code {block.code}) until {until}; not called now"
    fix = (
        f"wait until {until}: calling on extends Meta's block; if it recurs, raise "
        f"{PREFIX}POLL_INTERVAL_S or look for another app calling this WABA"
    )
    return Check(f"{label}: throttling", "WARN", detail, fix)


async def _graph_failure(
    name: str, waba_id: str, error: GraphError, store: Store, now: int
) -> Check:
    if isinstance(error, ThrottledError):  # stored as a sync stores it: nothing calls it now
        return _blocked(f"WABA {waba_id}", await throttle.record(store, waba_id, error, now))
    return _from_graph_error(name, waba_id, error)


def _from_graph_error(name: str, waba_id: str, error: GraphError) -> Check:
    """The failure of a Graph call, with the fix its error code calls for."""
    code = f" (Graph code {error.code})" if error.code is not None else ""
    detail = f"{error.kind}{code}: {error.message}"
    if error.kind == "network":
        return Check(
            "Graph API: reachable", "FAIL", f"WABA {waba_id}: {error.message}",
            f"check {PREFIX}GRAPH_URL and that this host can reach it over HTTPS",
        )  # fmt: skip
    return Check(name, "FAIL", detail, _graph_fix(waba_id, error))


def _graph_fix(waba_id: str, error: GraphError) -> str:
    if error.kind == "token_invalid":
        return NEW_ACCESS_FIX.format(waba=waba_id)
    if error.kind == "permission":
        return (
            f"give the token's system user access to WABA {waba_id} with "
            "whatsapp_business_management (Business Settings > System users > Assign assets)"
        )
    if "appsecret_proof" in error.message:
        return f"{PREFIX}META_APP_SECRET must be the secret of the app that issued the token"
    if (error.code, error.subcode) == (100, 33):
        return f"check the WABA id {waba_id} in WhatsApp Manager; the token cannot see it"
    if error.kind == "transient":
        return "Meta had a transient error: run doctor again in a few minutes"
    return f"check {PREFIX}GRAPH_URL (the Graph API base URL with its version)"
