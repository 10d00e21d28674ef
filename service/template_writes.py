"""Template writes at Meta (design section 12): create, edit and delete a template through
the Graph API, then bring the store to what Meta answered (history rows of source "api").
Shared by the API (api_templates.py) and the CLI; nothing here imports the web framework.

A refusal is a WriteRefused with a `reason` the API maps to its status code and the CLI to
its message. A create is never retried blindly: when Meta's answer is lost or unreadable (a
network error, a timeout, a 5xx, an answer that is not Meta's), the template may exist all
the same, so it is looked up by name and language before anything is said.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Literal

from . import throttle
from .config import PREFIX
from .crypto import DecryptionError, NoMetaToken
from .graph import CreatedTemplate, GraphClient
from .graph_errors import (
    ErrorKind,
    GraphError,
    ThrottledError,
    is_name_taken,
    is_template_not_found,
)
from .storage import Channel, NewTemplate, NotFound, Template
from .sync import Syncer
from .template_drafts import Draft, DraftError, Edit

logger = logging.getLogger(__name__)

Reason = Literal["not_found", "exists", "refused", "throttled", "unavailable", "config"]
DELETED = "DELETED"
# Errors after which a create may have taken effect at Meta all the same.
OUTCOME_UNKNOWN: frozenset[ErrorKind] = frozenset({"network", "transient", "invalid_response"})


@dataclass
class WriteRefused(Exception):
    """Why a write did not happen: `reason`, a message for people, Meta's error if it said
    no, and how long to wait when Meta throttles."""

    reason: Reason
    message: str
    error: GraphError | None = None
    retry_after_s: float | None = None

    def __str__(self) -> str:
        return self.message


class TemplateWriter:
    """Creates, edits and deletes templates at Meta for a workspace's channels."""

    def __init__(self, syncer: Syncer, trigger: str = "api") -> None:
        self._syncer = syncer
        self._store = syncer.store
        self._trigger = trigger  # how its Graph calls are counted in metrics

    async def create(self, workspace_id: str, draft: Draft, now_ms: int) -> Template:
        channel = await self._channel(workspace_id, draft.waba_id)
        live = await self._store.find_live_template(
            workspace_id, channel.waba_id, draft.name, draft.language
        )
        if live is not None:
            raise WriteRefused("exists", "Template already exists")
        graph, token = await self._graph(channel, now_ms)
        try:
            created = await graph.create_template(channel.waba_id, token, draft.graph_body())
        except GraphError as error:
            if error.kind not in OUTCOME_UNKNOWN:
                raise await self._refusal(channel.waba_id, error, now_ms) from None
            created = await self._created_anyway(graph, channel, token, draft, error, now_ms)
        new = NewTemplate(
            workspace_id, channel.waba_id, created.id, draft.name, draft.language,
            created.category or draft.category, created.status,
        )  # fmt: skip
        return await _recorded(self._store.record_api_create(new, now_ms), "Channel")

    async def edit(self, workspace_id: str, template_id: int, edit: Edit, now_ms: int) -> Template:
        template = await self._template(workspace_id, template_id)
        channel = await self._channel(workspace_id, template.waba_id)
        graph, token = await self._graph(channel, now_ms)
        try:
            await graph.edit_template(template.provider_id, token, edit.graph_body())
        except GraphError as error:
            raise await self._refusal(channel.waba_id, error, now_ms) from None
        recorded = self._store.record_api_edit(workspace_id, template_id, edit.category, now_ms)
        return await _recorded(recorded, "Template")

    async def delete(self, workspace_id: str, template_id: int, now_ms: int) -> Template:
        """Delete this language of the template at Meta; its row and history stay, DELETED.
        A template Meta no longer has counts as deleted."""
        template = await self._template(workspace_id, template_id)
        if template.status == DELETED:
            return template
        channel = await self._channel(workspace_id, template.waba_id)
        graph, token = await self._graph(channel, now_ms)
        try:
            await graph.delete_template(channel.waba_id, token, template.name, template.provider_id)
        except GraphError as error:
            if not is_template_not_found(error):
                raise await self._refusal(channel.waba_id, error, now_ms) from None
        recorded = self._store.record_api_delete(workspace_id, template_id, now_ms)
        return await _recorded(recorded, "Template")

    async def _template(self, workspace_id: str, template_id: int) -> Template:
        template = await self._store.get_template(workspace_id, template_id)
        if template is None:
            raise WriteRefused("not_found", "Template not found")
        return template

    async def _channel(self, workspace_id: str, waba_id: str | None) -> Channel:
        """The channel to write through: `waba_id`'s, or the workspace's only one."""
        channels = await self._store.list_channels(workspace_id)
        if waba_id is None and len(channels) != 1:
            why = "has no channel" if not channels else "has several channels: name one"
            raise DraftError({"waba_id": [f"The waba_id field is required: the workspace {why}."]})
        found = [c for c in channels if waba_id in (None, c.waba_id)]
        if not found:
            raise DraftError({"waba_id": ["The waba_id field names no channel of the workspace."]})
        return found[0]

    async def _graph(self, channel: Channel, now_ms: int) -> tuple[GraphClient, str]:
        """A Graph client and the channel's token, unless Meta's stored block is on."""
        block = await throttle.blocked(self._store, channel.waba_id, now_ms)
        if block is not None:
            raise WriteRefused(
                "throttled", "Meta rate limit: retry later",
                retry_after_s=throttle.remaining_s(block, now_ms),
            )  # fmt: skip
        try:
            token = self._syncer.token(channel)
        except NoMetaToken:
            message = (
                f"The channel of WABA {channel.waba_id} has no Meta token (webhooks only): "
                "its templates are written where its upstream keeps them."
            )
            raise DraftError({"waba_id": [message]}) from None
        except DecryptionError:
            logger.error("the Meta token of WABA %s cannot be decrypted: is a key of %s"
                         "ENCRYPTION_KEYS missing?", channel.waba_id, PREFIX)  # fmt: skip
            message = "The channel's Meta token cannot be decrypted: ask the operator"
            raise WriteRefused("config", message) from None
        return self._syncer.graph(self._trigger), token

    async def _created_anyway(
        self, graph: GraphClient, channel: Channel, token: str, draft: Draft, lost: GraphError,
        now_ms: int,
    ) -> CreatedTemplate:  # fmt: skip
        """Meta's answer to a create was lost: the template it made, if it made one."""
        logger.warning("create of %s at WABA %s: answer lost (%s), looking it up",
                       draft.name, channel.waba_id, lost.kind)  # fmt: skip
        try:
            found = await graph.find_template(channel.waba_id, token, draft.name, draft.language)
        except GraphError as error:
            logger.warning("create of %s at WABA %s: lookup failed: %s",
                           draft.name, channel.waba_id, error.kind)  # fmt: skip
            if isinstance(error, ThrottledError):
                await throttle.record(self._store, channel.waba_id, error, now_ms)
            raise WriteRefused("unavailable", "Meta unavailable: retry later", lost) from None
        if found is None:
            raise WriteRefused("unavailable", "Meta unavailable: retry later", lost)
        logger.info("create of %s at WABA %s: answer lost, found it as %s",
                    draft.name, channel.waba_id, found.id)  # fmt: skip
        return CreatedTemplate(found.id, found.status or "PENDING", found.category)

    async def _refusal(self, waba_id: str, error: GraphError, now_ms: int) -> WriteRefused:
        """Meta's error as the contract's refusal; a throttle is stored for every caller."""
        logger.warning(
            "template write at WABA %s failed: %s, Graph code %s/%s, fbtrace_id %s",
            waba_id, error.kind, error.code, error.subcode, error.fbtrace_id,
        )  # fmt: skip
        if is_name_taken(error):
            return WriteRefused("exists", "Template already exists", error)
        if isinstance(error, ThrottledError):
            await throttle.record(self._store, waba_id, error, now_ms)
            return WriteRefused(
                "throttled", "Meta rate limit: retry later", error, error.regain_access_s
            )
        if error.kind == "other" and error.http_status is not None and error.http_status < 500:
            return WriteRefused("refused", "Meta refused the template", error)
        return WriteRefused("unavailable", "Meta unavailable or the token refused", error)


async def _recorded(write: Awaitable[Template], what: str) -> Template:
    """The store's record of a write Meta did; "not_found" when the template (or the
    channel) was removed here while Meta did it."""
    try:
        return await write
    except NotFound as error:
        logger.warning("a template write done at Meta is not recorded here: %s", error)
        raise WriteRefused("not_found", f"{what} not found") from None
