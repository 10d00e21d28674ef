"""Design section 6's event -> status table, as pure functions."""

from __future__ import annotations

import pytest

from service.events import (
    CATEGORY_FIELD,
    QUALITY_FIELD,
    STATUS_EVENTS,
    STATUS_FIELD,
    Change,
    TemplateState,
    apply_change,
    apply_status_event,
    next_pending_since,
    normalise_reason,
)

APPROVED = TemplateState(status="APPROVED")


@pytest.mark.parametrize("event", sorted(STATUS_EVENTS))
def test_status_events_become_the_status(event: str) -> None:
    before = TemplateState(status="PENDING", rejected_reason="SCAM", flagged=True)
    outcome = apply_status_event(before, event, "INVALID_FORMAT")
    assert outcome.applied and outcome.state.status == event
    assert outcome.state.rejected_reason == ("INVALID_FORMAT" if event == "REJECTED" else None)
    assert outcome.state.flagged is True  # only REINSTATED clears the flag


def test_flagged_keeps_the_status_and_sets_the_flag() -> None:
    outcome = apply_status_event(APPROVED, "FLAGGED", None)
    assert outcome.applied and (outcome.state.status, outcome.state.flagged) == ("APPROVED", True)


def test_reinstated_approves_and_clears_the_flag() -> None:
    flagged = TemplateState(status="DISABLED", flagged=True)
    outcome = apply_status_event(flagged, "REINSTATED", None)
    assert (outcome.state.status, outcome.state.flagged) == ("APPROVED", False)


@pytest.mark.parametrize("before", ["APPROVED", "PAUSED", "REJECTED"])
def test_unarchived_restores_the_status_before_archived(before: str) -> None:
    archived = apply_status_event(TemplateState(status=before), "ARCHIVED", None).state
    assert archived.status == "ARCHIVED"
    restored = apply_status_event(archived, "UNARCHIVED", None)
    assert restored.applied and restored.state.status == before


def test_unarchived_without_a_known_previous_status_changes_nothing() -> None:
    outcome = apply_status_event(TemplateState(status="ARCHIVED"), "UNARCHIVED", None)
    assert not outcome.applied and outcome.state.status == "ARCHIVED"


@pytest.mark.parametrize("event", ["LOCKED", "SOMETHING_NEW", ""])
def test_locked_and_unknown_events_change_nothing(event: str) -> None:
    outcome = apply_status_event(APPROVED, event, None)
    assert outcome == type(outcome)(APPROVED, False)


def change(field: str, event: str, previous: str | None = None) -> Change:
    return Change("1", field, event, "2", "n", "en", None, None, 1, previous)


def test_quality_update_sets_the_score() -> None:
    outcome = apply_change(APPROVED, change(QUALITY_FIELD, "RED"))
    assert outcome.applied and outcome.state.quality_score == "RED"


def test_category_changes_only_once_it_has_happened() -> None:
    utility = TemplateState(status="APPROVED", category="UTILITY")
    notice = apply_change(utility, change(CATEGORY_FIELD, "UTILITY"))
    assert not notice.applied and notice.state.category == "UTILITY"
    done = apply_change(utility, change(CATEGORY_FIELD, "MARKETING", previous="UTILITY"))
    assert done.applied and done.state.category == "MARKETING"


def test_status_change_goes_through_the_status_table() -> None:
    assert apply_change(APPROVED, change(STATUS_FIELD, "PAUSED")).state.status == "PAUSED"


def test_dedupe_key_covers_waba_template_field_event_and_time() -> None:
    key = change(STATUS_FIELD, "APPROVED").dedupe_key
    assert len(key) == 77 and key == change(STATUS_FIELD, "APPROVED").dedupe_key
    others = [Change("9", STATUS_FIELD, "APPROVED", "2", "n", "en", None, None, 1),
              Change("1", STATUS_FIELD, "APPROVED", "9", "n", "en", None, None, 1),
              change(QUALITY_FIELD, "APPROVED"), change(STATUS_FIELD, "REJECTED"),
              Change("1", STATUS_FIELD, "APPROVED", "2", "n", "en", None, None, 2)]  # fmt: skip
    assert key not in {other.dedupe_key for other in others}
    renamed = Change("1", STATUS_FIELD, "APPROVED", "2", "other", "pt", None, "X", 1)
    assert renamed.dedupe_key == key  # name, language and reason are not part of the identity


@pytest.mark.parametrize(
    ("raw", "expected"), [("NONE", None), ("none", None), (None, None), ("", None), (3, None),
                          ("SCAM", "SCAM")]
)  # fmt: skip
def test_normalise_reason(raw: object, expected: str | None) -> None:
    assert normalise_reason(raw) == expected


@pytest.mark.parametrize(
    ("before", "after", "current", "expected"),
    [("APPROVED", "PENDING", None, 500), ("PENDING", "IN_APPEAL", 100, 100),
     ("PENDING", "PENDING", 100, 100), ("PENDING", "APPROVED", 100, None),
     ("UNKNOWN", "PENDING", None, 500), ("REJECTED", "PAUSED", None, None)],
)  # fmt: skip
def test_pending_since_marks_when_waiting_began(
    before: str, after: str, current: int | None, expected: int | None
) -> None:
    assert next_pending_since(before, after, current, 500) == expected


def test_dedupe_keys_sort_by_entry_time() -> None:
    times = [1, 999, 1_751_000_000, 1_751_000_001, 2**42 - 1]
    keys = [Change("1", STATUS_FIELD, "APPROVED", "2", None, None, None, None, t).dedupe_key
            for t in times]  # fmt: skip
    assert keys == sorted(keys) and {len(key) for key in keys} == {77}
