"""The `template-sync` command line. Creating commands print the new id or token alone."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import click

from .config import ConfigError, Settings
from .crypto import DecryptionError, generate_key, load_cipher, new_bearer_token
from .doctor import Check, check_channel, failed, render, run_doctor
from .events import STATUS_EVENTS
from .logs import configure
from .metrics import Metrics
from .storage import (
    Channel,
    Conflict,
    NewTemplate,
    NotFound,
    RemoteCounts,
    Store,
    StoreUnavailable,
    open_store,
)
from .sync import NoPendingTemplates, Syncer, WabaFailure, report_json
from .times import iso, now_ms

T = TypeVar("T")


def load_settings() -> Settings:
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    configure(settings.log_format, settings.log_level)
    return settings


def with_store(
    settings: Settings, action: Callable[[Store], Awaitable[T]], *, migrate: bool = True
) -> T:
    """Run `action` against a migrated store; store problems become clear CLI errors."""

    async def run() -> T:
        store = await open_store(settings.database_url)
        try:
            if migrate:
                await store.migrate()
            return await action(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except (StoreUnavailable, Conflict, NotFound) as error:
        raise click.ClickException(str(error)) from None


def with_syncer(settings: Settings, action: Callable[[Syncer], Awaitable[T]]) -> T:
    """Run `action` with a Syncer over a migrated store and a fresh HTTP session."""
    from .app import make_syncer

    async def run(store: Store) -> T:
        try:
            cipher = load_cipher(settings)
        except ConfigError as error:
            raise click.ClickException(str(error)) from None
        async with aiohttp.ClientSession() as session:
            return await action(make_syncer(settings, store, session, cipher, Metrics()))

    return with_store(settings, run)


def emit(value: str, as_json: bool, **fields: Any) -> None:
    """The created thing: alone on stdout, or as a JSON object with --json."""
    click.echo(json.dumps(fields) if as_json else value)


def json_flag(command: Callable[..., None]) -> Callable[..., None]:
    return click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")(command)


def digits(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not (value.isdecimal() and value.isascii()):
        raise click.BadParameter("must be Meta's numeric id")
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Keep WhatsApp template statuses in sync with Meta."""


@main.command()
@click.option("--host", help="Listen address (default TEMPLATE_SYNC_HOST or 127.0.0.1).")
@click.option("--port", type=int, help="Listen port (default TEMPLATE_SYNC_PORT or 8000).")
def serve(host: str | None, port: int | None) -> None:
    """Serve the webhook receiver and the API; migrations are applied on start."""
    import uvicorn

    from .app import create_app

    settings = load_settings()
    settings = dataclasses.replace(
        settings, host=host or settings.host, port=settings.port if port is None else port
    )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_s),
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        sys.exit(3)  # start-up failed; uvicorn logged why


@main.command()
def migrate() -> None:
    """Create or upgrade the schema."""
    applied = with_store(load_settings(), lambda store: store.migrate(), migrate=False)
    click.echo(f"schema up to date ({len(applied)} migrations applied now)", err=True)


@main.group()
def workspace() -> None:
    """Workspaces (tenants)."""


@workspace.command("create")
@click.argument("name")
@json_flag
def workspace_create(name: str, as_json: bool) -> None:
    """Create a workspace; prints its id."""
    created = with_store(load_settings(), lambda store: store.create_workspace(name, now_ms()))
    emit(created.id, as_json, id=created.id, name=created.name)


@workspace.command("list")
@json_flag
def workspace_list(as_json: bool) -> None:
    """List workspaces."""
    found = with_store(load_settings(), lambda store: store.list_workspaces())
    if as_json:
        click.echo(json.dumps([{"id": w.id, "name": w.name} for w in found]))
    for item in [] if as_json else found:
        click.echo(f"{item.id}  {item.name}")


@main.group()
def channel() -> None:
    """WhatsApp Business Accounts and their Meta access tokens."""


def read_access_token(env_var: str | None, from_stdin: bool) -> str:
    if bool(env_var) == from_stdin:
        raise click.UsageError("give exactly one of --access-token-env or --access-token-stdin")
    token = (sys.stdin.readline() if from_stdin else os.environ.get(env_var or "", "")).strip()
    if not token:
        source = "standard input" if from_stdin else f"the variable {env_var}"
        raise click.ClickException(f"no access token in {source}")
    return token


