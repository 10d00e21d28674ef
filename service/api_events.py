"""The event stream (design section 11): a workspace's events as server-sent events, for
applications that cannot expose a URL for webhooks.

A stream follows the process's event watch (watch.py), so a thousand streams cost one read
of the history per pass, not one each. It first replays the durable history after the
client's last event id, then sends what its feed brings: events committed by any replica,
in commit order, so a client that reconnects with `Last-Event-ID` misses none and receives
none twice. sse-starlette writes the protocol: the frames, the keep-alive comments, and the
end of the response when the client goes or the server stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, nullcontext

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request

from .api import MAX_ID, authorise, int_value
from .errors import ApiError
from .events import EVENT_TYPES
from .logs import LogLimiter
from .notifications import payload
from .server import STOPPING
from .state import services
from .storage import Store, StoreUnavailable, TemplateEvent
from .watch import Feed, closed_when

logger = logging.getLogger(__name__)

PAGE = 500  # events read per query while replaying
RETRY_S = 1.0  # a replay that found the store out of reach tries again after this long
# A comment this often, so proxies and clients see the stream alive: design section 11 says
# at least every 15 s; deploy/nginx.conf's read timeout is longer.
KEEP_ALIVE_S = 10.0
# No caching anywhere, and no buffering in nginx (it honours this header), so each event
# leaves the proxy as it arrives.
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def stream_events(request: Request) -> EventSourceResponse:
    """Everything is checked before the first byte (the token, the parameters, the
    template), so a refusal is an ordinary JSON answer."""
    workspace_id = await authorise(request)
    after = _cursor(request)
    raw_template_id = request.query_params.get("template_id")
    template_id = None if raw_template_id is None else _event_id(raw_template_id, "template_id")
    svc = services(request)
    if template_id is not None and await svc.store.get_template(workspace_id, template_id) is None:
        raise ApiError(404, "Template not found")
    stopping: asyncio.Event | None = request.scope.get("state", {}).get(STOPPING)
    events = _stream(request, workspace_id, after, template_id, stopping)
    return EventSourceResponse(
        events, headers=HEADERS, ping=KEEP_ALIVE_S, ping_message_factory=_keep_alive, sep="\n"
    )


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
    request: Request,
    workspace_id: str,
    after: int | None,
    template_id: int | None,
    stopping: asyncio.Event | None,
) -> AsyncIterator[ServerSentEvent]:
    """The events after `after` (None: from now on), read from the store until caught up,
    then from the feed; from the store again whenever the feed overflowed. Ends when the
    server stops (the client resumes elsewhere); while the store is out of reach the stream
    stays open and tries again, as an EventSource that gets an error on reconnecting gives
    up for good."""
    svc = services(request)
    async with svc.watch.follow(workspace_id) as feed, _closed_on_stop(feed, stopping):
        after = feed.start if after is None else after
        behind = after < feed.start  # committed before the feed began: in the store only
        while not feed.closed:
            if behind or feed.overflowed:
                feed.take()  # what it held is in the store too: the replay reads it
                page = await _replay(svc.store, svc.log_limiter, workspace_id, after, template_id)
                if page is None:
                    await feed.wait(RETRY_S)
                    behind = True
                    continue
                behind = len(page) == PAGE
            else:
                await feed.wait()
                if feed.overflowed:
                    continue
                page = [e for e in feed.take() if _wanted(e, after, template_id)]
            for found in page:
                yield _event(found)
            after = page[-1].event.id if page else after


def _closed_on_stop(
    feed: Feed, stopping: asyncio.Event | None
) -> AbstractAsyncContextManager[None]:
    return nullcontext() if stopping is None else closed_when(feed, stopping.wait)


def _wanted(found: TemplateEvent, after: int, template_id: int | None) -> bool:
    return found.event.id > after and template_id in (None, found.template.id)


async def _replay(
    store: Store, log_limiter: LogLimiter, workspace_id: str, after: int, template_id: int | None
) -> list[TemplateEvent] | None:
    """A page of the workspace's events after `after`; None while the store is out of reach
    (one log line a minute says so)."""
    try:
        return await store.events_after(after, PAGE, workspace_id, template_id)
    except StoreUnavailable as error:
        held_back = log_limiter.admit("event stream: store unavailable")
        if held_back is not None:
            logger.warning(
                "event stream: store unavailable, retrying (%d such lines held back): %s",
                held_back, error,
            )  # fmt: skip
        return None


def _event(found: TemplateEvent) -> ServerSentEvent:
    """One server-sent event: its id is the history id, its data one line of JSON."""
    kind = EVENT_TYPES[found.event.row.field]
    return ServerSentEvent(payload(found).decode(), event=kind, id=str(found.event.id), sep="\n")


def _keep_alive() -> ServerSentEvent:
    return ServerSentEvent(comment="keep-alive", sep="\n")
