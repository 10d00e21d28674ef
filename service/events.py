"""Template events and the rules that turn them into template state. Pure: no I/O.

Every observation of a template goes through one function here, which returns its new state
and its history rows: a webhook change (`observe_change`), Meta's state read by a sync or an
import (`observe_meta`, `meta_template`), a registration through the API or the CLI
(`registered`: also a template the API created at Meta), an edit or a deletion the API made at
Meta (`api_edit`, `api_delete`). The store only writes what they return
(storage/template_rows.py).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple, Protocol

STATUS_FIELD = "message_template_status_update"
QUALITY_FIELD = "message_template_quality_update"
CATEGORY_FIELD = "template_category_update"
WEBHOOK_FIELDS = frozenset({STATUS_FIELD, QUALITY_FIELD, CATEGORY_FIELD})

#: Events that become the template's status as they are.
STATUS_EVENTS = frozenset({
    "APPROVED", "REJECTED", "PENDING", "PAUSED", "DISABLED", "IN_APPEAL", "PENDING_DELETION",
    "DELETED", "ARCHIVED", "LIMIT_EXCEEDED",
})  # fmt: skip
PENDING_STATUSES = frozenset({"PENDING", "IN_APPEAL"})
#: Status of a template created from an event that does not say its status.
UNKNOWN_STATUS = "UNKNOWN"
#: Meta's template categories.
CATEGORIES = frozenset({"AUTHENTICATION", "MARKETING", "UTILITY"})
# Meta's template language codes: a language of two or three lower-case letters (`en`, `fil`),
# optionally `_` and a region of two upper-case letters (`en_US`, `prs_AF`). A shape rather
# than Meta's list, which grows. Meta's codes are case-sensitive: `en_us`, `en-US` are not.
LANGUAGE_CODE = re.compile(r"[a-z]{2,3}(_[A-Z]{2})?")


def template_category(value: str) -> str:
    """`value` as Meta's category, upper case; ValueError when it is not one (ASCII only:
    `str.upper` would map a dotless i or a long s to ASCII letters)."""
    if not value.isascii() or value.upper() not in CATEGORIES:
        raise ValueError(f"must be one of {', '.join(sorted(CATEGORIES))} (any case)")
    return value.upper()


def language_code(value: str) -> str:
    """`value` when it is shaped like Meta's template language codes; ValueError if not."""
    if not LANGUAGE_CODE.fullmatch(value):
        raise ValueError("must be a Meta language code such as en, en_US, pt_BR or fil")
    return value


@dataclass(frozen=True)
class Change:
    """One template change of a webhook delivery (one `entry[].changes[]` item)."""

    waba_id: str
    field: str
    event: str  # status event, new quality score or new category
    template_id: str
    name: str | None
    language: str | None
    category: str | None
    reason: str | None
    entry_time: int  # entry.time, unix seconds
    previous: str | None = None  # previous_category of a completed category change

    @cached_property
    def dedupe_key(self) -> str:
        """entry.time, then SHA-256 of (WABA, template, field, event, entry.time).

        The hash gives any event a fixed size for the unique index; the leading time makes
        new keys land together at the index's end, so a commit writes a few of its pages
        rather than one per event (bench/RESULTS.md, "Why the code is as it is").
        """
        parts = (self.waba_id, self.template_id, self.field, self.event, str(self.entry_time))
        digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
        return f"{self.entry_time:013d}{digest}"  # fixed width for any accepted entry.time


def dedupe_keys_below(entry_time: int) -> str:
    """Every dedupe key of an event whose entry.time (unix seconds) is earlier sorts below
    this, and no other key does."""
    return f"{entry_time:013d}"


#: Who observed a state: the `source` of its history rows and the template's `status_source`.
WEBHOOK, SYNC, API = "webhook", "sync", "api"  # import observes as sync does
#: History rows say what they concern in one vocabulary, whatever their source (design 5).
STATUS, QUALITY, CATEGORY, TEMPLATE = "status", "quality_score", "category", "template"
HISTORY_FIELDS = {STATUS_FIELD: STATUS, QUALITY_FIELD: QUALITY, CATEGORY_FIELD: CATEGORY}
#: The event of a template's first history row (field TEMPLATE): it became known here.
CREATED = "CREATED"
#: The notification each applied history row is, by the row's field (design section 11).
EVENT_TYPES = {
    TEMPLATE: "template.created",
    STATUS: "template.status_changed",
    QUALITY: "template.quality_changed",
    CATEGORY: "template.category_changed",
}


class TemplateState(NamedTuple):
    """Every column of a template that an observation moves (times in ms since the epoch),
    in the order the store writes them. A named tuple: the webhook path builds one per
    change, and a tuple is built in a fifth of a frozen dataclass's time."""

    status: str
    rejected_reason: str | None = None
    flagged: bool = False
    status_before_archive: str | None = None
    quality_score: str | None = None
    category: str | None = None
    status_event_at: int = 0  # when the status applied was true: entry.time, or a sync's time
    pending_since: int | None = None
    status_source: str = API
    status_updated_at: int = 0
    last_webhook_at: int | None = None
    last_synced_at: int | None = None
    updated_at: int = 0