def check_options(command: Callable[..., None]) -> Callable[..., None]:
    command = click.option(
        "--subscribe", is_flag=True, help="Subscribe the app to the WABA's webhooks if needed."
    )(command)
    return click.option(
        "--check/--no-check", default=True, show_default=True,
        help="Check the token and the webhook subscription with Meta.",
    )(command)  # fmt: skip


def encrypt(settings: Settings, token: str) -> str:
    try:
        return load_cipher(settings).encrypt(token)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


def report_channel_checks(checks: list[Check]) -> None:
    """Checks of a stored channel: shown on stderr; the channel stays stored either way."""
    if checks:
        click.echo(render(checks), err=True)
    if failed(checks):
        click.echo(
            "the channel is stored; fix the above, then run 'template-sync doctor'", err=True
        )


@channel.command("add")
@click.option("--workspace", "workspace_id", required=True, help="Workspace id.")
@click.option("--waba-id", required=True, callback=digits, help="WhatsApp Business Account id.")
@click.option("--access-token-env", metavar="VAR", help="Read the Meta token from this variable.")
@click.option("--access-token-stdin", is_flag=True, help="Read the Meta token from stdin.")
@check_options
@json_flag
def channel_add(
    workspace_id: str, waba_id: str, access_token_env: str | None, access_token_stdin: bool,
    check: bool, subscribe: bool, as_json: bool,
) -> None:  # fmt: skip
    """Add a WABA to a workspace; its token is encrypted at rest. Prints the channel id."""
    token = read_access_token(access_token_env, access_token_stdin)
    settings = load_settings()
    ciphertext = encrypt(settings, token)

    async def add(store: Store) -> tuple[Channel, list[Check]]:
        created = await store.add_channel(workspace_id, waba_id, ciphertext, now_ms())
        if not check:
            return created, []
        return created, await check_channel(settings, store, waba_id, token, do_subscribe=subscribe)

    created, checks = with_store(settings, add)
    emit(created.id, as_json, id=created.id, workspace_id=workspace_id, waba_id=waba_id)
    report_channel_checks(checks)


@channel.command("set-token")
@click.option("--waba-id", required=True, callback=digits, help="WhatsApp Business Account id.")
@click.option("--access-token-env", metavar="VAR", help="Read the Meta token from this variable.")
@click.option("--access-token-stdin", is_flag=True, help="Read the Meta token from stdin.")
@check_options
def channel_set_token(
    waba_id: str, access_token_env: str | None, access_token_stdin: bool, check: bool,
    subscribe: bool,
) -> None:  # fmt: skip
    """Replace the Meta access token of a WABA's channel (e.g. after error 190)."""
    token = read_access_token(access_token_env, access_token_stdin)
    settings = load_settings()
    ciphertext = encrypt(settings, token)

    async def replace_token(store: Store) -> list[Check]:
        found = await store.channel_for_waba(waba_id)
        if found is None:
            raise NotFound(f"no channel for WABA {waba_id}; add one with 'channel add'")
        await store.set_channel_token(found.id, ciphertext)
        if not check:
            return []
        return await check_channel(settings, store, waba_id, token, do_subscribe=subscribe)

    checks = with_store(settings, replace_token)
    click.echo(f"token of WABA {waba_id} replaced", err=True)
    report_channel_checks(checks)


@main.command()
def doctor() -> None:
    """Check configuration, store and every channel with Meta; exit 1 on any failure."""
    checks = asyncio.run(run_doctor(load_settings()))
    click.echo(render(checks))
    if failed(checks):
        sys.exit(1)


@main.group()
def token() -> None:
    """API bearer tokens."""


@token.command("create")
@click.option("--workspace", "workspace_id", required=True, help="Workspace id.")
@click.option("--name", help="A label, e.g. the application using it.")
@json_flag
def token_create(workspace_id: str, name: str | None, as_json: bool) -> None:
    """Create a bearer token; it is shown once (its id is the part before the dot)."""
    new = new_bearer_token()
    with_store(
        load_settings(),
        lambda store: store.create_token(
            workspace_id, new.token_id, new.token_hash, name, now_ms()
        ),
    )
    emit(new.token, as_json, id=new.token_id, token=new.token, workspace_id=workspace_id)


@token.command("revoke")
@click.argument("token_id")
def token_revoke(token_id: str) -> None:
    """Revoke a token by its id."""
    if not with_store(load_settings(), lambda store: store.revoke_token(token_id, now_ms())):
        raise click.ClickException(f"no active token with id {token_id}")
    click.echo(f"revoked {token_id}", err=True)


@main.group()
def template() -> None:
    """Templates."""


