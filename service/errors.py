"""The one exception handlers raise for an HTTP error, and its JSON rendering."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .responses import JSONResponse


class ApiError(Exception):
    """An error answer: status, message, optional extra JSON fields and headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.extra = extra

    def response(self) -> JSONResponse:
        body = {"success": False, "message": self.message, **self.extra}
        return JSONResponse(body, status_code=self.status, headers=self.headers)
