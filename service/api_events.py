"""The event stream (design section 11): a workspace's events as server-sent events, for
applications that cannot expose a URL for webhooks.

A stream replays the durable history after the client's last event id, then polls the store
for newer events: polling, not an in-process signal, sees an event whichever replica
committed it. The store hands events out in commit order, so a client that reconnects with
`Last-Event-ID` misses none and receives none twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import StreamingResponse

from .api import MAX_ID, authorise, int_value
from .errors import ApiError
from .events import EVENT_TYPES
from .logs import LogLimiter
from .notifications import payload
from .server import STOPPING
from .state import services
from .storage import Store, StoreUnavailable, TemplateEvent

logger = logging.getLogger(__name__)

PAGE = 500  # events read per query, while replaying and when many arrive at once
POLL_S = 0.5  # the store is asked this often: an event reaches the stream within ~1 s
# A comment when nothing was written for this long, so proxies and clients see the stream
# alive: well within design section 11's 15 s, whenever the poll that notices it comes.
KEEP_ALIVE_S = 10.0
KEEP_ALIVE = b": keep-alive\n\n"
# No caching anywhere, and no buffering in nginx (it honours this header), so each event
# leaves the proxy as it arrives.
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def stream_events(request: Request) -> StreamingResponse:
    """Everything is checked before the first byte (the token, the parameters, the
    template), so a refusal is an ordinary JSON answer."""
    workspace_id = await authorise(request)
    after = _cursor(request)
    raw_template_id = request.query_params.get("template_id")
    template_id = None if raw_template_id is None else _event_id(raw_template_id, "template_id")
    svc = services(request)
    if template_id is not None and await svc.store.get_template(workspace_id, template_id) is None:
        raise ApiError(404, "Template not found")
    if after is None:
        after = await svc.store.latest_event_id()
    stopping: asyncio.Event | None = request.scope.get("state", {}).get(STOPPING)
    events = _stream(svc.store, svc.log_limiter, workspace_id, after, template_id, stopping)
    return StreamingResponse(events, media_type="text/event-stream", headers=HEADERS)


def _cursor(request: Request) -> int | None:
    """The id after which events are sent: `Last-Event-ID` (what an EventSource sends when it
    reconnects, so it wins over the URL's `after`), else `after`; None: from now on."""
    header = request.headers.get("last-event-id")
    if header:
        return _event_id(header, "Last-Event-ID")
    after = request.query_params.get("after")
    return None if after is None else _event_id(after, "after")


def _event_id(raw: str, name: str) -> int:
    return int_value(raw, name, 0, MAX_ID)


async def _stream(
    store: Store,
    log_limiter: LogLimiter,
    workspace_id: str,
    after: int,
    template_id: int | None,
    stopping: asyncio.Event | None,
) -> AsyncIterator[bytes]:
    """The events after `after`, then each new one within POLL_S, and a comment when
    KEEP_ALIVE_S passed without a write. Ends when the server stops (the client can resume
    elsewhere); the client's disconnect cancels it. While the store is out of reach it
    keeps trying: an EventSource that gets an error answer on reconnecting gives up."""
    loop = asyncio.get_running_loop()
    written_at = loop.time()
    while stopping is None or not stopping.is_set():
        try:
            page = await store.workspace_events(workspace_id, after, template_id, PAGE)
        except StoreUnavailable as error:
            page = []
            held_back = log_limiter.admit("event stream: store unavailable")
            if held_back is not None:
                logger.warning(
                    "event stream: store unavailable, retrying (%d such lines held back): %s",
                    held_back, error,
                )  # fmt: skip
        if page:
            after = page[-1].event.id
            written_at = loop.time()
            yield b"".join(_frame(found) for found in page)
            if len(page) == PAGE:
                continue  # more are waiting
        elif loop.time() - written_at >= KEEP_ALIVE_S:
            written_at = loop.time()
            yield KEEP_ALIVE
        await asyncio.sleep(POLL_S)


def _frame(found: TemplateEvent) -> bytes:
    """One server-sent event: its id is the history id, its data one line of JSON."""
    kind = EVENT_TYPES[found.event.row.field]
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (found.event.id, kind.encode(), payload(found))
