"""`template-sync doctor`: checks of configuration, store and each channel, with their fixes.

Every check is a plain async function returning `Check` results; `render` prints them.
The doctor changes nothing it does not have to: it never migrates, never generates an
encryption key, never creates a SQLite file, and does not call Graph for a WABA Meta is
throttling (calling on would extend the block). When Meta throttles one of its own calls,
the block is stored, as a sync would, so the service leaves that WABA alone too.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from .config import PREFIX, ConfigError, Secret, Settings
from .crypto import KEY_FILE, DecryptionError, TokenCipher
from .graph import GraphClient
from .graph_errors import GraphError
from .storage import Channel, Store, StoreUnavailable, Throttle, open_store
from .storage.schema import MIGRATIONS
from .times import iso, now_ms

GRAPH_TIMEOUT_S = 10.0
LATEST_SCHEMA = max(version for version, _ in MIGRATIONS)
ADD_CHANNEL = "template-sync channel add --workspace WS --waba-id {waba} --access-token-env VAR"
STORE_NEW_ACCESS = (
    "store it: template-sync channel set-token --waba-id {waba} --access-token-env VAR"
)


@dataclass(frozen=True)
class Check:
    """One verdict: `fix` says what to do when `ok` is false."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def failed(checks: list[Check]) -> bool:
    return any(not check.ok for check in checks)


def render(checks: list[Check]) -> str:
    """A pass/fail list, each failure followed by its fix, and a summary line."""
    width = max((len(check.name) for check in checks), default=0)
    lines = []
    for check in checks:
        lines.append(f"{'PASS' if check.ok else 'FAIL'}  {check.name.ljust(width)}  {check.detail}")
        if not check.ok and check.fix:
            lines.append(f"      fix: {check.fix}")
    bad = sum(not check.ok for check in checks)
    lines.append(f"{len(checks) - bad} passed, {bad} failed")
    return "\n".join(lines)


def graph_client(session: aiohttp.ClientSession, settings: Settings) -> GraphClient:
    """The client the checks use: one retry, a short backoff, Graph's usual timeout."""
    return GraphClient(
        session, settings.graph_url, settings.current_app_secret,
        max_attempts=2, backoff_s=0.2, timeout_s=GRAPH_TIMEOUT_S,
    )  # fmt: skip


# --- configuration --------------------------------------------------------------------


def config_checks(settings: Settings) -> list[Check]:
    """Secrets present and the encryption key usable."""
    secrets = len(settings.meta_app_secrets)
    return [
        Check(
            "config: app secret",
            secrets > 0,
            f"{secrets} secret(s) in {PREFIX}META_APP_SECRET"
            if secrets
            else "not set: every webhook is refused with 503",
            f"set {PREFIX}META_APP_SECRET to the App Secret (App Dashboard > App settings > Basic)",
        ),
        Check(
            "config: verify token",
            settings.meta_verify_token is not None,
            "set" if settings.meta_verify_token else "not set: Meta's handshake is refused",
            f"set {PREFIX}META_VERIFY_TOKEN to a random string and type the same into the "
            "App Dashboard's webhook form",
        ),
        encryption_check(settings)[0],
    ]


def encryption_check(settings: Settings) -> tuple[Check, TokenCipher | None]:
    """The configured keys work; without them, the generated key file (read, never made)."""
    name, fix = "config: encryption keys", f"run `template-sync keys generate` and set {PREFIX}"
    fix += "ENCRYPTION_KEYS to its output"
    if settings.encryption_keys:
        try:
            configured = TokenCipher(settings.encryption_keys)
        except ConfigError as error:
            return Check(name, False, str(error), fix), None
        count = len(settings.encryption_keys)
        return Check(name, True, f"{count} key(s), the first encrypts"), configured
    path = settings.data_dir / KEY_FILE
    cipher = _key_file_cipher(path)
    if cipher is None:
        detail = f"{PREFIX}ENCRYPTION_KEYS is not set and {path} holds no usable key"
        return Check(name, False, detail, fix), None
    detail = f"{PREFIX}ENCRYPTION_KEYS is not set; the service uses the key generated in {path}"
    fix = f"set {PREFIX}ENCRYPTION_KEYS to the content of {path} and keep a copy elsewhere"
    return Check(name, False, detail, fix), cipher


def _key_file_cipher(path: Path) -> TokenCipher | None:
    try:
        return TokenCipher((Secret(path.read_text().strip()),))
    except (OSError, UnicodeDecodeError, ConfigError):
        return None


# --- store ----------------------------------------------------------------------------


async def open_checked_store(settings: Settings) -> tuple[list[Check], Store | None]:
    """Reachable and migrated; the store is returned open only when both pass."""
    url = settings.database_url
    path = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
    if path is not None and not await asyncio.to_thread(path.is_file):
        fix = f"run `template-sync migrate` (or fix {PREFIX}DATABASE_URL)"
        return [Check("store: reachable", False, f"no SQLite database at {path}", fix)], None
    try:
        store = await open_store(url)
    except (StoreUnavailable, ValueError) as error:
        fix = f"start the database or fix {PREFIX}DATABASE_URL, then run doctor again"
        return [Check("store: reachable", False, str(error), fix)], None
    checks = [Check("store: reachable", True, url.split("://", 1)[0]), await migration_check(store)]
    if not checks[-1].ok:
        await store.close()
        return checks, None
    return checks, store


async def migration_check(store: Store) -> Check:
    """Migrated to this version's schema, and writable (a committed heartbeat, as /readyz)."""
    name, fix = "store: migrated", "run `template-sync migrate` (serve also migrates on start)"
    try:
        version = await store.schema_version()
        if version < LATEST_SCHEMA:
            return Check(name, False, f"schema at migration {version} of {LATEST_SCHEMA}", fix)
        await store.ping(now_ms())
    except StoreUnavailable as error:
        return Check(name, False, f"store failed while checking: {error}", fix)
    return Check(name, True, f"schema at migration {version}; a test write committed")


