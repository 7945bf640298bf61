"""`GET /api/jobs/stream`: Server-Sent Events with lossless resume.

Every change is appended to a capped Redis stream and published, in one script (scripts.py), with the
stream entry id as the SSE `id`. A connection subscribes first, then replays what the client missed
from the stream, then forwards live messages, skipping any it already sent: no gap, no duplicate.
Its cursor only ever moves past events written to the client: if the subscription breaks (Redis
restarted, or cut a subscriber that lagged past its output-buffer limit), it resubscribes and
replays from the last event it actually wrote.
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

from .api import STORE
from .keys import Keys
from .errors import ApiError

log = logging.getLogger(__name__)

PING_INTERVAL = web.AppKey("ping_interval", float)
# The client whose pool holds the streams' pub/sub connections (one per open stream), apart from
# the API's pool so that streams can never starve API calls of connections. Set by server.py.
SUBSCRIBER = web.AppKey("subscriber", redis.Redis)
MAX_STREAMS = web.AppKey("max_streams", int)
REPLAY_BATCH = 500
RETRY_AFTER_S = 5  # for a stream refused at MAX_STREAMS
_EVENT_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")

EventId = tuple[int, int]


def parse_event_id(raw: str | None) -> EventId | None:
    match = _EVENT_ID.match(raw or "")
    return (int(match[1]), int(match[2])) if match else None


def format_event_id(event_id: EventId) -> str:
    return f"{event_id[0]}-{event_id[1]}"


def sse(event: str, data: str, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


async def _as_is(message: list[str]) -> list[str]:
    """Pub/sub messages as they come: redis-py's default handler formats each one for a debug log."""
    return message


@dataclass
class OpenStreams:
    """Shared by the app's streams: how many are open (at most MAX_STREAMS: each holds a Redis
    connection and a socket), and whether the server is shutting down: then every stream ends
    within a second (aiohttp waits for open handlers; cancelling them from on_shutdown breaks its
    own bookkeeping)."""

    count: int = 0
    closing: bool = False


class Batch:
    """Events to send in one write. The stream's cursor moves past them only once they are written:
    a batch cut short by a broken subscription is dropped, and replayed from the event log."""

    def __init__(self, after: EventId) -> None:
        self.after = after
        self.chunks: list[bytes] = []

    def add(self, event_id: str, event: str, payload: str) -> None:
        parsed = parse_event_id(event_id)
        if parsed is not None and parsed > self.after:  # else sent already (replay and live overlap)
            self.after = parsed
            self.chunks.append(sse(event, payload, event_id))