class HistoryRow(NamedTuple):
    """One row of a template's history, as the API shows it."""

    field: str  # STATUS, QUALITY or CATEGORY
    event: str
    old_status: str | None
    new_status: str | None
    source: str
    event_time: int | None
    received_at: int
    reason: str | None
    applied: bool


class Outcome(NamedTuple):
    state: TemplateState
    applied: bool  # False: stale, or an event that by rule changes nothing


class Transition(NamedTuple):
    """What one observation does: the template's new state and its history rows."""

    state: TemplateState
    rows: tuple[HistoryRow, ...]
    stale: bool = False  # a status event older than the template's status


class MetaView(Protocol):
    """Meta's state of a template as the Graph API reports it (to sync and import)."""

    @property
    def status(self) -> str: ...
    @property
    def rejected_reason(self) -> str | None: ...
    @property
    def quality_score(self) -> str | None: ...
    @property
    def category(self) -> str | None: ...


def apply_status_event(state: TemplateState, event: str, reason: str | None) -> Outcome:
    """Design section 6's event -> status table."""
    if event in STATUS_EVENTS:
        return Outcome(_take_status(state, event, reason), True)
    if event == "FLAGGED":
        return Outcome(state._replace(flagged=True), True)
    if event == "REINSTATED":
        return Outcome(state._replace(status="APPROVED", flagged=False, rejected_reason=None), True)
    if event == "UNARCHIVED" and state.status_before_archive:
        restored = state.status_before_archive
        return Outcome(state._replace(status=restored, status_before_archive=None), True)
    return Outcome(state, False)  # LOCKED, UNARCHIVED without history, events Meta adds later


def _take_status(state: TemplateState, status: str, reason: str | None) -> TemplateState:
    """`status` as it is, from a status event or Meta's state: the rejection reason only
    while REJECTED, and the status before ARCHIVED kept until the template leaves it."""
    if status != "ARCHIVED":
        before_archive = None
    elif state.status != "ARCHIVED":
        before_archive = state.status
    else:
        before_archive = state.status_before_archive  # archived again: still the same one
    rejected_reason = reason if status == "REJECTED" else None
    # Positional (as in _settle), the columns after status_before_archive as they are.
    return TemplateState(status, rejected_reason, state.flagged, before_archive, *state[4:])


def apply_change(state: TemplateState, change: Change) -> Outcome:
    """The effect of one webhook change on a template's state (what it moves, not when)."""
    if change.field == STATUS_FIELD:
        return apply_status_event(state, change.event, change.reason)
    if change.field == QUALITY_FIELD:
        return Outcome(state._replace(quality_score=change.event), True)
    if change.field == CATEGORY_FIELD and change.previous is not None:
        return Outcome(state._replace(category=change.event), True)
    return Outcome(state, False)  # a category notice: the change has not happened yet


def observe_change(state: TemplateState, change: Change, now_ms: int) -> Transition:
    """A webhook change received at `now_ms`: one history row, applied or not. A status
    event older than the template's status (whole seconds: Meta's times are) is stale."""
    is_status = change.field == STATUS_FIELD
    event_ms = change.entry_time * 1000
    stale = is_status and change.entry_time < state.status_event_at // 1000
    after, applied = (state, False) if stale else apply_change(state, change)
    status_at = state.status_event_at
    if is_status and applied and event_ms > status_at:
        status_at = event_ms
    row = HistoryRow(
        HISTORY_FIELDS.get(change.field, change.field), change.event,
        state.status if is_status else None, after.status if is_status else None,
        WEBHOOK, event_ms, now_ms, change.reason, applied,
    )  # fmt: skip
    return Transition(_settle(state, after, WEBHOOK, now_ms, status_at), (row,), stale)


def observe_meta(state: TemplateState, meta: MetaView, now_ms: int) -> Transition:
    """Meta's state as a sync or an import read it at `now_ms`. It is Meta's present, so
    it always applies; a status it moves dates from `now_ms`, one it confirms keeps its
    time (Meta does not say since when it holds, and dating it `now_ms` would make a
    webhook sent just before the read look stale). Meta's silence about the quality or the
    category keeps ours. Its status ARCHIVED records the status before it, as the event
    does; any other status clears that: a template Meta no longer has archived simply takes
    Meta's status. One history row per field that changed: status (or its rejection
    reason), quality_score, category."""
    reason = meta.rejected_reason if meta.status == "REJECTED" else None
    after = state
    if (meta.status, reason) != (state.status, state.rejected_reason):
        after = _take_status(state, meta.status, reason)
    after = after._replace(
        quality_score=meta.quality_score or state.quality_score,
        category=meta.category or state.category,
    )
    return _present(state, after, SYNC, now_ms)


def api_edit(state: TemplateState, category: str | None, now_ms: int) -> Transition:
    """An edit the API made at Meta at `now_ms`: Meta reviews every edit, so the template
    is PENDING again (a rejection reason gone), in `category` when the edit asked for one.
    Like a sync, it is the present and dates a status it moves: a webhook about the
    template before the edit is stale."""
    after = _take_status(state, "PENDING", None)
    return _present(state, after._replace(category=category or state.category), API, now_ms)


