"""Settings: the only code that reads the environment (and the optional `.env` file)."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "TEMPLATE_SYNC_"


class ConfigError(Exception):
    """A setting has a value the service cannot use; the message names the variable."""


@dataclass(frozen=True)
class Secret:
    """A secret value that never shows in `repr`, logs or tracebacks."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


def _split(raw: str | None) -> tuple[Secret, ...]:
    return tuple(Secret(part.strip()) for part in (raw or "").split(",") if part.strip())


def _bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{PREFIX}{name} must be true or false, not {raw!r}")


def _number(
    name: str, raw: str, kind: type[int] | type[float], minimum: float, maximum: float
) -> int | float:
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name} must be a number, not {raw!r}") from None
    if not (math.isfinite(value) and minimum <= value <= maximum):
        raise ConfigError(f"{PREFIX}{name} must be between {minimum} and {maximum}, not {raw!r}")
    return value


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a `.env` file of KEY=VALUE lines (comments, blank lines and quotes allowed)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


@dataclass(frozen=True)
class Settings:
    database_url: str = field(default="sqlite:///data/template-sync.db", repr=False)
    meta_app_secrets: tuple[Secret, ...] = ()
    meta_verify_token: Secret | None = None
    graph_url: str = "https://graph.facebook.com/v25.0"
    encryption_keys: tuple[Secret, ...] = ()
    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = 8000
    forwarded_allow_ips: str = "127.0.0.1"
    shutdown_timeout_s: float = 20.0
    poll_enabled: bool = True
    poll_tick_s: float = 30.0
    # Not design.md's 300 s: Meta reviews in 5-30 minutes and sends no webhook before it
    # decides, so a shorter grace polls nearly every new template for nothing and delays
    # the repair of a lost verdict by an interval (bench/poller_cost.py; README).
    poll_grace_s: float = 1800.0
    poll_interval_s: float = 1800.0
    sync_deadline_s: float = 90.0
    sync_min_gap_s: float = 10.0  # an API sync sooner after the last answers its result
    max_body_bytes: int = 4 * 1024 * 1024
    outbox_max_age_s: float = 604_800.0  # 7 days of retries for an outbound delivery
    # How often the dispatcher looks for due rows; a row this process queues goes out at once.
    dispatch_tick_s: float = 1.0
    # How long a replica holds the rows it claimed; a dead replica's rows wait this long
    # before another (or its restart) sends them. Longer than the longest send (15 s).
    dispatch_lease_s: float = 60.0
    # Sends in flight to one relay or subscription at once, per replica (dispatch.PER_TARGET):
    # what a receiver must take concurrently; 16 drained a full outbox about 1.5-2x faster
    # than 4 (bench/drain.py), 32 no faster.
    dispatch_per_target: int = 16
    # Notification URLs may resolve to loopback, private or link-local addresses (safe_urls).
    webhooks_allow_private: bool = False
    # Limits of the HTTP server itself (server.py), for clients that reach it directly.
    max_header_bytes: int = 64 * 1024  # request line + headers
    request_timeout_s: float = 10.0  # for a request's headers; for a stalled body
    # Connections (and requests) at once, then 503: with the usual 1,024 descriptors this
    # leaves ~500 for the store, outbound HTTP, logs and the connections being refused.
    limit_concurrency: int = 512
    backlog: int = 2048  # connections the kernel queues before they are accepted
    retention_days: float = 30.0  # raw deliveries and sync runs (retention.py)
    dedupe_days: float = 8.0  # dedupe keys; Meta retries for up to 7 days
    log_format: str = "text" if sys.stderr.isatty() else "json"
    log_level: str = "INFO"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
    ) -> Settings:
        """Build settings from `TEMPLATE_SYNC_*` variables; the environment wins over `.env`."""
        env = dict(read_dotenv(dotenv)) if dotenv else {}
        env.update((k, v) for k, v in (os.environ if environ is None else environ).items() if v)

        def get(name: str) -> str | None:
            value = env.get(PREFIX + name)
            return value if value not in (None, "") else None

        kwargs: dict[str, object] = {}
        for name, attr in _PLAIN.items():
            if (raw := get(name)) is not None:
                kwargs[attr] = raw.lower() if name == "LOG_FORMAT" else raw
        for name, (attr, kind, minimum, maximum) in _NUMBERS.items():
            if (raw := get(name)) is not None:
                kwargs[attr] = _number(name, raw, kind, minimum, maximum)
        for name, attr in _FLAGS.items():
            if (raw := get(name)) is not None:
                kwargs[attr] = _bool(name, raw)
        if (raw := get("DATA_DIR")) is not None:
            kwargs["data_dir"] = Path(raw)
        kwargs["meta_app_secrets"] = _split(get("META_APP_SECRET"))
        kwargs["encryption_keys"] = _split(get("ENCRYPTION_KEYS"))
        if (raw := get("META_VERIFY_TOKEN")) is not None:
            kwargs["meta_verify_token"] = Secret(raw)
        settings = cls(**kwargs)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.log_format not in {"text", "json"}:
            raise ConfigError(f"{PREFIX}LOG_FORMAT must be text or json, not {self.log_format!r}")
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigError(f"{PREFIX}LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        if not self.database_url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ConfigError(f"{PREFIX}DATABASE_URL must start with sqlite:/// or postgresql://")

    @property
    def current_app_secret(self) -> str | None:
        """The secret Graph calls prove with (`appsecret_proof`): the first configured."""
        return self.meta_app_secrets[0].value if self.meta_app_secrets else None

    def unset_variables(self) -> list[str]:
        """Variables a production deployment still has to set, for the start-up banner."""
        missing = []
        if not self.meta_app_secrets:
            missing.append(PREFIX + "META_APP_SECRET")
        if self.meta_verify_token is None:
            missing.append(PREFIX + "META_VERIFY_TOKEN")
        if not self.encryption_keys:
            missing.append(PREFIX + "ENCRYPTION_KEYS")
        return missing


_PLAIN = {
    "DATABASE_URL": "database_url",
    "GRAPH_URL": "graph_url",
    "HOST": "host",
    "FORWARDED_ALLOW_IPS": "forwarded_allow_ips",
    "LOG_FORMAT": "log_format",
    "LOG_LEVEL": "log_level",
}
_FLAGS = {"POLL_ENABLED": "poll_enabled", "WEBHOOKS_ALLOW_PRIVATE": "webhooks_allow_private"}
_DAY_S = 86_400.0
_NUMBERS: dict[str, tuple[str, type[int] | type[float], float, float]] = {
    "PORT": ("port", int, 0, 65535),
    "POLL_TICK_S": ("poll_tick_s", float, 0.01, _DAY_S),
    "POLL_GRACE_S": ("poll_grace_s", float, 0, 30 * _DAY_S),
    "POLL_INTERVAL_S": ("poll_interval_s", float, 0, 30 * _DAY_S),
    "SYNC_DEADLINE_S": ("sync_deadline_s", float, 1, 3600),
    "SYNC_MIN_GAP_S": ("sync_min_gap_s", float, 0, 3600),
    "SHUTDOWN_TIMEOUT_S": ("shutdown_timeout_s", float, 1, 3600),
    "MAX_BODY_BYTES": ("max_body_bytes", int, 1, 1 << 30),
    "OUTBOX_MAX_AGE_S": ("outbox_max_age_s", float, 1, 365 * _DAY_S),
    "DISPATCH_TICK_S": ("dispatch_tick_s", float, 0.01, 3600),
    "DISPATCH_LEASE_S": ("dispatch_lease_s", float, 16, 3600),
    "DISPATCH_PER_TARGET": ("dispatch_per_target", int, 1, 256),
    "MAX_HEADER_BYTES": ("max_header_bytes", int, 1024, 1 << 24),
    "REQUEST_TIMEOUT_S": ("request_timeout_s", float, 0.1, 3600),
    "LIMIT_CONCURRENCY": ("limit_concurrency", int, 2, 1_000_000),
    "BACKLOG": ("backlog", int, 1, 65535),
    "RETENTION_DAYS": ("retention_days", float, 1, 36500),
    "DEDUPE_DAYS": ("dedupe_days", float, 7, 36500),
}
