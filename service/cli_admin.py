"""Commands that manage workspaces, bearer tokens and keys, and show stored deliveries."""

from __future__ import annotations

import dataclasses

import click

from .cli_common import emit, json_flag, load_settings, with_store
from .cli_output import confirm, json_list_flag, print_json, print_table, when, yes_flag
from .crypto import (
    TOKEN_PREFIX,
    DecryptionError,
    generate_key,
    load_cipher,
    new_bearer_token,
    token_id_of,
)
from .storage import Conflict, NotFound, Store, Workspace, WorkspaceSummary
from .times import iso, now_ms


async def existing_workspace(store: Store, workspace_id: str) -> Workspace:
    found = await store.get_workspace(workspace_id)
    if found is None:
        raise NotFound(f"workspace {workspace_id} does not exist")
    return found


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
@json_list_flag
def workspace_list(as_json: bool) -> None:
    """List workspaces with their channels, active tokens, templates and pending templates."""
    found = with_store(load_settings(), lambda store: store.workspace_summaries())
    if as_json:
        print_json([dataclasses.asdict(w) | {"created_at": iso(w.created_at)} for w in found])
        return
    header = ("ID", "CREATED", "CHANNELS", "ACTIVE_TOKENS", "TEMPLATES", "PENDING", "NAME")
    rows = [
        (w.id, when(w.created_at), str(w.channels), str(w.active_tokens), str(w.templates),
         str(w.pending_templates), w.name)
        for w in found
    ]  # fmt: skip
    print_table(header, rows)


def contents(held: WorkspaceSummary) -> str:
    return (
        f"{held.channels} channel(s) with their Meta tokens, {held.tokens} bearer token(s) "
        f"({held.active_tokens} active), {held.templates} template(s) "
        f"({held.pending_templates} pending) with their history, {held.sync_runs} sync "
        "run(s) and its poll state"
    )


@workspace.command("delete")
@click.argument("workspace_id", metavar="WORKSPACE")
@yes_flag
def workspace_delete(workspace_id: str, yes: bool) -> None:
    """Delete a workspace and all its data: channels and their Meta tokens, bearer tokens,
    templates and their history, sync runs and poll state. Nothing changes at Meta."""

    async def delete(store: Store) -> WorkspaceSummary:
        found = await store.workspace_summaries(workspace_id)
        if not found:
            raise NotFound(f"workspace {workspace_id} does not exist")
        question = f"Delete workspace {found[0].name!r} ({workspace_id}) and {contents(found[0])}?"
        confirm(question + " This cannot be undone.", yes)
        return await store.delete_workspace(workspace_id)

    deleted = with_store(load_settings(), delete)
    click.echo(f"deleted workspace {workspace_id}: {contents(deleted)}", err=True)


@click.group()
def token() -> None:
    """API bearer tokens."""


def shown(token_id: str) -> str:
    """A token's id as the user sees it: the part of the token before the dot."""
    return f"{TOKEN_PREFIX}{token_id}"


def token_id_arg(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """The id from `tsk_<id>`, `<id>` or a whole pasted token, whose secret is dropped
    here, before anything could print it."""
    before_dot = value.strip().split(".", 1)[0]
    token_id = token_id_of(shown(before_dot.removeprefix(TOKEN_PREFIX)) + ".")
    if token_id is None:
        raise click.BadParameter("not a token id: give tsk_<id> as 'token list' shows it")
    return token_id


@token.command("create")
@click.option("--workspace", "workspace_id", required=True, help="Workspace id.")
@click.option("--name", help="A label, e.g. the application using it.")
@click.option(
    "--read-only",
    is_flag=True,
    help="It can read, stream and call the sync endpoint; any other write is refused (403).",
)
@json_flag
def token_create(workspace_id: str, name: str | None, read_only: bool, as_json: bool) -> None:
    """Create a bearer token; it is shown once (its id is the part before the dot)."""
    new = new_bearer_token()
    with_store(
        load_settings(),
        lambda store: store.create_token(
            workspace_id, new.token_id, new.token_hash, name, now_ms(), read_only=read_only
        ),
    )
    emit(
        new.token, as_json, id=shown(new.token_id), token=new.token, workspace_id=workspace_id,
        read_only=read_only,
    )  # fmt: skip


def access(read_only: bool) -> str:
    return "read-only" if read_only else "read-write"


@token.command("list")
@click.option("--workspace", "workspace_id", required=True, help="Workspace id.")
@json_list_flag
def token_list(workspace_id: str, as_json: bool) -> None:
    """List a workspace's tokens, revoked ones too, read-only or read-write (ids only:
    secrets are never stored)."""
    found = with_store(load_settings(), lambda store: store.list_tokens(workspace_id))
    if as_json:
        print_json([
            {"id": shown(t.id), "name": t.name, "created_at": iso(t.created_at),
             "revoked": t.revoked_at is not None, "revoked_at": iso(t.revoked_at),
             "read_only": t.read_only}
            for t in found
        ])  # fmt: skip
        return
    rows = [
        (shown(t.id), when(t.created_at), when(t.revoked_at), access(t.read_only), t.name or "-")
        for t in found
    ]
    print_table(("ID", "CREATED", "REVOKED", "ACCESS", "NAME"), rows)


@token.command("revoke")
@click.argument("token_id", callback=token_id_arg)
def token_revoke(token_id: str) -> None:
    """Revoke a bearer token. TOKEN_ID is the part of the token before the dot, tsk_<id>,
    as 'token create' and 'token list' show it; the bare <id> or the whole token work too
    (a pasted secret is never printed)."""

    async def revoke(store: Store) -> None:
        if await store.revoke_token(token_id, now_ms()):
            return
        found = await store.find_token(token_id)
        if found is None:
            raise NotFound(f"no token {shown(token_id)}; 'token list --workspace WS' lists them")
        raise Conflict(f"token {shown(token_id)} was revoked already, at {iso(found.revoked_at)}")

    with_store(load_settings(), revoke)
    click.echo(f"revoked {shown(token_id)}", err=True)


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
    """Re-encrypt every stored Meta token, and every upstream's token, under the first of
    TEMPLATE_SYNC_ENCRYPTION_KEYS.

    Tokens under a key no longer configured are listed and left as they are.
    """
    settings = load_settings()

    async def rotate(store: Store) -> list[str]:
        cipher, unreadable = load_cipher(settings), []
        for item in await store.all_channels():
            if item.access_token_enc is None:
                continue  # webhooks only: no token
            try:
                await store.set_channel_token(item.id, cipher.rotate(item.access_token_enc))
            except DecryptionError:
                unreadable.append(
                    f"channel {item.id} (WABA {item.waba_id}): run 'channel set-token' for it"
                )
        for upstream in await store.all_upstreams():
            try:
                rotated = cipher.rotate(upstream.token_enc)
                await store.set_upstream_token(upstream.workspace_id, rotated)
            except DecryptionError:
                unreadable.append(
                    f"upstream of workspace {upstream.workspace_id}: run 'upstream set' for it"
                )
        return unreadable

    unreadable = with_store(settings, rotate)
    for item in unreadable:
        click.echo(f"{item} again, or add back the key it was encrypted under", err=True)
    if unreadable:
        raise click.ClickException(f"{len(unreadable)} token(s) could not be re-encrypted")
    click.echo("every stored token is encrypted under the first key", err=True)


@keys.command("generate")
def keys_generate() -> None:
    """Print a new key for TEMPLATE_SYNC_ENCRYPTION_KEYS."""
    click.echo(generate_key())
