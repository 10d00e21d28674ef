"""Store methods of the templates the API writes at Meta (design section 12): created, found
by name and language, edited, deleted.

Each stores what events.py decides (`registered`, `api_edit`, `api_delete`; history source
"api") through template_rows.py's statements, as every other path does, so the outbox's
fan-out notifies of them like of any other change.
"""

from __future__ import annotations

from collections.abc import Callable

from ..events import TemplateState, Transition, api_delete, api_edit
from .models import NewTemplate, NotFound, Template
from .template_rows import (
    READ_COLUMNS,
    READ_FIELDS,
    STATE_COLUMNS,
    event_values,
    insert_events,
    state_of,
    to_template,
    update_template,
)
from .templates import insert_registered
from .transactions import Database, Queries, Transaction, fetchrow, read, transaction

# A template as the API shows it and as an observation moves it, by workspace and id.
_COLUMNS = ", ".join(dict.fromkeys(("waba_id", "provider_id", *READ_FIELDS, *STATE_COLUMNS)))
TEMPLATE_AND_STATE = f"SELECT {_COLUMNS} FROM templates WHERE workspace_id = ? AND id = ?"
# The template of a name and language in a WABA that is not deleted (templates_name index).
LIVE_TEMPLATE = (
    f"SELECT {READ_COLUMNS} FROM templates WHERE waba_id = ? AND name = ? AND language = ? "
    "AND status <> 'DELETED' AND workspace_id = ? ORDER BY id LIMIT 1"
)
BY_PROVIDER_ID = f"SELECT {READ_COLUMNS} FROM templates WHERE waba_id = ? AND provider_id = ?"


class TemplateWriteQueries(Queries):
    @transaction
    def record_api_create(self, new: NewTemplate, now_ms: int) -> Transaction[Template]:
        """A template the API created at Meta, stored with Meta's id, status and category as
        add_template stores one (a CREATED row, then its status's). When a webhook made it
        known first (Meta reviewed it before this was stored), that one is newer: it is
        returned as it is. NotFound unless the WABA is a channel of the workspace."""
        row = yield from insert_registered(self._db, new, now_ms)
        if row is None:
            row = yield fetchrow(BY_PROVIDER_ID, new.waba_id, new.provider_id)
        return to_template(row)

    @read
    def find_live_template(
        self, workspace_id: str, waba_id: str, name: str, language: str
    ) -> Transaction[Template | None]:
        """The workspace's template of `name` and `language` in the WABA that is not DELETED
        (the API's 409 before it asks Meta)."""
        row = yield fetchrow(LIVE_TEMPLATE, waba_id, name, language, workspace_id)
        return to_template(row) if row else None

    @transaction
    def record_api_edit(
        self, workspace_id: str, template_id: int, category: str | None, now_ms: int
    ) -> Transaction[Template]:
        """An edit the API made at Meta (events.api_edit): PENDING, in `category` if given.
        NotFound unless the workspace has the template."""
        return (
            yield from _observe(
                self._db, workspace_id, template_id, lambda s: api_edit(s, category, now_ms)
            )
        )

    @transaction
    def record_api_delete(
        self, workspace_id: str, template_id: int, now_ms: int
    ) -> Transaction[Template]:
        """A deletion the API made at Meta (events.api_delete): DELETED, the row and its
        history kept. NotFound unless the workspace has the template."""
        return (
            yield from _observe(
                self._db, workspace_id, template_id, lambda s: api_delete(s, now_ms)
            )
        )


def _observe(
    db: Database,
    workspace_id: str,
    template_id: int,
    observe: Callable[[TemplateState], Transition],
) -> Transaction[Template]:
    """Lock the template, apply `observe` to its state and write what it returns; the
    template as it is then."""
    row = yield fetchrow(TEMPLATE_AND_STATE + db.for_update, workspace_id, template_id)
    if row is None:
        raise NotFound(f"workspace {workspace_id} has no template {template_id}")
    before = state_of(row)
    done = observe(before)
    if done.state != before:
        yield from update_template(template_id, done.state)
    history = [
        event_values(r, template_id, row["waba_id"], row["provider_id"], before=before)
        for r in done.rows
    ]
    yield from insert_events(db, history)
    after = row | done.state._asdict()
    return to_template({name: after[name] for name in READ_FIELDS})
