"""Streams under load, on one server process while workers run demo jobs.

- `fanout`: many dashboards (`GET /api/jobs/stream`); every connection must receive every event
  the bench queue's event log holds for the run.
- `jobstreams`: what a stream costs the server: the same jobs watched by 1,000 dashboards, then by
  1,000 per-job streams (`GET /api/jobs/{id}/stream`), each of which must receive its job's events.

Every event's SSE id is the stream's cursor after it (`queue=<ms>-<seq>,...`, one position per
queue): the queue whose position moved names the event, by the entry id Redis gave it in XADD to
that queue's event log, whose first part is the publish time on the Redis clock; the arrival time
is `time.time()` on the same machine. CPU times (Linux) come from /proc: the server's, Redis's, the
workers' and this process's (the SSE clients), over the measured window.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jobline.serving import raise_fd_limit

from .harness import QUEUE, QUICK, Harness, Process, new_job
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


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time a process has used so far (Linux), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(h: Harness, server: Process, workers: list[Process]) -> dict[str, float | None]:
    """CPU seconds used so far by each party of a stream workload: the server, Redis (when the
    bench started it), the workers, and this process (the SSE clients)."""
    redis_procs = [proc for proc in h.procs.live if proc.name == "redis"]
    worker_cpu = [cpu_seconds(proc.pid) for proc in workers]
    return {
        "server": cpu_seconds(server.pid),
        "redis": cpu_seconds(redis_procs[0].pid) if redis_procs else None,
        "workers": None if None in worker_cpu else sum(worker_cpu),  # type: ignore[arg-type]
        "clients": time.process_time(),
    }


def cpu_used(before: dict[str, float | None], after: dict[str, float | None]) -> dict[str, float | None]:
    return {
        party: None if before[party] is None or after[party] is None else round(after[party] - before[party], 2)  # type: ignore[operator]
        for party in before
    }


async def _latest_event_id(h: Harness) -> str:
    newest = await h.redis.xrevrange(h.keys.event_log(QUEUE), count=1)
    return str(newest[0][0]) if newest else "0-0"


def _factory(listener: SseListener) -> Callable[[], SseListener]:
    return lambda: listener


async def _open_streams(base: str, paths: list[str], listeners: list[SseListener]) -> None:
    """Open a stream per path (into `listeners`, so the caller closes whatever was opened) and
    wait until each has its `retry:` line: from then on the server forwards every new event to it."""
    parts = urlsplit(base)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(60):
        for start in range(0, len(paths), 50):  # 50 connects at a time
            batch = [SseListener(path) for path in paths[start : start + 50]]
            listeners.extend(batch)
            await asyncio.gather(*(
                loop.create_connection(_factory(listener), parts.hostname, parts.port) for listener in batch
            ))  # fmt: skip
        await asyncio.gather(*(listener.opened for listener in listeners))


async def _wait_subscribed(h: Harness, count: int, settle_s: float = 0.5) -> None:
    """Until Redis has `count` pub/sub clients, and a moment more for their first replay."""
    async with asyncio.timeout(60):
        while len(await h.redis.client_list(_type="pubsub")) < count:
            await asyncio.sleep(0.05)
    await asyncio.sleep(settle_s)


async def _wait_delivered(
    listeners: list[SseListener], last_id: str | list[str], quiet_s: float = 5, cap_s: float = 120
) -> None:
    """Until every listener has the last event (of all, or each its own), or nothing arrived
    anywhere for `quiet_s`: a busy server may deliver well after the publish, and only what never
    comes counts as lost."""
    deadline = time.monotonic() + cap_s
    seen, quiet_since = -1, time.monotonic()
    last_ids = [last_id] * len(listeners) if isinstance(last_id, str) else last_id
    while any(last not in listener.arrivals for listener, last in zip(listeners, last_ids)):
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
        await _open_streams(base, ["/api/jobs/stream"] * s.fanout_streams, listeners)
        start_id = await _latest_event_id(h)
        cpu_before = cpu_snapshot(h, server, workers)
        t0 = time.time()
        for _ in range(s.fanout_jobs):
            await store.enqueue(new_job("demo", {"steps": s.fanout_steps, "stepMs": s.fanout_step_ms}))
        await h.wait_completed(s.fanout_jobs, [server, *workers], timeout=30 + 3 * waves * job_s)
        run_s = time.time() - t0
        end_id = await _latest_event_id(h)
        await _wait_delivered(listeners, event_key(QUEUE, end_id))
        cpu = cpu_used(cpu_before, cpu_snapshot(h, server, workers))
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
    r.details["cpu_s"] = cpu
    if cpu["server"] is not None and latencies:
        r.details["server_cpu_us_per_delivery"] = round(1e6 * cpu["server"] / len(latencies), 1)
    r.add("events published", r.details["events_per_s"], "events/s")
    r.add("deliveries (events x streams)", len(latencies), "events")
    r.add("delivery rate", r.details["deliveries_per_s"], "events/s")
    r.add("publish -> arrival p50", r.details["latency"].get("p50_ms"), "ms")
    r.add("publish -> arrival p99", r.details["latency"].get("p99_ms"), "ms", Target("<", 100))
    if "server_cpu_us_per_delivery" in r.details:  # Linux only
        r.add("server CPU per delivery", r.details["server_cpu_us_per_delivery"], "us")
    r.add("events lost", lost, "", Target("==", 0))
    r.add("duplicates", r.details["duplicates"], "", Target("==", 0))
    return r


# == what a stream costs the server: 1,000 dashboards against 1,000 viewers of one job each =========
JOB_STREAMS = 1000
JOB_STREAM_JOBS = 20  # 50 viewers per job; 4 workers x 5 slots run them all at once


async def job_streams(h: Harness) -> WorkloadResult:
    """The same job load (JOB_STREAM_JOBS demo jobs, all running at once) watched by JOB_STREAMS
    dashboards (`/api/jobs/stream`: every event to every stream), then, on a fresh server, by as
    many per-job streams (`/api/jobs/{id}/stream`: one job's events each). The CPU each server
    process and Redis used, from the workers' start to the last delivery, is the cost."""
    raise_fd_limit()  # a thousand client sockets here too
    quick = h.sizes == QUICK
    streams, jobs = (40, 4) if quick else (JOB_STREAMS, JOB_STREAM_JOBS)
    r = WorkloadResult("jobstreams", f"{streams} dashboards vs {streams} per-job streams, {jobs} jobs")
    runs = {kind: await _watched_run(h, kind, streams, jobs) for kind in ("dashboard", "job")}
    r.details = {"streams": streams, "jobs": jobs, **runs}
    for kind, label in (("dashboard", "dashboards"), ("job", "per-job streams")):
        run = runs[kind]
        r.add(f"{label}: deliveries", run["deliveries"], "events")
        for party in ("server", "redis"):
            if run["cpu_s"][party] is not None:  # Linux only
                r.add(f"{label}: {'Redis' if party == 'redis' else 'server'} CPU", run["cpu_s"][party], "s")
        r.add(f"{label}: publish -> arrival p99", run["latency"].get("p99_ms"), "ms")
        r.add(f"{label}: events lost", run["lost"], "", Target("==", 0))
    server_cpu = [runs[kind]["cpu_s"]["server"] for kind in ("job", "dashboard")]
    if None not in server_cpu and server_cpu[1]:
        r.details["server_cpu_ratio"] = round(server_cpu[0] / server_cpu[1], 3)
        r.add("per-job / dashboard server CPU", r.details["server_cpu_ratio"], "x", Target("<", 0.5))
    return r


async def _watched_run(h: Harness, kind: str, streams: int, jobs: int) -> dict[str, Any]:
    """One run: jobs created, streams opened on a fresh server, then workers started."""
    store = await h.fresh_store()
    server, base = await h.spawn_server()
    created = [await store.enqueue(new_job("demo", {"steps": 20, "stepMs": 250})) for _ in range(jobs)]
    start_id = await _latest_event_id(h)
    listeners: list[SseListener] = []
    watched = [created[i % jobs].id for i in range(streams)]  # a per-job stream's job
    workers: list[Process] = []
    try:
        paths = [f"/api/jobs/{job_id}/stream" for job_id in watched] if kind == "job" else ["/api/jobs/stream"] * streams
        await _open_streams(base, paths, listeners)
        await _wait_subscribed(h, streams)  # and replayed: opening streams is not what is measured
        cpu_before = cpu_snapshot(h, server, [])
        workers = [h.spawn_worker(concurrency=5)[0] for _ in range(-(-jobs // 5))]
        await h.wait_completed(jobs, [server, *workers], timeout=60)
        entries = await h.redis.xrange(h.keys.event_log(QUEUE), min=f"({start_id}")
        # the events each stream must get: all of them, or its job's
        of_job: dict[str, list[str]] = {job.id: [] for job in created}
        for entry_id, fields in entries:
            body = json.loads(fields["d"])
            job_id = body["job"]["id"] if fields["e"] == "job" else body.get("jobId", body.get("id"))
            of_job.setdefault(job_id, []).append(entry_id)
        if kind == "job":
            expected = [of_job[job_id] for job_id in watched]
        else:
            expected = [[entry_id for entry_id, _ in entries]] * streams
        await _wait_delivered(listeners, [event_key(QUEUE, wanted[-1]) for wanted in expected], cap_s=180)
        cpu = cpu_used(cpu_before, cpu_snapshot(h, server, []))
    finally:
        for listener in listeners:
            with contextlib.suppress(Exception):
                listener.close()
        h.procs.stop(*workers, server)
    latencies, lost = [], 0
    for listener, wanted in zip(listeners, expected):
        for entry_id in wanted:
            arrived = listener.arrivals.get(event_key(QUEUE, entry_id))
            if arrived is None:
                lost += 1
            else:
                latencies.append(arrived - int(entry_id.split("-")[0]))
    del cpu["workers"]  # started within the window: their start-up is not the streams' cost
    return {"deliveries": len(latencies), "lost": lost, "cpu_s": cpu, "latency": latency_summary(latencies)}
