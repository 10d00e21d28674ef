"""`template-sync template ...` and `templates`: templates registered here."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import click

from .cli_admin import existing_workspace
from .cli_common import digits, emit, json_flag, load_settings, with_store
from .cli_output import confirm, json_list_flag, print_json, print_table, yes_flag
from .events import STATUS_EVENTS, language_code, template_category
from .storage import Conflict, NewTemplate, NotFound, Store, Template, TemplateFilter
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
