"""Meta's Graph API as a workspace's source of truth: each WABA read with its channel's
token, by the cheaper of two strategies, honouring Meta's throttling windows.

Strategy per WABA, in Graph calls: one `GET /{template_id}` per pending template costs P
calls; paging the whole list costs ceil(N / page_limit) calls for N templates (N estimated
from the templates stored here, a lower bound when Meta has templates not registered here).
The sync reads template by template when P is at most that page count, the list otherwise.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial

from . import throttle
from .crypto import DecryptionError, TokenCipher, meta_token
from .graph import GraphClient, GraphTemplate
from .graph_errors import GraphError, ThrottledError
from .sources import Fetched, WabaFailure, by_waba
from .storage import Channel, PendingTemplate, Store

logger = logging.getLogger(__name__)

NOT_FOUND = (100, 33)  # Graph: "object does not exist"
ReadWaba = Callable[[str], Awaitable[list[GraphTemplate]]]  # a WABA's read, given its token


class GraphSource:
    """A workspace's WABAs read at Meta (sources.Source)."""

    keeps_decided = False

    def __init__(
        self, store: Store, graph: GraphClient, cipher: TokenCipher, now_ms: Callable[[], int]
    ) -> None:
        self._store = store
        self._graph = graph
        self._cipher = cipher
        self._now_ms = now_ms

    async def pending(
        self, workspace_id: str, pending: Sequence[PendingTemplate]
    ) -> AsyncIterator[Fetched]:
        channels = {c.waba_id: c for c in await self._store.list_channels(workspace_id)}
        counts = await self._store.template_counts(workspace_id)
        for waba_id, items in by_waba(pending).items():
            wanted = frozenset(item.provider_id for item in items)
            read = partial(self._pending_state, waba_id, wanted, counts.get(waba_id, 0))
            yield await self._read(waba_id, channels.get(waba_id), read, len(items))

    async def everything(self, workspace_id: str) -> AsyncIterator[Fetched]:
        for channel in await self._store.list_channels(workspace_id):
            read = partial(self._graph.list_templates, channel.waba_id)
            yield await self._read(channel.waba_id, channel, read, 0)

    async def _read(
        self, waba_id: str, channel: Channel | None, read: ReadWaba, asked: int
    ) -> Fetched:
        """`read` with the channel's token, unless Meta's stored block (which holds for
        every caller) or the channel keeps the WABA from Meta."""
        if blocked := await self._blocked(waba_id):
            return Fetched(waba_id, failure=blocked)
        if channel is None:
            failure = WabaFailure(waba_id, None, "config", "no channel for this WABA")
            return Fetched(waba_id, failure=failure)
        try:
            templates = await read(meta_token(self._cipher, channel.access_token_enc, waba_id))
        except DecryptionError as error:
            return Fetched(waba_id, failure=WabaFailure(waba_id, None, "config", str(error)))
        except GraphError as error:
            return Fetched(waba_id, failure=await self._graph_failure(waba_id, error))
        return Fetched(waba_id, templates, asked)

    async def _pending_state(
        self, waba_id: str, wanted: frozenset[str], stored: int, token: str
    ) -> list[GraphTemplate]:
        """Meta's state of the `wanted` templates, by the cheaper strategy (module doc)."""
        if read_one_by_one(len(wanted), stored, self._graph.page_limit):
            found = [await _get_or_none(self._graph, pid, token) for pid in sorted(wanted)]
            return [template for template in found if template is not None]
        return [t for t in await self._graph.list_templates(waba_id, token) if t.id in wanted]

    async def _blocked(self, waba_id: str) -> WabaFailure | None:
        """The failure of a WABA that Meta's stored block keeps Graph calls away from."""
        now = self._now_ms()
        block = await throttle.blocked(self._store, waba_id, now)
        if block is None:
            return None
        wait_s = throttle.remaining_s(block, now)
        return WabaFailure(waba_id, block.code, "throttled", "Meta rate limit", None, wait_s)

    async def _graph_failure(self, waba_id: str, error: GraphError) -> WabaFailure:
        logger.warning(
            "sync of WABA %s failed: %s, Graph code %s, fbtrace_id %s",
            waba_id, error.kind, error.code, error.fbtrace_id,
        )  # fmt: skip
        retry_after_s = None
        if isinstance(error, ThrottledError):
            await throttle.record(self._store, waba_id, error, self._now_ms())
            retry_after_s = error.regain_access_s
        return WabaFailure(
            waba_id, error.code, error.kind, error.message, error.fbtrace_id, retry_after_s
        )


def read_one_by_one(pending: int, stored: int, page_limit: int) -> bool:
    """True when a GET per pending template costs no more calls than paging the list."""
    return pending <= math.ceil(max(stored, 1) / page_limit)


async def _get_or_none(graph: GraphClient, template_id: str, token: str) -> GraphTemplate | None:
    try:
        return await graph.get_template(template_id, token)
    except GraphError as error:
        if (error.code, error.subcode) == NOT_FOUND:
            return None  # deleted at Meta: counted as missing
        raise
