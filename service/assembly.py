"""What `serve`'s lifespan and the CLI both build from Settings, in one place.

`assembled(settings)` opens and migrates the store, loads the cipher of Meta tokens and
webhook secrets, opens one aiohttp session for Graph and relays and one for notifications
(whose connector refuses internal addresses unless WEBHOOKS_ALLOW_PRIVATE: their URLs come
from API clients), and builds the Syncer, the Poller and the Dispatcher over them, all
reporting to one Metrics; leaving the block closes the sessions, then the store. Nothing
here imports the web framework, so the CLI uses it without the app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp

from .config import Settings
from .crypto import TokenCipher, load_cipher
from .dispatch import BATCH, Dispatcher
from .metrics import Metrics
from .poller import Poller, default_owner
from .safe_urls import safe_session_connector
from .storage import Store, open_store
from .sync import Syncer

StoreOpener = Callable[[str], Awaitable[Store]]


@dataclass(frozen=True)
class Assembly:
    """The parts that live as long as `serve` (or one CLI command)."""

    settings: Settings
    store: Store
    metrics: Metrics
    cipher: TokenCipher
    session: aiohttp.ClientSession
    syncer: Syncer
    poller: Poller
    dispatcher: Dispatcher


@asynccontextmanager
async def assembled(
    settings: Settings, metrics: Metrics | None = None, store_opener: StoreOpener = open_store
) -> AsyncIterator[Assembly]:
    """Every part, ready; `store_opener` lets a test wrap the store.

    Raises StoreUnavailable (store) or ConfigError (encryption keys) before yielding.
    """
    metrics = metrics or Metrics()
    store = await store_opener(settings.database_url)
    try:
        await store.migrate()
        cipher = load_cipher(settings)
        async with aiohttp.ClientSession() as session, _webhook_session(settings) as webhooks:
            syncer = _syncer(settings, store, session, cipher, metrics)
            poller = _poller(settings, syncer, metrics)
            dispatcher = _dispatcher(settings, store, session, webhooks, cipher, metrics)
            yield Assembly(settings, store, metrics, cipher, session, syncer, poller, dispatcher)
    finally:
        await store.close()


def _syncer(
    settings: Settings,
    store: Store,
    session: aiohttp.ClientSession,
    cipher: TokenCipher,
    metrics: Metrics,
) -> Syncer:
    secret = settings.current_app_secret
    return Syncer(
        store, session, settings.graph_url, secret, cipher, metrics,
        deadline_s=settings.sync_deadline_s,
    )  # fmt: skip


def _poller(settings: Settings, syncer: Syncer, metrics: Metrics) -> Poller:
    return Poller(
        syncer.store,
        syncer,
        tick_s=settings.poll_tick_s,
        grace_s=settings.poll_grace_s,
        interval_s=settings.poll_interval_s,
        metrics=metrics,
    )


def _webhook_session(settings: Settings) -> aiohttp.ClientSession:
    """The notifications' session: no proxy from the environment, which would connect for
    it and so past the connector's address checks."""
    connector = safe_session_connector(settings.webhooks_allow_private)
    return aiohttp.ClientSession(connector=connector, trust_env=False)


def _dispatcher(
    settings: Settings,
    store: Store,
    session: aiohttp.ClientSession,
    webhooks: aiohttp.ClientSession,
    cipher: TokenCipher,
    metrics: Metrics,
) -> Dispatcher:
    return Dispatcher(
        store, session, metrics, webhook_session=webhooks, cipher=cipher, owner=default_owner(),
        max_age_s=settings.outbox_max_age_s, tick_s=settings.dispatch_tick_s,
        lease_s=settings.dispatch_lease_s, per_target=settings.dispatch_per_target,
        batch=max(BATCH, 4 * settings.dispatch_per_target),
    )  # fmt: skip
