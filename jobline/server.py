"""Jobline's HTTP server: `create_app(settings)` and `python server.py`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any
from dataclasses import dataclass, field, replace
from pathlib import Path

import redis.asyncio as redis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from aiohttp import web

from . import admin
from . import schedules_api
from . import api
from . import openapi
from . import processes
from . import security
from . import serving
from . import stream
from redis.asyncio.cluster import RedisCluster

from .connections import (
    UNAVAILABLE, Client, IdleClosingBlockingPool, IdleClosingPool, Subscribers, cluster_state_ok, connect,
    durability_warnings,
)  # fmt: skip
from .keys import DEFAULT_PREFIX, Keys
from .store import JobStore
from .errors import ApiError
from .http_errors import BODY_TIMEOUT, Handler, error_response, errors_as_json

log = logging.getLogger(__name__)

REDIS = web.AppKey("redis", Client)
MAX_BODY_BYTES = 1024 * 1024
API_POOL_SIZE = 64  # API calls queue for a connection past this, rather than open ever more
IDLE_CONNECTION_S = 60.0  # pooled Redis connections unused this long are closed
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
def _dashboard_file() -> Path:
    """static/index.html of the checkout, else where `pip install` put it (pyproject data-files)."""
    checkout = Path(__file__).resolve().parent.parent / "static" / "index.html"
    return checkout if checkout.is_file() else Path(sys.prefix) / "share" / "jobline" / "static" / "index.html"


DASHBOARD = _dashboard_file()
CORS_HEADERS = "Content-Type, Authorization, Last-Event-ID, Idempotency-Key"



@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    redis_url: str = "redis://localhost:6379/0"
    redis_cluster: bool = False  # redis_url is any node of a Redis Cluster
    prefix: str = DEFAULT_PREFIX
    # Origins allowed to call the API from another page. "null" is a dashboard opened from disk;
    # the dashboard served at / is same-origin and needs nothing. "*" allows every origin.
    cors_origins: frozenset[str] = field(default_factory=lambda: frozenset({"null"}))
    sse_ping_s: float = 15.0
    api_token: str | None = None
    # Accepted from other origins (a page opened from disk) when API_TOKEN is unset: run.py makes
    # one on first start. Requests with no Origin (curl) or from our own origin need no token.
    local_token: str | None = None
    # Host names this server answers to, besides localhost, 127.0.0.1, [::1] and `host`: a request
    # for any other name is refused (DNS rebinding). "*" allows every name.
    allowed_hosts: frozenset[str] = frozenset()
    max_streams: int = 1000  # open streams per process; past it, 503 with Retry-After
    header_timeout_s: float = 10.0  # a request's headers must arrive within this
    body_timeout_s: float = 30.0  # and its body within this

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        origins = env.get("CORS_ORIGINS")
        return cls(
            host=env.get("HOST", cls.host),
            port=int(env.get("PORT", cls.port)),
            redis_url=env.get("REDIS_URL", cls.redis_url),
            redis_cluster=env.get("REDIS_CLUSTER", "").lower() in ("1", "true", "yes"),
            api_token=env.get("API_TOKEN") or None,
            local_token=env.get("JOBLINE_LOCAL_TOKEN") or None,
            allowed_hosts=frozenset(h.strip().lower() for h in env.get("ALLOWED_HOSTS", "").split(",") if h.strip()),
            max_streams=int(env.get("MAX_STREAMS", cls.max_streams)),
            **({"cors_origins": frozenset(o.strip() for o in origins.split(",") if o.strip())} if origins else {}),
        )


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
            response.headers["Access-Control-Expose-Headers"] = "Location, Idempotent-Replayed"
            response.headers.add("Vary", "Origin")

    return preflight, on_prepare


class Health:
    """`/healthz` pings Redis on one connection of its own, at most once a second, whatever the
    number of callers: a burst of health checks costs Redis one PING. On a cluster, every primary
    must answer and say the cluster is ok."""

    def __init__(self, client: Client, max_age_s: float = 1.0) -> None:
        self.client, self.max_age_s = client, max_age_s
        self._checked_at = -math.inf
        self._ok = False
        self._check: asyncio.Task[bool] | None = None

    async def ok(self) -> bool:
        loop = asyncio.get_running_loop()
        if loop.time() - self._checked_at <= self.max_age_s:
            return self._ok
        if self._check is None:
            self._check = asyncio.create_task(self._ping())
        return await asyncio.shield(self._check)

    async def _ping(self) -> bool:
        try:
            if isinstance(self.client, RedisCluster):
                self._ok = await asyncio.wait_for(cluster_state_ok(self.client), timeout=2)
            else:
                await asyncio.wait_for(self.client.ping(), timeout=2)
                self._ok = True
        except (*UNAVAILABLE, redis.exceptions.RedisError, OSError, asyncio.TimeoutError):
            self._ok = False
        self._checked_at = asyncio.get_running_loop().time()
        self._check = None
        return self._ok


HEALTH = web.AppKey("health", Health)


async def healthz(request: web.Request) -> web.Response:
    if await request.app[HEALTH].ok():
        return web.json_response({"redis": "ok"})
    return web.json_response({"redis": "unavailable"}, status=503)


def create_app(settings: Settings) -> web.Application:
    preflight, add_cors_headers = cors(settings)
    hosts = frozenset({"*"}) if "*" in settings.allowed_hosts else security.allowed_hosts(settings.host, settings.allowed_hosts)
    app = web.Application(
        middlewares=[
            errors_as_json,
            security.access_middleware(hosts, settings.api_token, settings.local_token),
            preflight,
        ],
        client_max_size=MAX_BODY_BYTES,
        handler_args={
            "max_line_size": 32 * 1024,  # long enough for a 10,000-character id to get a JSON 404
            # aiohttp closes a connection whose next request has not fully arrived this long after
            # it opened or after the last response: the header time limit (slowloris).
            "keepalive_timeout": settings.header_timeout_s,
        },
    )
    app[BODY_TIMEOUT] = settings.body_timeout_s
    app.on_response_prepare.append(add_cors_headers)
    app.on_response_prepare.append(security.add_nosniff)
    page = DASHBOARD.read_text()
    page_headers = security.dashboard_headers(page)

    async def dashboard(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html", headers=page_headers)


    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        # Short timeouts and one quick retry (a pooled connection may be stale after a Redis
        # restart): with Redis down the API answers 503 within 2 s instead of hanging.
        options: dict[str, Any] = {
            "socket_timeout": 1.5,
            "socket_connect_timeout": 1.0,
            "retry": Retry(
                ExponentialWithJitterBackoff(base=0.01, cap=0.1), 1, supported_errors=(redis.exceptions.ConnectionError,)
            ),
        }
        url, cluster = settings.redis_url, settings.redis_cluster
        # API calls share a bounded pool and wait for a free connection (a busy pool is not a 503).
        client = connect(url, IdleClosingBlockingPool, cluster, max_connections=API_POOL_SIZE, timeout=10, **options)
        # Every open stream holds a subscription of its own: a pool of its own, as large as the cap
        # (on a cluster: of one node at a time, see Subscribers).
        sub_options = {**options, "max_connections": settings.max_streams + 8, "socket_connect_timeout": 5.0}
        if cluster:
            subscriber, subscribers = None, Subscribers(client, **sub_options)
        else:
            subscriber = connect(url, IdleClosingPool, **sub_options)
            subscribers = Subscribers(subscriber)
        health = connect(url, IdleClosingBlockingPool, cluster, max_connections=1, timeout=2, **options)
        app[REDIS] = client
        app[stream.SUBSCRIBER] = subscribers
        app[HEALTH] = Health(health)
        app[api.STORE] = JobStore(client, Keys(settings.prefix))
        try:
            for warning in await durability_warnings(client):
                log.warning(warning)
        except UNAVAILABLE as error:
            log.warning("Redis is not reachable yet (%s); the API answers 503 until it is", error)
        sweeper = asyncio.create_task(_close_idle_connections(client, subscriber, health))
        yield
        sweeper.cancel()
        await subscribers.aclose()
        for each in (client, subscriber, health):
            if each is not None:
                await each.aclose()

    app.cleanup_ctx.append(redis_ctx)
    app.router.add_get("/", dashboard)
    app.router.add_get("/healthz", healthz)
    stream.add_routes(app, settings.sse_ping_s, settings.max_streams)  # before /api/jobs/{id}, which would match "stream"
    api.add_routes(app)
    admin.add_routes(app)
    schedules_api.add_routes(app)
    openapi.add_routes(app)
    return app


async def _close_idle_connections(*clients: Client | None) -> None:
    """Our pools on a single Redis (a cluster client keeps a pool per node, its own way)."""
    while True:
        await asyncio.sleep(IDLE_CONNECTION_S / 4)
        for client in clients:
            if isinstance(client, redis.Redis):
                await client.connection_pool.close_idle(IDLE_CONNECTION_S)  # type: ignore[attr-defined]


def redact(url: str) -> str:
    """A Redis URL without its password, for logs."""
    return re.sub(r"://([^:@/]*):[^@/]*@", r"://\1:***@", url)


async def serve(settings: Settings, process: str = "") -> None:
    """Serve until SIGINT or SIGTERM, then shut down: streams end, requests finish. `process`
    ("2 of 4") is one of several sharing the port (processes.py)."""
    loop = asyncio.get_running_loop()
    serving.quiet_accept_errors(loop)
    runner = serving.GuardedAppRunner(create_app(settings), access_log_class=security.AccessLogger, shutdown_timeout=10)
    await runner.setup()
    # What is loaded by now (modules, the app, its clients) lives as long as the process: kept out
    # of the collector's full passes, which otherwise stop every stream for 20-30 ms at a time.
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if process:
        processes.watch_parent(loop, stop.set)
    try:
        await web.TCPSite(runner, settings.host, settings.port, reuse_port=bool(process) or None).start()
        log.info(
            "Jobline server on http://%s:%d/ (Redis %s%s)", settings.host, settings.port, redact(settings.redis_url),
            f"; process {process}, pid {os.getpid()}" if process else "",
        )  # fmt: skip
        await stop.wait()
    finally:
        await runner.cleanup()


def serve_one_of(settings: Settings, index: int, count: int) -> None:
    """One of `count` processes sharing the port (started by processes.run, in a fresh interpreter)."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    asyncio.run(serve(settings, f"{index} of {count}"))


