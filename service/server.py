"""The HTTP server of `serve`: uvicorn with uvloop and httptools, plus the limits that protect
the service when clients reach it directly, with no proxy in front.

- The request line and headers of a request may take `max_header_bytes` together: counted
  as bytes arrive, before the parser sees them, so an endless header is refused with 431
  after at most that many bytes were parsed (httptools' own cost grows with the square of
  a header value's size).
- A request's headers must arrive within `request_timeout_s` of the connection opening (or
  of the previous response on a kept-alive connection): a connection that sent nothing is
  closed silently (a 408 could cross a request the client is sending at that moment), one
  that sent part of a header gets 408 and is closed. A body that receives no byte for
  `request_timeout_s` gets 408 and is closed; the app sees a disconnect and stores nothing.
- A connection that would make `limit_concurrency` connections is answered 503 and closed at
  once, so descriptors stay bounded; uvicorn answers 503 the same way to a request arriving
  while that many connections or requests are open.
- A refused request's connection closes gracefully (a "lingering close", as nginx's): the
  answer, then FIN, then what the client still sends is read and dropped for up to
  `LINGER_S`. Closing with unread bytes would send a reset, which makes the client's kernel
  drop the answer before the client reads it.

Cost per request on a kept-alive connection: a few integer operations (bench/RESULTS.md,
"Why the code is as it is"); a timer is armed once per new connection and when a read
leaves a request incomplete, never per request otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from .config import PREFIX, Settings
from .logs import LogLimiter

logger = logging.getLogger(__name__)

LINGER_S = 2.0  # how long a refused connection is drained before it is closed
# Key, in the lifespan state every request's scope copies, of an asyncio.Event set when the
# server begins to shut down. uvicorn tells a response under way nothing until its grace
# period is over (then it cancels it), so one that never ends by itself (the event stream)
# watches this and ends at once.
STOPPING = "server_stopping"

_REFUSALS = {
    431: ("Request Header Fields Too Large", f"request header over {PREFIX}MAX_HEADER_BYTES"),
    408: ("Request Timeout", f"request not received within {PREFIX}REQUEST_TIMEOUT_S"),
    503: ("Service Unavailable", f"connections at {PREFIX}LIMIT_CONCURRENCY"),
}


class ServerConfig(uvicorn.Config):
    """uvicorn's Config with the limits `GuardedProtocol` enforces."""

    def __init__(self, app: ASGIApp, settings: Settings, **kwargs: Any) -> None:
        super().__init__(
            app,
            http=GuardedProtocol,  # httptools, never h11: the limits live in this class
            ws="none",  # the service has no WebSocket route; an upgrade stays plain HTTP
            limit_concurrency=settings.limit_concurrency,
            backlog=settings.backlog,
            **kwargs,
        )
        self.max_header_bytes = settings.max_header_bytes
        self.request_timeout_s = settings.request_timeout_s
        self.refusal_log = LogLimiter()  # clients cause refusals at any rate


