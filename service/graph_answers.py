"""What Graph answers, read as untrusted input: template objects, pages of them and their
`paging.next` links (followed only where the token may go, `GraphScope`), a create's answer,
a write's `{"success": true}`, and the exact match a name-and-language lookup needs.
Pure: no I/O; anything odd is `invalid_response`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from yarl import URL

from .graph_errors import GraphError

GRAPH_FIELDS = "id,name,language,status,category,rejected_reason,quality_score"
DELETED = "DELETED"
_NUMERIC_ID = re.compile(r"[0-9]{1,32}")
_WORD = re.compile(r"[A-Z][A-Z_]{0,63}")  # statuses and categories: APPROVED, PENDING ...


@dataclass(frozen=True)
class GraphTemplate:
    """One message template as reported by Graph."""

    id: str
    name: str
    language: str
    status: str
    category: str | None
    rejected_reason: str | None
    quality_score: str | None

    @classmethod
    def from_graph(cls, data: Any) -> GraphTemplate:
        """Build from a Graph object; raises GraphError(kind="invalid_response")."""
        if not isinstance(data, Mapping):
            raise GraphError("invalid_response", "template is not a JSON object")
        template_id = _id_string(data.get("id"))
        name, language, status = (_text(data.get(key)) for key in ("name", "language", "status"))
        if template_id is None or name is None or language is None or status is None:
            raise GraphError("invalid_response", "template lacks id, name, language or status")
        reason = _text(data.get("rejected_reason"))
        return cls(
            id=template_id,
            name=name,
            language=language,
            status=status,
            category=_text(data.get("category")),
            rejected_reason=None if reason == "NONE" else reason,
            quality_score=_quality_score(data.get("quality_score")),
        )


@dataclass(frozen=True)
class CreatedTemplate:
    """Meta's answer to a create: the new template's id (digits, kept as a string), its
    status (PENDING, or APPROVED at once) and its category (Meta may have changed it)."""

    id: str
    status: str
    category: str | None

    @classmethod
    def from_graph(cls, data: Mapping[str, Any]) -> CreatedTemplate:
        """Build from the answer; raises GraphError(kind="invalid_response"). The id names
        the template in later Graph paths, so anything but digits is refused."""
        template_id = _id_string(data.get("id"))
        if template_id is None or not _NUMERIC_ID.fullmatch(template_id):
            raise GraphError("invalid_response", "create answer lacks a numeric id")
        status, category = data.get("status"), data.get("category")
        if not isinstance(status, str) or not _WORD.fullmatch(status):
            raise GraphError("invalid_response", "create answer lacks a status")
        if category is not None and not (isinstance(category, str) and _WORD.fullmatch(category)):
            raise GraphError("invalid_response", "create answer has an odd category")
        return cls(id=template_id, status=status, category=category)


def require_success(data: Mapping[str, Any]) -> None:
    """An edit or delete is done only when Meta says `{"success": true}`."""
    if data.get("success") is not True:
        raise GraphError("invalid_response", "Meta did not confirm the change")


def page_templates(page: Mapping[str, Any]) -> list[GraphTemplate]:
    """The templates of one listed page."""
    data = page.get("data")
    if not isinstance(data, list):
        raise GraphError("invalid_response", "page lacks a data list")
    return [GraphTemplate.from_graph(item) for item in data]


@dataclass(frozen=True)
class GraphScope:
    """Where the token may go: the base URL's scheme, host and port, and its path without
    the last segment (the API version, which Meta's `paging.next` links may change)."""

    scheme: str
    host: str
    port: int | None
    path_prefix: str

    @classmethod
    def of(cls, base_url: URL) -> GraphScope:
        prefix = base_url.path.rstrip("/").rsplit("/", 1)[0] + "/"
        return cls(base_url.scheme, base_url.host or "", base_url.port, prefix)

    def admits(self, url: URL) -> bool:
        """Same origin, under the prefix, no credentials of its own, no dot segments."""
        return (
            (url.scheme, url.host, url.port) == (self.scheme, self.host, self.port)
            and url.path.startswith(self.path_prefix)
            and url.user is None
            and url.password is None
            and not {".", ".."} & set(url.path.split("/"))
        )


def live_match(
    templates: Iterable[GraphTemplate], name: str, language: str
) -> GraphTemplate | None:
    """The one template not DELETED with exactly this name and language, or None.

    Graph's `name` filter matches parts of names, and deleted templates stay listed; Meta
    keeps a name and language unique among the others, so two is an invalid response."""
    found = [
        t for t in templates if (t.name, t.language) == (name, language) and t.status != DELETED
    ]
    if len(found) > 1:
        raise GraphError("invalid_response", "two live templates share a name and language")
    return found[0] if found else None


def next_link(page: Mapping[str, Any]) -> URL | None:
    """A page's `paging.next` link; None on the last page (no `next`)."""
    paging = page.get("paging")
    if paging is None:
        return None
    if not isinstance(paging, dict):
        raise GraphError("invalid_response", "paging is not an object")
    next_url = paging.get("next")
    if next_url is None:
        return None
    try:
        url = URL(next_url) if isinstance(next_url, str) else None
    except ValueError:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise GraphError("invalid_response", "paging.next is not an absolute http(s) URL")
    return url


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _id_string(value: Any) -> str | None:
    """Graph ids are documented as numbers and sent as strings; floats would lose digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _text(value)


def _quality_score(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return _text(value.get("score"))
    return _text(value)