@template.command("add")
@click.option("--workspace", "workspace_id", required=True, help="Workspace id.")
@click.option("--waba-id", required=True, callback=digits, help="WABA the template belongs to.")
@click.option("--provider-id", required=True, callback=digits, help="Meta's template id.")
@click.option("--name", required=True, help="Template name.")
@click.option("--language", required=True, help="Language code, e.g. en_US.")
@click.option("--category", help="MARKETING, UTILITY or AUTHENTICATION.")
@click.option(
    "--status", default="PENDING", show_default=True,
    type=click.Choice(sorted(STATUS_EVENTS), case_sensitive=False),
)  # fmt: skip
@json_flag
def template_add(as_json: bool, workspace_id: str, **fields: str) -> None:
    """Register a template that already exists on Meta; prints its local id."""
    fields["status"] = fields["status"].upper()
    new = NewTemplate(workspace_id=workspace_id, **fields)
    created = with_store(load_settings(), lambda store: store.add_template(new, now_ms()))
    emit(str(created.id), as_json, id=created.id, provider_id=created.provider_id)


@main.command()
@click.option("--workspace", "workspace_id", required=True, help="Workspace id.")
@click.option("--status", help="Only these statuses (comma-separated).")
@json_flag
def templates(workspace_id: str, status: str | None, as_json: bool) -> None:
    """Print a table of a workspace's templates and their statuses."""
    from .storage import TemplateFilter

    statuses = tuple(s.strip().upper() for s in (status or "").split(",") if s.strip())

    async def fetch(store: Store) -> list[Any]:
        if await store.get_workspace(workspace_id) is None:
            raise NotFound(f"workspace {workspace_id} does not exist")
        found, _ = await store.list_templates(workspace_id, TemplateFilter(statuses), 0, 10**9)
        return found

    found = with_store(load_settings(), fetch)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(t) for t in found]))
        return
    rows = [("ID", "PROVIDER_ID", "NAME", "LANGUAGE", "STATUS", "SOURCE")]
    rows += [
        (str(t.id), t.provider_id, t.name, t.language, t.status, t.status_source) for t in found
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def echo_failures(failures: list[WabaFailure]) -> None:
    for failure in failures:
        click.echo(
            f"WABA {failure.waba_id}: {failure.kind} (Graph code {failure.code}): {failure.detail}",
            err=True,
        )


@main.command()
@click.option("--workspace", "workspace_id", required=True, help="Workspace id.")
def sync(workspace_id: str) -> None:
    """Sync pending templates with Meta, like the API endpoint; prints the result."""
    try:
        report = with_syncer(load_settings(), lambda syncer: syncer.sync(workspace_id, "cli"))
    except NoPendingTemplates:
        raise click.ClickException("No pending templates found") from None
    click.echo(json.dumps({**report_json(report), "graph_calls": report.graph_calls}))
    echo_failures(report.failures)
    if report.failures:
        raise click.ClickException("Failed to sync the templates")


@main.command("import")
@click.option("--workspace", "workspace_id", required=True, help="Workspace id.")
def import_(workspace_id: str) -> None:
    """Add or update every template Meta has for the workspace's WABAs (onboarding)."""

    async def run(syncer: Syncer) -> tuple[RemoteCounts, list[WabaFailure]]:
        return await syncer.import_workspace(workspace_id)

    counts, failures = with_syncer(load_settings(), run)
    click.echo(json.dumps(dataclasses.asdict(counts)))
    echo_failures(failures)
    if failures:
        raise click.ClickException("some WABAs could not be imported")


@main.command()
@click.option("--once", is_flag=True, help="One pass, then exit (for cron or a check).")
def poll(once: bool) -> None:
    """The polling fallback on its own: sync workspaces whose webhooks did not come."""
    from .app import make_poller  # the app module imports Starlette: only when needed

    settings = load_settings()

    async def run(syncer: Syncer) -> None:
        poller = make_poller(settings, syncer.store, syncer, Metrics())
        if once:
            report = await poller.run_once()
            click.echo(json.dumps(dataclasses.asdict(report)))
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        click.echo(f"polling every {settings.poll_tick_s:g} s; Ctrl-C stops", err=True)
        await poller.run(stop)

    with_syncer(settings, run)


@main.command()
@click.option("--quarantined", is_flag=True, help="Only deliveries that could not be applied.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--body", "show_body", is_flag=True, help="Also print each raw body.")
def deliveries(quarantined: bool, limit: int, show_body: bool) -> None:
    """Print the newest stored webhook deliveries, with why any were quarantined."""
    outcome = "quarantined" if quarantined else None
    found = with_store(load_settings(), lambda store: store.list_deliveries(outcome, limit))
    for item in found:
        line = f"{item.id}  {iso(item.received_at)}  {item.outcome}  {item.error or ''}"
        click.echo(line.rstrip())
        if show_body:
            click.echo(item.body.decode("utf-8", "backslashreplace"))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8010, show_default=True, type=click.IntRange(0, 65535))