# --- channels -------------------------------------------------------------------------


async def channel_checks(
    graph: GraphClient, waba_id: str, token: str, store: Store, *, at_ms: int | None = None
) -> list[Check]:
    """Token valid (`GET /{waba_id}`), app subscribed (`GET /{waba_id}/subscribed_apps`),
    and throttling (stored block, or Meta's usage headers)."""
    label, now = f"WABA {waba_id}", now_ms() if at_ms is None else at_ms
    throttle = (await store.throttles([waba_id])).get(waba_id)
    if throttle is not None and throttle.blocked_until > now:
        return [_blocked(label, throttle)]
    try:
        waba = await graph.get(waba_id, token, {"fields": "id,name"})
    except GraphError as error:
        return [await _graph_failure(f"{label}: access token", waba_id, error, store, now)]
    token_check = Check(f"{label}: access token", True, f"valid for {waba.get('name')!r}")
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
        return Check(name, False, f"Meta answered {answer!r}", _SUBSCRIBE_FIX.format(waba=waba_id))
    return Check(name, True, "app subscribed to the WABA's webhooks")


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


_SUBSCRIBE_FIX = (
    "subscribe the app: `template-sync channel add ... --subscribe` does it, or POST "
    "/{waba}/subscribed_apps on the Graph API with the channel's token"
)


def _subscribed(label: str, waba_id: str, answer: dict[str, Any]) -> Check:
    apps = answer.get("data")
    names = [
        str((app.get("whatsapp_business_api_data") or {}).get("name") or "?")
        for app in apps or []
        if isinstance(app, dict)
    ]
    if not names:
        detail = "no app is subscribed: Meta sends this WABA's webhooks nowhere"
        return Check(f"{label}: subscribed", False, detail, _SUBSCRIBE_FIX.format(waba=waba_id))
    return Check(f"{label}: subscribed", True, "apps: " + ", ".join(names))


def _usage(label: str, graph: GraphClient) -> Check:
    usage = graph.last_usage
    detail = "not throttled"
    if usage is not None:
        detail += f"; {usage.call_count_pct:g}% of the hourly call budget used"
    return Check(f"{label}: throttling", True, detail)


def _blocked(label: str, throttle: Throttle) -> Check:
    until = iso(throttle.blocked_until)
    detail = f"Meta throttled this WABA (code {throttle.code}) until {until}; not called now"
    fix = (
        f"wait until {until}: calling on extends Meta's block; if it recurs, raise "
        f"{PREFIX}POLL_INTERVAL_S or look for another app calling this WABA"
    )
    return Check(f"{label}: throttling", False, detail, fix)


async def _graph_failure(
    name: str, waba_id: str, error: GraphError, store: Store, now: int
) -> Check:
    if error.kind == "throttled":
        until = now + int((error.regain_access_s or 60.0) * 1000)
        throttle = Throttle(waba_id, until, error.code)
        await store.set_throttle(throttle)  # as a sync would: nothing calls it until then
        return _blocked(f"WABA {waba_id}", throttle)
    return _from_graph_error(name, waba_id, error)


def _from_graph_error(name: str, waba_id: str, error: GraphError) -> Check:
    """The failure of a Graph call, with the fix its error code calls for."""
    code = f" (Graph code {error.code})" if error.code is not None else ""
    detail = f"{error.kind}{code}: {error.message}"
    if error.kind == "network":
        return Check(
            "Graph API: reachable", False, f"WABA {waba_id}: {error.message}",
            f"check {PREFIX}GRAPH_URL and that this host can reach it over HTTPS",
        )  # fmt: skip
    return Check(name, False, detail, _graph_fix(waba_id, error))


def _graph_fix(waba_id: str, error: GraphError) -> str:
    if error.kind == "token_invalid":
        return (
            "issue a new system-user token with whatsapp_business_management (Business "
            "Settings > System users) and " + STORE_NEW_ACCESS.format(waba=waba_id)
        )
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


# --- all together ---------------------------------------------------------------------


async def run_doctor(settings: Settings) -> list[Check]:
    """Every check: configuration, store, then each stored channel against Graph."""
    checks = config_checks(settings)
    store_checks, store = await open_checked_store(settings)
    checks += store_checks
    if store is None:
        return checks
    try:
        checks += await _all_channels(settings, store, encryption_check(settings)[1])
    finally:
        await store.close()
    return checks


async def _all_channels(
    settings: Settings, store: Store, cipher: TokenCipher | None
) -> list[Check]:
    channels = await store.all_channels()
    if not channels:
        fix = "add one: " + ADD_CHANNEL.format(waba="ID")
        return [Check("channels", False, "none: no WABA is synced or routed", fix)]
    if cipher is None:
        detail = f"{len(channels)} channel(s) not checked: no usable encryption key"
        return [Check("channels", False, detail, "fix the encryption keys first")]
    async with aiohttp.ClientSession() as session:
        graph = graph_client(session, settings)
        results = [await _one_channel(graph, cipher, store, item) for item in channels]
    return [check for found in results for check in found]


async def _one_channel(
    graph: GraphClient, cipher: TokenCipher, store: Store, channel: Channel
) -> list[Check]:
    try:
        token = cipher.decrypt(channel.access_token_enc)
    except DecryptionError:
        detail = "stored token was encrypted under a key that is not configured"
        fix = f"add that key back to {PREFIX}ENCRYPTION_KEYS (after the current one)"
        return [Check(f"WABA {channel.waba_id}: access token", False, detail, fix)]
    return await channel_checks(graph, channel.waba_id, token, store)
