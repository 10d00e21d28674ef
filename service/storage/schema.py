"""Schema migrations, written once for both dialects.

Words in braces differ by dialect; each backend fills them in (its `schema_words`), and a
word may stand for a whole statement that one dialect does not need (then it is empty).
Append new migrations; never edit one that has shipped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE workspaces (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            created_at BIGINT NOT NULL
        );
        CREATE TABLE api_tokens (
            id TEXT PRIMARY KEY,
            workspace_id TEXT NOT NULL REFERENCES workspaces (id),
            name TEXT,
            token_hash TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            revoked_at BIGINT
        );
        CREATE TABLE channels (
            id TEXT PRIMARY KEY,
            workspace_id TEXT NOT NULL REFERENCES workspaces (id),
            waba_id TEXT NOT NULL UNIQUE,
            access_token_enc TEXT NOT NULL,
            created_at BIGINT NOT NULL
        );
        CREATE INDEX channels_workspace ON channels (workspace_id);
        CREATE TABLE templates (
            id {serial},
            workspace_id TEXT NOT NULL REFERENCES workspaces (id),
            waba_id TEXT NOT NULL,
            provider_id TEXT NOT NULL,
            name TEXT NOT NULL,
            language TEXT NOT NULL,
            category TEXT,
            status TEXT NOT NULL,
            rejected_reason TEXT,
            quality_score TEXT,
            flagged BOOLEAN NOT NULL DEFAULT FALSE,
            status_before_archive TEXT,
            status_source TEXT NOT NULL,
            status_updated_at BIGINT NOT NULL,
            status_event_at BIGINT NOT NULL DEFAULT 0,
            pending_since BIGINT,
            last_webhook_at BIGINT,
            last_synced_at BIGINT,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            UNIQUE (waba_id, provider_id)
        );
        CREATE INDEX templates_workspace ON templates (workspace_id, id);
        CREATE INDEX templates_workspace_status ON templates (workspace_id, status);
        CREATE TABLE template_events (
            id {serial},
            template_id BIGINT REFERENCES templates (id),
            waba_id TEXT NOT NULL,
            provider_id TEXT NOT NULL,
            field TEXT NOT NULL,
            event TEXT NOT NULL,
            old_status TEXT,
            new_status TEXT,
            source TEXT NOT NULL,
            event_time BIGINT,
            received_at BIGINT NOT NULL,
            reason TEXT,
            applied BOOLEAN NOT NULL,
            delivery_id BIGINT,
            dedupe_key TEXT UNIQUE
        );
        CREATE INDEX template_events_template ON template_events (template_id, id);
        CREATE TABLE webhook_deliveries (
            id {serial},
            received_at BIGINT NOT NULL,
            body {blob} NOT NULL,
            outcome TEXT NOT NULL,
            error TEXT
        );
        CREATE INDEX webhook_deliveries_received ON webhook_deliveries (received_at)
        """,
    ),
    (
        2,
        """
        CREATE TABLE sync_runs (
            id {serial},
            workspace_id TEXT NOT NULL REFERENCES workspaces (id),
            trigger TEXT NOT NULL,
            status TEXT NOT NULL,
            started_at BIGINT NOT NULL,
            finished_at BIGINT,
            lease_until BIGINT NOT NULL,
            checked INTEGER NOT NULL DEFAULT 0,
            updated INTEGER NOT NULL DEFAULT 0,
            unchanged INTEGER NOT NULL DEFAULT 0,
            missing INTEGER NOT NULL DEFAULT 0,
            graph_calls INTEGER NOT NULL DEFAULT 0,
            error TEXT
        );
        CREATE INDEX sync_runs_workspace ON sync_runs (workspace_id, id);
        CREATE TABLE waba_throttles (
            waba_id TEXT PRIMARY KEY,
            blocked_until BIGINT NOT NULL,
            code INTEGER
        )
        """,
    ),
    (
        3,
        """
        CREATE TABLE workspace_polls (
            workspace_id TEXT PRIMARY KEY REFERENCES workspaces (id),
            next_poll_at BIGINT NOT NULL DEFAULT 0,
            lease_owner TEXT,
            lease_until BIGINT NOT NULL DEFAULT 0,
            failures INTEGER NOT NULL DEFAULT 0,
            last_polled_at BIGINT,
            last_outcome TEXT,
            last_error TEXT
        );
        CREATE INDEX templates_awaiting_webhook ON templates (pending_since, workspace_id)
            WHERE status IN ('PENDING', 'IN_APPEAL')
            AND (last_webhook_at IS NULL OR last_webhook_at <= pending_since);
        CREATE INDEX sync_runs_workspace_started ON sync_runs (workspace_id, started_at)
        """,
    ),
    (
        4,
        """
        CREATE TABLE heartbeats (
            id INTEGER PRIMARY KEY,
            beat_at BIGINT NOT NULL
        )
        """,
    ),
    (
        5,
        # Dedupe keys lead with entry.time (13 digits, events.py): the old hash-only keys get
        # the same prefix, so an event stored before the upgrade is still recognised. Keys
        # still held are found by age for retention.py through a small partial index.
        """
        UPDATE template_events
        SET dedupe_key = substr(CAST(event_time / 1000 + 10000000000000 AS TEXT), 2) || dedupe_key
        WHERE dedupe_key IS NOT NULL AND length(dedupe_key) = 64;
        CREATE INDEX template_events_dedupe_received ON template_events (received_at)
            WHERE dedupe_key IS NOT NULL
        """,
    ),
    (
        6,
        # Retention finds old keys through the unique index now (they lead with entry.time),
        # so the partial index goes: one index less to write per event, and PostgreSQL's
        # planner can no longer answer a dedupe lookup on a young table by scanning it whole
        # (it did, and kept that plan as the table grew; bench/RESULTS.md, "Why ...").
        """
        DROP INDEX template_events_dedupe_received
        """,
    ),
    (
        7,
        # Every webhook changes a template's status, and each change moved its entry in this
        # index, which cost ingest more than it saved a status filter; that filter now reads
        # the workspace's templates through templates_workspace (bench/RESULTS.md, "Why ...").
        """
        DROP INDEX templates_workspace_status
        """,
    ),
    (
        8,
        # "Awaits a webhook" (pending, and no webhook since it became pending) becomes a
        # column the database computes, and the poller's index is on it alone. A webhook's
        # update of a template then changes no indexed value, so on PostgreSQL, with room
        # left on each page, it is a HOT update: no new entry in any of the table's indexes.
        # The old index's predicate read status and last_webhook_at, which every webhook
        # changes (bench/RESULTS.md, "Why the code is as it is").
        """
        {templates_fillfactor};
        ALTER TABLE templates ADD COLUMN awaiting_since BIGINT GENERATED ALWAYS AS (
            CASE WHEN status IN ('PENDING', 'IN_APPEAL')
                AND (last_webhook_at IS NULL OR last_webhook_at <= pending_since)
            THEN pending_since END
        ) {generated};
        CREATE INDEX templates_awaiting ON templates (awaiting_since, workspace_id)
            WHERE awaiting_since IS NOT NULL;
        DROP INDEX templates_awaiting_webhook
        """,
    ),
    (
        9,
        # A delivery's body is stored once: a replay of the same bytes (the same SHA-256)
        # within the retention window answers as the stored delivery (delivery_batch.body_key).
        # Before, 50 replays of a 4 MB body added 210 MB. Rows stored before this have no
        # key (NULLs never conflict): a replay of one of them is stored once more.
        """
        ALTER TABLE webhook_deliveries ADD COLUMN body_key {blob};
        CREATE UNIQUE INDEX webhook_deliveries_body_key ON webhook_deliveries (body_key)
        """,
    ),
    (
        10,
        # History says what a row concerns in one vocabulary, whatever its source (events.py
        # HISTORY_FIELDS): webhook rows had Meta's field names. And a template that a sync or
        # an import archived had no status before ARCHIVED (UNARCHIVED then changed nothing):
        # it is the old status of the history row that archived it, where one says so.
        """
        UPDATE template_events SET field = 'status'
        WHERE field = 'message_template_status_update';
        UPDATE template_events SET field = 'quality_score'
        WHERE field = 'message_template_quality_update';
        UPDATE template_events SET field = 'category'
        WHERE field = 'template_category_update';
        UPDATE templates SET status_before_archive = (
            SELECT e.old_status FROM template_events AS e
            WHERE e.template_id = templates.id AND e.field = 'status' AND e.applied
            AND e.new_status = 'ARCHIVED' AND e.old_status <> 'ARCHIVED'
            ORDER BY e.id DESC LIMIT 1
        )
        WHERE status = 'ARCHIVED' AND status_before_archive IS NULL
        """,
    ),
    (
        11,
        # The outbox (design sections 10 and 11): what is to be sent out, written in the same
        # commit as what it reports. A relay row passes a stored delivery on, its bytes and
        # its signature header as received; `item_id` is the delivery. Sent rows are
        # deleted; a row past OUTBOX_MAX_AGE_S stays, `failed`, until retried or pruned.
        # A dispatcher claims due rows with a lease, so each is sent by one replica at a time.
        """
        ALTER TABLE webhook_deliveries ADD COLUMN signature TEXT;
        CREATE TABLE relays (
            id TEXT PRIMARY KEY,
            name TEXT,
            url TEXT NOT NULL,
            fields TEXT,
            created_at BIGINT NOT NULL
        );
        CREATE TABLE outbox (
            id {serial},
            kind TEXT NOT NULL,
            target_id TEXT NOT NULL,
            item_id BIGINT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at BIGINT NOT NULL,
            lease_owner TEXT,
            lease_until BIGINT NOT NULL DEFAULT 0,
            created_at BIGINT NOT NULL,
            last_attempt_at BIGINT,
            last_error TEXT
        );
        CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'queued';
        CREATE INDEX outbox_target ON outbox (target_id, state);
        CREATE INDEX outbox_item ON outbox (item_id, kind)
        """,
    ),
    (
        12,
        # Notifications (design section 11). A history row keeps what its template was
        # before it (status, flagged, quality score, category): the payload's `previous`.
        # A subscription's `cursor` is the last history id handed to the outbox (ids are in
        # commit order: the history lock); its rows are outbox rows of kind 'notification'
        # (item: the history id). Every attempt is logged for `GET .../deliveries`.
        """
        ALTER TABLE template_events ADD COLUMN prev_status TEXT;
        ALTER TABLE template_events ADD COLUMN prev_flagged BOOLEAN;
        ALTER TABLE template_events ADD COLUMN prev_quality_score TEXT;
        ALTER TABLE template_events ADD COLUMN prev_category TEXT;
        CREATE TABLE webhook_subscriptions (
            id TEXT PRIMARY KEY,
            workspace_id TEXT NOT NULL REFERENCES workspaces (id),
            url TEXT NOT NULL,
            events TEXT,
            secret_enc TEXT NOT NULL,
            enabled BOOLEAN NOT NULL,
            disabled_reason TEXT,
            created_at BIGINT NOT NULL,
            last_success_at BIGINT,
            failing_since BIGINT,
            cursor BIGINT NOT NULL
        );
        CREATE INDEX webhook_subscriptions_workspace ON webhook_subscriptions (workspace_id);
        CREATE TABLE notification_attempts (
            id {serial},
            subscription_id TEXT NOT NULL REFERENCES webhook_subscriptions (id),
            history_id BIGINT NOT NULL,
            event_type TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            at BIGINT NOT NULL,
            status_code INTEGER,
            error TEXT,
            next_attempt_at BIGINT
        );
        CREATE INDEX notification_attempts_subscription
            ON notification_attempts (subscription_id, id)
        """,
    ),
    (
        13,
        # Template writes through the API (design section 12). A read-only token reads,
        # streams and syncs; tokens made before stay read-write. An idempotency key holds its
        # first request's fingerprint and, once done, its answer (storage/idempotency.py).
        # The API refuses a second template of a name and language in a WABA: an index, as
        # the workspace's templates would otherwise be read whole (names never change, so a
        # webhook's update of a template stays HOT on PostgreSQL).
        """
        ALTER TABLE api_tokens ADD COLUMN read_only BOOLEAN NOT NULL DEFAULT FALSE;
        CREATE TABLE idempotency_keys (
            workspace_id TEXT NOT NULL REFERENCES workspaces (id),
            idempotency_key TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            state TEXT NOT NULL,
            status_code INTEGER,
            body {blob},
            created_at BIGINT NOT NULL,
            finished_at BIGINT,
            PRIMARY KEY (workspace_id, idempotency_key)
        );
        CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
        CREATE INDEX templates_name ON templates (waba_id, name, language)
        """,
    ),
    (
        14,
        # Upstream mode (design section 14). A workspace may name a LancePilot-compatible
        # upstream (one per workspace; its bearer token encrypted like Meta's); a channel
        # may have no Meta token (`channel add --webhooks-only`: it routes webhooks only).
        """
        CREATE TABLE upstreams (
            workspace_id TEXT PRIMARY KEY REFERENCES workspaces (id),
            url TEXT NOT NULL,
            remote_workspace TEXT NOT NULL,
            token_enc TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL
        );
        {channels_token_optional}
        """,
    ),
    (
        15,
        # The index of names leads with the name. Led by waba_id, it was PostgreSQL's choice
        # for a webhook batch's template lookup (waba_id, provider_id) on a young table: a
        # plan prepared then read every template of the WABA for each key, and kept doing so
        # (bench/RESULTS.md, "Why the code is as it is"). Now only the unique index fits it.
        """
        DROP INDEX templates_name;
        CREATE INDEX templates_name ON templates (name, language, waba_id)
        """,
    ),
]


def statements(sql: str, words: Mapping[str, str]) -> list[str]:
    """One migration's statements with the dialect's words filled in."""
    filled = re.sub(r"\{(\w+)\}", lambda match: words[match.group(1)], sql)
    return [part.strip() for part in filled.split(";") if part.strip()]
