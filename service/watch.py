"""The event watch: one reader of the history per process, for every event stream and every
GET that waits for a verdict (design section 11).

A follower (a stream, a waiting GET) registers for one workspace and gets a Feed: the events
committed after `Feed.start`, pushed as the watch reads them. The watch reads the history
only while someone follows, one query per pass whatever the number of followers, and hands
each event to its workspace's followers. A pass runs every POLL_S, which is how an event
committed by another replica arrives (within about POLL_S), and at once when this process
says it committed one (`nudge`).

Each event reaches a feed at most once, in commit order (history ids are in commit order).
A feed that falls more than MAX_QUEUED events behind is emptied and marked `overflowed`;
its follower reads what it missed from the store, as it replays on connect.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext, suppress

from .logs import LogLimiter
from .loops import Signals, in_background, repeat
from .storage import Store, StoreUnavailable, Template, TemplateEvent

logger = logging.getLogger(__name__)

POLL_S = 0.5  # another replica's event reaches this one's followers within about this long
PAGE = 500  # events read per query
MAX_QUEUED = 2000  # events one feed holds before it is marked overflowed
STOP_TIMEOUT_S = 2.0
# A waiting template is read again this often without an event of it (a removal writes none).
RECHECK_S = 5.0


class Feed:
    """The events of one workspace committed after `start`, as the watch reads them, until
    its follower closes it."""

    def __init__(self, workspace_id: str, start: int) -> None:
        self.workspace_id = workspace_id
        self.start = start
        self.overflowed = False
        self.closed = False
        self._events: deque[TemplateEvent] = deque()
        self._woken = asyncio.Event()

    def put(self, event: TemplateEvent) -> None:
        if len(self._events) >= MAX_QUEUED:
            self._events.clear()
            self.overflowed = True
        else:
            self._events.append(event)
        self._woken.set()

    def close(self) -> None:
        """End the follower's wait for good: its client went, or the server is stopping."""
        self.closed = True
        self._woken.set()

    async def wait(self, timeout_s: float | None = None) -> None:
        """Until an event is waiting, the feed overflowed or closed, or `timeout_s` passed."""
        if not (self._events or self.overflowed or self.closed):
            with suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), timeout_s)
        self._woken.clear()

    def take(self) -> list[TemplateEvent]:
        """The waiting events; the overflow mark is cleared with them, so a follower that saw
        it reads from the store whatever the feed dropped."""
        events = list(self._events)
        self._events.clear()
        self.overflowed = False
        return events


@asynccontextmanager
async def closed_when(feed: Feed, happens: Callable[[], Awaitable[object]]) -> AsyncIterator[None]:
    """Close `feed` as soon as `happens()` completes, for the block's duration."""

    async def watch() -> None:
        await happens()
        feed.close()

    task = asyncio.create_task(watch())
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


class EventWatch:
    """See the module docstring. `running()` runs it for an application's lifespan."""

    def __init__(self, store: Store, poll_s: float = POLL_S) -> None:
        self._store = store
        self._poll_s = poll_s
        self._followers: defaultdict[str, set[Feed]] = defaultdict(set)
        self._cursor = 0  # the newest history id handed to followers (or skipped: none)
        self._signals = Signals()
        self._log_limiter = LogLimiter()

    @property
    def following(self) -> int:
        """Feeds open in this process: streams and waiting GETs."""
        return sum(len(feeds) for feeds in self._followers.values())

    def nudge(self) -> None:
        """Read now: this process has just committed an event. Called on every applied
        webhook, so it costs nothing while nobody follows (no wake-up of the loop)."""
        if self._followers:
            self._signals.wake()

    @asynccontextmanager
    async def follow(self, workspace_id: str) -> AsyncIterator[Feed]:
        """A feed of the workspace's events from now on, for the block's duration."""
        if not self._followers:  # nobody followed: the cursor stood still, skip what passed
            newest = await self._store.latest_event_id()
            if not self._followers:  # still nobody, so no pass is handing events out
                self._cursor = max(self._cursor, newest)
        feed = Feed(workspace_id, self._cursor)
        self._followers[workspace_id].add(feed)
        try:
            yield feed
        finally:
            feeds = self._followers[workspace_id]
            feeds.discard(feed)
            if not feeds:
                del self._followers[workspace_id]

    async def run_once(self) -> None:
        """Hand every event committed since the last pass to its workspace's followers. While
        the store is out of reach, followers wait (streams stay open) and the next pass
        tries again; one log line a minute says so."""
        while self._followers:
            try:
                events = await self._store.events_after(self._cursor, PAGE)
            except StoreUnavailable as error:
                held_back = self._log_limiter.admit("unavailable")
                if held_back is not None:
                    logger.warning(
                        "event watch: store unavailable, retrying (%d such lines held back): %s",
                        held_back, error,
                    )  # fmt: skip
                return
            for event in events:
                if event.event.id > self._cursor:  # `follow` may have moved the cursor on
                    for feed in self._followers.get(event.template.workspace_id, ()):
                        feed.put(event)
                    self._cursor = event.event.id
            if len(events) < PAGE:
                return

    async def run(self) -> None:
        await repeat("event watch", self.run_once, self._poll_s, self._signals)

    def running(self) -> AbstractAsyncContextManager[None]:
        return in_background("event watch", self.run, self._signals, STOP_TIMEOUT_S)


async def wait_until(
    watch: EventWatch,
    template: Template,
    read: Callable[[], Awaitable[Template]],
    done: Callable[[Template], bool],
    timeout_s: float,
    ends: Callable[[], Awaitable[object]] | None = None,
) -> Template:
    """`template` as `read()` gives it, read again whenever the watch brings one of its
    events (committed by any replica) or its feed overflowed, and every RECHECK_S, until
    `done` says so, `timeout_s` passed or `ends()` completed (the client went away); the
    last read. It is read once first: a change may have come before the feed began."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with (
        watch.follow(template.workspace_id) as feed,
        nullcontext() if ends is None else closed_when(feed, ends),
    ):
        template = await read()
        check_at = loop.time() + RECHECK_S
        while not done(template) and not feed.closed and loop.time() < deadline:
            await feed.wait(min(deadline, check_at) - loop.time())
            missed = feed.overflowed
            mine = any(found.template.id == template.id for found in feed.take())
            if missed or mine or loop.time() >= check_at:
                template = await read()
                check_at = loop.time() + RECHECK_S
    return template
