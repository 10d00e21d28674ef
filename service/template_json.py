"""The template object of design section 5, as the API answers it and notifications carry it.

Apart from api.py so the dispatcher builds payloads without importing the web framework.
"""

from __future__ import annotations

from typing import Any

from .storage import Template
from .times import iso

TIME_FIELDS = ("status_updated_at", "last_webhook_at", "last_synced_at", "created_at", "updated_at")


def template_json(template: Template) -> dict[str, Any]:
    data = dict(vars(template))  # not dataclasses.asdict: it deep-copies every field
    data.update({name: iso(data[name]) for name in TIME_FIELDS})
    return data
