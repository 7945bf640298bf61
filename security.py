"""Who may call the API, what the browser may run, and what the access log may say."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from validation import ApiError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def token_middleware(api_token: str | None) -> Any:
    """With API_TOKEN set, every /api route and the stream need it: `Authorization: Bearer <token>`,
    or `?access_token=` (RFC 6750) for the stream, since EventSource cannot send headers. The dashboard page, /healthz and
    /metrics stay public: the page holds no data."""
    expected = (api_token or "").encode()

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected and request.path.startswith("/api/") and request.method != "OPTIONS":
            header = request.headers.get("Authorization", "")
            given = header[7:] if header.startswith("Bearer ") else ""
            if not given and request.path == "/api/jobs/stream":
                given = request.query.get("access_token", "")
            # constant time: the comparison must not tell how much of a guess was right
            if not hmac.compare_digest(given.encode(), expected):
                raise ApiError(401, "unauthorized", "a valid API token is required (Authorization: Bearer <token>)")
        return await handler(request)

    return require_token


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def dashboard_headers(html: str) -> dict[str, str]:
    """A Content-Security-Policy that allows exactly the page's own inline script and style."""
    scripts = [_sha256(body) for body in re.findall(r"<script>(.*?)</script>", html, re.S)]
    styles = [_sha256(body) for body in re.findall(r"<style>(.*?)</style>", html, re.S)]
    none = "'none'"
    policy = "; ".join(
        [
            "default-src 'none'",
            f"script-src {' '.join(scripts) or none}",
            f"style-src {' '.join(styles) or none}",
            "connect-src *",  # the page may talk to another Jobline given as ?api=
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


async def add_nosniff(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


class AccessLogger(AbstractAccessLogger):
    """Method, path (never the query string: it may carry the stream's token), status, time."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %.1fms', request.remote, request.method, request.path, response.status, time * 1000
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