def main(argv: list[str] | None = None) -> None:
    defaults = Settings.from_env()
    parser = argparse.ArgumentParser(description="Jobline server: JSON API, SSE stream and dashboard.")
    parser.add_argument("--host", default=defaults.host, help="interface to bind (env HOST)")
    parser.add_argument("--port", type=int, default=defaults.port, help="port (env PORT)")
    parser.add_argument("--redis-url", default=defaults.redis_url, help="Redis URL (env REDIS_URL)")
    parser.add_argument(
        "--redis-cluster", action="store_true", default=defaults.redis_cluster,
        help="REDIS_URL is a node of a Redis Cluster (env REDIS_CLUSTER=1)",
    )  # fmt: skip
    parser.add_argument(
        "--processes", type=_positive, default=os.environ.get("PROCESSES", "1"), metavar="N",
        help="server processes sharing the port with SO_REUSEPORT, each with its own Redis connections (env PROCESSES)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.processes > 1 and not processes.supported():
        parser.error("--processes needs SO_REUSEPORT, which this platform does not have")
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    settings = replace(
        defaults, host=args.host, port=args.port, redis_url=args.redis_url, redis_cluster=args.redis_cluster
    )
    fd_limit = serving.raise_fd_limit()
    cap = serving.stream_cap(settings.max_streams, fd_limit)
    if cap < settings.max_streams:
        log.warning("open-file limit %d: at most %d streams (MAX_STREAMS %d)", fd_limit, cap, settings.max_streams)
        settings = replace(settings, max_streams=cap)
    if args.processes == 1:
        asyncio.run(serve(settings))
    else:
        sys.exit(processes.run(serve_one_of, (settings,), args.processes))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


if __name__ == "__main__":
    main()
