"""The demo's stand-ins for the application, on loopback: its existing Meta webhook handler,
which a relay feeds (design section 10), and an app subscribed to notifications (section 11).

Each checks what it got as the real one would: the handler with Meta's signature check
(webhooks.verify_signature), the subscriber with the Standard Webhooks signature
(signing.verify, which tests/test_signing.py holds to the reference library).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

from aiohttp import web

from .demo_process import DemoError
from .signing import VerificationError, verify
from .simulator import serving_app
from .webhooks import SIGNATURE_HEADER, SignatureError, verify_signature

# A relay goes out at once, a notification at the dispatcher's next tick (DISPATCH_TICK_S, 1 s).
RECEIVE_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Receipt:
    """One POST as the receiver got it; `headers` is case-insensitive."""

    body: bytes = field(repr=False)
    headers: Mapping[str, str]


@dataclass
class Receiver:
    """A loopback endpoint that answers every POST 200 and keeps it for `next`."""

    name: str  # what it stands for, in messages
    url: str = ""
    _received: asyncio.Queue[Receipt] = field(default_factory=asyncio.Queue)

    async def _handle(self, request: web.Request) -> web.Response:
        await self._received.put(Receipt(await request.read(), request.headers.copy()))
        return web.Response(text="ok")

    async def next(self) -> Receipt:
        """The oldest POST not taken yet, waiting for one; DemoError if none comes in time."""
        try:
            return await asyncio.wait_for(self._received.get(), RECEIVE_TIMEOUT_S)
        except TimeoutError:
            raise DemoError(
                f"{self.name} received nothing within {RECEIVE_TIMEOUT_S:.0f} s "
                "(the service log says why)"
            ) from None


@dataclass
class Apps:
    """The application's stand-ins: its existing Meta webhook handler, fed by a relay, and an
    app subscribed to status changes, with the subscription's secret (never said)."""

    handler: Receiver
    subscriber: Receiver
    secret: str = field(default="", repr=False)


class Notified(NamedTuple):
    """What a notification tells: its type, and which template went from which status to
    which, observed by what (`source`); `before` is None for a template's first status."""

    type: str
    name: str
    before: str | None
    after: str
    source: str


@asynccontextmanager
async def receiving(name: str, path: str) -> AsyncIterator[Receiver]:
    """A Receiver serving POST `path` on a free loopback port for the block."""
    receiver = Receiver(name)
    app = web.Application()
    app.router.add_post(path, receiver._handle)
    async with serving_app(app) as origin:
        receiver.url = origin + path
        yield receiver


def check_relayed(receipt: Receipt, sent: bytes, app_secret: str) -> str:
    """Raise DemoError unless the handler got `sent` exactly, with an X-Hub-Signature-256 that
    verifies with the app secret (unchanged handlers accept it); the relay's delivery id."""
    if receipt.body != sent:
        raise DemoError(
            f"relay: the handler got {len(receipt.body)} bytes, not the {len(sent)} Meta sent"
        )
    try:
        verify_signature(receipt.body, receipt.headers.get(SIGNATURE_HEADER), [app_secret.encode()])
    except SignatureError as error:
        raise DemoError(f"relay: X-Hub-Signature-256 does not verify: {error}") from None
    return receipt.headers.get("X-Template-Sync-Delivery", "-")


def check_notification(receipt: Receipt, secret: str, now_s: float) -> Notified:
    """What the event tells, once its Standard Webhooks signature verifies with the
    subscription's `secret` and its timestamp is within the reference libraries' tolerance
    of `now_s`."""
    try:
        verify(secret, receipt.headers, receipt.body, now_s)
    except VerificationError as error:
        raise DemoError(f"notification: {error}") from None
    event = json.loads(receipt.body)
    try:
        data, template = event["data"], event["data"]["template"]
        before = None if data["previous"] is None else data["previous"]["status"]
        return Notified(event["type"], template["name"], before, template["status"],
                        data["source"])  # fmt: skip
    except (KeyError, TypeError) as error:
        raise DemoError(f"notification: no {error} in {receipt.body[:300]!r}") from None
