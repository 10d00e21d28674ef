"""Where a workspace's templates are decided, as the sync use case sees it (design 7, 14).

A workspace has one source of truth: Meta's Graph API through its channels' tokens
(source_graph.py), or a LancePilot-compatible upstream (source_upstream.py). The sync, the
poller, the sync endpoint and `import` ask it the same two questions, WABA by WABA, and store
its answers through one rule (Store.apply_remote); neither source writes to the store itself
but for Meta's throttling windows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from .storage import PendingTemplate, RemoteTemplate


@dataclass(frozen=True)
class WabaFailure:
    """Why one WABA (or, with waba_id "", the whole source) could not be read."""

    waba_id: str
    code: int | None
    kind: str
    detail: str
    fbtrace_id: str | None = None
    retry_after_s: float | None = None


@dataclass(frozen=True)
class Fetched:
    """A source's answer for one WABA: the remote state of templates (for a sync, of the
    `asked` pending ones it found), or the failure that kept it from answering."""

    waba_id: str
    templates: Sequence[RemoteTemplate] = ()
    asked: int = 0
    failure: WabaFailure | None = None


class Source(Protocol):
    # True when the source may lag behind the webhooks that reach this service (an
    # upstream): then only templates still pending here take its state.
    keeps_decided: bool

    def pending(
        self, workspace_id: str, pending: Sequence[PendingTemplate]
    ) -> AsyncIterator[Fetched]:
        """The remote state of the workspace's pending templates, WABA by WABA."""
        ...

    def everything(self, workspace_id: str) -> AsyncIterator[Fetched]:
        """Every template the source has for the workspace, WABA by WABA (an import)."""
        ...


def by_waba(pending: Sequence[PendingTemplate]) -> dict[str, list[PendingTemplate]]:
    """Pending templates grouped by WABA, in the order their WABAs first appear."""
    groups: dict[str, list[PendingTemplate]] = {}
    for template in pending:
        groups.setdefault(template.waba_id, []).append(template)
    return groups
