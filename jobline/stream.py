"""`GET /api/jobs/stream`, the dashboard's stream: every event of every queue and shard, with
lossless resume (event_stream.py), over one `PSUBSCRIBE` per connection. Also where both streams'
routes are registered (the job's own stream is job_stream.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from . import job_stream
from .cursor import parse_cursor
from .event_stream import MAX_STREAMS, PING_INTERVAL, STREAMS, SUBSCRIBER, LogStream, OpenStreams, serve

__all__ = ["STREAMS", "SUBSCRIBER", "add_routes"]  # what server.py and the tests use


class DashboardStream(LogStream):
    """Every queue: the cursor holds a position per queue."""

    def channels(self) -> list[str]:
        return [self.keys.job_channel_pattern, self.keys.queue_channel_pattern]

    async def queues(self) -> list[str]:
        return await self.store.queue_names()

    async def start_from(self, last_event_id: str | None) -> bool:
        if last_event_id is None:
            self.cursor = await self._latest()
            return True
        return await self.resume(parse_cursor(last_event_id), await self.queues())


async def dashboard_stream(request: web.Request) -> web.StreamResponse:
    return await serve(request, DashboardStream)


async def _track_streams(app: web.Application) -> AsyncIterator[None]:
    streams = app[STREAMS] = OpenStreams()
    sweeper = asyncio.create_task(streams.sweep(app[PING_INTERVAL]))
    yield
    sweeper.cancel()


async def _stop_streams(app: web.Application) -> None:
    streams = app[STREAMS]
    streams.closing = True
    streams.keep_alive(asyncio.get_running_loop().time())  # each ends now


def add_routes(app: web.Application, ping_interval: float, max_streams: int) -> None:
    """Both streams, before `/api/jobs/{id}` (which would match "stream"). Both count towards
    `max_streams`, the cap on open streams."""
    app[PING_INTERVAL] = ping_interval
    app[MAX_STREAMS] = max_streams
    app.cleanup_ctx.append(_track_streams)
    app.on_shutdown.append(_stop_streams)
    app.router.add_get("/api/jobs/stream", dashboard_stream)
    app.router.add_get(job_stream.ROUTE, job_stream.one_job_stream)
