"""Meta's rules for template writes in the simulator: what a create or an edit may contain,
when a name and language are taken, how many creates and edits Meta allows.

Pure functions over the simulator's state; a broken rule raises `GraphFailure` with Meta's
error body. Meta publishes no table of template subcodes: 2388023 ("exists"), 2388024 ("still
being deleted") and 2593002 ("not found") are the ones seen from Meta; the others are this
simulator's own, so a client keys on code 100 and only those three subcodes.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from .simulator_faults import GraphFailure, meta_error, throttled
from .simulator_state import State

NAME = re.compile(r"[a-z0-9_]{1,512}")
LANGUAGE = re.compile(r"[a-z]{2,3}(_[A-Z]{2,4})?")  # en, en_US, fil, pt_BR, zh_HK ...
CATEGORIES = ("AUTHENTICATION", "MARKETING", "UTILITY")
PARAMETER_FORMATS = ("NAMED", "POSITIONAL")
COMPONENT_TYPES = ("HEADER", "BODY", "FOOTER", "BUTTONS")
BODY_MAX_CHARS = 1024
EDITABLE = frozenset({"APPROVED", "REJECTED", "PAUSED"})
HELD_AFTER_DELETE = frozenset({"APPROVED", "PAUSED", "DISABLED"})  # were approved once

CREATES_PER_HOUR = 100  # per WABA
CREATE_WINDOW_S = 3600.0
HOLD_S = 30 * 86400.0  # a deleted approved template's name and language stay taken
DAY_S = 86400.0
# An approved template: one edit a day, ten in 30 days; rejected or paused ones: no limit.
EDIT_LIMITS = ((DAY_S, 1), (30 * DAY_S, 10))

EXISTS = 2388023
BEING_DELETED = 2388024
NOT_FOUND = 2593002
INVALID_NAME = 2388042  # the simulator's own from here on
INVALID_LANGUAGE = 2388043
INVALID_COMPONENTS = 2388044
NOT_EDITABLE = 2388045
CATEGORY_LOCKED = 2388046
EDIT_LIMIT = 2388047


def invalid(subcode: int, title: str, detail: str) -> GraphFailure:
    """Meta's answer to a write it refuses: "Invalid parameter" with a reason for people."""
    return GraphFailure(
        meta_error(400, 100, "Invalid parameter", subcode=subcode, is_transient=False,
                   user_title=title, user_msg=detail)
    )  # fmt: skip


def param_error(message: str) -> GraphFailure:
    """Graph's own check of a parameter's presence or type: code 100, no subcode."""
    return GraphFailure(meta_error(400, 100, f"(#100) {message}"))


def validate_create(params: Mapping[str, Any]) -> dict[str, Any]:
    """The template a create body describes, checked as Meta checks it."""
    for key in ("name", "language", "category", "components"):
        if params.get(key) in (None, ""):
            raise param_error(f"The parameter {key} is required")
    name, language = params["name"], params["language"]
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise invalid(INVALID_NAME, "Invalid template name",
                      "Template names may only contain lowercase letters, numbers and "
                      "underscores, and be at most 512 characters long.")  # fmt: skip
    if not isinstance(language, str) or not LANGUAGE.fullmatch(language):
        raise invalid(INVALID_LANGUAGE, "Language not supported",
                      f"{language!s:.40} is not a language code WhatsApp supports.")  # fmt: skip
    category = _choice(params, "category", CATEGORIES)
    return {
        "name": name,
        "language": language,
        "category": category,
        "components": validate_components(params["components"], category),
        "parameter_format": _choice(params, "parameter_format", PARAMETER_FORMATS, "POSITIONAL"),
        "allow_category_change": _flag(params, "allow_category_change", default=True),
    }


def validate_edit(params: Mapping[str, Any], current_category: str) -> dict[str, Any]:
    """The changes an edit body asks for: components, category or both."""
    if params.get("components") is None and params.get("category") is None:
        raise param_error("At least one of the parameters components or category is required")
    changes: dict[str, Any] = {}
    if params.get("category") is not None:
        changes["category"] = _choice(params, "category", CATEGORIES)
    if params.get("components") is not None:
        category = changes.get("category", current_category)
        changes["components"] = validate_components(params["components"], category)
    return changes


