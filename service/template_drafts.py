"""What a client asks to create or change at Meta (design section 12), checked before any
Graph call. Pure: the API answers the errors in LancePilot's field-error shape, the CLI
prints them.

Only the fields the contract names are taken; any other is refused by name, as a typo would
otherwise reach Meta silently or be dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .events import language_code, template_category

NAME = re.compile(r"[a-z0-9_]{1,512}")
WABA_ID = re.compile(r"[0-9]{1,32}")
PARAMETER_FORMATS = ("NAMED", "POSITIONAL")  # as Graph takes them; any case here
CREATE_FIELDS = (
    "name", "language", "category", "components", "waba_id", "allow_category_change",
    "parameter_format",
)  # fmt: skip
EDIT_FIELDS = ("components", "category")
MAX_COMPONENTS = 10

Errors = dict[str, list[str]]


class DraftError(ValueError):
    """The request's fields that are wrong, each with what is expected."""

    def __init__(self, errors: Errors) -> None:
        super().__init__("; ".join(f"{name}: {' '.join(why)}" for name, why in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class Draft:
    """A template to create at Meta; `waba_id` None: the workspace's only channel."""

    name: str
    language: str
    category: str
    components: tuple[Mapping[str, Any], ...]
    waba_id: str | None = None
    allow_category_change: bool | None = None
    parameter_format: str | None = None

    def graph_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "language": self.language,
            "category": self.category,
            "components": list(self.components),
        }
        if self.allow_category_change is not None:
            body["allow_category_change"] = self.allow_category_change
        if self.parameter_format is not None:
            body["parameter_format"] = self.parameter_format
        return body


@dataclass(frozen=True)
class Edit:
    """What to change of a template at Meta: its components, its category or both."""

    components: tuple[Mapping[str, Any], ...] | None = None
    category: str | None = None

    def graph_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.components is not None:
            body["components"] = list(self.components)
        if self.category is not None:
            body["category"] = self.category
        return body


def draft(body: object) -> Draft:
    """A create request's body as a Draft; DraftError naming every wrong field."""
    fields, errors = _fields(body, CREATE_FIELDS)
    name = _checked(errors, "name", fields.get("name"), _name)
    language = _checked(errors, "language", fields.get("language"), _language)
    category = _checked(errors, "category", fields.get("category"), _category)
    components = _checked(errors, "components", fields.get("components"), _components)
    waba_id = _optional(errors, "waba_id", fields, _waba_id)
    allow = _optional(errors, "allow_category_change", fields, _boolean)
    parameter_format = _optional(errors, "parameter_format", fields, _parameter_format)
    if errors:
        raise DraftError(errors)
    return Draft(name, language, category, components, waba_id, allow, parameter_format)


def edit(body: object) -> Edit:
    """An edit request's body as an Edit; DraftError naming every wrong field."""
    fields, errors = _fields(body, EDIT_FIELDS)
    components = _optional(errors, "components", fields, _components)
    category = _optional(errors, "category", fields, _category)
    if not errors and components is None and category is None:
        errors["components"] = ["The components or the category field is required."]
    if errors:
        raise DraftError(errors)
    return Edit(components, category)


def _fields(body: object, allowed: tuple[str, ...]) -> tuple[Mapping[str, Any], Errors]:
    if not isinstance(body, dict):
        raise DraftError({"body": ["The body must be a JSON object."]})
    unknown = sorted(set(body) - set(allowed))
    errors = {
        name: [f"The {name} field is not accepted; accepted: {', '.join(allowed)}."]
        for name in unknown
    }
    return body, errors


def _checked(errors: Errors, name: str, value: object, check: Any) -> Any:
    if value is None:
        errors[name] = [f"The {name} field is required."]
        return None
    try:
        return check(value)
    except ValueError as error:
        errors[name] = [f"The {name} field {error}."]
        return None


def _optional(errors: Errors, name: str, fields: Mapping[str, Any], check: Any) -> Any:
    return None if fields.get(name) is None else _checked(errors, name, fields[name], check)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _name(value: object) -> str:
    if not NAME.fullmatch(_text(value)):
        raise ValueError("must be 1 to 512 lower-case letters, digits or underscores")
    return str(value)


def _language(value: object) -> str:
    return language_code(_text(value))


def _category(value: object) -> str:
    return template_category(_text(value))


def _waba_id(value: object) -> str:
    if not WABA_ID.fullmatch(_text(value)):
        raise ValueError("must be a WABA id (digits)")
    return str(value)


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _parameter_format(value: object) -> str:
    if not _text(value).isascii() or str(value).upper() not in PARAMETER_FORMATS:
        raise ValueError(f"must be one of {', '.join(PARAMETER_FORMATS)} (any case)")
    return str(value).upper()


def _components(value: object) -> tuple[Mapping[str, Any], ...]:
    """A non-empty list of objects with a `type` (any case; sent upper case, as Meta takes
    it), exactly one of them BODY; the rest of each component is Meta's to judge."""
    if not isinstance(value, list) or not value or len(value) > MAX_COMPONENTS:
        raise ValueError(f"must be a list of 1 to {MAX_COMPONENTS} components")
    if not all(isinstance(item, dict) and _ascii_text(item.get("type")) for item in value):
        raise ValueError("must hold objects, each with a type")
    components = tuple({**item, "type": item["type"].upper()} for item in value)
    if sum(item["type"] == "BODY" for item in components) != 1:
        raise ValueError("must hold exactly one component of type BODY")
    return components


def _ascii_text(value: object) -> bool:
    return isinstance(value, str) and value.isascii()
