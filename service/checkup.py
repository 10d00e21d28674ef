"""What `template-sync doctor` runs: configuration, store, every channel with Meta, every
upstream (design section 14), then the relays' failed deliveries.

The doctor changes nothing it does not have to: it never migrates, never generates an
encryption key and never creates a SQLite file. What a check means (FAIL: broken now;
WARN: works, but risky) and each channel's checks are in service.doctor.
"""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

import aiohttp

from .config import PREFIX, ConfigError, Secret, Settings
from .crypto import KEY_FILE, DecryptionError, TokenCipher, meta_token
from .doctor import REPLACE_ACCESS, Check, channel_checks, graph_client
from .doctor_upstream import upstream_checks, webhooks_only_check
from .graph import GraphClient
from .storage import Channel, RelaySummary, Store, StoreUnavailable, Upstream, open_store
from .storage.schema import MIGRATIONS
from .times import now_ms

LATEST_SCHEMA = max(version for version, _ in MIGRATIONS)
MIGRATE = "template-sync migrate"
# Appended to .env, which the service and the CLI read in their working directory; the
# leading newline keeps a last line without one intact.
KEY_INTO_ENV = f"printf '\\n{PREFIX}ENCRYPTION_KEYS=%s\\n' \"$({{source}})\" >> .env"
ADD_CHANNEL = (
    'add one, with its system-user token in META_TOKEN (README: "Set up a workspace"):\n'
    "template-sync channel add --workspace WS --waba-id WABA_ID --access-token-env META_TOKEN "
    "--subscribe"
)


# --- configuration --------------------------------------------------------------------


def config_checks(settings: Settings) -> list[Check]:
    """Secrets present and the encryption key usable."""
    return [_app_secret(settings), _verify_token(settings), encryption_check(settings)[0]]


def _app_secret(settings: Settings) -> Check:
    name, secrets = "config: app secret", len(settings.meta_app_secrets)
    if secrets:
        return Check(name, "PASS", f"{secrets} secret(s) in {PREFIX}META_APP_SECRET")
    fix = f"set {PREFIX}META_APP_SECRET to the App Secret (App Dashboard > App settings > Basic)"
    return Check(name, "FAIL", "not set: every webhook is refused with 503", fix)


def _verify_token(settings: Settings) -> Check:
    name = "config: verify token"
    if settings.meta_verify_token is not None:
        return Check(name, "PASS", "set")
    detail = (
        "not set: Meta's handshake is refused, so the callback URL cannot be registered "
        "(deliveries to a URL registered already still arrive)"
    )
    fix = (
        f"set {PREFIX}META_VERIFY_TOKEN to a random string and type the same into the "
        "App Dashboard's webhook form"
    )
    return Check(name, "WARN", detail, fix)


def encryption_check(settings: Settings) -> tuple[Check, TokenCipher | None]:
    """The configured keys work; without them, the generated key file (read, never made)."""
    name = "config: encryption keys"
    if settings.encryption_keys:
        try:
            configured = TokenCipher(settings.encryption_keys)
        except ConfigError as error:
            fix = f"run `template-sync keys generate` and set {PREFIX}ENCRYPTION_KEYS to its output"
            return Check(name, "FAIL", str(error), fix), None
        count = len(settings.encryption_keys)
        return Check(name, "PASS", f"{count} key(s), the first encrypts"), configured
    path = settings.data_dir / KEY_FILE
    unset = f"{PREFIX}ENCRYPTION_KEYS is not set"
    if not path.exists():
        detail = f"{unset}: serve generates a key into {path}; set one instead"
        fix = KEY_INTO_ENV.format(source="template-sync keys generate")
        return Check(name, "WARN", detail, fix), None
    cipher = _key_file_cipher(path)
    if cipher is None:
        detail = f"{unset} and {path} holds no usable key: serve cannot start"
        fix = f"restore {path} from its copy (the key the stored Meta tokens were encrypted with)"
        return Check(name, "FAIL", detail, fix), None
    detail = (
        f"{unset}; the service uses the key it generated in {path}: keep a copy of it "
        "elsewhere (without it the stored Meta tokens cannot be read) and put that same key "
        "in the variable"
    )
    fix = KEY_INTO_ENV.format(source=f"cat {shlex.quote(str(path))}")
    return Check(name, "WARN", detail, fix), cipher


def _key_file_cipher(path: Path) -> TokenCipher | None:
    try:
        return TokenCipher((Secret(path.read_text().strip()),))
    except (OSError, UnicodeDecodeError, ConfigError):
        return None


# --- store ----------------------------------------------------------------------------


