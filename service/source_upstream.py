"""A LancePilot-compatible upstream as a workspace's source of truth (design section 14).

A sync asks the upstream to sync (the seed's endpoint: 200 synced, 404 "No pending templates
found": it had nothing left to ask Meta), then reads its template list either way and hands
back the state of the templates pending here, matched by `provider_id`. The upstream may not
have heard of a verdict a webhook brought here, so its answers never move a template out of
a decided status (`keeps_decided`). Its answers are untrusted (service.upstream bounds them).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence

from .crypto import DecryptionError
from .sources import Fetched, WabaFailure, by_waba
from .storage import PendingTemplate, Store
from .upstream import UpstreamClient, UpstreamError, UpstreamTemplate

logger = logging.getLogger(__name__)

ADD_WEBHOOKS_ONLY = "template-sync channel add --workspace {ws} --waba-id {waba} --webhooks-only"


class UpstreamSource:
    """A workspace's templates as its upstream has them (sources.Source)."""

    keeps_decided = True

    def __init__(self, store: Store, connect: Callable[[], UpstreamClient]) -> None:
        self._store = store
        self._connect = connect  # DecryptionError when the stored token cannot be read

    async def pending(
        self, workspace_id: str, pending: Sequence[PendingTemplate]
    ) -> AsyncIterator[Fetched]:
        try:
            client = self._connect()
            await client.sync()  # 404 "No pending templates found": its list is current
            listed = {template.id: template for template in await client.list_templates()}
        except (DecryptionError, UpstreamError) as error:
            yield Fetched("", failure=_failure(workspace_id, error))
            return
        for waba_id, items in by_waba(pending).items():
            found = [listed[item.provider_id] for item in items if item.provider_id in listed]
            yield Fetched(waba_id, found, len(items))

    async def everything(self, workspace_id: str) -> AsyncIterator[Fetched]:
        try:
            listed = await self._connect().list_templates()
        except (DecryptionError, UpstreamError) as error:
            yield Fetched("", failure=_failure(workspace_id, error))
            return
        channels = [channel.waba_id for channel in await self._store.list_channels(workspace_id)]
        unplaced = sum(template.waba_id is None for template in listed)
        if unplaced and len(channels) != 1:
            yield Fetched("", failure=_unplaced(workspace_id, unplaced, channels))
            return
        groups: dict[str, list[UpstreamTemplate]] = {}
        for template in listed:
            groups.setdefault(template.waba_id or channels[0], []).append(template)
        for waba_id, templates in groups.items():
            if waba_id in channels:
                yield Fetched(waba_id, templates)
                continue
            fix = ADD_WEBHOOKS_ONLY.format(ws=workspace_id, waba=waba_id)
            detail = f"the upstream's WABA is not a channel of this workspace: {fix}"
            yield Fetched(waba_id, failure=WabaFailure(waba_id, None, "config", detail))


def _failure(workspace_id: str, error: DecryptionError | UpstreamError) -> WabaFailure:
    if isinstance(error, DecryptionError):
        logger.error("the upstream token of workspace %s cannot be decrypted", workspace_id)
        detail = "the upstream's token cannot be decrypted: set it again (upstream set)"
        return WabaFailure("", None, "config", detail)
    logger.warning(
        "upstream of workspace %s failed: %s (HTTP %s) after %d attempt(s)",
        workspace_id, error.kind, error.http_status, error.attempts,
    )  # fmt: skip
    return WabaFailure(
        "", error.http_status, f"upstream_{error.kind}", error.message, None, error.retry_after_s
    )


def _unplaced(workspace_id: str, unplaced: int, channels: list[str]) -> WabaFailure:
    why = "has several channels" if channels else "has no channel"
    detail = (
        f"{unplaced} of the upstream's templates name no waba_id and the workspace {why}, so "
        "nothing was imported; add the WABA they belong to as this workspace's only channel: "
        + ADD_WEBHOOKS_ONLY.format(ws=workspace_id, waba="WABA_ID")
    )
    return WabaFailure("", None, "config", detail)
