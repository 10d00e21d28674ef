"""The template store: one protocol of domain verbs, a backend chosen by URL scheme."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..events import Change


class StoreUnavailable(Exception):
    """The database cannot be reached or written; the caller should retry later."""


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
    id: int
    field: str
    event: str
    old_status: str | None
    new_status: str | None
    source: str
    event_time: int | None
    received_at: int
    reason: str | None
    applied: bool


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


@dataclass
class DeliveryResult:
    """What one stored delivery did; counts are per template change."""

    delivery_id: int
    outcome: str  # "processed" or "quarantined"
    applied: int = 0
    stale: int = 0
    duplicate: int = 0
    unknown_waba: int = 0
    created: int = 0


class Store(Protocol):
    """Every method is one transaction; StoreUnavailable when the database is out of reach."""

    async def migrate(self) -> list[int]: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...

    async def create_workspace(self, name: str, now_ms: int) -> Workspace: ...
    async def list_workspaces(self) -> list[Workspace]: ...
    async def get_workspace(self, workspace_id: str) -> Workspace | None: ...
    async def add_channel(
        self, workspace_id: str, waba_id: str, access_token_enc: str, now_ms: int
    ) -> Channel: ...
    async def list_channels(self, workspace_id: str) -> list[Channel]: ...

    async def create_token(
        self, workspace_id: str, token_id: str, token_hash: str, name: str | None, now_ms: int
    ) -> None: ...
    async def revoke_token(self, token_id: str, now_ms: int) -> bool: ...
    async def find_token(self, token_id: str) -> ApiToken | None: ...

    async def add_template(self, new: NewTemplate, now_ms: int) -> Template: ...
    async def list_templates(
        self, workspace_id: str, where: TemplateFilter, offset: int, limit: int
    ) -> tuple[list[Template], int]: ...
    async def get_template(self, workspace_id: str, template_id: int) -> Template | None: ...
    async def template_history(
        self, workspace_id: str, template_id: int
    ) -> list[HistoryEvent] | None: ...

    async def record_delivery(
        self, body: bytes, received_at_ms: int, changes: Sequence[Change], error: str | None
    ) -> DeliveryResult: ...
    async def list_deliveries(self, outcome: str | None, limit: int) -> list[Delivery]: ...


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
