"""Commands that manage workspaces, channels, tokens, templates and keys."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from .cli_common import digits, emit, json_flag, load_settings, with_store
from .config import ConfigError, Settings
from .crypto import DecryptionError, generate_key, load_cipher, new_bearer_token
from .doctor import Check, check_channel, failed, render
from .events import STATUS_EVENTS
from .storage import Channel, NewTemplate, NotFound, Store
from .times import iso, now_ms


@click.group()
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


@click.group()
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


@click.group()
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


@click.group()
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


@click.command()
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


@click.command()
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


@click.group()
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
