"""`template-sync template ...` and `templates`: templates registered here, and created or
deleted at Meta (the work behind those two: cli_template_writes)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

import click

from .cli_admin import existing_workspace
from .cli_common import digits, emit, json_flag, load_settings, with_store
from .cli_output import confirm, json_list_flag, print_json, print_table, yes_flag
from .cli_template_writes import read_draft, wait_for_verdict, write
from .events import STATUS_EVENTS, language_code, template_category
from .storage import Conflict, NewTemplate, NotFound, Store, Template, TemplateFilter
from .template_writes import DELETED, TemplateWriter
from .times import now_ms

Callback = Callable[[click.Context, click.Parameter, str | None], str | None]


def rule(check: Callable[[str], str]) -> Callback:
    """A click callback from one of events.py's field rules (shared with the API)."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return check(value)
        except ValueError as error:
            raise click.BadParameter(str(error)) from None

    return callback


@click.group()
def template() -> None:
    """Templates."""


@template.command("add")
@click.option("--workspace", "workspace_id", required=True, help="Workspace id.")
@click.option("--waba-id", required=True, callback=digits, help="WABA the template belongs to.")
@click.option("--provider-id", required=True, callback=digits, help="Meta's template id.")
@click.option("--name", required=True, help="Template name.")
@click.option(
    "--language", required=True, callback=rule(language_code),
    help="Meta's language code, e.g. en, en_US, pt_BR.",
)  # fmt: skip
@click.option(
    "--category", callback=rule(template_category),
    help="MARKETING, UTILITY or AUTHENTICATION (any case).",
)  # fmt: skip
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


async def find_template(
    store: Store, workspace_id: str, template_id: int | None, provider_id: str | None
) -> Template:
    """The workspace's template by its id here or by Meta's id; NotFound if there is none."""
    await existing_workspace(store, workspace_id)
    if template_id is not None:
        found = await store.get_template(workspace_id, template_id)
        if found is None:
            raise NotFound(f"workspace {workspace_id} has no template {template_id}")
        return found
    where = TemplateFilter(provider_id=provider_id)
    matches, _ = await store.list_templates(workspace_id, where, 0, 2)
    if not matches:
        raise NotFound(f"workspace {workspace_id} has no template with Meta id {provider_id}")
    if len(matches) > 1:
        raise Conflict(f"several templates have Meta id {provider_id}; give --id instead")
    return matches[0]


@template.command("create")
@click.option("--workspace", "workspace_id", required=True, help="Workspace id.")
@click.option(
    "--file", "path", required=True, type=click.Path(path_type=Path),
    help="The template as JSON, the API's create body: name, language, category, components.",
)  # fmt: skip
@click.option(
    "--waba-id", callback=digits,
    help="The WABA to create it in (needed when the workspace has several channels).",
)  # fmt: skip
@click.option(
    "--wait", is_flag=True,
    help="Then wait for Meta's review: exit 0 APPROVED, 3 another final status, 4 timed out.",
)  # fmt: skip
@click.option(
    "--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=600.0,
    show_default=True, help="Seconds --wait waits at most.",
)  # fmt: skip
def template_create(
    workspace_id: str, path: Path, waba_id: str | None, wait: bool, timeout_s: float
) -> None:
    """Create a template at Meta and register it here; prints its local id.

    --wait then waits for Meta's verdict as this service records it (so `serve` must be
    receiving Meta's webhooks, or polling): exit 0 APPROVED, 3 another final status
    (REJECTED, PAUSED, DISABLED ...: the status and reason on stderr), 4 when --timeout
    runs out, 130 on Ctrl-C. The template stays created whatever the wait's outcome.
    """
    new = read_draft(path, waba_id)

    async def create(writer: TemplateWriter, store: Store) -> Template:
        return await writer.create(workspace_id, new, now_ms())

    created = write(str(path), create)
    click.echo(str(created.id))
    if wait:
        sys.exit(wait_for_verdict(created, timeout_s))


@template.command("delete")
@click.option("--workspace", "workspace_id", required=True, help="Workspace id.")
@click.argument("template_id", type=click.IntRange(min=1))
@yes_flag
def template_delete(workspace_id: str, template_id: int, yes: bool) -> None:
    """Delete a template's language at Meta; here it stays, DELETED, with its history.

    Meta keeps the name and language of a once approved template taken for about 30 days.
    """

    async def delete(writer: TemplateWriter, store: Store) -> Template:
        found = await find_template(store, workspace_id, template_id, None)
        if found.status != DELETED:
            confirm(
                f"Delete template {found.id} ({found.name}, {found.language}, {found.status}; "
                f"Meta id {found.provider_id}) at Meta? This cannot be undone.",
                yes,
            )
        return await writer.delete(workspace_id, found.id, now_ms())

    deleted = write(f"template {template_id}", delete)
    click.echo(
        f"deleted template {deleted.id} ({deleted.name}, {deleted.language}; Meta id "
        f"{deleted.provider_id}) at Meta; it stays here as DELETED with its history",
        err=True,
    )


@template.command("remove")
@click.option("--workspace", "workspace_id", required=True, help="Workspace id.")
@click.option("--id", "template_id", type=click.IntRange(min=1), help="Its id here.")
@click.option("--provider-id", callback=digits, help="Meta's template id.")
@yes_flag
def template_remove(
    workspace_id: str, template_id: int | None, provider_id: str | None, yes: bool
) -> None:
    """Remove a template and its history from this service (never from Meta).

    Meta keeps the template: a webhook Meta sends for it, or 'import', adds it again.
    """
    if (template_id is None) == (provider_id is None):
        raise click.UsageError("give exactly one of --id or --provider-id")

    async def remove(store: Store) -> Template:
        found = await find_template(store, workspace_id, template_id, provider_id)
        events = len(await store.template_history(workspace_id, found.id) or [])
        confirm(
            f"Remove template {found.id} ({found.name}, {found.language}, {found.status}; "
            f"Meta id {found.provider_id}) and its {events} history event(s) from this "
            "service? Meta keeps it.",
            yes,
        )
        await store.remove_template(workspace_id, found.id)
        return found

    removed = with_store(load_settings(), remove)
    click.echo(f"removed template {removed.id} (Meta id {removed.provider_id})", err=True)


@click.command()
@click.option("--workspace", "workspace_id", required=True, help="Workspace id.")
@click.option("--status", help="Only these statuses (comma-separated).")
@json_list_flag
def templates(workspace_id: str, status: str | None, as_json: bool) -> None:
    """Print a table of a workspace's templates and their statuses."""
    statuses = tuple(s.strip().upper() for s in (status or "").split(",") if s.strip())

    async def fetch(store: Store) -> list[Template]:
        await existing_workspace(store, workspace_id)
        found, _ = await store.list_templates(workspace_id, TemplateFilter(statuses), 0, 10**9)
        return found

    found = with_store(load_settings(), fetch)
    if as_json:
        print_json([dataclasses.asdict(t) for t in found])
        return
    print_table(
        ("ID", "PROVIDER_ID", "NAME", "LANGUAGE", "STATUS", "SOURCE"),
        [(str(t.id), t.provider_id, t.name, t.language, t.status, t.status_source) for t in found],
    )
