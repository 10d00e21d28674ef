"""Log set-up: JSON lines when not on a terminal, plain text on one.

Nothing here logs request bodies, query strings or headers: the handshake's query
carries the verify token and bodies are Meta's data. Log delivery ids instead.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

# A request scope key: a callable giving what an endpoint adds to its access log line.
LOG_DETAIL = "template_sync.log_detail"
# Attributes every LogRecord has; anything else was passed as `extra=` and is emitted.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(log_format: str, level: str) -> None:
    """Route the service's and uvicorn's logs to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    silence_leaky_loggers()


def silence_leaky_loggers() -> None:
    """Mute uvicorn's access log, whoever set logging up: it prints query strings, and the
    handshake's carries the verify token (ours does not)."""
    logging.getLogger("uvicorn.access").disabled = True


class LogLimiter:
    """At most one log line per key every `every_s` seconds, for lines a client can cause at
    any rate (a misconfigured sender retries for days). The line let through says how many
    were held back since the previous one. Keys must come from a fixed set."""

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._every_s = every_s
        self._clock = clock
        self._next_at: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def admit(self, key: str) -> int | None:
        """None when the line for `key` is to be held back; otherwise how many lines for it
        were held back since the last one let through."""
        now = self._clock()
        if now < self._next_at.get(key, now):
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._next_at[key] = now + self._every_s
        return self._held.pop(key, 0)
