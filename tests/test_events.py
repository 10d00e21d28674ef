"""Design section 6's event -> status table, as pure functions."""

from __future__ import annotations

from typing import Any

import pytest

from service.events import (
    CATEGORY_FIELD,
    EVENT_TYPES,
    HISTORY_FIELDS,
    QUALITY_FIELD,
    STATUS_EVENTS,
    STATUS_FIELD,
    Change,
    HistoryRow,
    TemplateState,
    api_delete,
    api_edit,
    apply_change,
    apply_status_event,
    created_row,
    meta_template,
    next_pending_since,
    normalise_reason,
    observe_change,
    observe_meta,
    registered,
    webhook_template,
)
from service.graph import GraphTemplate

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


# --- observations: a webhook change, Meta's state seen by sync or import, an API write ---

T0 = 1_751_000_000_000  # ms; the template's last status time
NOW = T0 + 60_000  # when the observation is received


def stored(status: str = "PENDING", **fields: Any) -> TemplateState:
    """A template as stored: its status dated T0, by the API, pending since T0 if pending."""
    pending_since = T0 if status in ("PENDING", "IN_APPEAL") else None
    state = TemplateState(status, status_event_at=T0, pending_since=pending_since,
                          status_updated_at=T0, updated_at=T0)  # fmt: skip
    return state._replace(**fields)


