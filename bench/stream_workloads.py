"""Stream fan-out: many open `GET /api/jobs/stream` connections on one server process while workers
run demo jobs. Every event's SSE id is the stream's cursor after it (`queue=<ms>-<seq>,...`, one
position per queue): the queue whose position moved names the event, by the entry id Redis gave it
in XADD to that queue's event log, whose first part is the publish time on the Redis clock; the
arrival time is `time.time()` on the same machine. Every connection must receive every event the
bench queue's event log holds for the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from .harness import QUEUE, Harness, new_job
from .report import Target, WorkloadResult, latency_summary

_ID_LINE = re.compile(rb"^id: (\S+)$", re.M)


def parse_cursor(raw: str) -> dict[str, str]:
    """An SSE id, `queue=ms-seq,...` (or `0`: no event yet), as {queue: entry id}."""
    if raw == "0":
        return {}
    return dict(part.partition("=")[::2] for part in raw.split(","))


def event_key(queue: str, entry_id: str) -> str:
    """One event: its queue and its entry id in that queue's log (as the cursor writes them)."""
    return f"{queue}={entry_id}"


class SseListener(asyncio.Protocol):
    """A minimal SSE client that notes when each event id arrives. It speaks HTTP/1.0, so aiohttp
    sends the stream unchunked and the body can be scanned as is; no per-event coroutine hops."""

    def __init__(self, path: str) -> None:
        self.request = f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()
        self.arrivals: dict[str, float] = {}  # event_key -> arrival, epoch ms
        self.duplicates = 0
        self.cursor: dict[str, str] = {}  # the last SSE id, parsed
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.opened.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved even if nobody waits
        self.transport: asyncio.BaseTransport | None = None
        self._buffer = b""
        self._in_body = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.time() * 1000
        self._buffer += data
        if not self._in_body:
            head, sep, rest = self._buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            status_line = head.split(b"\r\n", 1)[0]
            if status_line.split()[1:2] != [b"200"]:
                self._fail(f"stream answered {status_line!r}")
                return
            self._in_body, self._buffer = True, rest
        cut = self._buffer.rfind(b"\n") + 1
        if not cut:
            return
        complete, self._buffer = self._buffer[:cut], self._buffer[cut:]
        if not self.opened.done() and b"retry:" in complete:
            self.opened.set_result(None)
        for match in _ID_LINE.finditer(complete):
            # Each event moves one queue's position in the cursor: that position is the event.
            cursor = parse_cursor(match[1].decode())
            moved = [event_key(q, e) for q, e in cursor.items() if self.cursor.get(q) != e]
            self.cursor = cursor
            if not moved:  # the same cursor again: an event sent twice
                self.duplicates += 1
            for key in moved:
                if key in self.arrivals:
                    self.duplicates += 1
                self.arrivals[key] = now

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"stream closed ({exc})")

    def _fail(self, reason: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(reason))

    def close(self) -> None:
        if self.transport:
            self.transport.close()


async def _latest_event_id(h: Harness) -> str:
    newest = await h.redis.xrevrange(h.keys.event_log(QUEUE), count=1)
    return str(newest[0][0]) if newest else "0-0"


def _factory(listener: SseListener) -> Callable[[], SseListener]:
    return lambda: listener


