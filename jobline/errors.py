"""The API's error shape, `ApiError`, and parsing a JSON request body into it.

Standard library only: validation uses it, and through validation so do the worker and the Python
client, which serve no HTTP. The HTTP half (the error middleware, reading a body in time) is in
http_errors.py: aiohttp costs a fresh interpreter ~100 ms, which a worker would pay before its
first job."""

from __future__ import annotations

import json
from typing import Any


class ApiError(Exception):
    """An error the client caused or must know about, shown as {"error": {"code", "message"}}."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            error["field"] = self.field
        return {"error": error}


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity: Python accepts them, browsers do not


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} overflows a double")  # 1e999 would be stored as Infinity
    return value


def parse_json_body(raw: bytes, allow_empty: bool = False) -> Any:
    if not raw.strip():
        if allow_empty:
            return {}
        raise ApiError(400, "invalid_json", "the request body is empty; send a JSON object")
    try:
        return json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "the request body is not valid JSON") from None
