"""JSON answers rendered with orjson (issue 19): the JSON Starlette's JSONResponse renders
(compact, UTF-8 as it is, keys in insertion order), in a fraction of the time. Every JSON
answer of the app is one of these."""

from __future__ import annotations

from typing import Any

import orjson
from starlette import responses


class JSONResponse(responses.JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)
