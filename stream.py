"""`GET /api/jobs/stream`: Server-Sent Events with lossless resume.

Every change is appended to a capped Redis stream and published, in one script (scripts.py), with the
stream entry id as the SSE `id`. A connection subscribes first, then replays what the client missed
from the stream, then forwards live messages, skipping any it already sent: no gap, no duplicate.
If the subscription breaks (Redis restarted), it resubscribes and replays from where it was.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import redis.asyncio as redis
import redis.exceptions
from aiohttp import web

from api import STORE
from keys import Keys

log = logging.getLogger(__name__)

PING_INTERVAL = web.AppKey("ping_interval", float)
REPLAY_BATCH = 500
_EVENT_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")

EventId = tuple[int, int]


def parse_event_id(raw: str | None) -> EventId | None:
    match = _EVENT_ID.match(raw or "")
    return (int(match[1]), int(match[2])) if match else None


def sse(event: str, data: str, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


async def _as_is(message: list[str]) -> list[str]:
    """Pub/sub messages as they come: redis-py's default handler formats each one for a debug log."""
    return message


@dataclass
class OpenStreams:
    """Shared by the app's streams: once the server shuts down, every stream ends within a second
    (aiohttp waits for open handlers; cancelling them from on_shutdown breaks its own bookkeeping)."""

    closing: bool = False


