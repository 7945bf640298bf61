"""HTTP plumbing: the middleware that gives every failure the JSON error shape (errors.ApiError),
and reading JSON request bodies (in time, and only as application/json)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import redis.exceptions
from aiohttp import web

from . import serving
from .connections import UNAVAILABLE
from .errors import ApiError, parse_json_body
from .store import JobNotFound, JobStateConflict

log = logging.getLogger("jobline.server")

BODY_TIMEOUT = web.AppKey("body_timeout", float)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "too_large",
    415: "unsupported_media_type",
}


def error_response(error: ApiError) -> web.Response:
    return web.json_response(error.body(), status=error.status)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes {"error": {"code", "message"}}; never a traceback."""
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(error)
    except JobNotFound as missing:
        return error_response(ApiError(404, "not_found", f"no job with id {missing.args[0]!r}"))
    except JobStateConflict as error:
        return error_response(ApiError(409, "conflict", str(error)))
    except web.HTTPException as error:
        if error.status < 400:
            raise
        code = _HTTP_CODES.get(error.status, "error")
        response = error_response(ApiError(error.status, code, error.reason))
        if "Allow" in error.headers:
            response.headers["Allow"] = error.headers["Allow"]
        return response
    except redis.exceptions.OutOfMemoryError:
        serving.THROTTLED.warning("redis-oom", "Redis is out of memory (maxmemory) during %s %s", request.method, request.path)
        return error_response(ApiError(503, "unavailable", "the queue store (Redis) is out of memory"))
    except UNAVAILABLE as error:
        serving.THROTTLED.warning("redis", "redis unavailable during %s %s: %s", request.method, request.path, error)
        return error_response(ApiError(503, "unavailable", "the queue store (Redis) is unavailable"))
    except asyncio.CancelledError:
        raise
    except OSError as error:
        if not serving.is_out_of_files(error):
            raise
        serving.THROTTLED.warning("fd-limit", "at the open-file limit during %s %s", request.method, request.path)
        response = error_response(ApiError(503, "unavailable", "the server is at its open-file limit; try again"))
        response.headers["Retry-After"] = "1"
        return response
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return error_response(ApiError(500, "internal_error", "unexpected server error"))


async def read_json(request: web.Request, allow_empty: bool = False) -> object:
    """The body as JSON, within the body time limit. Mutations must say application/json: it closes
    the cross-site form route."""
    if request.content.is_eof():  # all of it is here (a small body mostly is): no timer to set
        raw = await request.read()
    else:
        try:
            async with asyncio.timeout(request.app[BODY_TIMEOUT]):
                raw = await request.read()
        except TimeoutError:
            request.protocol.close()  # no keep-alive: what is left of the body is never read
            raise ApiError(408, "request_timeout", "the request body did not arrive in time") from None
    if raw.strip() and request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    return parse_json_body(raw, allow_empty=allow_empty)
