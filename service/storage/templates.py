"""Store methods of the templates: registered, read, brought to Meta's state, removed.

A webhook's changes reach templates through delivery_batch.py; every other write is here.
Both store what events.py decides, through template_rows.py's statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..events import PENDING_STATUSES, HistoryRow, meta_template, observe_meta, registered
from .models import (
    ApiToken,
    Conflict,
    HistoryEvent,
    NewTemplate,
    NotFound,
    PendingTemplate,
    RemoteCounts,
    RemoteTemplate,
    Template,
    TemplateFilter,
)
from .template_rows import (
    PENDING_IN,
    READ_COLUMNS,
    READ_FIELDS,
    STATE_SELECT,
    event_values,
    insert_events,
    insert_template,
    state_of,
    template_values,
    to_template,
    update_template,
)
from .tenants import TOKEN_FIELDS, read_only_flag
from .transactions import (
    Database,
    Queries,
    Transaction,
    execute,
    fetch,
    fetchrow,
    lookup,
    read,
    transaction,
)

# A token and its workspace's template (NULLs when there is none): a template GET's reads
# in one statement (bench/RESULTS.md, "Why the code is as it is").
TOKEN_AND_TEMPLATE = (
    f"SELECT {', '.join(f'k.{name} AS token_{name}' for name in TOKEN_FIELDS)}, "
    f"{', '.join(f't.{name}' for name in READ_FIELDS)} "
    "FROM api_tokens AS k LEFT JOIN templates AS t "
    "ON t.workspace_id = k.workspace_id AND t.id = ? WHERE k.id = ?"
)
# A template's history, or one row of NULLs when it has none; no row when it is not there.
HISTORY_SQL = (
    f"SELECT {', '.join(f'e.{name}' for name in ('id', *HistoryRow._fields))} "
    "FROM templates AS t LEFT JOIN template_events AS e ON e.template_id = t.id "
    "WHERE t.workspace_id = ? AND t.id = ? ORDER BY e.id"
)


class TemplateQueries(Queries):
    @transaction
    def add_template(self, new: NewTemplate, now_ms: int) -> Transaction[Template]:
        row = yield from insert_registered(self._db, new, now_ms)
        if row is None:
            raise Conflict(f"template {new.provider_id} of WABA {new.waba_id} exists already")
        return to_template(row)

    @read
    def list_templates(
        self, workspace_id: str, where: TemplateFilter, offset: int, limit: int
    ) -> Transaction[tuple[list[Template], int]]:
        """A page of the matching templates and the count of all of them, from one statement
        (two reads could count a template a webhook added between them, or miss it); a page
        past the end is one row of the count alone."""
        clause, args = _template_filter(workspace_id, where)
        rows = yield fetch(
            f"SELECT c.total_matching, p.* FROM (SELECT COUNT(*) AS total_matching "
            f"FROM templates WHERE {clause}) AS c LEFT JOIN (SELECT {READ_COLUMNS} "
            f"FROM templates WHERE {clause} ORDER BY id LIMIT ? OFFSET ?) AS p ON true "
            "ORDER BY p.id",
            *args,
            *args,
            limit,
            offset,
        )
        total = int(rows[0]["total_matching"]) if rows else 0
        page = [_without(row, "total_matching") for row in rows if row["id"] is not None]
        return [to_template(row) for row in page], total

    @lookup
    def get_template(self, workspace_id: str, template_id: int) -> Transaction[Template | None]:
        row = yield fetchrow(
            f"SELECT {READ_COLUMNS} FROM templates WHERE workspace_id = ? AND id = ?",
            workspace_id,
            template_id,
        )
        return to_template(row) if row else None

    @lookup
    def find_token_and_template(
        self, token_id: str, template_id: int
    ) -> Transaction[tuple[ApiToken | None, Template | None]]:
        """The token, and its workspace's template `template_id` when there is one."""
        row = yield fetchrow(TOKEN_AND_TEMPLATE, template_id, token_id)
        if row is None:
            return None, None
        fields = {name: row.pop(f"token_{name}") for name in TOKEN_FIELDS}
        token = ApiToken(**read_only_flag(fields))
        return token, to_template(row) if row["id"] is not None else None

    @read
    def template_history(
        self, workspace_id: str, template_id: int
    ) -> Transaction[list[HistoryEvent] | None]:
        rows = yield fetch(HISTORY_SQL, workspace_id, template_id)
        if not rows:
            return None
        return [_history_event(row) for row in rows if row["id"] is not None]

    @transaction
    def remove_template(self, workspace_id: str, template_id: int) -> Transaction[None]:
        """Delete one of the workspace's templates and its history."""
        if not (
            yield fetchrow(
                "SELECT id FROM templates WHERE workspace_id = ? AND id = ?" + self._db.for_update,
                workspace_id,
                template_id,
            )
        ):
            raise NotFound(f"workspace {workspace_id} has no template {template_id}")
        yield execute("DELETE FROM template_events WHERE template_id = ?", template_id)
        yield execute("DELETE FROM templates WHERE id = ?", template_id)

    @read
    def pending_templates(self, workspace_id: str) -> Transaction[list[PendingTemplate]]:
        rows = yield fetch(
            "SELECT id, waba_id, provider_id FROM templates "
            f"WHERE workspace_id = ? AND {PENDING_IN} ORDER BY id",
            workspace_id,
        )
        return [PendingTemplate(**row) for row in rows]

    @read
    def template_counts(self, workspace_id: str) -> Transaction[dict[str, int]]:
        """How many templates each WABA of the workspace has here (to choose a strategy)."""
        rows = yield fetch(
            "SELECT waba_id, COUNT(*) AS n FROM templates WHERE workspace_id = ? GROUP BY waba_id",
            workspace_id,
        )
        return {row["waba_id"]: int(row["n"]) for row in rows}

    @transaction
    def apply_remote(
        self,
        workspace_id: str,
        waba_id: str,
        templates: Sequence[RemoteTemplate],
        now_ms: int,
        create: bool,
        keep_decided: bool = False,
    ) -> Transaction[RemoteCounts]:
        """Bring matched templates to Meta's state (events.observe_meta: history source
        "sync"); with `create`, add those not here (an import). With `keep_decided` (an
        upstream's view, which may not have heard of a verdict a webhook brought here), only
        templates still pending here take it."""
        counts = {"created": 0, "updated": 0, "unchanged": 0}
        history: list[tuple[Any, ...]] = []
        for remote in templates:
            done = yield from _apply(
                self._db, workspace_id, waba_id, remote, now_ms, history, create, keep_decided
            )
            if done:
                counts[done] += 1
        yield from insert_events(self._db, history)
        return RemoteCounts(**counts)


