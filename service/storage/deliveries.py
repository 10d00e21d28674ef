"""Store methods of the webhook deliveries: stored (grouped), listed and pruned."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..events import Change, dedupe_keys_below
from .delivery_batch import NewDelivery, record_batch
from .group_commit import GroupCommit
from .models import Delivery, DeliveryResult, StoreUnavailable
from .transactions import Queries, Transaction, count_returned, fetch, read, transaction

logger = logging.getLogger(__name__)


class DeliveryQueries(Queries):
    _group_commit: GroupCommit[NewDelivery, DeliveryResult]

    async def record_delivery(
        self,
        body: bytes,
        received_at_ms: int,
        changes: Sequence[Change],
        error: str | None,
        signature: str | None = None,
        fields: frozenset[str] = frozenset(),
    ) -> DeliveryResult:
        """Store the signed bytes and apply their changes; returns once committed.

        Deliveries arriving together share one transaction (group_commit.py). One that cannot
        be applied is still stored, quarantined with the error, so nothing signed is lost.
        Relays that take the delivery (`fields`: of all its changes) get it queued with its
        `signature` header in the same commit (outbox.py).
        """
        item = NewDelivery(body, received_at_ms, changes, error, signature, fields)
        return await self._group_commit.submit(item)

    async def _commit_deliveries(self, items: list[NewDelivery]) -> list[DeliveryResult]:
        """One batch in one transaction; any failure is StoreUnavailable (503: Meta retries)."""
        try:
            return await self._db.run(record_batch(items, self._db))
        except StoreUnavailable:
            raise
        except Exception as error:
            logger.exception("a batch of %d deliveries failed; asking Meta to retry", len(items))
            raise StoreUnavailable(f"batch failed: {type(error).__name__}") from error

    @read
    def list_deliveries(self, outcome: str | None, limit: int) -> Transaction[list[Delivery]]:
        """The newest stored deliveries, optionally only those with `outcome`."""
        where, args = ("WHERE outcome = ?", [outcome]) if outcome else ("", [])
        rows = yield fetch(
            "SELECT id, received_at, outcome, error, body FROM webhook_deliveries "
            f"{where} ORDER BY id DESC LIMIT ?",
            *args,
            limit,
        )
        return [Delivery(**{**row, "body": bytes(row["body"])}) for row in rows]

    @transaction
    def prune_deliveries(self, before_ms: int, limit: int) -> Transaction[int]:
        """Delete up to `limit` of the oldest deliveries received before `before_ms`, except
        those a relay has still to send."""
        return (
            yield from count_returned(
                "DELETE FROM webhook_deliveries WHERE id IN (SELECT d.id FROM webhook_deliveries d "
                "WHERE d.received_at < ? AND NOT EXISTS (SELECT 1 FROM outbox o "
                "WHERE o.item_id = d.id AND o.kind = 'relay') ORDER BY d.received_at LIMIT ?) "
                "RETURNING id",
                before_ms,
                limit,
            )
        )

    @transaction
    def forget_dedupe_keys(self, before_ms: int, limit: int) -> Transaction[int]:
        """Clear up to `limit` dedupe keys of events received before `before_ms`; the history
        rows stay.

        The keys are found through their own unique index: an event is received after its
        entry.time, which leads its key, so the keys to clear are among those below the
        cutoff's. (A key whose entry.time is ahead of the clock it arrived by is kept until
        the cutoff passes that time: longer than the window, never shorter.)
        """
        return (
            yield from count_returned(
                "UPDATE template_events SET dedupe_key = NULL WHERE id IN (SELECT id FROM "
                "template_events WHERE dedupe_key < ? AND received_at < ? "
                "ORDER BY dedupe_key LIMIT ?) RETURNING id",
                dedupe_keys_below(before_ms // 1000),
                before_ms,
                limit,
            )
        )
