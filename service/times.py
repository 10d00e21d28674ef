"""Time as the service stores it (milliseconds since the epoch) and shows it (ISO 8601 Z)."""

from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(ms: int | None) -> str | None:
    """Milliseconds since the epoch as ISO 8601 UTC with a Z."""
    if ms is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))
