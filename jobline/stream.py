"""`GET /api/jobs/stream`: Server-Sent Events with lossless resume, across every queue and shard.

Every change is appended to its queue's capped event log (a Redis stream in the queue's slot) and
published, in one script (scripts.py). The SSE `id` is a cursor: for each queue, the log entry id
of the last event sent (`queue=ms-seq,...`, opaque to clients). A connection subscribes first, then
replays what the client missed from each queue's log, then forwards live messages, skipping any it
already sent: no gap, no duplicate, and one job's events in `rev` order (a job lives in one queue).
Its cursor only ever moves past events written to the client: if the subscription breaks (Redis
restarted, or cut a subscriber that lagged past its output-buffer limit), it resubscribes and
replays from the last event it actually wrote.

A queue missing from a cursor is one the client has seen no event of: its log is replayed from the
start, as long as nothing was ever trimmed from it (each entry carries the log's running byte
total, so the oldest entry tells whether it was the first).
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
from .connections import UNAVAILABLE, Subscribers
from .errors import ApiError
from .store import JobStore
from .validation import NAME_RE

log = logging.getLogger(__name__)

PING_INTERVAL = web.AppKey("ping_interval", float)
# The client whose pool holds the streams' pub/sub connections (one per open stream), apart from
# the API's pool so that streams can never starve API calls of connections. Set by server.py. On a
# cluster it is a client of one node: PUBLISH reaches subscribers on every node.
SUBSCRIBER = web.AppKey("subscriber", Subscribers)
MAX_STREAMS = web.AppKey("max_streams", int)
REPLAY_BATCH = 500
RETRY_AFTER_S = 5  # for a stream refused at MAX_STREAMS
MAX_CURSOR_QUEUES = 10_000
_ENTRY_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")

EventId = tuple[int, int]
START: EventId = (0, 0)  # before a log's first entry
Cursor = dict[str, EventId]
Entry = tuple[str, dict[str, str]]  # a log entry: its id, its fields


def parse_event_id(raw: str) -> EventId | None:
    match = _ENTRY_ID.match(raw)
    return (int(match[1]), int(match[2])) if match else None


def format_event_id(event_id: EventId) -> str:
    return f"{event_id[0]}-{event_id[1]}"


def parse_cursor(raw: str | None) -> Cursor | None:
    """`queue=ms-seq,...` (or `0-0`: no event yet) as {queue: position}; None if malformed."""
    if raw == "0-0":
        return {}
    cursor: Cursor = {}
    for part in (raw or "").split(",", MAX_CURSOR_QUEUES):
        queue, _, position = part.partition("=")
        event_id = parse_event_id(position)
        if not NAME_RE.fullmatch(queue) or event_id is None:
            return None
        cursor[queue] = event_id
    return cursor


def format_cursor(cursor: Cursor) -> str:
    """Queues at START are left out: missing means the same."""
    return ",".join(f"{q}={format_event_id(e)}" for q, e in sorted(cursor.items()) if e != START) or "0-0"


def sse(event: str, data: str, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


async def _as_is(message: list[str]) -> list[str]:
    """Pub/sub messages as they come: redis-py's default handler formats each one for a debug log."""
    return message


