"""`template-sync webhook ...`: a workspace's signed outbound webhooks, which receive its
templates' status changes (design section 11), as the API manages them."""

from __future__ import annotations

import click

from .cli_admin import existing_workspace
from .cli_common import emit, json_flag, load_settings, with_store
from .cli_output import confirm, json_list_flag, masked, print_json, print_table, when, yes_flag
from .crypto import load_cipher
from .storage import NotFound, Store, Subscription
from .subscriptions import EVENT_CHOICES, InvalidSubscription, subscribe, subscription_json
from .times import now_ms

ALL_EVENTS = "all"  # the EVENTS cell of a subscription without --events


@click.group()
def webhook() -> None:
    """Webhooks: your app's URLs that receive signed template status changes."""


def event_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    """Comma-separated event types, trimmed (checked by `subscribe`); none given: every type."""
    return None if value is None else [name.strip() for name in value.split(",")]


async def find_subscription(store: Store, subscription_id: str) -> Subscription:
    """The subscription with this id, whichever workspace has it."""
    for workspace in await store.list_workspaces():
        for found in await store.list_subscriptions(workspace.id):
            if found.id == subscription_id:
                return found
    raise NotFound(f"no webhook {subscription_id}; 'template-sync webhook list' lists them")


@webhook.command("add")
@click.option("--workspace", "workspace_id", required=True, help="Workspace id.")
@click.argument("url")
@click.option(
    "--events", callback=event_list, metavar="T1,T2",
    help=f"Send only these event types (default: every type): {', '.join(EVENT_CHOICES)}.",
)  # fmt: skip
@json_flag
def webhook_add(workspace_id: str, url: str, events: list[str] | None, as_json: bool) -> None:
    """Send the workspace's template events to URL; prints the signing secret (shown once).

    The id goes to stderr. URL must be http(s) and resolve to public addresses (unless
    TEMPLATE_SYNC_WEBHOOKS_ALLOW_PRIVATE=true). Events committed from now on are sent."""
    settings = load_settings()

    async def add(store: Store) -> tuple[Subscription, str]:
        await existing_workspace(store, workspace_id)
        try:
            registered = await subscribe(
                store, load_cipher(settings), workspace_id, url, events,
                allow_private=settings.webhooks_allow_private, now_ms=now_ms(),
            )  # fmt: skip
        except InvalidSubscription as error:
            raise click.ClickException(str(error)) from None
        return registered.subscription, registered.secret

    added, secret = with_store(settings, add)
    shown = subscription_json(added) | {"url": masked(added.url), "secret": secret}
    emit(secret, as_json, **shown)
    click.echo(f"added webhook {added.id}", err=True)


@webhook.command("list")
@click.option("--workspace", "workspace_id", required=True, help="Workspace id.")
@json_list_flag
def webhook_list(workspace_id: str, as_json: bool) -> None:
    """List the workspace's webhooks: events, enabled, failures.

    Each with its URL (query values shown as ***), event types, whether it is enabled and
    why not, its last success and since when it has been failing."""

    async def listed(store: Store) -> list[Subscription]:
        await existing_workspace(store, workspace_id)
        return await store.list_subscriptions(workspace_id)

    found = with_store(load_settings(), listed)
    if as_json:
        print_json([subscription_json(item) | {"url": masked(item.url)} for item in found])
        return
    rows = [
        (item.id, masked(item.url), ",".join(item.events) or ALL_EVENTS,
         "yes" if item.enabled else f"no: {item.disabled_reason or '-'}",
         when(item.last_success_at), when(item.failing_since), when(item.created_at))
        for item in found
    ]  # fmt: skip
    print_table(
        ("ID", "URL", "EVENTS", "ENABLED", "LAST_SUCCESS", "FAILING_SINCE", "CREATED"), rows
    )


@webhook.command("remove")
@click.argument("subscription_id", metavar="ID")
@yes_flag
def webhook_remove(subscription_id: str, yes: bool) -> None:
    """Stop sending events to a webhook; its queued events are dropped."""

    async def remove(store: Store) -> None:
        found = await find_subscription(store, subscription_id)
        confirm(
            f"Remove webhook {subscription_id} ({masked(found.url)}) of workspace "
            f"{found.workspace_id}? Its queued events will not be sent.",
            yes,
        )
        await store.remove_subscription(found.workspace_id, subscription_id)

    with_store(load_settings(), remove)
    click.echo(f"removed webhook {subscription_id}", err=True)


@webhook.command("enable")
@click.argument("subscription_id", metavar="ID")
def webhook_enable(subscription_id: str) -> None:
    """Enable a disabled webhook; the events it missed meanwhile are sent."""

    async def enable(store: Store) -> None:
        found = await find_subscription(store, subscription_id)
        await store.enable_subscription(found.workspace_id, subscription_id)

    with_store(load_settings(), enable)
    click.echo(f"enabled webhook {subscription_id}", err=True)