def api_delete(state: TemplateState, now_ms: int) -> Transition:
    """A deletion the API made at Meta at `now_ms`: the template is DELETED, and stays here
    with its history (Meta keeps the name taken for a while; design section 12)."""
    return _present(state, _take_status(state, "DELETED", None), API, now_ms)


def _present(before: TemplateState, after: TemplateState, source: str, now_ms: int) -> Transition:
    """`after`, the template's state as `source` (a sync, an import or the API) knows it at
    `now_ms`: one history row per field that changed, status (or its rejection reason),
    quality_score, category; a status it moves dates from `now_ms`, one it keeps keeps its
    time."""
    rows = []
    if (after.status, after.rejected_reason) != (before.status, before.rejected_reason):
        rows.append(_status_row(source, before.status, after, now_ms))
    for field, old, new in ((QUALITY, before.quality_score, after.quality_score),
                            (CATEGORY, before.category, after.category)):  # fmt: skip
        if new is not None and new != old:
            rows.append(HistoryRow(field, new, None, None, source, now_ms, now_ms, None, True))
    status_at = now_ms if after.status != before.status else before.status_event_at
    return Transition(_settle(before, after, source, now_ms, status_at), tuple(rows))


def meta_template(meta: MetaView, now_ms: int) -> Transition:
    """A template an import finds at Meta and not here: Meta's state, one history row."""
    reason = meta.rejected_reason if meta.status == "REJECTED" else None
    state = TemplateState(
        meta.status, reason, quality_score=meta.quality_score, category=meta.category,
        status_event_at=now_ms, last_synced_at=now_ms,
    )  # fmt: skip
    return _created(state, SYNC, now_ms)


def registered(status: str, category: str | None, now_ms: int) -> Transition:
    """A template registered through the API or the CLI with the status it has at Meta.
    That is the operator's word, not an observation of Meta's: it has no time (0), so any
    webhook about the template is newer."""
    return _created(TemplateState(status, category=category), API, now_ms)


def webhook_template(change: Change, now_ms: int) -> Transition:
    """A template that a webhook names before it is known here, before `change` applies:
    its status is unknown until a status event says it. Its one row says it was created."""
    state = TemplateState(
        UNKNOWN_STATUS, category=change.category, status_source=WEBHOOK,
        status_updated_at=now_ms, updated_at=now_ms,
    )  # fmt: skip
    return Transition(state, (created_row(state, WEBHOOK, now_ms),))


def created_row(state: TemplateState, source: str, now_ms: int) -> HistoryRow:
    """The first history row of a template that became known here, with its status then."""
    return HistoryRow(TEMPLATE, CREATED, None, state.status, source, now_ms, now_ms, None, True)


def _created(state: TemplateState, source: str, now_ms: int) -> Transition:
    """A template created with `state` by `source`: a row saying so, then its status's."""
    pending_since = now_ms if state.status in PENDING_STATUSES else None
    state = state._replace(
        pending_since=pending_since, status_source=source, status_updated_at=now_ms,
        updated_at=now_ms,
    )  # fmt: skip
    rows = (created_row(state, source, now_ms), _status_row(source, None, state, now_ms))
    return Transition(state, rows)


def _status_row(source: str, old: str | None, state: TemplateState, now_ms: int) -> HistoryRow:
    """The history row of a status seen at `now_ms` by a sync, an import or the API."""
    return HistoryRow(
        STATUS, state.status, old, state.status, source, now_ms, now_ms, state.rejected_reason,
        True,
    )  # fmt: skip


def _settle(
    before: TemplateState, after: TemplateState, source: str, now_ms: int, status_at: int
) -> TemplateState:
    """What every observation records besides its effect: the status's time, when the
    template became pending, who moved its status and when, when each source last spoke,
    and when the template last changed (its status or anything else the API shows)."""
    moved = after.status != before.status
    changed = moved or _shown(after) != _shown(before)
    # Positional, in TemplateState's order (the effect's six columns first): the webhook
    # path builds one per change, and this is a third of _replace()'s time.
    return TemplateState(
        *after[:6],
        status_at,
        next_pending_since(before.status, after.status, before.pending_since, now_ms),
        source if moved else before.status_source,
        now_ms if moved else before.status_updated_at,
        now_ms if source == WEBHOOK else before.last_webhook_at,
        now_ms if source == SYNC else before.last_synced_at,
        now_ms if changed else before.updated_at,
    )


def _shown(state: TemplateState) -> tuple[object, ...]:
    """What the API shows of a template's state (besides the times)."""
    return state.rejected_reason, state.flagged, state.quality_score, state.category


def next_pending_since(before: str, after: str, current: int | None, now_ms: int) -> int | None:
    """When the template became pending: kept while pending, set on entry, cleared on exit."""
    if after not in PENDING_STATUSES:
        return None
    return current if before in PENDING_STATUSES else now_ms


def normalise_reason(reason: object) -> str | None:
    """Meta's rejection reason, with its "NONE" placeholder read as no reason."""
    if not isinstance(reason, str) or not reason or reason.upper() == "NONE":
        return None
    return reason
