"""No secret, token or raw webhook body in a log line, a response, CLI output or a repr.

One realistic session on each backend: signed and unsigned webhooks, the handshake, the API
with good and bad tokens, a sync whose Graph URL is unreachable, then the CLI (its logs at
DEBUG) against a Graph stand-in that echoes the token and URL it was sent back in its
error message, as Meta's errors sometimes do. Everything said on the way is scanned.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner

from service import meta_webhooks
from service.cli import main
from service.config import Secret, Settings
from service.crypto import TokenCipher, generate_key, new_bearer_token
from service.logs import JsonFormatter
from service.simulator import serving_app
from service.storage import NewTemplate, Store

from .conftest import NOW_MS, WABA_ID, compact, sign, start_server

APP_SECRETS = ("app-secret-current-1f7c3e9a5b", "app-secret-retiring-8d2b5c4e6f")
VERIFY_TOKEN = "verify-token-6a9e2f1d0c"
META_TOKEN = "EAAG-meta-access-token-3c8f1b7e2a9d"
DB_PASSWORD = "db-password-5e1a9c7b3f"
BODY_MARKER = "raw-body-marker-4d7a0e"
OTHER_WABA = "555000111"


def appsecret_proof(secret: str, token: str) -> str:
    return hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()


@dataclass
class Leaks:
    """The secrets to look for and everything the session said."""

    secrets: dict[str, str]
    said: list[tuple[str, str]] = field(default_factory=list)  # (where, text)

    def add(self, name: str, value: str | bytes) -> None:
        self.secrets[name] = value.decode() if isinstance(value, bytes) else value

    def found(self, exempt: dict[str, set[str]] | None = None) -> list[tuple[str, str]]:
        exempt = exempt or {}
        return [
            (name, where)
            for where, text in self.said
            for name, value in self.secrets.items()
            if value in text and name not in exempt.get(where, set())
        ]


def webhook_bodies(provider_id: str) -> dict[str, bytes]:
    """Deliveries of every kind; each carries the marker where the service does not read."""
    marker = {"field": "messages", "value": {"text": BODY_MARKER}}
    change = meta_webhooks.status_change("APPROVED", provider_id, "order_confirmation", "en_US")
    good = meta_webhooks.delivery(
        meta_webhooks.entry(WABA_ID, NOW_MS // 1000, change),
        meta_webhooks.entry(WABA_ID, NOW_MS // 1000, marker),
    )
    bad_change = json.loads(json.dumps(change))
    bad_change["value"].update(message_template_id="777", message_template_name="a\u0000b")
    with_bad = json.loads(json.dumps(good))
    with_bad["entry"][0]["changes"].append(bad_change)
    return {
        "good": compact(good),
        "with a bad change": compact(with_bad),
        "not JSON": b'{"entry": [' + BODY_MARKER.encode() + b"}",
    }


async def echo_graph(request: web.Request) -> web.Response:
    """A Graph error that repeats the bearer header and the URL it was sent."""
    message = (
        f"Error validating access token: {request.headers.get('Authorization')} is invalid "
        f"(request {request.path_qs})"
    )
    error = {"message": message, "type": "OAuthException", "code": 190, "fbtrace_id": "AbC123"}
    return web.json_response({"error": error}, status=401)


@pytest.fixture
async def echo_graph_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo_graph)
    async with serving_app(app) as origin:
        yield f"{origin}/v25.0"


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """The CLI configures the root logger; put back what pytest had."""
    names = ("", "uvicorn", "uvicorn.error")
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level,
                 logging.getLogger(n).propagate) for n in names}  # fmt: skip
    try:
        yield
    finally:
        for name, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate


async def run_http_session(base: str, leaks: Leaks, token: str, workspace_id: str) -> None:
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def call(method: str, path: str, expected: int, **kwargs: Any) -> str:
            async with http.request(method, base + path, **kwargs) as response:
                text = await response.text(errors="replace")
                leaks.said.append((f"response {method} {path[:40]}", f"{response.headers}\n{text}"))
                assert response.status == expected, (method, path, text)
                return text

        for name, body in webhook_bodies("1689556908129833").items():
            leaks.add(f"raw body: {name}", body)
            for secret in APP_SECRETS:
                await call("POST", "/webhooks/meta", 200, data=body,
                           headers={"X-Hub-Signature-256": sign(body, secret)})  # fmt: skip
            await call("POST", "/webhooks/meta", 401, data=body,
                       headers={"X-Hub-Signature-256": sign(body, "not-the-secret")})  # fmt: skip
            await call("POST", "/webhooks/meta", 401, data=body)
        hub = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "c1"}
        await call("GET", "/webhooks/meta", 200, params=hub)
        await call("GET", "/webhooks/meta", 403, params={**hub, "hub.verify_token": "x"})
        api = f"/api/v3/workspaces/{workspace_id}/templates"
        token_id, _, secret = token.partition(".")
        for bearer, expected in [(token, 200), (f"{token_id}.{secret[::-1]}", 401),
                                 (secret, 401), (token + "x", 401)]:  # fmt: skip
            await call("GET", api, expected, headers={"Authorization": f"Bearer {bearer}"})
        auth = {"Authorization": f"Bearer {token}"}
        listing = json.loads(await call("GET", api, 200, headers=auth))
        for template in listing["data"]:
            await call("GET", f"{api}/{template['id']}", 200, headers=auth)
            await call("GET", f"{api}/{template['id']}/history", 200, headers=auth)
        failed = json.loads(await call("POST", f"{api}/sync", 500, headers=auth))
        assert failed["error"]["kind"] == "network"  # the Graph URL is unreachable
        await call("GET", f"{api}/sync", 200, headers=auth)
        await call("GET", "/metrics", 200)


async def run_cli(leaks: Leaks, env: dict[str, str], *args: str) -> str:
    """One CLI command in a thread (it runs its own event loop); returns its stdout.

    The command points the root logger at its own stderr; pytest's handlers are put back
    afterwards so the server's records keep reaching caplog.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        result = await asyncio.to_thread(CliRunner().invoke, main, list(args), env=env)
    finally:
        root.handlers[:], root.level = handlers, level
    where = "cli " + " ".join(args[:2])
    leaks.said.append((where + " stdout", result.stdout))
    leaks.said.append((where + " stderr", result.stderr))
    print(
        f"$ template-sync {' '.join(args)}  -> {result.exit_code}\n{result.stdout}{result.stderr}"
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


async def run_cli_session(leaks: Leaks, env: dict[str, str], base: str, workspace: str) -> None:
    new_workspace = (await run_cli(leaks, env, "workspace", "create", "Beta")).strip()
    await run_cli(leaks, env, "channel", "add", "--workspace", new_workspace,
                  "--waba-id", OTHER_WABA, "--access-token-env", "META_TOKEN")  # fmt: skip
    cli_token = (await run_cli(leaks, env, "token", "create", "--workspace", new_workspace)).strip()
    leaks.add("bearer token made by the CLI", cli_token)
    await run_cli(leaks, env, "template", "add", "--workspace", new_workspace,
                  "--waba-id", OTHER_WABA, "--provider-id", "42", "--name", "t",
                  "--language", "en_US")  # fmt: skip
    for args in [
        ("sync", "--workspace", workspace),  # the stand-in answers 190 with the token in it
        ("sync", "--workspace", new_workspace),
        ("import", "--workspace", new_workspace),
        ("channel", "set-token", "--waba-id", OTHER_WABA, "--access-token-env", "META_TOKEN"),
        ("doctor",),
        ("poll", "--once"),
        ("deliveries", "--quarantined", "--limit", "50"),
        ("deliveries", "--limit", "50"),
        ("templates", "--workspace", workspace),
        ("workspace", "list"),
        ("send-webhook", "--url", base + "/webhooks/meta", "--waba-id", WABA_ID,
         "--template-id", "1689556908129832", "--name", "order_confirmation"),
        ("keys", "rotate"),
        ("token", "revoke", cli_token.removeprefix("tsk_").split(".")[0]),
    ]:  # fmt: skip
        await run_cli(leaks, env, *args)
    unreachable = f"postgresql://app:{DB_PASSWORD}@127.0.0.1:1/templates"
    await run_cli(leaks, {**env, "TEMPLATE_SYNC_DATABASE_URL": unreachable}, "migrate")
    await run_cli(leaks, {**env, "TEMPLATE_SYNC_DATABASE_URL": unreachable}, "doctor")


@pytest.mark.usefixtures("restored_logging")
async def test_no_secret_in_logs_responses_cli_output_or_reprs(
    settings: Settings, store: Store, echo_graph_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = generate_key()
    settings = replace(
        settings,
        meta_app_secrets=tuple(Secret(s) for s in APP_SECRETS),
        meta_verify_token=Secret(VERIFY_TOKEN),
        encryption_keys=(Secret(key),),
        graph_url="http://127.0.0.1:9/v25.0",  # nothing listens on the discard port
    )
    workspace = await store.create_workspace("Acme", NOW_MS)
    channel = await store.add_channel(
        workspace.id, WABA_ID, TokenCipher((Secret(key),)).encrypt(META_TOKEN), NOW_MS
    )
    bearer = new_bearer_token()
    await store.create_token(workspace.id, bearer.token_id, bearer.token_hash, "app", NOW_MS)
    pending = NewTemplate(workspace.id, WABA_ID, "1689556908129832", "order_confirmation",
                          "en_US", "UTILITY", "PENDING")  # fmt: skip
    await store.add_template(pending, NOW_MS)
    leaks = Leaks({
        "app secret (current)": APP_SECRETS[0], "app secret (retiring)": APP_SECRETS[1],
        "verify token": VERIFY_TOKEN, "Meta access token": META_TOKEN,
        "appsecret_proof": appsecret_proof(APP_SECRETS[0], META_TOKEN),
        "encryption key": key, "bearer token": bearer.token,
        "bearer token secret part": bearer.token.partition(".")[2],
        "database password": DB_PASSWORD, "raw body marker": BODY_MARKER,
    })  # fmt: skip

    uv, task, base = await start_server(settings)
    try:
        await run_http_session(base, leaks, bearer.token, workspace.id)
        env = {
            "TEMPLATE_SYNC_DATABASE_URL": settings.database_url,
            "TEMPLATE_SYNC_ENCRYPTION_KEYS": key,
            "TEMPLATE_SYNC_META_APP_SECRET": ",".join(APP_SECRETS),
            "TEMPLATE_SYNC_META_VERIFY_TOKEN": VERIFY_TOKEN,
            "TEMPLATE_SYNC_GRAPH_URL": echo_graph_url,
            "TEMPLATE_SYNC_LOG_LEVEL": "DEBUG",
            "TEMPLATE_SYNC_LOG_FORMAT": "json",
            "TEMPLATE_SYNC_DATA_DIR": str(settings.data_dir),
            "META_TOKEN": META_TOKEN,
        }
        await run_cli_session(leaks, env, base, workspace.id)
    finally:
        uv.should_exit = True
        await task

    formatter = JsonFormatter()
    leaks.said += [(f"log {r.name} {r.levelname}", formatter.format(r)) for r in caplog.records]
    # `token create` prints the token it made, once, by design
    assert leaks.found({"cli token create stdout": {"bearer token made by the CLI"}}) == []
    assert any(name.startswith("log service") for name, _ in leaks.said)  # logs were captured
    assert any('"level": "DEBUG"' in text for where, text in leaks.said if where.startswith("cli"))

    # reprs of everything that holds a secret
    pg_settings = replace(
        settings, database_url=f"postgresql://app:{DB_PASSWORD}@db.internal:5432/templates"
    )
    [stored_channel] = await store.list_channels(workspace.id)
    found_token = await store.find_token(bearer.token_id)
    deliveries = await store.list_deliveries(None, 100)
    assert deliveries and found_token is not None and stored_channel.id == channel.id
    holders = [pg_settings, *pg_settings.meta_app_secrets, pg_settings.meta_verify_token,
               stored_channel, channel, found_token, bearer, *deliveries]  # fmt: skip
    leaks.said = [(f"repr {type(h).__name__}", f"{h!r} {h!s}") for h in holders]
    leaks.add("encrypted Meta token", channel.access_token_enc)
    assert leaks.found() == []