def _entry_start(fields: dict[str, str]) -> int:
    """Where an entry starts in its log's running byte total (prelude.lua's event_size)."""
    return int(fields.get("n", 0)) - (len(fields["e"].encode()) + len(fields["d"].encode()) + 40)


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
    a batch cut short by a broken subscription is dropped, and replayed from the event logs."""

    def __init__(self, cursor: Cursor) -> None:
        self.cursor = cursor
        self.after: Cursor = {}
        self.chunks: list[bytes] = []

    def position(self, queue: str) -> EventId:
        return self.after.get(queue) or self.cursor.get(queue, START)

    def add(self, queue: str, event_id: EventId, event: str, payload: str) -> None:
        if event_id > self.position(queue):  # else sent already (replay and live overlap)
            self.after[queue] = event_id
            self.chunks.append(sse(event, payload, format_cursor({**self.cursor, **self.after})))


class EventStream:
    """One client's stream: its own pub/sub subscription and a cursor into every queue's log."""

    def __init__(
        self, request: web.Request, response: web.StreamResponse, store: JobStore, subscribers: Subscribers
    ) -> None:
        self.request, self.response = request, response
        self.store, self.redis, self.keys = store, store.redis, store.keys
        self.subscribers = subscribers
        self.ping_s = request.app[PING_INTERVAL]
        self.server = request.app[STREAMS]
        self.cursor: Cursor = {}
        self.loop = asyncio.get_running_loop()
        self.last_write = self.loop.time()
        self.client_gone = False

    async def start_from(self, last_event_id: str | None) -> bool:
        """Fix where the stream starts, before the client hears it is open (it then loads the
        list, so anything after this point must reach it). False: the id is unusable, reset."""
        if last_event_id is not None:
            resume_from = parse_cursor(last_event_id)
            queues = await self.store.queue_names()
            if resume_from is not None and await self._retained(resume_from, queues):
                self.cursor = {q: e for q, e in resume_from.items() if q in queues}  # deleted queues go
                return True
        self.cursor = await self._latest()
        return last_event_id is None

    def reset_event(self) -> bytes:
        """`reset` (reload the list) with the position the stream continues from as its id, so a
        client that reconnects with it right away is not reset again."""
        return sse("reset", "{}", format_cursor(self.cursor))

    async def run(self) -> None:
        """Until the client leaves (a write fails) or the server shuts down."""
        failures = 0
        while not self._ended():
            try:
                subscriber = await self.subscribers.get()
                async with subscriber.pubsub(push_handler_func=_as_is) as pubsub:
                    await pubsub.psubscribe(self.keys.job_channel_pattern, self.keys.queue_channel_pattern)
                    await self._replay_all()
                    failures = 0
                    await self._forward(pubsub)
            except UNAVAILABLE as error:
                if self._ended():
                    return  # _keep_alive closed the subscription
                failures += 1
                self.subscribers.failed()
                log.warning("stream lost its subscription (%s); resuming from the event log", error)
                await self._write(b": subscription lost, resuming\n\n")
                if failures > 1:  # a dropped connection is retried at once, a dead Redis with backoff
                    await asyncio.sleep(min(0.1 * 2**failures, 5))

    async def _ends(self, queues: list[str]) -> list[tuple[list[Entry], list[Entry]]]:
        """Each queue's log's (oldest entry, newest entry), as lists of at most one."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.xrange(self.keys.event_log(queue), count=1)
                pipe.xrevrange(self.keys.event_log(queue), count=1)
            replies = await pipe.execute()
        return list(zip(replies[::2], replies[1::2]))

    async def _retained(self, cursor: Cursor, queues: list[str]) -> bool:
        """True if every event of `queues` after the cursor is still in their logs (none trimmed
        away, and no position from the future)."""
        for queue, (oldest, newest) in zip(queues, await self._ends(queues)):
            position = cursor.get(queue, START)
            latest = parse_event_id(newest[0][0]) if newest else START
            if position > latest:  # type: ignore[operator]
                return False
            if oldest and not self._holds_after(position, oldest[0]):
                return False
        return True

    @staticmethod
    def _holds_after(position: EventId, oldest: Entry) -> bool:
        """Whether a log whose oldest entry is `oldest` still holds everything after `position`."""
        if position == START:
            return _entry_start(oldest[1]) <= 0  # the log's first entry ever
        return position >= parse_event_id(oldest[0])  # type: ignore[operator]

    async def _latest(self) -> Cursor:
        queues = await self.store.queue_names()
        return {
            queue: parse_event_id(newest[0][0])  # type: ignore[misc]
            for queue, (_, newest) in zip(queues, await self._ends(queues))
            if newest
        }

    async def _replay_all(self) -> None:
        for queue in await self.store.queue_names():
            if not await self._replay(queue):
                return

    async def _replay(self, queue: str) -> bool:
        """The queue's log after the cursor, one write per page. False if the log no longer has
        it all: the stream was reset (to the latest of every log)."""
        log_key = self.keys.event_log(queue)
        while True:
            position = self.cursor.get(queue, START)
            # From the cursor itself: finding it proves nothing after it was trimmed (the log is
            # trimmed from its head), at no extra round trip.
            entries = await self.redis.xrange(log_key, min=format_event_id(position), count=REPLAY_BATCH)
            first = entries[0] if entries else None
            whole = first is not None and (
                first[0] == format_event_id(position) or (position == START and _entry_start(first[1]) <= 0)
            )
            if not whole and not await self._retained({queue: position}, [queue]):
                self.cursor = await self._latest()
                await self._write(self.reset_event())
                return False
            batch = Batch(self.cursor)  # skips the cursor's own entry
            for entry_id, fields in entries:
                batch.add(queue, parse_event_id(entry_id) or START, fields["e"], fields["d"])
            await self._flush(batch)
            if len(entries) < REPLAY_BATCH:
                return True

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
                # dropped unwritten, and run() replays it from the logs.
                batch = Batch(self.cursor)
                while True:
                    if reply[0] == "pmessage":
                        queue, entry_id, event, payload = reply[3].split("\n", 3)
                        if queue not in self.cursor and queue not in batch.after:
                            # A queue new to this stream: its log holds this event and any it
                            # published before we subscribed.
                            await self._flush(batch)
                            await self._replay(queue)
                            batch = Batch(self.cursor)
                        else:
                            batch.add(queue, parse_event_id(entry_id) or START, event, payload)
                    elif reply[0] == "psubscribe":
                        # Subscribed (this stream subscribes before it replays, and the confirmation
                        # may come after the replay): what was published before is only in the logs.
                        await self._flush(batch)
                        await self._replay_all()
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
            self.cursor.update(batch.after)  # written: only now is it past these events


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
    events = EventStream(request, response, store, request.app[SUBSCRIBER])
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
