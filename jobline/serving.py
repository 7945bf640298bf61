"""Serving the app over HTTP, safe at the edges aiohttp leaves open.

- A request that cannot be parsed (request line over the limit, `HTTP/9.9`, a space in the target,
  an oversized header) gets the JSON error shape, and neither the answer nor the log repeats any of
  it: the line or header may hold a token.
- At the open-file limit the server refuses new connections (asyncio's accept loop backs off for a
  second) and says so in one log line, at most once a second, instead of a traceback per attempt.
- Streams are capped so that they cannot take the last file descriptors (see `stream_cap`).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import time
from http import HTTPStatus
from typing import Any

from aiohttp import web

log = logging.getLogger("jobline.server")

FD_RESERVE = 64  # descriptors kept for API calls, Redis connections, logs and the listening socket
FD_PER_STREAM = 2  # the client's socket and the stream's Redis subscription
OUT_OF_FILES = (errno.EMFILE, errno.ENFILE)


class Throttled:
    """A log line at most once per `interval` seconds per key; the rest are counted and reported."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -self.interval) < self.interval:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return
        skipped = self._skipped.pop(key, 0)
        self._last[key] = now
        log.warning(message + (f" ({skipped} more like it since the last)" if skipped else ""), *args)


THROTTLED = Throttled()


def raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard one; returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def stream_cap(max_streams: int, fd_limit: int) -> int:
    """As many streams as asked for, but never so many that they would use the last descriptors."""
    return max(1, min(max_streams, (fd_limit - FD_RESERVE) // FD_PER_STREAM))


def is_out_of_files(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in OUT_OF_FILES


class _GuardedRequestHandler(web.RequestHandler):
    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """A low-level error as JSON, without echoing the request or logging its text."""
        if request.writer.output_size > 0:  # a response is under way: the connection is broken
            raise ConnectionError("response already started")
        if status >= 500:
            log.error("error handling %s %s: %s", request.method, request.path, type(exc).__name__)
            code, text = "internal_error", "unexpected server error"
        else:
            kind = type(exc).__name__ if exc is not None else "error"
            THROTTLED.warning("malformed", "refused a malformed request from %s (%d, %s)", request.remote, status, kind)
            code = "too_large" if status in (413, 431) else "bad_request"
            text = f"malformed HTTP request: {HTTPStatus(status).phrase.lower()}" if status in HTTPStatus._value2member_map_ else "malformed HTTP request"
        response = web.json_response({"error": {"code": code, "message": text}}, status=status)
        response.force_close()
        return response


    async def finish_response(self, request: Any, resp: web.StreamResponse, start_time: float | None) -> Any:
        result = await super().finish_response(request, resp, start_time)
        if resp.status == 408:  # answered; close now rather than read the late body for 10 s more
            self.force_close()
        return result


class _GuardedServer(web.Server):
    def __call__(self) -> web.RequestHandler:
        return _GuardedRequestHandler(self, loop=self._loop, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """An AppRunner whose connections answer protocol errors with `_GuardedRequestHandler`."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _GuardedServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **server._kwargs,
        )


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """At the open-file limit asyncio pauses accepting for a second and reports it with a
    traceback; one line a second says it better."""
    default = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if error is not None and is_out_of_files(error):
            THROTTLED.warning("fd-limit", "at the open-file limit: refusing new connections for now (%s)", error.strerror)
            return
        if default is not None:
            default(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