@click.option("--waba-id", callback=digits, help="Seed this WABA...")
@click.option("--token", help="...with this Meta access token valid for it.")
@click.option("--templates", default=0, show_default=True, help="...and this many templates,")
@click.option("--pending", default=0, show_default=True, help="...the last N of them PENDING.")
@click.option("--app-secret", help="Require appsecret_proof made with this secret.")
def simulator(
    host: str, port: int, waba_id: str | None, token: str | None, templates: int, pending: int,
    app_secret: str | None,
) -> None:  # fmt: skip
    """Run a fake Meta Graph API (offline) to point TEMPLATE_SYNC_GRAPH_URL at."""
    from .demo import run_simulator

    configure("text", "INFO")
    coroutine = run_simulator(
        host, port, waba_id=waba_id, token=token, templates=templates, pending=pending,
        app_secret=app_secret, say=lambda line: click.echo(line, err=True),
    )  # fmt: skip
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(coroutine)


@main.command("send-webhook")
@click.option("--url", default="http://127.0.0.1:8000/webhooks/meta", show_default=True)
@click.option("--waba-id", required=True, callback=digits)
@click.option("--template-id", required=True, callback=digits, help="Meta's template id.")
@click.option("--event", default="APPROVED", show_default=True, help="e.g. REJECTED, PAUSED.")
@click.option("--name", required=True, help="Template name.")
@click.option("--language", default="en_US", show_default=True)
@click.option("--reason", help="Rejection reason, e.g. INVALID_FORMAT.")
def send_webhook(
    url: str, waba_id: str, template_id: str, event: str, name: str, language: str,
    reason: str | None,
) -> None:  # fmt: skip
    """Send a template status webhook signed with TEMPLATE_SYNC_META_APP_SECRET, as Meta would."""
    from .demo import send_webhook as send

    secret = load_settings().current_app_secret
    if secret is None:
        raise click.ClickException("set TEMPLATE_SYNC_META_APP_SECRET to the service's secret")
    try:
        status, text = asyncio.run(
            send(url, secret, waba_id=waba_id, template_id=template_id, event=event.upper(),
                 name=name, language=language, reason=reason)
        )  # fmt: skip
    except aiohttp.ClientError as error:
        raise click.ClickException(f"could not reach {url}: {error}") from None
    click.echo(f"{status} {text}")
    if status != 200:
        sys.exit(1)


@main.command()
@click.option("--workdir", default="demo", show_default=True, type=click.Path(file_okay=False))
def demo(workdir: str) -> None:
    """Show the whole loop offline: webhook, API, a lost webhook repaired by a sync."""
    from pathlib import Path

    from .demo import DemoError, run_demo

    try:
        asyncio.run(run_demo(Path(workdir), say=click.echo))
    except DemoError as error:
        raise click.ClickException(str(error)) from None


@main.group()
def keys() -> None:
    """Encryption keys for Meta access tokens at rest."""


@keys.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every stored Meta token under the first of TEMPLATE_SYNC_ENCRYPTION_KEYS.

    Tokens under a key no longer configured are listed and left as they are.
    """
    settings = load_settings()
    try:
        cipher = load_cipher(settings)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None

    async def rotate(store: Store) -> list[Channel]:
        unreadable = []
        for item in await store.all_channels():
            try:
                await store.set_channel_token(item.id, cipher.rotate(item.access_token_enc))
            except DecryptionError:
                unreadable.append(item)
        return unreadable

    unreadable = with_store(settings, rotate)
    for item in unreadable:
        click.echo(
            f"channel {item.id} (WABA {item.waba_id}): encrypted under a key that is not "
            "configured; add that key back or run 'channel set-token' for this WABA",
            err=True,
        )
    if unreadable:
        raise click.ClickException(f"{len(unreadable)} token(s) could not be re-encrypted")
    click.echo("every stored Meta token is encrypted under the first key", err=True)


@keys.command("generate")
def keys_generate() -> None:
    """Print a new key for TEMPLATE_SYNC_ENCRYPTION_KEYS."""
    click.echo(generate_key())
