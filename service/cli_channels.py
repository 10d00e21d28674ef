"""`template-sync channel ...`: WABAs, their Meta access tokens and webhook subscriptions."""

from __future__ import annotations

from collections.abc import Callable

import click

from .cli_admin import existing_workspace
from .cli_common import digits, emit, json_flag, load_settings, read_secret, with_store
from .cli_output import confirm, json_list_flag, print_json, print_table, when, yes_flag
from .crypto import DecryptionError, load_cipher, meta_token
from .doctor import Check, check_channel, failed, render
from .storage import Channel, NotFound, Store
from .times import iso, now_ms


@click.group()
def channel() -> None:
    """WhatsApp Business Accounts and their Meta access tokens."""


def read_access_token(env_var: str | None, from_stdin: bool) -> str:
    return read_secret(env_var, from_stdin, "--access-token", "access token")


def check_options(command: Callable[..., None]) -> Callable[..., None]:
    command = click.option(
        "--subscribe", is_flag=True, help="Subscribe the app to the WABA's webhooks if needed."
    )(command)
    return click.option(
        "--check/--no-check", default=True, show_default=True,
        help="Check the token and the webhook subscription with Meta.",
    )(command)  # fmt: skip


def report_checks(checks: list[Check], stored: str = "channel") -> None:
    """Checks of what was just stored (a channel, an upstream): shown on stderr; it stays
    stored either way."""
    if checks:
        click.echo(render(checks), err=True)
    if failed(checks):
        click.echo(
            f"the {stored} is stored; fix the above, then run 'template-sync doctor'", err=True
        )


async def stored_channel(store: Store, waba_id: str) -> Channel:
    found = await store.channel_for_waba(waba_id)
    if found is None:
        raise NotFound(f"no channel for WABA {waba_id}; add one with 'channel add'")
    return found


@channel.command("add")
@click.option("--workspace", "workspace_id", required=True, help="Workspace id.")
@click.option("--waba-id", required=True, callback=digits, help="WhatsApp Business Account id.")
@click.option("--access-token-env", metavar="VAR", help="Read the Meta token from this variable.")
@click.option("--access-token-stdin", is_flag=True, help="Read the Meta token from stdin.")
@click.option(
    "--webhooks-only", is_flag=True,
    help="No Meta token: route this WABA's webhooks here; the workspace syncs through its "
    "upstream (template-sync upstream set).",
)  # fmt: skip
@check_options
@json_flag
def channel_add(
    workspace_id: str, waba_id: str, access_token_env: str | None, access_token_stdin: bool,
    webhooks_only: bool, check: bool, subscribe: bool, as_json: bool,
) -> None:  # fmt: skip
    """Add a WABA to a workspace; its token is encrypted at rest. Prints the channel id."""
    token = None if webhooks_only else read_access_token(access_token_env, access_token_stdin)
    if webhooks_only and (access_token_env or access_token_stdin or subscribe):
        raise click.UsageError(
            "--webhooks-only takes no token: leave out --access-token-env, "
            "--access-token-stdin and --subscribe"
        )
    settings = load_settings()

    async def add(store: Store) -> tuple[Channel, list[Check]]:
        ciphertext = None if token is None else load_cipher(settings).encrypt(token)
        created = await store.add_channel(workspace_id, waba_id, ciphertext, now_ms())
        if token is None or not check:
            return created, []
        return created, await check_channel(settings, store, waba_id, token, do_subscribe=subscribe)

    created, checks = with_store(settings, add)
    emit(created.id, as_json, id=created.id, workspace_id=workspace_id, waba_id=waba_id)
    report_checks(checks)


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

    async def replace_token(store: Store) -> list[Check]:
        found = await stored_channel(store, waba_id)
        await store.set_channel_token(found.id, load_cipher(settings).encrypt(token))
        if not check:
            return []
        return await check_channel(settings, store, waba_id, token, do_subscribe=subscribe)

    checks = with_store(settings, replace_token)
    click.echo(f"token of WABA {waba_id} replaced", err=True)
    report_checks(checks)


@channel.command("subscribe")
@click.option("--waba-id", required=True, callback=digits, help="WhatsApp Business Account id.")
def channel_subscribe(waba_id: str) -> None:
    """Subscribe the Meta app to a WABA's webhooks with the channel's stored token
    (POST /{waba}/subscribed_apps), then check the token and the subscription."""
    settings = load_settings()

    async def subscribe(store: Store) -> list[Check]:
        found = await stored_channel(store, waba_id)
        try:
            token = meta_token(load_cipher(settings), found.access_token_enc, waba_id)
        except DecryptionError as error:
            raise click.ClickException(f"WABA {waba_id}: {error}") from None
        return await check_channel(settings, store, waba_id, token, do_subscribe=True)

    checks = with_store(settings, subscribe)
    click.echo(render(checks), err=True)
    if failed(checks):
        raise click.ClickException(f"WABA {waba_id}: a check failed; see its fix above")


@channel.command("list")
@click.option("--workspace", "workspace_id", help="Only this workspace's channels.")
@json_list_flag
def channel_list(workspace_id: str | None, as_json: bool) -> None:
    """List channels: id, workspace, WABA id, whether it has a Meta token (never the token)
    and when added."""

    async def fetch(store: Store) -> list[Channel]:
        if workspace_id is None:
            return await store.all_channels()
        await existing_workspace(store, workspace_id)
        return await store.list_channels(workspace_id)

    found = with_store(load_settings(), fetch)
    if as_json:
        print_json([
            {"id": c.id, "workspace_id": c.workspace_id, "waba_id": c.waba_id,
             "webhooks_only": c.access_token_enc is None, "created_at": iso(c.created_at)}
            for c in found
        ])  # fmt: skip
        return
    rows = [(c.id, c.workspace_id, c.waba_id, _token_kind(c), when(c.created_at)) for c in found]
    print_table(("ID", "WORKSPACE", "WABA_ID", "META_TOKEN", "CREATED"), rows)


def _token_kind(found: Channel) -> str:
    return "none (webhooks only)" if found.access_token_enc is None else "stored"


@channel.command("remove")
@click.option("--waba-id", required=True, callback=digits, help="WhatsApp Business Account id.")
@yes_flag
def channel_remove(waba_id: str, yes: bool) -> None:
    """Remove a WABA's channel and its encrypted Meta token.

    The WABA's templates stay here with their history but are no longer updated: its
    webhooks are stored without being applied, and syncs report "no channel for this WABA"
    for its pending templates. Add the channel again to resume, or remove the templates
    with 'template remove'. Nothing changes at Meta.
    """

    async def remove(store: Store) -> None:
        found = await stored_channel(store, waba_id)
        templates = (await store.template_counts(found.workspace_id)).get(waba_id, 0)
        pending = await store.pending_templates(found.workspace_id)
        waiting = sum(t.waba_id == waba_id for t in pending)
        confirm(
            f"Remove the channel of WABA {waba_id} (workspace {found.workspace_id}) and its "
            f"Meta token? Its {templates} template(s) ({waiting} pending) stay here, no "
            "longer updated.",
            yes,
        )
        await store.remove_channel(waba_id)

    with_store(load_settings(), remove)
    click.echo(f"removed the channel of WABA {waba_id}; its templates stay", err=True)
