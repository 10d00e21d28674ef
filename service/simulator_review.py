"""Meta's reviewer in the simulator: each new or edited template gets a verdict after a delay,
and Meta's signed status webhook goes to the configured URL.

The verdict is chosen when the template is submitted: the next queued verdict if any, else
REJECTED (INVALID_FORMAT) for a name starting with `reject_`, else APPROVED. The webhook is
built by meta_webhooks (the one builder of Meta's bodies) and signed with the app secret;
it is sent once, like a first attempt of Meta's, and may be dropped on purpose so that the
service's poller has to repair the status.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp

from .meta_webhooks import signed_headers, status_delivery
from .simulator_state import State, Verdict, WebhookRecord

logger = logging.getLogger(__name__)

REJECT_PREFIX = "reject_"
REJECTED_BY_PREFIX = Verdict("REJECTED", "INVALID_FORMAT")
SEND_TIMEOUT_S = 10.0


class Desk(Protocol):
    """What the reviewer reads of the simulator, afresh each time: tests change it."""

    review_delay_s: float | None  # None: no automatic review
    webhook_url: str | None
    drop_webhooks: bool

    @property
    def webhook_secret(self) -> str | None: ...

    @property
    def state(self) -> State: ...

    def now(self) -> float: ...


def next_verdict(state: State, name: str) -> Verdict:
    """The verdict for a template submitted now (see the module docstring)."""
    if state.verdicts:
        return state.verdicts.popleft()
    return REJECTED_BY_PREFIX if name.startswith(REJECT_PREFIX) else Verdict()


def apply_verdict(state: State, template: dict[str, Any], verdict: Verdict) -> None:
    """Set the template as the reviewer decided; a category change the creator did not
    allow rejects it instead (INCORRECT_CATEGORY), as Meta does."""
    status, reason = verdict.status, verdict.reason
    if verdict.category not in (None, template["category"]):
        if str(template["id"]) in state.fixed_category:
            status, reason = "REJECTED", "INCORRECT_CATEGORY"
        else:
            template["category"] = verdict.category
    template["status"] = status
    template["rejected_reason"] = reason if status == "REJECTED" else "NONE"


class Reviewer:
    """Runs the reviews of one simulator; `close()` cancels those still waiting."""

    def __init__(self, desk: Desk) -> None:
        self._desk = desk
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def submit(self, template: Mapping[str, Any]) -> Verdict:
        """Queue the template's review (none when the delay is None); returns its verdict."""
        verdict = next_verdict(self._desk.state, template["name"])
        delay_s = self._desk.review_delay_s
        if delay_s is not None:
            task = asyncio.create_task(self._review(str(template["id"]), verdict, delay_s))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return verdict

    @property
    def waiting(self) -> int:
        """Reviews not finished yet (their webhook included)."""
        return len(self._tasks)

    def forget(self) -> None:
        """Cancel the reviews still waiting (a reset: their templates are gone)."""
        for task in self._tasks:
            task.cancel()

    async def close(self) -> None:
        """Cancel the reviews still waiting and close the webhook client (shutdown)."""
        tasks = list(self._tasks)
        self.forget()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _review(self, template_id: str, verdict: Verdict, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        state = self._desk.state
        waba_id = state.owner.get(template_id)
        if waba_id is None:
            return  # forgotten by a reset
        template = state.template(template_id)
        if template["status"] != "PENDING":
            return  # deleted, or decided through the control API meanwhile
        apply_verdict(state, template, verdict)
        await self._notify(waba_id, template)

    async def _notify(self, waba_id: str, template: Mapping[str, Any]) -> None:
        """POST the status webhook, or record that it was dropped; never raises."""
        url, secret = self._desk.webhook_url, self._desk.webhook_secret
        if url is None or secret is None:
            return
        template_id, event = str(template["id"]), template["status"]
        record: dict[str, Any] = {"status": None, "error": None, "dropped": False}
        if self._desk.drop_webhooks:
            record["dropped"] = True
        else:
            body = status_delivery(
                waba_id=waba_id, template_id=template_id, event=event, name=template["name"],
                language=template["language"], reason=template["rejected_reason"],
            )  # fmt: skip
            record.update(await self._post(url, secret, body))
        self._desk.state.webhooks.append(
            WebhookRecord(template_id, event, url, at=self._desk.now(), **record)
        )
        logger.info("sim webhook %s for template %s: %s", event, template_id, record)

    async def _post(self, url: str, secret: str, body: bytes) -> dict[str, Any]:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=SEND_TIMEOUT_S)
            self._session = aiohttp.ClientSession(timeout=timeout)
        try:
            async with self._session.post(
                url, data=body, headers=signed_headers(secret, body)
            ) as response:
                return {"status": response.status}
        except (aiohttp.ClientError, TimeoutError) as error:
            return {"error": type(error).__name__}