class EventStream:
    """One client's stream: its own pub/sub subscription and a cursor into the event history."""

    def __init__(
        self,
        request: web.Request,
        response: web.StreamResponse,
        client: redis.Redis,
        subscriber: redis.Redis,
        keys: Keys,
    ) -> None:
        self.request, self.response = request, response
        self.redis, self.subscriber, self.keys = client, subscriber, keys
        self.ping_s = request.app[PING_INTERVAL]
        self.server = request.app[STREAMS]
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

    def reset_event(self) -> bytes:
        """`reset` (reload the list) with the position the stream continues from as its id, so a
        client that reconnects with it right away is not reset again."""
        return sse("reset", "{}", format_event_id(self.cursor))

    async def run(self) -> None:
        """Until the client leaves (a write fails) or the server shuts down."""
        failures = 0
        while not self._ended():
            try:
                async with self.subscriber.pubsub(push_handler_func=_as_is) as pubsub:
                    await pubsub.psubscribe(self.keys.job_channel_pattern, self.keys.queue_channel_pattern)
                    await self._replay()
                    failures = 0
                    await self._forward(pubsub)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
                if self._ended():
                    return  # _keep_alive closed the subscription
                failures += 1
                log.warning("stream lost its subscription (%s); resuming from the event log", error)
                await self._write(b": subscription lost, resuming\n\n")
                if failures > 1:  # a dropped connection is retried at once, a dead Redis with backoff
                    await asyncio.sleep(min(0.1 * 2**failures, 5))

    async def _retained(self, event_id: EventId) -> bool:
        """True if nothing after `event_id` has been trimmed away (and the id is not from the future)."""
        oldest = await self.redis.xrange(self.keys.events, count=1)
        latest = await self._latest()
        if event_id > latest:
            return False
        return not oldest or event_id >= parse_event_id(oldest[0][0])  # type: ignore[operator]

    async def _overtaken(self) -> bool:
        """True if events this stream has not written were trimmed from the log (a reader so slow
        that the log's cap overtook it): a replay would leave a gap. At (0, 0) the stream started on
        an empty log and wrote nothing yet: it replays the log from its start."""
        return self.cursor != (0, 0) and not await self._retained(self.cursor)

    async def _latest(self) -> EventId:
        newest = await self.redis.xrevrange(self.keys.events, count=1)
        return parse_event_id(newest[0][0]) if newest else (0, 0)  # type: ignore[return-value]

    async def _replay(self) -> None:
        """The log after the cursor, one write per page; a reset if the log no longer has it all."""
        while True:
            cursor = format_event_id(self.cursor)
            # From the cursor itself: finding it proves nothing after it was trimmed (the log is
            # trimmed from its head), at no extra round trip.
            entries = await self.redis.xrange(self.keys.events, min=cursor, count=REPLAY_BATCH)
            if (not entries or entries[0][0] != cursor) and await self._overtaken():
                self.cursor = await self._latest()
                await self._write(self.reset_event())
                continue
            batch = Batch(self.cursor)  # skips the cursor's own entry
            for event_id, fields in entries:
                batch.add(event_id, fields["e"], fields["d"])
            await self._flush(batch)
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
                # catches up instead of paying a socket write per event. When Redis cuts the
                # subscription, the read after the last buffered message fails: the batch is
                # dropped unwritten, and run() replays it from the log.
                batch = Batch(self.cursor)
                while True:
                    if reply[0] == "pmessage":
                        event_id, event, payload = reply[3].split("\n", 2)
                        batch.add(event_id, event, payload)
                    elif reply[0] == "psubscribe":
                        # Subscribed (this stream subscribes before it replays, and the confirmation
                        # may come after the replay): what was published before is only in the stream.
                        await self._flush(batch)
                        await self._replay()
                        batch = Batch(self.cursor)
                    if not await connection.can_read():
                        break
                    reply = await connection.read_response(timeout=math.inf, push_request=True)
                await self._flush(batch)
        finally:
            keep_alive.cancel()

    async def _keep_alive(self, connection: redis.connection.Connection) -> None:
        """A `: ping` after ping_s without a write; a failed one means the client has gone. When
        the server shuts down or the client has gone, close the subscription: the read ends."""
        while not self._ended():
            quiet_until = self.last_write + self.ping_s
            await asyncio.sleep(min(max(quiet_until - self.loop.time(), 0.01), 1.0))  # shutdown within 1 s
            transport = self.request.transport
            if transport is None or transport.is_closing():  # gone: free its slot now, not at the next ping
                self.client_gone = True
            elif not self._ended() and self.loop.time() >= self.last_write + self.ping_s:
                try:
                    await self._write(b": ping\n\n")
                except (ConnectionError, RuntimeError):  # the client went away (aiohttp: reset or closed)
                    self.client_gone = True
        await connection.disconnect()

    async def _write(self, data: bytes) -> None:
        await self.response.write(data)
        self.last_write = self.loop.time()

    async def _flush(self, batch: Batch) -> None:
        if batch.chunks:
            await self._write(b"".join(batch.chunks))
            self.cursor = batch.after  # written: only now is it past these events


STREAMS = web.AppKey("streams", OpenStreams)


def unavailable(message: str) -> web.Response:
    """503 with Retry-After (EventSource reconnects on its own, after its `retry:` delay)."""
    body = ApiError(503, "unavailable", message).body()
    return web.json_response(body, status=503, headers={"Retry-After": str(RETRY_AFTER_S)})


async def job_stream(request: web.Request) -> web.StreamResponse:
    open_streams = request.app[STREAMS]
    if open_streams.closing:
        return unavailable("the server is shutting down")
    if open_streams.count >= request.app[MAX_STREAMS]:
        return unavailable("too many open streams; try again later")
    open_streams.count += 1  # no await since the check: the cap holds
    try:
        return await _serve(request)
    finally:  # whatever ended it: the client gone, shutdown, an error
        open_streams.count -= 1


async def _serve(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # no proxy buffering of events
        }
    )
    events = EventStream(request, response, store.redis, request.app[SUBSCRIBER], store.keys)
    # EventSource sends Last-Event-ID on its own reconnects; a page that opens a new one passes it in the query.
    last_event_id = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
    resumable = await events.start_from(last_event_id)  # a failure here is still a JSON error
    try:
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        if not resumable:
            await response.write(events.reset_event())
        await events.run()
    except ConnectionResetError:
        pass  # the client went away
    except Exception:
        # Too late for an error response: end the stream instead, and the client reconnects with
        # its Last-Event-ID. (Lost connections to Redis are retried in run(), not ended here.)
        log.exception("stream failed")
    return response


async def _track_streams(app: web.Application) -> AsyncIterator[None]:
    app[STREAMS] = OpenStreams()
    yield


async def _stop_streams(app: web.Application) -> None:
    app[STREAMS].closing = True


def add_routes(app: web.Application, ping_interval: float, max_streams: int) -> None:
    app[PING_INTERVAL] = ping_interval
    app[MAX_STREAMS] = max_streams
    app.cleanup_ctx.append(_track_streams)
    app.on_shutdown.append(_stop_streams)
    app.router.add_get("/api/jobs/stream", job_stream)
