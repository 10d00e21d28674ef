"""`template-sync relay ...`: where the deliveries Meta sends here are passed on, unchanged
(design section 10): the app whose webhook URL this service took over keeps receiving them."""

from __future__ import annotations

from urllib.parse import urlsplit

import click

from .cli_common import emit, json_flag, load_settings, with_store
from .cli_output import confirm, json_list_flag, masked, print_json, print_table, yes_flag
from .storage import NotFound, RelaySummary, Store
from .times import iso, now_ms

URL_EXAMPLE = "https://app.example.com/webhook"
ALL_FIELDS = "all"  # the FIELDS cell of a relay without --fields


@click.group()
def relay() -> None:
    """Relays: pass Meta's deliveries on to your app's webhook URL (same bytes, same
    signature)."""


def relay_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """An http or https URL with a host, kept as given."""
    if not is_http_url(value):
        raise click.BadParameter(
            f"must be an http:// or https:// URL with a host, e.g. {URL_EXAMPLE}"
        )
    return value


def is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError:
        return False
    has_space = any(char.isspace() for char in value)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not has_space


def field_list(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    """Comma-separated field names, trimmed, each once; none given: every delivery."""
    if value is None:
        return ()
    names = [name.strip() for name in value.split(",")]
    if not all(names):
        raise click.BadParameter(
            "give webhook field names separated by commas, e.g. messages,account_update "
            "(leave --fields out to relay every delivery)"
        )
    return tuple(dict.fromkeys(names))


async def find_relay(store: Store, relay_id: str) -> RelaySummary:
    for summary in await store.list_relays():
        if summary.relay.id == relay_id:
            return summary
    raise NotFound(f"no relay {relay_id}; 'template-sync relay list' lists them")


@relay.command("add")
@click.argument("url", callback=relay_url)
@click.option(
    "--fields", callback=field_list, metavar="F1,F2",
    help="Relay only deliveries with a change of one of these fields (default: every delivery).",
)  # fmt: skip
@click.option("--name", help="A label, e.g. the application at the URL.")
@json_flag
def relay_add(url: str, fields: tuple[str, ...], name: str | None, as_json: bool) -> None:
    """Relay deliveries to URL; prints the relay id.

    Every delivery acknowledged from now on (with --fields, those with a change of one of
    them) is sent to URL with its exact bytes and Meta's signature header."""
    settings = load_settings()
    created = with_store(settings, lambda store: store.add_relay(url, fields, name, now_ms()))
    emit(created.id, as_json, id=created.id, name=name, url=masked(url), fields=list(fields))


@relay.command("list")
@json_list_flag
def relay_list(as_json: bool) -> None:
    """List relays: queued, failed, last error.

    Each relay with its name, URL (a password in it shown as ***), fields, how many of its
    deliveries are queued and how many failed, and its latest error."""
    found = with_store(load_settings(), lambda store: store.list_relays())
    if as_json:
        print_json([
            {"id": s.relay.id, "name": s.relay.name, "url": masked(s.relay.url),
             "fields": list(s.relay.fields), "queued": s.queued, "failed": s.failed,
             "last_error": s.last_error, "created_at": iso(s.relay.created_at)}
            for s in found
        ])  # fmt: skip
        return
    rows = [
        (s.relay.id, s.relay.name or "-", masked(s.relay.url),
         ",".join(s.relay.fields) or ALL_FIELDS, str(s.queued), str(s.failed),
         s.last_error or "-")
        for s in found
    ]  # fmt: skip
    print_table(("ID", "NAME", "URL", "FIELDS", "QUEUED", "FAILED", "LAST_ERROR"), rows)


@relay.command("remove")
@click.argument("relay_id", metavar="ID")
@yes_flag
def relay_remove(relay_id: str, yes: bool) -> None:
    """Stop relaying to a URL; its unsent deliveries are dropped.

    The deliveries still queued or failed for the relay are never sent; the deliveries
    themselves stay stored here."""

    async def remove(store: Store) -> None:
        found = await find_relay(store, relay_id)
        confirm(
            f"Remove relay {relay_id} ({masked(found.relay.url)})? Its {found.queued} queued "
            f"and {found.failed} failed deliveries will not be sent.",
            yes,
        )
        await store.remove_relay(relay_id)

    with_store(load_settings(), remove)
    click.echo(f"removed relay {relay_id}", err=True)


@relay.command("retry")
@click.argument("relay_id", metavar="ID")
def relay_retry(relay_id: str) -> None:
    """Queue a relay's failed deliveries again; prints how many.

    Run it once the app at its URL answers again: they are due at once."""

    async def retry(store: Store) -> int:
        await find_relay(store, relay_id)
        return await store.retry_relay(relay_id, now_ms())

    count = with_store(load_settings(), retry)
    click.echo(str(count))
    click.echo(f"re-queued {count} failed deliveries of relay {relay_id}", err=True)