class EventStream:
    """One client's stream: its own pub/sub subscription and a cursor into the event history."""

    def __init__(
        self, client: redis.Redis, keys: Keys, response: web.StreamResponse, ping_s: float, server: OpenStreams
    ) -> None:
        self.redis, self.keys, self.response, self.ping_s = client, keys, response, ping_s
        self.server = server
        self.cursor: EventId = (0, 0)
        self.loop = asyncio.get_running_loop()
        self.last_write = self.loop.time()
        self.client_gone = False

    async def start_from(self, last_event_id: str | None) -> bool:
        """Fix where the stream starts, before the client hears it is open (it then loads the
        list, so anything after this point must reach it). False: the id is unusable, reset."""
        if last_event_id is not None:
            resume_from = parse_event_id(last_event_id)
            if resume_from is not None and await self._retained(resume_from):
                self.cursor = resume_from
                return True
        self.cursor = await self._latest()
        return last_event_id is None

    async def run(self) -> None:
        """Until the client leaves (a write fails) or the server shuts down."""
        failures = 0
        while not self._ended():
            try:
                async with self.redis.pubsub(push_handler_func=_as_is) as pubsub:
                    await pubsub.psubscribe(self.keys.job_channel_pattern, self.keys.queue_channel_pattern)
                    await self._replay()
                    failures = 0
                    await self._forward(pubsub)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
                if self._ended():
                    return  # _keep_alive closed the subscription
                failures += 1
                log.warning("stream lost its subscription (%s); resubscribing", error)
                await self._write(b": redis unavailable, retrying\n\n")
                if failures > 1:  # a dropped connection is retried at once, a dead Redis with backoff
                    await asyncio.sleep(min(0.1 * 2**failures, 5))

    async def _retained(self, event_id: EventId) -> bool:
        """True if nothing after `event_id` has been trimmed away (and the id is not from the future)."""
        oldest = await self.redis.xrange(self.keys.events, count=1)
        latest = await self._latest()
        if event_id > latest:
            return False
        return not oldest or event_id >= parse_event_id(oldest[0][0])  # type: ignore[operator]

    async def _latest(self) -> EventId:
        newest = await self.redis.xrevrange(self.keys.events, count=1)
        return parse_event_id(newest[0][0]) if newest else (0, 0)  # type: ignore[return-value]

    async def _replay(self) -> None:
        while True:
            start = f"({self.cursor[0]}-{self.cursor[1]}"
            entries = await self.redis.xrange(self.keys.events, min=start, count=REPLAY_BATCH)
            for event_id, fields in entries:
                await self._send(event_id, fields["e"], fields["d"])
            if len(entries) < REPLAY_BATCH:
                return

    def _ended(self) -> bool:
        return self.server.closing or self.client_gone

    async def _forward(self, pubsub: redis.client.PubSub) -> None:
        # Replies are read straight off the subscription's connection, with no timeout:
        # PubSub.get_message's wrappers and a timeout per read cost more than the reads. The
        # keep-alive task pings a quiet client and closes the connection to end this loop.
        connection = pubsub.connection
        assert connection is not None  # subscribed
        keep_alive = asyncio.create_task(self._keep_alive(connection))
        try:
            while True:
                reply = await connection.read_response(timeout=math.inf, push_request=True)
                # Everything already received goes out in one write: a stream that fell behind
                # catches up instead of paying a socket write per event.
                chunks: list[bytes] = []
                while True:
                    if reply[0] == "pmessage":
                        event_id, event, payload = reply[3].split("\n", 2)
                        chunks.append(self._render(event_id, event, payload))
                    elif reply[0] == "psubscribe":
                        # Subscribed (this stream subscribes before it replays, and the confirmation
                        # may come after the replay): what was published before is only in the stream.
                        if chunks:
                            await self._write(b"".join(chunks))
                            chunks = []
                        await self._replay()
                    if not await connection.can_read():
                        break
                    reply = await connection.read_response(timeout=math.inf, push_request=True)
                if chunks:
                    await self._write(b"".join(chunks))
        finally:
            keep_alive.cancel()

    async def _keep_alive(self, connection: redis.connection.Connection) -> None:
        """A `: ping` after ping_s without a write; a failed one means the client has gone. When
        the server shuts down or the client has gone, close the subscription: the read ends."""
        while not self._ended():
            quiet_until = self.last_write + self.ping_s
            await asyncio.sleep(min(max(quiet_until - self.loop.time(), 0.01), 1.0))  # shutdown within 1 s
            if not self._ended() and self.loop.time() >= self.last_write + self.ping_s:
                try:
                    await self._write(b": ping\n\n")
                except (ConnectionError, RuntimeError):  # the client went away (aiohttp: reset or closed)
                    self.client_gone = True
        await connection.disconnect()

    async def _write(self, data: bytes) -> None:
        await self.response.write(data)
        self.last_write = self.loop.time()

    async def _send(self, event_id: str, event: str, payload: str) -> None:
        await self._write(self._render(event_id, event, payload))

    def _render(self, event_id: str, event: str, payload: str) -> bytes:
        """The event as SSE, moving the cursor past it; b"" if it was sent already (replay and
        live overlap)."""
        parsed = parse_event_id(event_id)
        if parsed is None or parsed <= self.cursor:
            return b""
        self.cursor = parsed
        return sse(event, payload, event_id)


STREAMS = web.AppKey("streams", OpenStreams)


async def job_stream(request: web.Request) -> web.StreamResponse:
    open_streams = request.app[STREAMS]
    if open_streams.closing:
        raise web.HTTPServiceUnavailable(reason="the server is shutting down")
    store = request.app[STORE]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # no proxy buffering of events
        }
    )
    try:
        # EventSource sends Last-Event-ID on its own reconnects; a page that opens a new one passes it in the query.
        last_event_id = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
        events = EventStream(store.redis, store.keys, response, request.app[PING_INTERVAL], open_streams)
        resumable = await events.start_from(last_event_id)
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        if not resumable:
            await response.write(sse("reset", "{}"))
        await events.run()
    except ConnectionResetError:
        pass  # the client went away
    return response


async def _track_streams(app: web.Application) -> AsyncIterator[None]:
    app[STREAMS] = OpenStreams()
    yield


async def _stop_streams(app: web.Application) -> None:
    app[STREAMS].closing = True


def add_routes(app: web.Application, ping_interval: float) -> None:
    app[PING_INTERVAL] = ping_interval
    app.cleanup_ctx.append(_track_streams)
    app.on_shutdown.append(_stop_streams)
    app.router.add_get("/api/jobs/stream", job_stream)
