"""What every endpoint uses, from the parts the lifespan assembled, as one typed object."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from starlette.requests import Request

from .config import Settings
from .crypto import TokenCipher
from .dispatch import Dispatcher
from .logs import LogLimiter
from .metrics import Metrics
from .storage import Store
from .sync import Syncer
from .template_writes import TemplateWriter
from .watch import EventWatch


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: Store
    metrics: Metrics
    syncer: Syncer
    dispatcher: Dispatcher  # nudged when a delivery is queued for relays
    cipher: TokenCipher  # encrypts webhook subscriptions' secrets
    watch: EventWatch  # event streams and waiting GETs follow it; nudged on a webhook's change
    writer: TemplateWriter  # template writes at Meta (api_templates.py)

    @cached_property  # read on every webhook: encoded once
    def app_secrets(self) -> tuple[bytes, ...]:
        return tuple(secret.value.encode() for secret in self.settings.meta_app_secrets)

    @cached_property  # one per app, like its metrics
    def log_limiter(self) -> LogLimiter:
        return LogLimiter()


def services(request: Request) -> Services:
    found: Services = request.state.services
    return found
