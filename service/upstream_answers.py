"""What an upstream (design section 14) answers, read as untrusted input: its listed
templates, its error answers and their Retry-After. Pure: no I/O; anything malformed is
`UpstreamError("invalid_response")`, and texts kept from it are short and redacted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .graph_errors import MAX_META_TEXT_CHARS, redact

UpstreamKind = Literal[
    "network", "unauthorized", "not_found", "server", "throttled", "invalid_response"
]
MAX_RETRY_AFTER_S = 6 * 3600.0
MAX_TEXT_CHARS = 200  # the upstream's own message and detail, kept in ours
MAX_NAME_CHARS = 512  # Meta's limit on template names
MAX_LANGUAGE_CHARS = 32
_DIGITS = re.compile(r"[0-9]{1,32}")
_WORD = re.compile(r"[A-Z][A-Z_]{0,63}")  # statuses, categories and quality scores
_SECONDS = re.compile(r"[0-9]{1,16}")
_KINDS: dict[int, UpstreamKind] = {
    401: "unauthorized",
    403: "unauthorized",
    404: "not_found",
    429: "throttled",
}


class UpstreamError(Exception):
    """A failed upstream call. `message` is short and safe to store and show (never the
    token, never a whole body); `attempts` is how many requests the call made."""

    def __init__(
        self,
        kind: UpstreamKind,
        message: str,
        *,
        http_status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind: UpstreamKind = kind
        self.message = message
        self.http_status = http_status
        self.retry_after_s = retry_after_s
        self.attempts = 1

    @property
    def retryable(self) -> bool:
        """Worth another read at once: no answer, or a server error that did not ask us to
        wait (a Retry-After is left to the poller's backoff)."""
        return self.kind in ("network", "server") and self.retry_after_s is None


@dataclass(frozen=True)
class UpstreamTemplate:
    """One template as the upstream lists it (service.storage.RemoteTemplate's shape); `id`
    is the upstream's `provider_id`, Meta's template id."""

    id: str
    name: str
    language: str
    status: str
    category: str | None
    rejected_reason: str | None
    quality_score: str | None
    waba_id: str | None

    @classmethod
    def from_upstream(cls, item: Any) -> UpstreamTemplate | None:
        """Build from one listed item; None for a template not yet at Meta (no
        `provider_id`). Raises UpstreamError("invalid_response") for a malformed item."""
        if not isinstance(item, Mapping):
            raise invalid("a listed template is not a JSON object")
        if item.get("provider_id") in (None, ""):
            return None
        status = _text(item, "status", 64)
        if not _WORD.fullmatch(status):
            raise invalid("a listed template's status is not an upper-case word")
        return cls(
            id=_digits(item.get("provider_id"), "provider_id"),
            name=_text(item, "name", MAX_NAME_CHARS),
            language=_text(item, "language", MAX_LANGUAGE_CHARS),
            status=status,
            category=_category(item.get("category")),
            rejected_reason=_reason(item.get("rejected_reason")),
            quality_score=_quality_score(item.get("quality_score")),
            waba_id=None if item.get("waba_id") is None else _digits(item["waba_id"], "waba_id"),
        )


def answer_error(status: int, answer: Any, retry_after: str | None, token: str) -> UpstreamError:
    """The UpstreamError for a non-2xx answer, keeping the upstream's short message and
    `error.detail` (redacted of the token, cut short)."""
    # A redirect (never followed: it would carry the token) or a 4xx the seed never sends
    # is an answer this client does not understand.
    kind = _KINDS.get(status, "server" if status >= 500 else "invalid_response")
    message = ": ".join([f"HTTP {status}", *_answer_texts(answer, token)])
    return UpstreamError(
        kind, message, http_status=status, retry_after_s=parse_retry_after(retry_after)
    )


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in its seconds form, at most MAX_RETRY_AFTER_S; None otherwise."""
    if value is None or not _SECONDS.fullmatch(value.strip()):
        return None
    return min(float(value.strip()), MAX_RETRY_AFTER_S)


def page_templates(answer: Mapping[str, Any]) -> list[UpstreamTemplate]:
    """The templates of one listed page that Meta knows."""
    data = answer.get("data")
    if not isinstance(data, list):
        raise invalid("the list's data is not a list")
    return [t for t in map(UpstreamTemplate.from_upstream, data) if t is not None]


def _answer_texts(answer: Any, token: str) -> list[str]:
    """The answer's `message` and `error.detail` (or a string `error`), where present."""
    if not isinstance(answer, dict):
        return []
    error = answer.get("error")
    detail = error.get("detail") if isinstance(error, dict) else error
    texts = (answer.get("message"), detail)
    return [short(text, token) for text in texts if isinstance(text, str) and text.strip()]


def short(text: str, token: str) -> str:
    """Redacted, then cut to MAX_TEXT_CHARS (never half a token), unprintables made spaces."""
    text = redact(text, token)[:MAX_TEXT_CHARS]
    return "".join(c if c.isprintable() else " " for c in text).strip()


def invalid(message: str, http_status: int | None = None) -> UpstreamError:
    return UpstreamError("invalid_response", message, http_status=http_status)


def _text(item: Mapping[str, Any], key: str, max_chars: int) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= max_chars:
        raise invalid(f"a listed template lacks a valid {key}")
    return value


def _digits(value: Any, key: str) -> str:
    """Meta's ids: digits, sent as strings or as integers."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _DIGITS.fullmatch(value):
        raise invalid(f"a listed template's {key} is not 1 to 32 digits")
    return value


def _category(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _WORD.fullmatch(value):
        raise invalid("a listed template's category is not an upper-case word")
    return value


def _reason(value: Any) -> str | None:
    if value is None or value in ("", "NONE"):
        return None
    if not isinstance(value, str):
        raise invalid("a listed template's rejected_reason is not a string")
    return value[:MAX_META_TEXT_CHARS]


def _quality_score(value: Any) -> str | None:
    """A score string or Meta's `{"score": ...}`; anything else is no score (as from Graph)."""
    if isinstance(value, Mapping):
        value = value.get("score")
    return value if isinstance(value, str) and _WORD.fullmatch(value) else None
