"""What Meta knows in the simulator: WABAs, tokens, templates, subscriptions, queued faults,
usage windows, the call log and what template writes leave behind (creation times, edit
times, names held after a delete, verdicts queued for the reviewer, webhooks sent); the Graph
endpoints and the control API both change it. Also deterministic templates to seed it with.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .simulator_faults import Fault

MAX_CALL_LOG = 10_000  # oldest calls are dropped so a long demo does not grow without bound
MAX_WEBHOOK_LOG = 1_000
FIRST_CREATED_ID = 9 * 10**15  # created ids: 16 digits, above make_templates' default range


@dataclass(frozen=True)
class CallRecord:
    """One Graph request as seen by the simulator (no tokens, no query string)."""

    method: str
    path: str
    object_id: str | None
    status: int
    at: float


@dataclass(frozen=True)
class Verdict:
    """What Meta's reviewer decides about a new or edited template.

    `category`: the category Meta moves the template to (only if it allows a change; else
    the template is REJECTED with INCORRECT_CATEGORY, as Meta does).
    """

    status: str = "APPROVED"
    reason: str = "NONE"  # the template's rejected_reason and the webhook's reason
    category: str | None = None


@dataclass(frozen=True)
class WebhookRecord:
    """One status webhook the reviewer sent (or dropped): no body, no signature."""

    template_id: str
    event: str
    url: str
    status: int | None  # the receiver's HTTP status; None when dropped or not delivered
    error: str | None
    dropped: bool
    at: float


@dataclass
class State:
    """Meta's side of the world; `Simulator.reset` replaces it with a new one."""

    wabas: dict[str, str] = field(default_factory=dict)  # id -> name
    tokens: dict[str, set[str]] = field(default_factory=dict)  # token -> WABA ids
    templates: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # by str id
    owner: dict[str, str] = field(default_factory=dict)  # template id -> WABA id
    subscribed: set[str] = field(default_factory=set)
    faults: list[Fault] = field(default_factory=list)
    windows: dict[str, deque[float]] = field(default_factory=dict)  # WABA -> call times
    calls: deque[CallRecord] = field(default_factory=lambda: deque(maxlen=MAX_CALL_LOG))
    created: dict[str, deque[float]] = field(default_factory=dict)  # WABA -> creation times
    edits: dict[str, list[float]] = field(default_factory=dict)  # template id -> edit times
    held: dict[tuple[str, str, str], float] = field(default_factory=dict)  # name key -> until
    fixed_category: set[str] = field(default_factory=set)  # allow_category_change: false
    verdicts: deque[Verdict] = field(default_factory=deque)  # the reviewer's next verdicts
    webhooks: deque[WebhookRecord] = field(default_factory=lambda: deque(maxlen=MAX_WEBHOOK_LOG))
    next_id: int = FIRST_CREATED_ID

    def add_waba(self, waba_id: str, token: str | None = None, *, name: str | None = None) -> None:
        """Register a WABA and optionally a token valid for it (tokens may cover many)."""
        self.wabas[waba_id] = name or f"WABA {waba_id}"
        self.templates.setdefault(waba_id, {})
        if token:
            self.tokens.setdefault(token, set()).add(waba_id)

    def add_templates(self, waba_id: str, templates: Iterable[Mapping[str, Any]]) -> int:
        """Insert or replace (by id) templates of a WABA; returns how many were given."""
        if waba_id not in self.wabas:
            self.add_waba(waba_id)
        items = self.templates[waba_id]
        count = 0
        for template in map(_normalise, templates):
            key = str(template["id"])
            if self.owner.setdefault(key, waba_id) != waba_id:
                raise ValueError(f"template {key} belongs to another WABA")
            items[key] = template  # replacing keeps the listing position
            count += 1
        return count

    def template(self, template_id: str) -> dict[str, Any]:
        """The stored template (not a copy); KeyError for an unknown id."""
        return self.templates[self.owner[template_id]][template_id]

    def create_template(
        self, waba_id: str, fields: Mapping[str, Any], status: str
    ) -> dict[str, Any]:
        """Store a template created through the Graph API under a new id; returns it."""
        while str(self.next_id) in self.owner:
            self.next_id += 1
        template = _normalise({**fields, "id": str(self.next_id), "status": status})
        self.next_id += 1
        self.add_templates(waba_id, [template])
        return self.template(template["id"])

    def waba_of(self, object_id: str | None) -> str | None:
        """The WABA a Graph path's object is, or owns it; None for anything else."""
        return object_id if object_id in self.wabas else self.owner.get(object_id or "")


def _normalise(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate and fill defaults; ids keep their JSON type (int or str) as given."""
    template_id = raw.get("id")
    if isinstance(template_id, bool) or not isinstance(template_id, int | str) or template_id == "":
        raise ValueError("template id must be an int or a non-empty string")
    for key in ("name", "language", "status"):
        if not isinstance(raw.get(key), str):
            raise ValueError(f"template {key} must be a string")
    quality = raw.get("quality_score", "UNKNOWN")
    return {
        "id": template_id,
        "name": raw["name"],
        "language": raw["language"],
        "status": raw["status"],
        "category": raw.get("category", "UTILITY"),
        "rejected_reason": raw.get("rejected_reason") or "NONE",
        "quality_score": quality.get("score") if isinstance(quality, Mapping) else quality,
        "components": list(raw.get("components") or []),
        "parameter_format": raw.get("parameter_format") or "POSITIONAL",
    }


def make_templates(
    waba_id: str, count: int, *, pending: int = 0, start_id: int | None = None
) -> list[dict[str, Any]]:
    """Deterministic templates for a WABA; the last `pending` of them are PENDING.

    Ids default to a 16-digit range derived from the WABA id, so WABAs do not collide.
    """
    if start_id is None:
        digest = hashlib.sha256(waba_id.encode()).digest()
        start_id = 10**15 + int.from_bytes(digest[:8], "big") % (8 * 10**15)
    languages, categories = ("en_US", "pt_BR", "es"), ("UTILITY", "MARKETING", "AUTHENTICATION")
    return [
        {
            "id": str(start_id + i),
            "name": f"template_{i:05d}",
            "language": languages[i % len(languages)],
            "status": "PENDING" if i >= count - pending else "APPROVED",
            "category": categories[i % len(categories)],
            "rejected_reason": "NONE",
            "quality_score": "UNKNOWN" if i >= count - pending else "GREEN",
        }
        for i in range(count)
    ]