def at(
    field: str,
    event: str,
    entry_ms: int,
    reason: str | None = None,
    previous: str | None = None,
    category: str | None = None,
) -> Change:
    """A webhook change of entry.time `entry_ms` (whole seconds, as Meta's are)."""
    return Change("1", field, event, "2", "n", "en", category, reason, entry_ms // 1000, previous)


def meta(status: str, reason: str | None = None, quality: str | None = None,
         category: str | None = None) -> GraphTemplate:  # fmt: skip
    return GraphTemplate("2", "n", "en", status, category, reason, quality)


def test_a_status_event_moves_the_status_and_says_who_and_when() -> None:
    done = observe_change(stored(), at(STATUS_FIELD, "APPROVED", T0 + 5000), NOW)
    assert done.rows == (HistoryRow("status", "APPROVED", "PENDING", "APPROVED", "webhook",
                                    T0 + 5000, NOW, None, True),)  # fmt: skip
    assert not done.stale and done.state == stored("APPROVED")._replace(
        status_event_at=T0 + 5000, status_source="webhook", status_updated_at=NOW,
        last_webhook_at=NOW, updated_at=NOW,
    )  # fmt: skip


def test_a_status_event_older_in_whole_seconds_is_stale_and_only_recorded() -> None:
    synced = stored(status_event_at=T0 + 999)  # a sync's time has milliseconds
    same_second = observe_change(synced, at(STATUS_FIELD, "APPROVED", T0), NOW)
    assert not same_second.stale and same_second.state.status == "APPROVED"
    older = observe_change(synced, at(STATUS_FIELD, "APPROVED", T0 - 1000), NOW)
    assert older.stale and older.rows[0].applied is False
    assert older.rows[0][:4] == ("status", "APPROVED", "PENDING", "PENDING")
    assert older.state == synced._replace(last_webhook_at=NOW)  # nothing else moves


def test_quality_and_category_events_are_never_stale_and_leave_the_status_time() -> None:
    before = stored("APPROVED", category="UTILITY")
    quality = observe_change(before, at(QUALITY_FIELD, "RED", T0 - 5000), NOW)
    assert quality.rows == (HistoryRow("quality_score", "RED", None, None, "webhook",
                                       T0 - 5000, NOW, None, True),)  # fmt: skip
    assert quality.state == before._replace(quality_score="RED", last_webhook_at=NOW,
                                            updated_at=NOW)  # fmt: skip
    notice = observe_change(before, at(CATEGORY_FIELD, "MARKETING", T0), NOW)
    assert notice.rows[0][:2] == ("category", "MARKETING") and not notice.rows[0].applied
    assert notice.state == before._replace(last_webhook_at=NOW)


def test_flagged_dates_the_status_and_changes_the_template_without_moving_its_status() -> None:
    done = observe_change(stored("APPROVED"), at(STATUS_FIELD, "FLAGGED", T0 + 1000), NOW)
    assert done.state == stored("APPROVED")._replace(
        flagged=True, status_event_at=T0 + 1000, last_webhook_at=NOW, updated_at=NOW
    )


@pytest.mark.parametrize(
    ("before", "event", "after", "pending_since"),
    [("APPROVED", "PENDING", "PENDING", NOW), ("PENDING", "IN_APPEAL", "IN_APPEAL", T0),
     ("PENDING", "REJECTED", "REJECTED", None)],
)  # fmt: skip
def test_pending_since_is_set_kept_and_cleared_by_any_observation(
    before: str, event: str, after: str, pending_since: int | None
) -> None:
    by_webhook = observe_change(stored(before), at(STATUS_FIELD, event, T0 + 1000), NOW)
    by_sync = observe_meta(stored(before), meta(event), NOW)
    for done in (by_webhook, by_sync):
        assert (done.state.status, done.state.pending_since) == (after, pending_since)


def test_archived_again_keeps_the_status_from_before_the_first() -> None:
    once = observe_change(stored("PAUSED"), at(STATUS_FIELD, "ARCHIVED", T0 + 1000), NOW).state
    twice = observe_change(once, at(STATUS_FIELD, "ARCHIVED", T0 + 2000), NOW).state
    assert twice.status_before_archive == "PAUSED"
    assert observe_meta(twice, meta("ARCHIVED"), NOW).state.status_before_archive == "PAUSED"
    restored = observe_change(twice, at(STATUS_FIELD, "UNARCHIVED", T0 + 3000), NOW)
    assert restored.state.status == "PAUSED" and restored.rows[0].applied


def test_unarchived_restores_the_status_a_sync_saw_before_meta_archived_it() -> None:
    archived = observe_meta(stored("APPROVED"), meta("ARCHIVED"), NOW)
    assert archived.state.status_before_archive == "APPROVED"
    assert archived.rows == (HistoryRow("status", "ARCHIVED", "APPROVED", "ARCHIVED", "sync",
                                        NOW, NOW, None, True),)  # fmt: skip
    later = NOW + 60_000
    restored = observe_change(archived.state, at(STATUS_FIELD, "UNARCHIVED", later), later)
    assert restored.state.status == "APPROVED" and restored.rows[0].applied


def test_a_sync_that_finds_the_template_no_longer_archived_takes_metas_status() -> None:
    archived = stored("ARCHIVED", status_before_archive="APPROVED")
    done = observe_meta(archived, meta("PAUSED"), NOW)
    assert (done.state.status, done.state.status_before_archive) == ("PAUSED", None)
    assert [row[:4] for row in done.rows] == [("status", "PAUSED", "ARCHIVED", "PAUSED")]


def test_a_sync_writes_one_row_per_field_that_changed_and_metas_silence_keeps_ours() -> None:
    before = stored("PENDING", quality_score="GREEN", category="UTILITY")
    done = observe_meta(before, meta("REJECTED", "SCAM", "RED", "MARKETING"), NOW)
    assert done.rows == (
        HistoryRow("status", "REJECTED", "PENDING", "REJECTED", "sync", NOW, NOW, "SCAM", True),
        HistoryRow("quality_score", "RED", None, None, "sync", NOW, NOW, None, True),
        HistoryRow("category", "MARKETING", None, None, "sync", NOW, NOW, None, True),
    )
    silent = observe_meta(done.state, meta("REJECTED", "SCAM"), NOW + 1)
    assert silent.rows == () and silent.state == done.state._replace(last_synced_at=NOW + 1)


def test_a_sync_keeps_a_rejection_reason_only_while_rejected_and_records_a_new_one() -> None:
    rejected = stored("REJECTED", rejected_reason="SCAM")
    new_reason = observe_meta(rejected, meta("REJECTED", "INVALID_FORMAT"), NOW)
    assert [row[:4] for row in new_reason.rows] == [("status", "REJECTED", "REJECTED", "REJECTED")]
    assert new_reason.state.status_source == "api"  # the status itself did not move
    assert observe_meta(rejected, meta("APPROVED", "SCAM"), NOW).state.rejected_reason is None


def test_a_sync_is_metas_present_never_stale_and_dates_only_a_status_it_moves() -> None:
    ahead = stored("PENDING", status_event_at=NOW + 10_000)  # a webhook from Meta's clock
    done = observe_meta(ahead, meta("APPROVED"), NOW)
    assert (done.state.status, done.state.status_event_at) == ("APPROVED", NOW)
    assert (done.state.status_source, done.state.last_synced_at) == ("sync", NOW)
    confirmed = observe_meta(stored("PENDING"), meta("PENDING"), NOW)
    assert confirmed.state.status_event_at == T0  # a webhook sent before the read still applies
    late = observe_change(confirmed.state, at(STATUS_FIELD, "APPROVED", NOW - 1000), NOW)
    assert not late.stale and late.state.status == "APPROVED"


def test_a_sync_and_a_webhook_saying_the_same_leave_the_same_state_and_rows() -> None:
    before = stored("PENDING", quality_score="GREEN", category="UTILITY")
    synced = observe_meta(before, meta("REJECTED", "SCAM", "RED", "MARKETING"), NOW)
    changes = [at(STATUS_FIELD, "REJECTED", NOW, reason="SCAM"), at(QUALITY_FIELD, "RED", NOW),
               at(CATEGORY_FIELD, "MARKETING", NOW, previous="UTILITY")]  # fmt: skip
    state, rows = before, list[HistoryRow]()
    for change in changes:
        done = observe_change(state, change, NOW)
        state, rows = done.state, [*rows, *done.rows]
    assert state._replace(status_source="sync", last_webhook_at=None, last_synced_at=NOW) == (
        synced.state
    )
    assert [row._replace(source="sync") for row in rows] == list(synced.rows)


def test_import_creates_a_template_in_metas_state_with_a_created_row_then_its_status() -> None:
    done = meta_template(meta("IN_APPEAL", "SCAM", "GREEN", "UTILITY"), NOW)
    assert done.state == TemplateState(
        "IN_APPEAL", quality_score="GREEN", category="UTILITY", status_event_at=NOW,
        pending_since=NOW, status_source="sync", status_updated_at=NOW, last_synced_at=NOW,
        updated_at=NOW,
    )  # fmt: skip
    assert done.rows == (
        HistoryRow("template", "CREATED", None, "IN_APPEAL", "sync", NOW, NOW, None, True),
        HistoryRow("status", "IN_APPEAL", None, "IN_APPEAL", "sync", NOW, NOW, None, True),
    )


@pytest.mark.parametrize(("status", "pending_since"), [("PENDING", NOW), ("APPROVED", None)])
def test_a_registered_template_has_the_operators_status_and_no_status_time(
    status: str, pending_since: int | None
) -> None:
    done = registered(status, "UTILITY", NOW)
    assert done.state == TemplateState(status, category="UTILITY", pending_since=pending_since,
                                       status_updated_at=NOW, updated_at=NOW)  # fmt: skip
    assert done.state.status_source == "api" and done.state.status_event_at == 0
    assert done.rows == (
        HistoryRow("template", "CREATED", None, status, "api", NOW, NOW, None, True),
        HistoryRow("status", status, None, status, "api", NOW, NOW, None, True),
    )
    late = observe_change(done.state, at(STATUS_FIELD, "REJECTED", T0), NOW)
    assert not late.stale  # any webhook is newer than the operator's word


def test_a_template_first_named_by_a_webhook_is_unknown_until_a_status_event() -> None:
    change = at(QUALITY_FIELD, "GREEN", T0, category="UTILITY")
    done = webhook_template(change, NOW)
    assert done.state == TemplateState("UNKNOWN", category="UTILITY", status_source="webhook",
                                       status_updated_at=NOW, updated_at=NOW)  # fmt: skip
    assert done.rows == (
        HistoryRow("template", "CREATED", None, "UNKNOWN", "webhook", NOW, NOW, None, True),
    )
    assert observe_change(done.state, change, NOW).state.status == "UNKNOWN"


def test_a_created_row_is_applied_and_says_the_status_the_template_became_known_with() -> None:
    row = created_row(stored("REJECTED", rejected_reason="SCAM"), "sync", NOW)
    assert row == HistoryRow("template", "CREATED", None, "REJECTED", "sync", NOW, NOW, None, True)


def test_every_history_field_is_one_event_type_of_its_own() -> None:
    """Design section 11's table: each history row is one notification of its field's type."""
    fields = {*HISTORY_FIELDS.values(), "template"}
    assert EVENT_TYPES == {
        "template": "template.created", "status": "template.status_changed",
        "quality_score": "template.quality_changed", "category": "template.category_changed",
    }  # fmt: skip
    assert set(EVENT_TYPES) == fields
    rows = [
        *registered("PENDING", None, NOW).rows,
        *meta_template(meta("APPROVED", None, "GREEN", "UTILITY"), NOW).rows,
        *webhook_template(at(STATUS_FIELD, "APPROVED", T0), NOW).rows,
        *observe_meta(stored(), meta("REJECTED", "SCAM", "RED", "MARKETING"), NOW).rows,
        *api_edit(stored("APPROVED", category="UTILITY"), "MARKETING", NOW).rows,
        *api_delete(stored("APPROVED"), NOW).rows,
        *(observe_change(stored(), at(field, event, NOW, previous="UTILITY"), NOW).rows[0]
          for field, event in ((STATUS_FIELD, "APPROVED"), (QUALITY_FIELD, "RED"),
                               (CATEGORY_FIELD, "MARKETING"))),
    ]  # fmt: skip
    assert {row.field for row in rows} == fields  # every row any observation writes has a type


# --- writes the API made at Meta (design section 12) ---------------------------------------


def test_an_edit_makes_the_template_pending_now_by_the_api_in_the_category_asked() -> None:
    before = stored("REJECTED", rejected_reason="SCAM", category="UTILITY", quality_score="RED")
    done = api_edit(before, "MARKETING", NOW)
    assert done.rows == (
        HistoryRow("status", "PENDING", "REJECTED", "PENDING", "api", NOW, NOW, None, True),
        HistoryRow("category", "MARKETING", None, None, "api", NOW, NOW, None, True),
    )
    assert done.state == before._replace(
        status="PENDING", rejected_reason=None, category="MARKETING", status_event_at=NOW,
        pending_since=NOW, status_source="api", status_updated_at=NOW, updated_at=NOW,
    )  # fmt: skip
    assert api_edit(before, None, NOW).state.category == "UTILITY"  # no category: kept


def test_an_edit_of_a_pending_template_keeps_its_wait_and_writes_only_what_changed() -> None:
    before = stored("PENDING", category="UTILITY")
    same = api_edit(before, "UTILITY", NOW)
    assert same.rows == () and same.state == before
    recategorised = api_edit(before, "MARKETING", NOW)
    assert [row[:2] for row in recategorised.rows] == [("category", "MARKETING")]
    assert recategorised.state == before._replace(category="MARKETING", updated_at=NOW)


def test_a_webhook_sent_before_an_edit_is_stale_and_one_after_applies() -> None:
    edited = api_edit(stored("APPROVED"), None, NOW).state
    before = observe_change(edited, at(STATUS_FIELD, "APPROVED", NOW - 1000), NOW + 5)
    assert before.stale and before.state.status == "PENDING"
    after = observe_change(edited, at(STATUS_FIELD, "APPROVED", NOW + 1000), NOW + 5)
    assert not after.stale and after.state.status == "APPROVED"


@pytest.mark.parametrize("status", ["APPROVED", "PENDING", "ARCHIVED"])
def test_a_deletion_makes_the_template_deleted_once(status: str) -> None:
    before = stored(status, status_before_archive="PAUSED" if status == "ARCHIVED" else None)
    done = api_delete(before, NOW)
    assert done.rows == (
        HistoryRow("status", "DELETED", status, "DELETED", "api", NOW, NOW, None, True),
    )
    assert done.state == before._replace(
        status="DELETED", status_before_archive=None, status_event_at=NOW, pending_since=None,
        status_source="api", status_updated_at=NOW, updated_at=NOW,
    )  # fmt: skip
    again = api_delete(done.state, NOW + 1)
    assert again.rows == () and again.state == done.state
