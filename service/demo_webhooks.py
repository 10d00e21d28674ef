"""Meta's signed status webhooks sent to a service, as `template-sync send-webhook` and the
demo send them."""

from __future__ import annotations

import contextlib
import ssl

import aiohttp

from .meta_webhooks import signed_headers, status_delivery

HTTP_TIMEOUT = aiohttp.ClientTimeout(total=30)


async def send_webhook(
    url: str, app_secret: str, *, waba_id: str, template_id: str, event: str, name: str,
    language: str, entry_time: int | None = None, reason: str | None = None,
    session: aiohttp.ClientSession | None = None, tls: ssl.SSLContext | None = None,
) -> tuple[int, str]:  # fmt: skip
    """POST a signed status delivery to `url`; returns the status and the response text.

    An https URL's certificate is checked against `tls`'s CAs, or the system's.
    """
    body = status_delivery(
        waba_id=waba_id, template_id=template_id, event=event, name=name,
        language=language, entry_time=entry_time, reason=reason,
    )  # fmt: skip
    return await post_delivery(url, app_secret, body, session=session, tls=tls)


async def post_delivery(
    url: str, app_secret: str, body: bytes, *, session: aiohttp.ClientSession | None = None,
    tls: ssl.SSLContext | None = None,
) -> tuple[int, str]:  # fmt: skip
    """POST `body` signed as Meta signs it; the status and the response text."""
    async with contextlib.AsyncExitStack() as stack:
        if session is None:
            session = await stack.enter_async_context(aiohttp.ClientSession(timeout=HTTP_TIMEOUT))
        headers = signed_headers(app_secret, body)
        async with session.post(url, data=body, headers=headers, ssl=tls or True) as response:
            return response.status, await response.text()
