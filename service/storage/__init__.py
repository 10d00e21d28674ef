"""The template store: one protocol of domain verbs, a backend chosen by URL scheme."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..events import Change, HistoryRow, MetaView


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
    access_token_enc: str = field(repr=False)
    created_at: int


@dataclass(frozen=True)
class ApiToken:
    id: str
    workspace_id: str
    name: str | None
    token_hash: str = field(repr=False)
    revoked_at: int | None


@dataclass(frozen=True)
class TokenInfo:
    """A bearer token as the operator sees it: never its secret or hash."""

    id: str
    workspace_id: str
    name: str | None
    created_at: int
    revoked_at: int | None


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
    """The polling fallback's state of one workspace (service.storage.polls)."""

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


class Store(Protocol):
    """Every method is one transaction; StoreUnavailable when the database is out of reach."""

    async def migrate(self) -> list[int]: ...
    async def schema_version(self) -> int: ...
    async def ping(self, now_ms: int) -> None: ...
    async def close(self) -> None: ...

    async def create_workspace(self, name: str, now_ms: int) -> Workspace: ...
    async def list_workspaces(self) -> list[Workspace]: ...
    async def get_workspace(self, workspace_id: str) -> Workspace | None: ...
    async def add_channel(
        self, workspace_id: str, waba_id: str, access_token_enc: str, now_ms: int
    ) -> Channel: ...
    async def list_channels(self, workspace_id: str) -> list[Channel]: ...
    async def channel_for_waba(self, waba_id: str) -> Channel | None: ...
    async def all_channels(self) -> list[Channel]: ...
    async def set_channel_token(self, channel_id: str, access_token_enc: str) -> None: ...
    async def remove_channel(self, waba_id: str) -> None: ...

    async def create_token(
        self, workspace_id: str, token_id: str, token_hash: str, name: str | None, now_ms: int
    ) -> None: ...
    async def revoke_token(self, token_id: str, now_ms: int) -> bool: ...
    async def find_token(self, token_id: str) -> ApiToken | None: ...
    async def list_tokens(self, workspace_id: str) -> list[TokenInfo]: ...
    async def find_token_and_template(
        self, token_id: str, template_id: int
    ) -> tuple[ApiToken | None, Template | None]: ...

    async def add_template(self, new: NewTemplate, now_ms: int) -> Template: ...
    async def list_templates(
        self, workspace_id: str, where: TemplateFilter, offset: int, limit: int
    ) -> tuple[list[Template], int]: ...
    async def get_template(self, workspace_id: str, template_id: int) -> Template | None: ...
    async def template_history(
        self, workspace_id: str, template_id: int
    ) -> list[HistoryEvent] | None: ...
    async def remove_template(self, workspace_id: str, template_id: int) -> None: ...

    async def workspace_summaries(
        self, workspace_id: str | None = None
    ) -> list[WorkspaceSummary]: ...
    async def delete_workspace(self, workspace_id: str) -> WorkspaceSummary: ...

    async def record_delivery(
        self, body: bytes, received_at_ms: int, changes: Sequence[Change], error: str | None
    ) -> DeliveryResult: ...
    async def list_deliveries(self, outcome: str | None, limit: int) -> list[Delivery]: ...
    async def prune_deliveries(self, before_ms: int, limit: int) -> int: ...
    async def forget_dedupe_keys(self, before_ms: int, limit: int) -> int: ...
    async def prune_sync_runs(self, before_ms: int, limit: int) -> int: ...

    async def pending_templates(self, workspace_id: str) -> list[PendingTemplate]: ...
    async def template_counts(self, workspace_id: str) -> dict[str, int]: ...
    async def apply_remote(
        self,
        workspace_id: str,
        waba_id: str,
        templates: Sequence[RemoteTemplate],
        now_ms: int,
        create: bool,
    ) -> RemoteCounts: ...
    async def claim_sync(
        self, workspace_id: str, trigger: str, now_ms: int, lease_ms: int, min_gap_ms: int = 0
    ) -> SyncClaim: ...
    async def finish_sync(self, run: SyncRun) -> None: ...
    async def get_sync_run(self, run_id: int) -> SyncRun | None: ...
    async def last_sync_run(self, workspace_id: str) -> SyncRun | None: ...
    async def throttles(self, waba_ids: Sequence[str]) -> dict[str, Throttle]: ...
    async def set_throttle(self, throttle: Throttle) -> None: ...

    async def due_workspaces(
        self, now_ms: int, grace_ms: int, interval_ms: int, limit: int
    ) -> list[str]: ...
    async def grace_waiting(self, now_ms: int, grace_ms: int) -> tuple[int, int | None]: ...
    async def claim_poll(
        self, workspace_id: str, owner: str, now_ms: int, lease_ms: int, interval_ms: int
    ) -> bool: ...
    async def record_poll(
        self,
        workspace_id: str,
        owner: str,
        outcome: str,
        now_ms: int,
        next_poll_at: int,
        failures: int,
        error: str | None,
    ) -> bool: ...
    async def poll_state(self, workspace_id: str) -> PollState | None: ...


async def open_store(url: str) -> Store:
    """Connect to the store named by `url` (sqlite:///path or postgresql://...)."""
    from .sql import SqlStore

    if url.startswith("sqlite:///"):
        from .sqlite import SqliteBackend

        return SqlStore(await SqliteBackend.connect(url.removeprefix("sqlite:///")))
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresBackend

        return SqlStore(await PostgresBackend.connect(url))
    raise ValueError(f"unsupported database URL scheme: {url.split(':', 1)[0]}")
