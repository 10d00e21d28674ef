"""The template store: what it holds (models.py), the verbs it answers (protocol.py), and
one implementation of them in SQL (sql_store.py) on SQLite or PostgreSQL."""

from .models import (
    ApiToken,
    Channel,
    Conflict,
    Delivery,
    DeliveryResult,
    HistoryEvent,
    NewTemplate,
    NotFound,
    PendingTemplate,
    PollState,
    RemoteCounts,
    RemoteTemplate,
    StoreUnavailable,
    SyncClaim,
    SyncRun,
    Template,
    TemplateFilter,
    Throttle,
    TokenInfo,
    Workspace,
    WorkspaceSummary,
)
from .protocol import Store
from .sql_store import open_store

__all__ = [
    "ApiToken",
    "Channel",
    "Conflict",
    "Delivery",
    "DeliveryResult",
    "HistoryEvent",
    "NewTemplate",
    "NotFound",
    "PendingTemplate",
    "PollState",
    "RemoteCounts",
    "RemoteTemplate",
    "Store",
    "StoreUnavailable",
    "SyncClaim",
    "SyncRun",
    "Template",
    "TemplateFilter",
    "Throttle",
    "TokenInfo",
    "Workspace",
    "WorkspaceSummary",
    "open_store",
]