def validate_components(components: Any, category: str) -> list[dict[str, Any]]:
    """Meta's shape rules: a list of typed components, one BODY, each other type at most once.
    An AUTHENTICATION body carries no text of its own (Meta writes it)."""
    if not isinstance(components, list) or not all(isinstance(c, dict) for c in components):
        raise param_error("Param components must be an array of objects")
    types = [c.get("type") for c in components]
    unknown = [t for t in types if t not in COMPONENT_TYPES]
    if unknown:
        raise _bad_components(f"Unknown component type {unknown[0]!s:.40}.")
    repeated = sorted({t for t in types if types.count(t) > 1})
    if "BODY" not in types or repeated:
        raise _bad_components(
            f"A template has exactly one BODY and at most one {', '.join(repeated) or 'BODY'}."
        )
    body = components[types.index("BODY")]
    text = body.get("text")
    if category != "AUTHENTICATION" and (not isinstance(text, str) or not text.strip()):
        raise _bad_components("The BODY component needs a text.")
    if isinstance(text, str) and len(text) > BODY_MAX_CHARS:
        raise _bad_components(f"The BODY text is longer than {BODY_MAX_CHARS} characters.")
    return components


def check_name_free(state: State, waba_id: str, name: str, language: str, now: float) -> None:
    """2388023 while the name and language are in use; 2388024 while a deleted approved
    template still holds them (about 30 days)."""
    for template in state.templates[waba_id].values():
        same = (template["name"], template["language"]) == (name, language)
        if same and template["status"] != "DELETED":
            raise invalid(EXISTS, "Content in this language already exists",
                          f"There is already {language} content for the template {name}. "
                          "Create a template with another name or edit this one.")  # fmt: skip
    if state.held.get((waba_id, name, language), 0.0) > now:
        raise invalid(BEING_DELETED, "Message template language is being deleted",
                      f"New {language} content can't be added while the existing {language} "
                      "content is being deleted. Try again in 4 weeks or use another "
                      "name.")  # fmt: skip


def check_create_budget(times: deque[float], waba_id: str, now: float) -> None:
    """At most CREATES_PER_HOUR creations per WABA in any hour (`times`, oldest first, loses
    those that left the window): Graph's throttle answer, its usage header saying when the
    oldest creation leaves the window."""
    while times and times[0] <= now - CREATE_WINDOW_S:
        times.popleft()
    if len(times) >= CREATES_PER_HOUR:
        wait_s = times[-CREATES_PER_HOUR] + CREATE_WINDOW_S - now
        raise GraphFailure(throttled(waba_id, max(1, math.ceil(wait_s / 60)), 400))


def check_editable(
    template: Mapping[str, Any], changes: Mapping[str, Any], edits: Iterable[float], now: float
) -> None:
    """Only APPROVED, REJECTED and PAUSED templates are edited; an approved one keeps its
    category and is edited at most once a day and ten times in 30 days."""
    status = template["status"]
    if status not in EDITABLE:
        raise invalid(NOT_EDITABLE, "Template can't be edited",
                      f"This template is {status}: only approved, rejected or paused "
                      "templates can be edited.")  # fmt: skip
    if status != "APPROVED":
        return
    if changes.get("category", template["category"]) != template["category"]:
        raise invalid(CATEGORY_LOCKED, "Category can't be changed",
                      "The category of an approved template can't be edited.")  # fmt: skip
    done = list(edits)
    for window_s, most in EDIT_LIMITS:
        if sum(1 for t in done if t > now - window_s) >= most:
            days = round(window_s / DAY_S)
            raise invalid(EDIT_LIMIT, "Edit limit reached",
                          f"An approved template can be edited {most} time"
                          f"{'s' * (most > 1)} in {days} day{'s' * (days > 1)}.")  # fmt: skip


def not_found(name: str) -> GraphFailure:
    """A delete that matched no template of the WABA."""
    return invalid(NOT_FOUND, "Message template not found",
                   f"The message template {name:.512} wasn't found for this account.")  # fmt: skip


def _bad_components(detail: str) -> GraphFailure:
    return invalid(INVALID_COMPONENTS, "Invalid message template components", detail)


def _choice(
    params: Mapping[str, Any], key: str, allowed: tuple[str, ...], default: str | None = None
) -> str:
    value = params.get(key, default)
    if value not in allowed:
        raise param_error(f'Param {key} must be one of {{{", ".join(allowed)}}} - got "{value}"')
    return str(value)


def _flag(params: Mapping[str, Any], key: str, *, default: bool) -> bool:
    """A boolean parameter; form bodies send it as "true" or "false"."""
    value = params.get(key, default)
    value = {"true": True, "false": False}.get(value, value) if isinstance(value, str) else value
    if not isinstance(value, bool):
        raise param_error(f"Param {key} must be a boolean")
    return value