async def _open_streams(url: str, count: int, listeners: list[SseListener]) -> None:
    """Open `count` streams (into `listeners`, so the caller closes whatever was opened) and wait
    until each has its `retry:` line: from then on the server forwards every new event to it."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(60):
        for start in range(0, count, 50):  # 50 connects at a time
            for _ in range(start, min(start + 50, count)):
                listeners.append(SseListener(parts.path))
            await asyncio.gather(*(
                loop.create_connection(_factory(listener), host, port)
                for listener in listeners[start:]
            ))  # fmt: skip
        await asyncio.gather(*(listener.opened for listener in listeners))


async def _wait_delivered(listeners: list[SseListener], last_id: str, quiet_s: float = 5, cap_s: float = 120) -> None:
    """Until every listener has the last event, or nothing arrived anywhere for `quiet_s`: a busy
    server may deliver well after the publish, and only what never comes counts as lost."""
    deadline = time.monotonic() + cap_s
    seen, quiet_since = -1, time.monotonic()
    while any(last_id not in listener.arrivals for listener in listeners):
        now = time.monotonic()
        total = sum(len(listener.arrivals) for listener in listeners)
        if total != seen:
            seen, quiet_since = total, now
        if now - quiet_since > quiet_s or now > deadline:
            return
        await asyncio.sleep(0.05)


async def fanout(h: Harness) -> WorkloadResult:
    s = h.sizes
    r = WorkloadResult("fanout", f"Stream fan-out ({s.fanout_streams} streams)")
    store = await h.fresh_store()
    server, base = await h.spawn_server()
    workers = [h.spawn_worker(concurrency=5)[0] for _ in range(s.fanout_workers)]
    listeners: list[SseListener] = []
    job_s = s.fanout_steps * s.fanout_step_ms / 1000
    waves = -(-s.fanout_jobs // (5 * s.fanout_workers))
    try:
        await h.wait_workers(s.fanout_workers, [server, *workers])
        await _open_streams(f"{base}/api/jobs/stream", s.fanout_streams, listeners)
        start_id = await _latest_event_id(h)
        t0 = time.time()
        for _ in range(s.fanout_jobs):
            await store.enqueue(new_job("demo", {"steps": s.fanout_steps, "stepMs": s.fanout_step_ms}))
        await h.wait_completed(s.fanout_jobs, [server, *workers], timeout=30 + 3 * waves * job_s)
        run_s = time.time() - t0
        end_id = await _latest_event_id(h)
        await _wait_delivered(listeners, event_key(QUEUE, end_id))
        entries = await h.redis.xrange(h.keys.event_log(QUEUE), min=f"({start_id}", max=end_id)
        expected = [str(event_id) for event_id, _ in entries or []]
    finally:
        for listener in listeners:
            with contextlib.suppress(Exception):
                listener.close()
        h.procs.stop(*workers, server)
    published_ms = {event_key(QUEUE, event_id): int(event_id.split("-")[0]) for event_id in expected}
    latencies: list[float] = []
    lost, last_arrival = 0, 0.0
    for listener in listeners:
        for event_id, sent in published_ms.items():
            arrived = listener.arrivals.get(event_id)
            if arrived is None:
                lost += 1
            else:
                latencies.append(arrived - sent)
                last_arrival = max(last_arrival, arrived)
    # What one server process delivered per second, from the first publish to the last arrival.
    span_s = (last_arrival - min(published_ms.values(), default=last_arrival)) / 1000
    r.details = {
        "streams": len(listeners),
        "workers": s.fanout_workers,
        "jobs": s.fanout_jobs,
        "events": len(expected),
        "events_per_s": round(len(expected) / run_s, 1),
        "deliveries": len(latencies),
        "deliveries_per_s": round(len(latencies) / span_s, 1) if span_s > 0 else None,
        "lost": lost,
        "duplicates": sum(listener.duplicates for listener in listeners),
        "run_s": round(run_s, 2),
        "latency": latency_summary(latencies),
    }
    r.add("events published", r.details["events_per_s"], "events/s")
    r.add("deliveries (events x streams)", len(latencies), "events")
    r.add("delivery rate", r.details["deliveries_per_s"], "events/s")
    r.add("publish -> arrival p50", r.details["latency"].get("p50_ms"), "ms")
    r.add("publish -> arrival p99", r.details["latency"].get("p99_ms"), "ms", Target("<", 100))
    r.add("events lost", lost, "", Target("==", 0))
    r.add("duplicates", r.details["duplicates"], "", Target("==", 0))
    return r