async def open_checked_store(settings: Settings) -> tuple[list[Check], Store | None]:
    """Reachable and migrated; the store is returned open only when both pass."""
    name, url = "store: reachable", settings.database_url
    path = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
    if path is not None and not await asyncio.to_thread(path.exists):
        detail = f"no SQLite database at {path} (migrate creates it, and so does serve)"
        return [Check(name, "FAIL", detail, MIGRATE)], None
    try:
        store = await open_store(url)
    except StoreUnavailable as error:
        fix = error.fix or f"start the database or fix {PREFIX}DATABASE_URL"
        return [Check(name, "FAIL", str(error), fix)], None
    checks = [Check(name, "PASS", url.split("://", 1)[0]), await migration_check(store)]
    if not checks[-1].ok:
        await store.close()
        return checks, None
    return checks, store


async def migration_check(store: Store) -> Check:
    """Migrated to this version's schema, and writable (a committed heartbeat, as /readyz)."""
    name = "store: migrated"
    try:
        version = await store.schema_version()
        if version < LATEST_SCHEMA:
            detail = f"schema at migration {version} of {LATEST_SCHEMA}"
            return Check(name, "FAIL", detail, MIGRATE)
        await store.ping(now_ms())
    except StoreUnavailable as error:
        return Check(name, "FAIL", f"store failed while checking: {error}", error.fix or MIGRATE)
    return Check(name, "PASS", f"schema at migration {version}; a test write committed")


# --- all together ---------------------------------------------------------------------


async def run_doctor(settings: Settings) -> list[Check]:
    """Every check: configuration, store, each stored channel against Graph, each upstream
    with one call, relays."""
    checks = config_checks(settings)
    store_checks, store = await open_checked_store(settings)
    checks += store_checks
    if store is None:
        return checks
    try:
        cipher, upstreams = encryption_check(settings)[1], await store.all_upstreams()
        checks += await _all_channels(settings, store, cipher, upstreams)
        checks += await upstream_checks(upstreams, cipher)
        checks += relay_checks(await store.list_relays())
    finally:
        await store.close()
    return checks


async def _all_channels(
    settings: Settings, store: Store, cipher: TokenCipher | None, upstreams: list[Upstream]
) -> list[Check]:
    """Webhooks-only channels first (no Graph call), then each channel with a Meta token."""
    channels = await store.all_channels()
    if not channels:
        return [Check("channels", "WARN", "none yet: no WABA is synced or routed", ADD_CHANNEL)]
    synced = {upstream.workspace_id for upstream in upstreams}
    keyed = [item for item in channels if item.access_token_enc is not None]
    checks = [
        webhooks_only_check(item, item.workspace_id in synced)
        for item in channels
        if item.access_token_enc is None
    ]
    if keyed and cipher is None:
        detail = f"{len(keyed)} channel(s) not checked: no key can read their Meta tokens"
        fix = (
            "restore the key they were encrypted with (see the encryption keys check), or "
            "store each token again with `template-sync channel set-token`"
        )
        return [*checks, Check("channels", "FAIL", detail, fix)]
    if cipher is None or not keyed:
        return checks
    async with aiohttp.ClientSession() as session:
        graph = graph_client(session, settings)
        results = [await _one_channel(graph, cipher, store, item) for item in keyed]
    return checks + [check for found in results for check in found]


async def _one_channel(
    graph: GraphClient, cipher: TokenCipher, store: Store, channel: Channel
) -> list[Check]:
    try:
        token = meta_token(cipher, channel.access_token_enc, channel.waba_id)
    except DecryptionError:
        detail = "stored token was encrypted under a key that is not configured"
        fix = (
            f"add that key back to {PREFIX}ENCRYPTION_KEYS (after the current one), or store "
            "the token again, with it in META_TOKEN:\n"
            + REPLACE_ACCESS.format(waba=channel.waba_id)
        )
        return [Check(f"WABA {channel.waba_id}: access token", "FAIL", detail, fix)]
    return await channel_checks(graph, channel.waba_id, token, store)


# --- relays ---------------------------------------------------------------------------


def relay_checks(relays: list[RelaySummary]) -> list[Check]:
    """A warning per relay with failed deliveries (its app did not take them until
    OUTBOX_MAX_AGE_S passed); one pass when there are relays and none failed."""
    failing = [_failing_relay(summary) for summary in relays if summary.failed]
    if relays and not failing:
        return [Check("relays", "PASS", f"none failing ({len(relays)} relay(s))")]
    return failing


def _failing_relay(summary: RelaySummary) -> Check:
    count = f"{summary.failed} deliver{'y' if summary.failed == 1 else 'ies'} failed"
    error = f" (last error: {summary.last_error})" if summary.last_error else ""
    fix = (
        "fix the app at its URL (template-sync relay list shows it), then:\n"
        f"template-sync relay retry {summary.relay.id}"
    )
    return Check(f"relay {summary.relay.id}", "WARN", count + error, fix)
