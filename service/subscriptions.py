"""Registering a workspace's signed outbound webhook (design section 11): the checks of its URL
and event types, the cap per workspace and its secret, in one place for the API and the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .crypto import TokenCipher
from .events import EVENT_TYPES
from .safe_urls import UnsafeURL, check_url, check_url_resolving
from .signing import new_secret
from .storage import Store, Subscription
from .times import iso

MAX_PER_WORKSPACE = 20  # each one is a delivery per event: a bound on one tenant's fan-out
EVENT_CHOICES = tuple(EVENT_TYPES.values())


class InvalidSubscription(ValueError):
    """What is wrong with a registration, by field (the API's `errors`); the message is the
    first problem."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(next(iter(errors.values()))[0])
        self.errors = errors


@dataclass(frozen=True)
class Registered:
    subscription: Subscription
    secret: str = field(repr=False)  # shown once, to whoever registered it; stored encrypted


async def subscribe(
    store: Store,
    cipher: TokenCipher,
    workspace_id: str,
    url: object,
    events: object,
    *,
    allow_private: bool,
    now_ms: int,
) -> Registered:
    """Check and store a subscription of `workspace_id`. `url` and `events` are as the caller
    received them (JSON values): None events means every type. Raises InvalidSubscription."""
    errors: dict[str, list[str]] = {}
    checked_url = _form_checked(url, allow_private, errors)
    types = _event_types(events, errors)
    if errors:
        raise InvalidSubscription(errors)
    if len(await store.list_subscriptions(workspace_id)) >= MAX_PER_WORKSPACE:
        message = f"The workspace has {MAX_PER_WORKSPACE} webhooks, the most it may have; "
        raise InvalidSubscription({"url": [message + "delete one first."]})
    try:  # last: the only check that waits (on DNS)
        await check_url_resolving(checked_url, allow_private)
    except UnsafeURL as error:
        raise InvalidSubscription({"url": [str(error)]}) from None
    secret = new_secret()
    added = await store.add_subscription(
        workspace_id, checked_url, types, cipher.encrypt(secret), now_ms
    )
    return Registered(added, secret)


def _form_checked(url: object, allow_private: bool, errors: dict[str, list[str]]) -> str:
    """`url` when it is a string of an acceptable form (no DNS yet); else an error for it."""
    if url is None:
        errors["url"] = ["The url field is required."]
    elif not isinstance(url, str):
        errors["url"] = ["The url field must be a string."]
    else:
        try:
            return check_url(url, allow_private)
        except UnsafeURL as error:
            errors["url"] = [str(error)]
    return ""


def _event_types(events: object, errors: dict[str, list[str]]) -> tuple[str, ...]:
    """The event types asked for, each once, in order; () for every type (None)."""
    if events is None:
        return ()
    allowed = ", ".join(EVENT_CHOICES)
    names = events if isinstance(events, list) else None
    if names is None or not all(isinstance(name, str) for name in names):
        errors["events"] = [f"The events field must be a list of event types of: {allowed}."]
    elif not names:
        message = "The events field must name an event type; leave it out for every type."
        errors["events"] = [message]
    elif unknown := [name for name in names if name not in EVENT_CHOICES]:
        errors["events"] = [f"The event type {unknown[0]!r} is unknown; allowed: {allowed}."]
    else:
        return tuple(dict.fromkeys(names))
    return ()


def subscription_json(subscription: Subscription) -> dict[str, Any]:
    """A subscription as the API and `webhook list --json` show it: never its secret;
    `events` null when it takes every type."""
    return {
        "id": subscription.id,
        "url": subscription.url,
        "events": list(subscription.events) or None,
        "enabled": subscription.enabled,
        "disabled_reason": subscription.disabled_reason,
        "created_at": iso(subscription.created_at),
        "last_success_at": iso(subscription.last_success_at),
        "failing_since": iso(subscription.failing_since),
    }
