"""What the store holds and answers with, and the errors it raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..events import HistoryRow, MetaView


class StoreUnavailable(Exception):
    """The database cannot be reached or written; the caller should retry later.

    `fix`, when known (a missing database, a path the service cannot write), says what the
    operator should do; the message itself says only what is wrong.
    """

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.fix = fix


class Conflict(Exception):
    """The thing to create exists already (the message says which)."""


class NotFound(Exception):
    """A referenced row does not exist (the message says which)."""


@dataclass(frozen=True)
class Workspace:
    id: str
    name: str
    created_at: int


@dataclass(frozen=True)
class Channel:
    id: str
    workspace_id: str
    waba_id: str
    access_token_enc: str | None = field(repr=False)  # None: webhooks only, no Meta token
    created_at: int


@dataclass(frozen=True)
class Upstream:
    """A workspace's LancePilot-compatible source of truth (design section 14)."""

    workspace_id: str
    url: str
    remote_workspace: str
    token_enc: str = field(repr=False)
    created_at: int
    updated_at: int


@dataclass(frozen=True)
class ApiToken:
    id: str
    workspace_id: str
    name: str | None
    token_hash: str = field(repr=False)
    revoked_at: int | None
    read_only: bool  # reads, streams and syncs; every other write is refused (403)


@dataclass(frozen=True)
class TokenInfo:
    """A bearer token as the operator sees it: never its secret or hash."""

    id: str
    workspace_id: str
    name: str | None
    created_at: int
    revoked_at: int | None
    read_only: bool


@dataclass(frozen=True)
class WorkspaceSummary:
    """A workspace with the counts of what it holds."""

    id: str
    name: str
    created_at: int
    channels: int
    tokens: int
    active_tokens: int
    templates: int
    pending_templates: int  # PENDING or IN_APPEAL
    sync_runs: int


@dataclass(frozen=True)
class Template:
    id: int
    workspace_id: str
    waba_id: str
    provider_id: str
    name: str
    language: str
    category: str | None
    status: str
    rejected_reason: str | None
    quality_score: str | None
    flagged: bool
    status_source: str
    status_updated_at: int
    last_webhook_at: int | None
    last_synced_at: int | None
    created_at: int
    updated_at: int


@dataclass(frozen=True)
class HistoryEvent:
    """A stored history row: its id, and the row as events.py wrote it."""

    id: int
    row: HistoryRow


@dataclass(frozen=True)
class Delivery:
    id: int
    received_at: int
    outcome: str
    error: str | None
    body: bytes = field(repr=False)


@dataclass(frozen=True)
class Relay:
    """Where acknowledged deliveries are passed on (design section 10)."""

    id: str
    name: str | None
    url: str
    fields: tuple[str, ...]  # a delivery is relayed when one of its changes has one; (): all
    created_at: int


@dataclass(frozen=True)
class RelaySummary:
    relay: Relay
    queued: int
    failed: int
    last_error: str | None  # of its latest failed attempt


@dataclass(frozen=True)
class OutboxDepth:
    """Rows of one kind in one state (queued or failed), and when the oldest was queued."""

    kind: str
    state: str
    rows: int
    oldest_at: int


@dataclass(frozen=True)
class OutboxItem:
    """A claimed outbox row and what sending it takes: for a relay, the delivery's bytes and
    the signature header they came with."""

    id: int
    kind: str  # "relay"
    target_id: str
    item_id: int  # the delivery
    url: str
    attempts: int  # made before this one
    created_at: int
    body: bytes = field(repr=False)
    signature: str | None = field(repr=False)


@dataclass(frozen=True)
class Subscription:
    """A workspace's signed outbound webhook (design section 11)."""

    id: str
    workspace_id: str
    url: str
    events: tuple[str, ...]  # event types it takes; (): all
    enabled: bool
    disabled_reason: str | None
    created_at: int
    last_success_at: int | None
    failing_since: int | None  # the first failure since the last success
    secret_enc: str = field(repr=False)  # its signing secret, encrypted like Meta tokens


@dataclass(frozen=True)
class NotificationAttempt:
    """One attempt to deliver an event to a subscription (its deliveries log)."""

    id: int
    subscription_id: str
    history_id: int  # the event's id is evt_<history_id>
    event_type: str
    attempt: int
    at: int
    status_code: int | None
    error: str | None
    next_attempt_at: int | None  # None: no more attempts (sent, or failed for good)


@dataclass(frozen=True)
class Previous:
    """What a template was before a history row changed it (the payload's `previous`)."""

    status: str | None
    flagged: bool | None
    quality_score: str | None
    category: str | None


@dataclass(frozen=True)
class TemplateEvent:
    """An event as an application sees it: the history row, what it changed from (None for
    a template's CREATED row) and the template as it is now."""

    event: HistoryEvent
    previous: Previous | None
    template: Template


@dataclass(frozen=True)
class Notification(TemplateEvent):
    """An event as a subscription receives it, with the subscription's URL, health and
    secret."""

    url: str
    failing_since: int | None  # the subscription's first failure since its last success
    secret_enc: str = field(repr=False)  # its signing secret, encrypted like Meta tokens


@dataclass(frozen=True)
class NewTemplate:
    workspace_id: str
    waba_id: str
    provider_id: str
    name: str
    language: str
    category: str | None
    status: str


@dataclass(frozen=True)
class TemplateFilter:
    statuses: tuple[str, ...] = ()
    name: str | None = None
    language: str | None = None
    provider_id: str | None = None


@dataclass(frozen=True)
class PendingTemplate:
    id: int
    waba_id: str
    provider_id: str


class RemoteTemplate(MetaView, Protocol):
    """A template as Meta reports it (service.graph.GraphTemplate has this shape): Meta's
    state (events.MetaView) and what identifies it."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def language(self) -> str: ...


@dataclass(frozen=True)
class RemoteCounts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0

    def __add__(self, other: RemoteCounts) -> RemoteCounts:
        return RemoteCounts(
            self.created + other.created,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
        )


@dataclass(frozen=True)
class SyncRun:
    id: int
    workspace_id: str
    trigger: str
    status: str  # running, succeeded, partial, failed
    started_at: int
    finished_at: int | None
    lease_until: int
    checked: int
    updated: int
    unchanged: int
    missing: int
    graph_calls: int
    error: str | None  # JSON: the failing WABAs


@dataclass(frozen=True)
class SyncClaim:
    run_id: int
    owner: bool  # False: run_id is running (wait for it) or finished within the minimum gap


@dataclass(frozen=True)
class Throttle:
    waba_id: str
    blocked_until: int
    code: int | None


@dataclass(frozen=True)
class PollState:
    """The polling fallback's state of one workspace (service.storage.poll_state)."""

    workspace_id: str
    next_poll_at: int  # not polled before this (interval after a claim, or failure backoff)
    lease_owner: str | None  # the replica polling it now; None when released
    lease_until: int
    failures: int  # consecutive failed polls; 0 after a success
    last_polled_at: int | None
    last_outcome: str | None  # succeeded, partial, failed, no_pending, error
    last_error: str | None


@dataclass
class DeliveryResult:
    """What one stored delivery did; counts are per template change."""

    delivery_id: int
    outcome: str  # "processed", "quarantined", or "replayed": stored already, as delivery_id
    applied: int = 0
    stale: int = 0
    duplicate: int = 0
    unknown_waba: int = 0
    created: int = 0
    relayed: int = 0  # outbox rows queued for relays
