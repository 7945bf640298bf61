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

from .errors import ApiError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def host_name(header: str) -> str:
    """The name in a Host header, without port or brackets, lower case: "[::1]:8080" -> "::1"."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    name = header.rpartition(":")[0] if header.count(":") == 1 else header
    return name.rstrip(".")


def allowed_hosts(bind_host: str, extra: frozenset[str]) -> frozenset[str]:
    return LOCAL_HOSTS | {host_name(bind_host)} | {host_name(h) for h in extra}


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not from a page's script: curl, scripts, or a same-origin GET
    host = request.headers.get("Host", "")
    return origin.lower() in (f"http://{host}".lower(), f"https://{host}".lower())


def _bearer(request: web.Request) -> bytes:
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else ""
    if not given and request.path.startswith("/api/jobs/") and request.path.endswith("/stream"):  # the SSE streams
        given = request.query.get("access_token", "")
    try:
        return given.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # not a token we could have issued
        return b""


def access_middleware(
    hosts: frozenset[str], api_token: str | None, local_token: str | None
) -> Any:
    """Who may call this server.

    - The Host must be one of our names (421 otherwise), so a DNS-rebound name cannot reach us
      from a browser. "*" in `hosts` allows every name.
    - With API_TOKEN set, every /api route and the stream need it: `Authorization: Bearer <token>`,
      or `?access_token=` (RFC 6750) for the stream, since EventSource cannot send headers.
    - Without it, requests with no Origin (curl, scripts) and from our own origin (the dashboard
      we serve) pass; a request from any other origin, `null` included (a page opened from disk,
      a sandboxed frame), needs the local token (run.py makes one), so no web page can drive us.

    The dashboard page, /healthz and /metrics stay public: the page holds no data."""
    required = (api_token or "").encode()
    cross_origin = (local_token or "").encode()

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if "*" not in hosts and host_name(request.headers.get("Host", "localhost")) not in hosts:
            raise ApiError(421, "misdirected_request", "this server does not answer to that host name (see ALLOWED_HOSTS)")
        if request.path.startswith("/api/") and request.method != "OPTIONS":
            expected = required or (None if _same_origin(request) else cross_origin)
            # constant time: the comparison must not tell how much of a guess was right
            if expected is not None and not (expected and hmac.compare_digest(_bearer(request), expected)):
                raise ApiError(401, "unauthorized", "a valid API token is required (Authorization: Bearer <token>)")
        return await handler(request)

    return guard


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
            # Served by the server, the page talks to its own origin only: a saved token can go
            # nowhere else. (?api= is for the page opened from disk, which has no such header.)
            "connect-src 'self'",
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
