"""Jobline's HTTP server: `create_app(settings)` and `python server.py`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from dataclasses import dataclass, field, replace
from pathlib import Path

import redis.asyncio as redis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from aiohttp import web

import admin
import api
import openapi
import security
import stream
from keys import DEFAULT_PREFIX, Keys
from store import JobNotFound, JobStateConflict, JobStore, connect, durability_warnings
from validation import ApiError

log = logging.getLogger(__name__)

REDIS = web.AppKey("redis", redis.Redis)
MAX_BODY_BYTES = 1024 * 1024
DASHBOARD = Path(__file__).resolve().parent / "static" / "index.html"
CORS_HEADERS = "Content-Type, Authorization, Last-Event-ID"

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    redis_url: str = "redis://localhost:6379/0"
    prefix: str = DEFAULT_PREFIX
    # Origins allowed to call the API from another page. "null" is a dashboard opened from disk;
    # the dashboard served at / is same-origin and needs nothing. "*" allows every origin.
    cors_origins: frozenset[str] = field(default_factory=lambda: frozenset({"null"}))
    sse_ping_s: float = 15.0
    api_token: str | None = None

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        origins = env.get("CORS_ORIGINS")
        return cls(
            host=env.get("HOST", cls.host),
            port=int(env.get("PORT", cls.port)),
            redis_url=env.get("REDIS_URL", cls.redis_url),
            api_token=env.get("API_TOKEN") or None,
            **({"cors_origins": frozenset(o.strip() for o in origins.split(",") if o.strip())} if origins else {}),
        )


def error_response(error: ApiError) -> web.Response:
    return web.json_response(error.body(), status=error.status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes {"error": {"code", "message"}}; never a traceback."""
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(error)
    except JobNotFound:
        return error_response(ApiError(404, "not_found", "no such job"))
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
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
        log.warning("redis unavailable during %s %s: %s", request.method, request.path, error)
        return error_response(ApiError(503, "unavailable", "the queue store (Redis) is unavailable"))
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return error_response(ApiError(500, "internal_error", "unexpected server error"))


def cors(settings: Settings) -> tuple[Any, Any]:
    """A preflight middleware and a response hook (the hook also reaches the already-started stream)."""

    def allowed(request: web.Request) -> str | None:
        origin = request.headers.get("Origin")
        if origin and ("*" in settings.cors_origins or origin in settings.cors_origins):
            return origin
        return None

    @web.middleware
    async def preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if allowed(request) is None:
                return error_response(ApiError(403, "forbidden", "origin not allowed (see CORS_ORIGINS)"))
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE, OPTIONS",
                    "Access-Control-Allow-Headers": CORS_HEADERS,
                    "Access-Control-Max-Age": "600",
                },
            )
        return await handler(request)

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        origin = allowed(request)
        if origin:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "Location"
            response.headers.add("Vary", "Origin")

    return preflight, on_prepare


async def healthz(request: web.Request) -> web.Response:
    try:
        await asyncio.wait_for(request.app[REDIS].ping(), timeout=2)
    except (redis.exceptions.RedisError, OSError, asyncio.TimeoutError):
        return web.json_response({"redis": "unavailable"}, status=503)
    return web.json_response({"redis": "ok"})


def create_app(settings: Settings) -> web.Application:
    preflight, add_cors_headers = cors(settings)
    app = web.Application(
        middlewares=[preflight, errors_as_json, security.token_middleware(settings.api_token)],
        client_max_size=MAX_BODY_BYTES,
        # Long enough for a 10,000-character id to reach the app and get a JSON 404.
        handler_args={"max_line_size": 32 * 1024},
    )
    app.on_response_prepare.append(add_cors_headers)
    app.on_response_prepare.append(security.add_nosniff)
    page = DASHBOARD.read_text()
    page_headers = security.dashboard_headers(page)

    async def dashboard(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html", headers=page_headers)


    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        # Every open stream holds a pub/sub connection of its own: the pool must not cap them low.
        # Short timeouts and one quick retry (a pooled connection may be stale after a Redis
        # restart): with Redis down the API answers 503 within 2 s instead of hanging.
        client = connect(
            settings.redis_url,
            socket_timeout=1.5,
            socket_connect_timeout=0.5,
            retry=Retry(
                ExponentialWithJitterBackoff(base=0.01, cap=0.1), 1, supported_errors=(redis.exceptions.ConnectionError,)
            ),
            max_connections=10_000,
        )
        app[REDIS] = client
        app[api.STORE] = JobStore(client, Keys(settings.prefix))
        try:
            for warning in await durability_warnings(client):
                log.warning(warning)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            log.warning("Redis is not reachable yet (%s); the API answers 503 until it is", error)
        yield
        await client.aclose()

    app.cleanup_ctx.append(redis_ctx)
    app.router.add_get("/", dashboard)
    app.router.add_get("/healthz", healthz)
    stream.add_routes(app, settings.sse_ping_s)  # before /api/jobs/{id}, which would match "stream"
    api.add_routes(app)
    admin.add_routes(app)
    openapi.add_routes(app)
    return app


def redact(url: str) -> str:
    """A Redis URL without its password, for logs."""
    return re.sub(r"://([^:@/]*):[^@/]*@", r"://\1:***@", url)


def main(argv: list[str] | None = None) -> None:
    defaults = Settings.from_env()
    parser = argparse.ArgumentParser(description="Jobline server: JSON API, SSE stream and dashboard.")
    parser.add_argument("--host", default=defaults.host, help="interface to bind (env HOST)")
    parser.add_argument("--port", type=int, default=defaults.port, help="port (env PORT)")
    parser.add_argument("--redis-url", default=defaults.redis_url, help="Redis URL (env REDIS_URL)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = replace(defaults, host=args.host, port=args.port, redis_url=args.redis_url)
    log.info("Jobline server on http://%s:%d/ (Redis %s)", settings.host, settings.port, redact(settings.redis_url))
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        print=None,
        access_log_class=security.AccessLogger,
    )


if __name__ == "__main__":
    main()
