"""`template-sync upstream ...`: the LancePilot-compatible upstream a workspace syncs through
(design section 14), its bearer token encrypted at rest and never printed."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import click

from .cli_admin import existing_workspace
from .cli_channels import report_checks
from .cli_common import json_flag, load_settings, read_secret, with_store
from .cli_output import confirm, when, yes_flag
from .crypto import load_cipher
from .doctor import Check
from .doctor_upstream import check_upstream, upstream_client
from .storage import NotFound, Store, Upstream
from .times import iso, now_ms
from .upstream import upstream_url

AT_REST = "stored (encrypted)"


@click.group()
def upstream() -> None:
    """The upstream (LancePilot, or another template-sync) a workspace syncs through."""


def base_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """--url as stored (upstream.upstream_url's rule)."""
    try:
        return upstream_url(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@upstream.command("set")
@click.option("--workspace", "workspace_id", required=True, help="Workspace id.")
@click.option(
    "--url", required=True, callback=base_url,
    help="The upstream's base URL, before /api/v3 (e.g. https://lancepilot.example.com).",
)  # fmt: skip
@click.option("--remote-workspace", required=True, help="The workspace's id at the upstream.")
@click.option("--token-env", metavar="VAR", help="Read the upstream's bearer token from VAR.")
@click.option("--token-stdin", is_flag=True, help="Read the upstream's bearer token from stdin.")
@click.option(
    "--check/--no-check", default=True, show_default=True,
    help="Check the URL, remote workspace and token with one call to the upstream.",
)  # fmt: skip
def upstream_set(
    workspace_id: str, url: str, remote_workspace: str, token_env: str | None,
    token_stdin: bool, check: bool,
) -> None:  # fmt: skip
    """Name (or replace) the upstream a workspace syncs through; its token is encrypted at
    rest. The upstream stays stored even when the check fails."""
    token = read_secret(token_env, token_stdin, "--token", "upstream token")
    settings = load_settings()

    async def store_and_check(store: Store) -> list[Check]:
        async with aiohttp.ClientSession() as session:
            try:
                upstream_client(session, url, remote_workspace, token)
            except ValueError as error:
                raise click.ClickException(f"upstream not set: {error}") from None
            ciphertext = load_cipher(settings).encrypt(token)
            stored = await store.set_upstream(
                workspace_id, url, remote_workspace, ciphertext, now_ms()
            )
            return [await check_upstream(session, stored, token)] if check else []

    checks = with_store(settings, store_and_check)
    click.echo(
        f"upstream of workspace {workspace_id} set: {url}, remote workspace {remote_workspace}",
        err=True,
    )
    report_checks(checks, "upstream")


async def stored_upstream(store: Store, workspace_id: str) -> Upstream:
    """The workspace's upstream; NotFound (a one-line error) for an unknown workspace or
    one without an upstream."""
    await existing_workspace(store, workspace_id)
    found = await store.get_upstream(workspace_id)
    if found is None:
        raise NotFound(
            f"workspace {workspace_id} has no upstream: it syncs with Meta through its channels"
        )
    return found


@upstream.command("show")
@click.option("--workspace", "workspace_id", required=True, help="Workspace id.")
@json_flag
def upstream_show(workspace_id: str, as_json: bool) -> None:
    """Show a workspace's upstream: URL, remote workspace, times (never its token)."""
    found = with_store(load_settings(), lambda store: stored_upstream(store, workspace_id))
    if as_json:
        click.echo(json.dumps(shown(found)))
        return
    click.echo(f"workspace: {found.workspace_id}")
    click.echo(f"url: {found.url}")
    click.echo(f"remote workspace: {found.remote_workspace}")
    click.echo(f"token: {AT_REST}")
    click.echo(f"created: {when(found.created_at)}")
    click.echo(f"updated: {when(found.updated_at)}")


def shown(found: Upstream) -> dict[str, Any]:
    return {
        "workspace_id": found.workspace_id,
        "url": found.url,
        "remote_workspace": found.remote_workspace,
        "token": AT_REST,
        "created_at": iso(found.created_at),
        "updated_at": iso(found.updated_at),
    }


@upstream.command("remove")
@click.option("--workspace", "workspace_id", required=True, help="Workspace id.")
@yes_flag
def upstream_remove(workspace_id: str, yes: bool) -> None:
    """Remove a workspace's upstream and its encrypted token: the workspace syncs with Meta
    through its channels again (a webhooks-only channel then cannot sync). Nothing changes
    at the upstream."""

    async def remove(store: Store) -> None:
        found = await stored_upstream(store, workspace_id)
        channels = await store.list_channels(workspace_id)
        routed = sum(item.access_token_enc is None for item in channels)
        confirm(
            f"Remove the upstream of workspace {workspace_id} ({found.url}, remote workspace "
            f"{found.remote_workspace}) and its token? The workspace then syncs with Meta "
            f"through its channels; its {routed} webhooks-only channel(s) cannot sync.",
            yes,
        )
        await store.remove_upstream(workspace_id)

    with_store(load_settings(), remove)
    click.echo(f"removed the upstream of workspace {workspace_id}", err=True)