class Server(uvicorn.Server):
    """uvicorn's Server that says, through the lifespan state's STOPPING, when it stops."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.stopping = asyncio.Event()
        self.lifespan.state[STOPPING] = self.stopping  # before any request copies the state
        await super().startup(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.stopping.set()
        await super().shutdown(sockets)


def build_server(app: ASGIApp, settings: Settings) -> uvicorn.Server:
    """The server `serve` runs: `app` on settings' address, with the limits above."""
    config = ServerConfig(
        app,
        settings,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_s),
    )
    return Server(config)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header size cap, header and body deadlines and a
    connection cap. At most one timer per connection, armed on state changes only; the
    parent's methods are called directly (cheaper than `super()` on this hot path)."""

    # Slots keep the instance dict at the parent's ~28 keys: past 30, CPython stops sharing
    # its keys and the parent's attribute accesses slow down (bench/RESULTS.md, "Why ...").
    __slots__ = (
        "_draining", "_header_bytes", "_in_body", "_last_read", "_max_header_bytes",
        "_refusal_log", "_timeout_s", "_timer",
    )  # fmt: skip

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not isinstance(config, ServerConfig):
            raise TypeError("GuardedProtocol needs a ServerConfig")
        HttpToolsProtocol.__init__(self, config, server_state, app_state, _loop)
        self._max_header_bytes = config.max_header_bytes
        self._timeout_s = config.request_timeout_s
        self._refusal_log = config.refusal_log
        self._draining = False  # refused: what arrives is dropped until the close
        self._in_body = False  # headers complete, body not yet
        self._header_bytes = 0  # received since the previous request ended
        self._last_read = 0.0  # loop time body bytes last arrived
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        HttpToolsProtocol.connection_made(self, transport)
        limit = self.limit_concurrency
        if limit is not None and len(self.connections) >= limit:
            self._refuse(503, linger=False)  # lingering would hold descriptors past the cap
            return
        self._arm(self.loop.time())

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        HttpToolsProtocol.connection_lost(self, exc)

    def data_received(self, data: bytes) -> None:
        if self._draining:
            return
        if self._in_body:
            self._last_read = self.loop.time()
        else:
            self._header_bytes += len(data)
            if self._header_bytes > self._max_header_bytes:
                self._over_header_cap(data)
                return
        keep_alive = self.timeout_keep_alive_task  # the parent cancels it on any read
        HttpToolsProtocol.data_received(self, data)
        if self._timer is None and (self._in_body or self._header_bytes):
            self._arm_after_read(keep_alive)

    def _over_header_cap(self, data: bytes) -> None:
        """This read takes the request's header over the cap: parse only the bytes within
        the cap. If the header ended there, go on with the rest; otherwise answer 431."""
        within = self._max_header_bytes - (self._header_bytes - len(data))
        self._header_bytes = self._max_header_bytes
        HttpToolsProtocol.data_received(self, data[:within])
        if self.transport.is_closing():
            return
        if self._in_body or self._header_bytes == 0:  # the header (or request) ended
            self.data_received(data[within:])
        else:
            self._refuse(431)

    def _arm_after_read(self, keep_alive: asyncio.TimerHandle | None) -> None:
        """The deadline a read left the connection needing: a body under way, or a header
        begun while no response is being sent (behind one, the kept-alive timeout that
        follows the response covers it), timed from the end of the previous response."""
        if self.transport.is_closing():
            return
        if self._in_body:
            self._last_read = self.loop.time()
            self._arm(self._last_read)
        elif self.cycle is None or self.cycle.response_complete:
            since = self.loop.time()
            if keep_alive is not None:
                since = keep_alive.when() - self.timeout_keep_alive
            self._arm(since)

    def on_headers_complete(self) -> None:
        self._in_body = True
        if self._timer is not None:
            self._disarm()
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._header_bytes = 0
        if self._timer is not None:
            self._disarm()
        HttpToolsProtocol.on_message_complete(self)

    def _arm(self, since: float) -> None:
        self._timer = self.loop.call_at(since + self._timeout_s, self._on_deadline)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_deadline(self) -> None:
        self._timer = None
        now = self.loop.time()
        if self.flow.read_paused or (self._in_body and self.cycle.waiting_for_100_continue):
            self._arm(now)  # the app has not read yet: the delay is not the client's
        elif self._in_body and self._last_read + self._timeout_s > now:
            self._arm(self._last_read)
        elif not self._in_body and not self._header_bytes:
            self.transport.close()  # nothing sent: idle, and no answer is owed
        elif not self._in_body or not self.cycle.response_started:
            if self._in_body:  # the app reads a disconnect: nothing half-received is kept
                self.cycle.disconnected = True
                self.cycle.message_event.set()
            self._refuse(408)
        else:
            self.transport.close()  # the app already answered; the rest of the body never came

    def _unsupported_upgrade_warning(self) -> None:
        logger.debug("upgrade request answered as plain HTTP")  # any client can send them

    def _refuse(self, status: int, *, linger: bool = True) -> None:
        """Answer `status` outside the app (no request reached it) and close: at once, or
        after draining what the client still sends (see the module's docstring)."""
        phrase, why = _REFUSALS[status]
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n")
        head.append(b"content-length: %d\r\n\r\n%s" % (len(phrase), phrase.encode()))
        self.transport.write(b"".join(head))
        if linger and self.transport.can_write_eof():
            self.transport.write_eof()
            self._draining = True
            self._disarm()
            self._timer = self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()
        held_back = self._refusal_log.admit(str(status))
        if held_back is not None:
            more = f" ({held_back} more since the last such line)" if held_back else ""
            logger.warning("answered %d and closed: %s%s", status, why, more)
