"""The upstream case of bench/poller_cost.py (issue 21): its workspaces in upstream mode,
the seed's 30-minute schedule as a client of the platform, and the platform's requests
counted the way poller_cost counts Graph calls.

S-up is the service itself (poller_cost's ServicePoller) once `use_upstream` has given every
workspace a webhooks-only channel and the platform as its upstream. B2-up is the seed's
advice taken literally; B2-up-pending is the same limited to workspaces with a template
pending here (poller_cost's B2 reading; the seed's own example checks for one first).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import aiohttp
from upstream_platform import Account, Platform

from service.crypto import TokenCipher
from service.storage import Store
from service.upstream import UpstreamClient, upstream_url


class Tenant(Protocol):
    @property
    def workspace_id(self) -> str: ...
    @property
    def waba_id(self) -> str: ...


async def use_upstream(
    store: Store, tenants: Sequence[Tenant], base_url: str, cipher: TokenCipher, now_ms: int
) -> None:
    """Every workspace as `upstream set` and `channel add --webhooks-only` leave it: the same
    WABA routing webhooks only (no Meta token), and its platform account as the upstream."""
    url = upstream_url(base_url)
    for tenant in tenants:
        account = Account.for_waba(tenant.waba_id)
        await store.remove_channel(tenant.waba_id)  # its templates stay
        await store.add_channel(tenant.workspace_id, tenant.waba_id, None, now_ms)
        await store.set_upstream(
            tenant.workspace_id, url, account.remote_workspace, cipher.encrypt(account.token),
            now_ms,
        )  # fmt: skip


class PlatformLog:
    """The platform's requests, read like poller_cost.CallLog reads the simulator's calls."""

    def __init__(self, platform: Platform, day_end_s: float) -> None:
        self._platform, self._day_end_s = platform, day_end_s
        self._seen = 0
        self.total = self.in_day = 0

    def drain(self) -> None:
        new = self._platform.requests[self._seen :]
        self._seen += len(new)
        self.total += len(new)
        self.in_day += sum(1 for request in new if request.at_s < self._day_end_s)

    def by_kind(self, day_only: bool = True) -> dict[str, int]:
        """Requests per kind and answer ("sync 200", "sync 404", "list 200"), in the day."""
        counts: dict[str, int] = {}
        for request in self._platform.requests:
            if not day_only or request.at_s < self._day_end_s:
                key = f"{request.kind} {request.status}"
                counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))


class SeedSchedule:
    """B2-up: every `period_s`, for every workspace (or, with `only_pending`, those with a
    template pending here), the seed's `POST .../templates/sync` and then every page of
    `GET .../templates`; the templates pending here take the listed status. No webhooks."""

    webhooks = False

    def __init__(
        self,
        store: Store,
        tenants: Sequence[Tenant],
        connect: Callable[[Account], UpstreamClient],
        now_ms: Callable[[], int],
        *,
        period_s: float,
        only_pending: bool,
    ) -> None:
        self.period_s = period_s
        self._store, self._tenants, self._connect, self._now_ms = store, tenants, connect, now_ms
        self._only_pending = only_pending

    async def tick(self) -> int:
        calls = 0
        for tenant in self._tenants:
            calls += await self._follow(tenant)
        return calls

    async def _follow(self, tenant: Tenant) -> int:
        """The seed's two calls for one workspace; returns the requests they made."""
        pending = await self._store.pending_templates(tenant.workspace_id)
        if self._only_pending and not pending:
            return 0
        client = self._connect(Account.for_waba(tenant.waba_id))
        await client.sync()  # 404 "No pending templates found" is no error (the seed)
        listed = {template.id: template for template in await client.list_templates()}
        chosen = [listed[p.provider_id] for p in pending if p.provider_id in listed]
        if chosen:
            await self._store.apply_remote(
                tenant.workspace_id, tenant.waba_id, chosen, self._now_ms(), create=False
            )
        return client.calls


def connector(session: aiohttp.ClientSession, base_url: str) -> Callable[[Account], UpstreamClient]:
    """UpstreamClients of the platform's accounts: the service's own client, as a peer
    following the seed would call the same API."""

    def connect(account: Account) -> UpstreamClient:
        return UpstreamClient(session, base_url, account.remote_workspace, account.token)

    return connect
