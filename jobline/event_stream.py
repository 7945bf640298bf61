"""What the two SSE streams share: a connection's life (subscribe, replay what the client missed
from the event logs, forward live messages, ping, clean up) and the handler around it.

Every change is appended to its queue's capped event log (a Redis stream in the queue's slot) and
published, in one script (scripts.py), as "queue\\nentry id\\nevent\\npayload". A stream's SSE
ids are its cursor into those logs (cursor.py). A connection subscribes first, then replays what
the client missed from its queues' logs, then forwards live messages, skipping any it already
sent: no gap, no duplicate, and one job's events in `rev` order (a job lives in one queue). Its
cursor only ever moves past events written to the client: if the subscription breaks (Redis
restarted, or cut a subscriber that lagged past its output-buffer limit), it resubscribes and
replays from the last event it actually wrote.

A queue missing from a cursor is one the client has seen no event of: its log is replayed from the
start, as long as nothing was ever trimmed from it (each entry carries the log's running byte
total, so the oldest entry tells whether it was the first).

A delivery is paid for per event and per open stream, so the live path is short: a protocol of
our own reads the subscription (subscription.py), a payload goes out as Redis sent it (never
parsed), and the id after it is one join (cursor.py).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiohttp import web

from .api import STORE
from .connections import UNAVAILABLE, Subscribers
from .cursor import START, Batch, Cursor, Entry, EventId, entry_position, format_event_id, sse
from .errors import ApiError
from .store import JobStore
from .subscription import Subscription

log = logging.getLogger("jobline.stream")

PING_INTERVAL = web.AppKey("ping_interval", float)
# The clients the streams subscribe with (each open stream holds a connection of its own), apart
# from the API's pool. Set by server.py. On a cluster, a client of one node: PUBLISH reaches
# subscribers on every node.
SUBSCRIBER = web.AppKey("subscriber", Subscribers)
MAX_STREAMS = web.AppKey("max_streams", int)
REPLAY_BATCH = 500
RETRY_AFTER_S = 5  # for a stream refused at MAX_STREAMS


def _entry_start(fields: dict[str, str]) -> int:
    """Where an entry starts in its log's running byte total (prelude.lua's event_size)."""
    return int(fields.get("n", 0)) - (len(fields["e"].encode()) + len(fields["d"].encode()) + 40)


def sweep_interval(ping_s: float) -> float:
    """How often the streams are looked after: a stream ends within a second of its client
    leaving, and a quiet one gets its pings at most ping_s apart."""
    return min(1.0, ping_s / 2)


@dataclass
class OpenStreams:
    """Shared by the app's streams: how many are open (at most MAX_STREAMS: each holds a Redis
    connection and a socket), and whether the server is shutting down: then every stream ends at
    once (aiohttp waits for open handlers; cancelling them from on_shutdown breaks its own
    bookkeeping).

    One timer keeps them all alive (`sweep`): a timer per stream, waking each up every second to
    see whether its client is still there, cost a thousand quiet streams more than their events."""

    count: int = 0
    closing: bool = False
    live: set[LogStream] = field(default_factory=set)  # past their start: subscribing, replaying, live

    async def sweep(self, ping_s: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(sweep_interval(ping_s))
            self.keep_alive(loop.time())

    def keep_alive(self, now: float) -> None:
        for stream in list(self.live):
            stream.keep_alive(now)


STREAMS = web.AppKey("streams", OpenStreams)


class LogStream:
    """One client's stream: a subscription of its own and a cursor into its queues' logs. The
    dashboard's stream (stream.py) follows every queue; a job's stream (job_stream.py) one job."""

    subscribe_command = "PSUBSCRIBE"  # or SUBSCRIBE, to `channels()`
    final_event: str | None = None  # the stream ends once it has written this event

    def __init__(self, request: web.Request, response: web.StreamResponse, store: JobStore) -> None:
        self.request, self.response = request, response
        self.store, self.redis, self.keys = store, store.redis, store.keys
        self.subscribers = request.app[SUBSCRIBER]
        self.ping_s = request.app[PING_INTERVAL]
        self.server = request.app[STREAMS]
        self.cursor = Cursor()
        self.loop = asyncio.get_running_loop()
        self.last_write = self.loop.time()
        self.client_gone = False
        self.finished = False  # final_event written
        self.subscription: Subscription | None = None
        self.failures = 0  # subscriptions lost in a row
        self._ping: asyncio.Task[None] | None = None

    # -- what a kind of stream defines ----------------------------------------------------------
    def channels(self) -> list[str]:
        raise NotImplementedError

    async def queues(self) -> list[str]:
        """The queues whose logs it replays."""
        raise NotImplementedError

    def wants(self, event: str, payload: str) -> bool:
        """Whether a log entry is for this stream (live messages are, by their channel)."""
        return True

    # -- where it starts ------------------------------------------------------------------------
    async def start_from(self, last_event_id: str | None) -> bool:
        """Fix where the stream starts, before the client hears it is open (it then loads what it
        shows, so anything after this point must reach it). False: the id is unusable, reset."""
        raise NotImplementedError

    async def resume(self, resume_from: dict[str, EventId] | None, queues: list[str]) -> bool:
        """Start from a client's cursor if every event of `queues` after it is still in their logs
        (else from the latest of each log, and False: the client must reload)."""
        if resume_from is not None and await self._retained(resume_from, queues):
            self.cursor = Cursor({q: e for q, e in resume_from.items() if q in queues})  # deleted queues go
            return True
        self.cursor = await self._latest()
        return False

    def reset_event(self) -> bytes:
        """`reset` (reload) with the position the stream continues from as its id, so a client
        that reconnects with it right away is not reset again."""
        return sse("reset", "{}", self.cursor.text)

    async def _ends(self, queues: list[str]) -> list[tuple[list[Entry], list[Entry]]]:
        """Each queue's log's (oldest entry, newest entry), as lists of at most one."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.xrange(self.keys.event_log(queue), count=1)
                pipe.xrevrange(self.keys.event_log(queue), count=1)
            replies = await pipe.execute()
        return list(zip(replies[::2], replies[1::2]))

    async def _retained(self, cursor: dict[str, EventId], queues: list[str]) -> bool:
        """True if every event of `queues` after the cursor is still in their logs (none trimmed
        away, and no position from the future)."""
        for queue, (oldest, newest) in zip(queues, await self._ends(queues)):
            position = cursor.get(queue, START)
            latest = entry_position(newest[0][0]) if newest else START
            if position > latest or (oldest and not self._holds_after(position, oldest[0])):
                return False
        return True

    @staticmethod
    def _holds_after(position: EventId, oldest: Entry) -> bool:
        """Whether a log whose oldest entry is `oldest` still holds everything after `position`."""
        if position == START:
            return _entry_start(oldest[1]) <= 0  # the log's first entry ever
        return position >= entry_position(oldest[0])

    async def _latest(self) -> Cursor:
        queues = await self.queues()
        return Cursor({
            queue: entry_position(newest[0][0])
            for queue, (_, newest) in zip(queues, await self._ends(queues))
            if newest
        })  # fmt: skip

    # -- its life -------------------------------------------------------------------------------
    async def run(self) -> None:
        """Until the client leaves (a write fails), the server shuts down, or final_event is out."""
        self.server.live.add(self)
        try:
            while not self._ended():
                try:
                    await self._subscribed()
                except UNAVAILABLE as error:
                    if self._ended():
                        return  # keep_alive closed the subscription
                    self.failures += 1
                    self.subscribers.failed()
                    log.warning("stream lost its subscription (%s); resuming from the event log", error)
                    await self._write(b": subscription lost, resuming\n\n")
                    if self.failures > 1:  # a dropped connection is retried at once, a dead Redis with backoff
                        await asyncio.sleep(min(0.1 * 2**self.failures, 5))
        finally:
            self.server.live.discard(self)
            if self._ping is not None:
                self._ping.cancel()

    async def _subscribed(self) -> None:
        """Subscribe, then replay and forward until the subscription ends."""
        subscriber = await self.subscribers.get()
        self.subscription = await Subscription.open(subscriber, self.subscribe_command, *self.channels())
        try:
            # In a task of its own: each wakeup then resumes this loop alone, not also the dozen
            # coroutines (request handler, middlewares) that wait for it.
            await asyncio.create_task(self._forward(self.subscription))
        finally:
            self.subscription.close()
            self.subscription = None

    async def _replay_all(self) -> None:
        for queue in await self.queues():
            if not await self._replay(queue) or self.finished:
                return

    async def _replay(self, queue: str) -> bool:
        """The queue's log after the cursor, one write per page of what this stream wants. False
        if the log no longer has it all: the stream was reset (to the latest of its logs)."""
        log_key = self.keys.event_log(queue)
        scan = self.cursor.get(queue)  # where the next page starts; past the cursor on pages it skipped
        while not self.finished:
            # From the scan position itself: finding it proves nothing after it was trimmed (the
            # log is trimmed from its head), at no extra round trip.
            entries = await self.redis.xrange(log_key, min=format_event_id(scan), count=REPLAY_BATCH)
            first = entries[0] if entries else None
            whole = first is not None and (
                first[0] == format_event_id(scan) or (scan == START and _entry_start(first[1]) <= 0)
            )
            if not whole and not await self._retained({queue: scan}, [queue]):
                self.cursor = await self._latest()
                await self._write(self.reset_event())
                return False
            batch = Batch(self.cursor, self.final_event)  # skips the cursor's own entry
            for entry_id, fields in entries:
                if self.wants(fields["e"], fields["d"]):
                    batch.add(queue, entry_id, fields["e"], fields["d"])
            await self._flush(batch)
            if len(entries) < REPLAY_BATCH:
                return True
            scan = entry_position(entries[-1][0])
        return True

    def _ended(self) -> bool:
        return self.server.closing or self.client_gone or self.finished

    async def _forward(self, subscription: Subscription) -> None:
        """Replay once subscribed, then forward live messages until the subscription ends
        (keep_alive closes it when the client has gone or the server shuts down)."""
        while not self.finished:
            # Everything received since the last write goes out in one write: a stream that
            # fell behind catches up instead of paying a socket write per event.
            batch = Batch(self.cursor, self.final_event)
            for reply in await subscription.replies():
                kind = reply[0]
                if kind == "pmessage" or kind == "message":
                    queue, entry_id, event, payload = reply[-1].split("\n", 3)
                    if queue in self.cursor.positions or queue in batch.after:
                        batch.add(queue, entry_id, event, payload)
                    else:
                        # A queue new to this stream: its log holds this event and any it
                        # published before we subscribed.
                        await self._flush(batch)
                        await self._replay(queue)
                        batch = Batch(self.cursor, self.final_event)
                elif kind in ("psubscribe", "subscribe") and reply[2] == 1:
                    # Subscribed (one command subscribes to all its channels at once: the
                    # first confirmation says they all are): what was published before is
                    # only in the logs, what comes after arrives here too (and is skipped).
                    await self._flush(batch)
                    await self._replay_all()
                    batch = Batch(self.cursor, self.final_event)
                    self.failures = 0
            await self._flush(batch)

    def keep_alive(self, now: float) -> None:
        """About every second (OpenStreams.sweep). When the client has gone or the server shuts
        down, close the subscription: the read ends, and so does the stream. A quiet client gets a
        `: ping` (at most ping_s apart); a failed one means it has gone."""
        transport = self.request.transport
        if transport is None or transport.is_closing():  # gone: free its slot now, not at the next ping
            self.client_gone = True
        if self._ended():
            if self.subscription is not None:
                self.subscription.close()
        elif now >= self.last_write + self.ping_s - sweep_interval(self.ping_s) and self._ping is None:
            self._ping = asyncio.create_task(self._send_ping())

    async def _send_ping(self) -> None:
        try:
            await self._write(b": ping\n\n")
        except (ConnectionError, RuntimeError):  # the client went away (aiohttp: reset or closed)
            self.client_gone = True
            if self.subscription is not None:
                self.subscription.close()
        finally:
            self._ping = None

    async def _write(self, data: bytes) -> None:
        await self.response.write(data)
        self.last_write = self.loop.time()

    async def _flush(self, batch: Batch) -> None:
        if batch.chunks:
            await self._write("".join(batch.chunks).encode())
            self.cursor.advance(batch)  # written: only now is it past these events
            self.finished = self.finished or batch.final


# -- the handler around a stream ----------------------------------------------------------------
def unavailable(message: str) -> web.Response:
    """503 with Retry-After (EventSource reconnects on its own, after its `retry:` delay)."""
    body = ApiError(503, "unavailable", message).body()
    return web.json_response(body, status=503, headers={"Retry-After": str(RETRY_AFTER_S)})


async def serve(request: web.Request, kind: type[LogStream]) -> web.StreamResponse:
    """A stream of `kind`, within the cap on open streams."""
    open_streams = request.app[STREAMS]
    if open_streams.closing:
        return unavailable("the server is shutting down")
    if open_streams.count >= request.app[MAX_STREAMS]:
        return unavailable("too many open streams; try again later")
    open_streams.count += 1  # no await since the check: the cap holds
    try:
        return await _serve(request, kind)
    finally:  # whatever ended it: the client gone, shutdown, an error
        open_streams.count -= 1


async def _serve(request: web.Request, kind: type[LogStream]) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # no proxy buffering of events
        }
    )
    events = kind(request, response, request.app[STORE])
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
