"""Template events and the rules that turn them into template state. Pure: no I/O."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from functools import cached_property

STATUS_FIELD = "message_template_status_update"
QUALITY_FIELD = "message_template_quality_update"
CATEGORY_FIELD = "template_category_update"
TEMPLATE_FIELDS = frozenset({STATUS_FIELD, QUALITY_FIELD, CATEGORY_FIELD})

#: Events that become the template's status as they are.
STATUS_EVENTS = frozenset(
    {
        "APPROVED",
        "REJECTED",
        "PENDING",
        "PAUSED",
        "DISABLED",
        "IN_APPEAL",
        "PENDING_DELETION",
        "DELETED",
        "ARCHIVED",
        "LIMIT_EXCEEDED",
    }
)
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
    """`value` as Meta's category, upper case; ValueError when it is not one."""
    if value.upper() not in CATEGORIES:
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
        rather than one per event (bench/RESULTS.md).
        """
        parts = (self.waba_id, self.template_id, self.field, self.event, str(self.entry_time))
        digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
        return f"{self.entry_time:013d}{digest}"  # fixed width for any accepted entry.time


def dedupe_keys_below(entry_time: int) -> str:
    """Every dedupe key of an event whose entry.time (unix seconds) is earlier sorts below
    this, and no other key does."""
    return f"{entry_time:013d}"


@dataclass(frozen=True)
class TemplateState:
    status: str
    rejected_reason: str | None = None
    flagged: bool = False
    status_before_archive: str | None = None
    quality_score: str | None = None
    category: str | None = None


@dataclass(frozen=True)
class Outcome:
    state: TemplateState
    applied: bool  # False: stale, or an event that by rule changes nothing


def apply_status_event(state: TemplateState, event: str, reason: str | None) -> Outcome:
    """Design section 6's event -> status table."""
    if event in STATUS_EVENTS:
        new = replace(
            state,
            status=event,
            rejected_reason=reason if event == "REJECTED" else None,
            status_before_archive=state.status if event == "ARCHIVED" else None,
        )
        return Outcome(new, True)
    if event == "FLAGGED":
        return Outcome(replace(state, flagged=True), True)
    if event == "REINSTATED":
        return Outcome(replace(state, status="APPROVED", flagged=False, rejected_reason=None), True)
    if event == "UNARCHIVED" and state.status_before_archive:
        restored = state.status_before_archive
        return Outcome(replace(state, status=restored, status_before_archive=None), True)
    return Outcome(state, False)  # LOCKED, UNARCHIVED without history, events Meta adds later


def apply_change(state: TemplateState, change: Change) -> Outcome:
    """The effect of one webhook change on a template's state."""
    if change.field == STATUS_FIELD:
        return apply_status_event(state, change.event, change.reason)
    if change.field == QUALITY_FIELD:
        return Outcome(replace(state, quality_score=change.event), True)
    if change.field == CATEGORY_FIELD and change.previous is not None:
        return Outcome(replace(state, category=change.event), True)
    return Outcome(state, False)  # a category notice: the change has not happened yet


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