def insert_registered(
    db: Database, new: NewTemplate, now_ms: int
) -> Transaction[dict[str, Any] | None]:
    """Store `new` as events.registered has it, with its history (source "api"): its row's
    READ_FIELDS, or None when its WABA has a template of its provider id already. NotFound
    unless the WABA is a channel of the workspace."""
    created = registered(new.status, new.category, now_ms)
    owner = yield fetchrow("SELECT workspace_id FROM channels WHERE waba_id = ?", new.waba_id)
    if owner is None or owner["workspace_id"] != new.workspace_id:
        raise NotFound(f"workspace {new.workspace_id} has no channel for WABA {new.waba_id}")
    values = template_values(
        new.workspace_id, new.waba_id, new.provider_id, new.name, new.language,
        created.state, now_ms,
    )  # fmt: skip
    row = yield from insert_template(db, values)
    if row is not None:
        history = [event_values(r, row["id"], new.waba_id, new.provider_id) for r in created.rows]
        yield from insert_events(db, history)
    return row


def _apply(
    db: Database,
    workspace_id: str,
    waba_id: str,
    remote: RemoteTemplate,
    now_ms: int,
    history: list[tuple[Any, ...]],
    create: bool,
    keep_decided: bool,
) -> Transaction[str | None]:
    """Apply Meta's state of one template: "created", "updated", "unchanged", or None when
    it is not here (and not to be created). Its history rows go to `history`."""
    locked = f"SELECT {STATE_SELECT} FROM templates WHERE waba_id = ? AND provider_id = ?"
    row = yield fetchrow(locked + db.for_update, waba_id, remote.id)
    if row is None and create:
        created = meta_template(remote, now_ms)
        new = template_values(
            workspace_id, waba_id, remote.id, remote.name, remote.language, created.state, now_ms
        )
        inserted = yield from insert_template(db, new)
        if inserted is not None:
            history += [event_values(r, inserted["id"], waba_id, remote.id) for r in created.rows]
            return "created"
        row = yield fetchrow(locked + db.for_update, waba_id, remote.id)  # a webhook's, just now
    if row is None:
        return None
    before = state_of(row)
    if keep_decided and before.status not in PENDING_STATUSES:
        return "unchanged"
    transition = observe_meta(before, remote, now_ms)
    yield from update_template(row["id"], transition.state)
    history += [
        event_values(r, row["id"], waba_id, remote.id, before=before) for r in transition.rows
    ]
    return "updated" if transition.rows else "unchanged"


def _history_event(row: dict[str, Any]) -> HistoryEvent:
    fields = HistoryRow(**{name: row[name] for name in HistoryRow._fields})
    return HistoryEvent(row["id"], fields._replace(applied=bool(fields.applied)))


def _without(row: dict[str, Any], column: str) -> dict[str, Any]:
    return {name: value for name, value in row.items() if name != column}


def _template_filter(workspace_id: str, where: TemplateFilter) -> tuple[str, list[Any]]:
    parts, args = ["workspace_id = ?"], [workspace_id]
    if where.statuses:
        parts.append(f"status IN ({', '.join('?' for _ in where.statuses)})")
        args.extend(where.statuses)
    for column in ("name", "language", "provider_id"):
        value = getattr(where, column)
        if value is not None:
            parts.append(f"{column} = ?")
            args.append(value)
    return " AND ".join(parts), args
