"""Issue 13's two figures: how fast batches create jobs, and that retention keeps Redis flat.

- `batch`: `POST /api/jobs/batch` with 1,000 `noop` jobs per request against the real server, with
  1, 2 and 4 requests in flight (keep-alive connections), each from a freshly flushed Redis: jobs/s,
  request latency, and the CPU that the server process, Redis (INFO cpu) and this client spent per
  job. Then `Client.enqueue_many` (the Python client straight to Redis) with the same batches.
- `retention`: a queue that keeps 1,000 completed jobs (`PATCH /api/admin/queues/{name}`), 100,000
  `noop` jobs pushed through it in chunks of 10,000 (`Client.enqueue_many`) to real workers, Redis
  `used_memory` sampled each time a chunk has completed (so nothing is waiting or running). The
  queue's event log (capped at 10,000 events, ~4 per job) fills within the first chunk, so growth
  counts from the first sample with the log full. Then retention is switched off on the same queue
  for a shorter run: the memory each completed job costs when nothing removes it.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from jobline import Client
from jobline.scripts import EVENTS_CAP

from .harness import POLL_S, QUEUE, QUICK, Harness, Process, check_alive
from .report import Target, WorkloadResult, latency_summary

BATCH = 1000  # jobs per request: the API's maximum (validation.MAX_BATCH_JOBS)
IN_FLIGHT = (1, 2, 4)
BATCH_TARGET = Target(">=", 20_000, "issue 13")
JSON_HEADERS = {"Content-Type": "application/json"}
RETENTION_WORKERS = 2  # `python worker.py` processes for the retention run
RETENTION_SLOTS = 10  # --concurrency of each
FLAT_TARGET = Target("<=", 10, "issue 13: flat")


@dataclass(frozen=True)
class SettingsSizes:
    batch_jobs: int  # per in-flight level, and for Client.enqueue_many
    retention_jobs: int
    retention_keep: int
    sample_every: int  # jobs per chunk: used_memory is sampled once each chunk has completed
    contrast_jobs: int  # then the same queue without retention


FULL = SettingsSizes(batch_jobs=100_000, retention_jobs=100_000, retention_keep=1000, sample_every=10_000,
                     contrast_jobs=20_000)  # fmt: skip
SMALL = SettingsSizes(batch_jobs=4000, retention_jobs=4000, retention_keep=200, sample_every=1000, contrast_jobs=2000)


def _sizes(h: Harness) -> SettingsSizes:
    return SMALL if h.sizes == QUICK else FULL


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a child process so far, from /proc (Linux; NaN elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()  # after "pid (name)", which may hold spaces
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def machine_busy_s() -> float:
    """CPU seconds all CPUs spent busy since boot, from /proc/stat (Linux; NaN elsewhere)."""
    try:
        with open("/proc/stat", "rb") as f:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    except (OSError, ValueError):
        return math.nan
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU time used between `start()` and `stop()` by Redis (INFO cpu: the whole redis-server),
    by the server process (if any) and by this benchmark process, per job and as a share of a core;
    and by every other process on the machine (`other_cpu_share`, in cores): with few CPUs, anything
    else running takes its share from the figures."""

    def __init__(self, h: Harness, server: Process | None = None) -> None:
        self.h, self.server = h, server

    async def _read(self) -> tuple[float, ...]:
        info = await self.h.redis.info("cpu")
        server = process_cpu_s(self.server.pid) if self.server else 0.0
        redis_s = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return time.perf_counter(), redis_s, server, time.process_time(), machine_busy_s()

    async def start(self) -> None:
        self.t0 = await self._read()

    async def stop(self, jobs: int) -> dict[str, Any]:
        t1 = await self._read()
        wall, *used, machine = (b - a for a, b in zip(self.t0, t1, strict=True))
        out: dict[str, Any] = {"seconds": round(wall, 3), "jobs_per_s": round(jobs / wall, 1)}
        for name, seconds in zip(("redis", "server", "bench_client"), used, strict=True):
            if (name == "server" and self.server is None) or math.isnan(seconds):
                continue
            out[f"{name}_cpu_us_per_job"] = round(seconds * 1e6 / jobs, 1)
            out[f"{name}_cpu_share"] = round(seconds / wall, 2)  # 1.0 = one core busy all along
        if not math.isnan(machine):
            out["other_cpu_share"] = round(max(0.0, machine - sum(x for x in used if not math.isnan(x))) / wall, 2)
        return out


async def _enqueue_usec(h: Harness, jobs: int) -> float:
    """Redis's time in script calls per job since the last CONFIG RESETSTAT (commandstats: the
    ENQUEUE script with the commands it runs, without Redis's event-loop and network overhead).
    It is wall time inside Redis: when other processes take its CPU, it exceeds the CPU figure."""
    stats = await h.redis.info("commandstats")
    usec = sum(float(stats.get(f"cmdstat_{c}", {}).get("usec", 0)) for c in ("evalsha", "eval"))
    return round(usec / jobs, 1)


def _batch_body() -> bytes:
    jobs = [{"name": f"bench {i}", "type": "noop"} for i in range(BATCH)]
    return json.dumps({"jobs": jobs}, separators=(",", ":")).encode()


async def _post_level(h: Harness, server: Process, url: str, jobs: int, in_flight: int) -> dict[str, Any]:
    """`jobs` jobs in requests of BATCH, `in_flight` at a time on as many keep-alive connections,
    on a flushed Redis; the created jobs are counted afterwards."""
    await h.fresh_store()
    body, requests = _batch_body(), max(1, jobs // BATCH)
    latencies: list[float] = []

    async def post(session: aiohttp.ClientSession) -> bytes:
        t0 = time.perf_counter()
        async with session.post(url, data=body, headers=JSON_HEADERS) as response:
            payload = await response.read()
        if response.status != 201:
            raise RuntimeError(f"POST {url}: {response.status} {payload[:200]!r}")
        latencies.append((time.perf_counter() - t0) * 1000)
        return payload

    async def connection(session: aiohttp.ClientSession, shared: Iterator[int]) -> None:
        for _ in shared:  # the connections take requests from one shared count
            await post(session)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight)) as session:
        warm = await asyncio.gather(*(post(session) for _ in range(in_flight)))  # opens every connection
        answered = len(json.loads(warm[0])["jobs"])
        if answered != BATCH:
            raise RuntimeError(f"POST {url} answered with {answered} jobs, not {BATCH}")
        latencies.clear()
        await h.redis.config_resetstat()
        meter = CpuMeter(h, server)
        await meter.start()
        shared = iter(range(requests))
        await asyncio.gather(*(connection(session, shared) for _ in range(in_flight)))
        cpu = await meter.stop(requests * BATCH)
    created, expected = await h.jobs_created(), (requests + in_flight) * BATCH
    if created != expected:
        raise RuntimeError(f"{in_flight} in flight: {created} jobs in Redis, expected {expected}")
    return {"in_flight": in_flight, "requests": requests, "jobs": requests * BATCH, **cpu,
            "redis_enqueue_usec_per_job": await _enqueue_usec(h, requests * BATCH),
            "request": latency_summary(latencies)}  # fmt: skip


async def _client_batches(h: Harness, jobs: int) -> dict[str, Any]:
    """The same batches through `Client.enqueue_many`, one call at a time, on a flushed Redis."""
    await h.fresh_store()
    specs = [{"type": "noop", "name": f"bench {i}"} for i in range(BATCH)]
    calls, call_ms = max(1, jobs // BATCH), []
    async with Client(h.redis_url, prefix=h.keys.prefix) as jl:
        await jl.enqueue_many(specs[:1])  # opens the connection, loads the script
        await h.redis.config_resetstat()
        meter = CpuMeter(h)
        await meter.start()
        for _ in range(calls):
            t0 = time.perf_counter()
            await jl.enqueue_many(specs)
            call_ms.append((time.perf_counter() - t0) * 1000)
        cpu = await meter.stop(calls * BATCH)
    created, expected = await h.jobs_created(), calls * BATCH + 1
    if created != expected:
        raise RuntimeError(f"Client.enqueue_many: {created} jobs in Redis, expected {expected}")
    return {"calls": calls, "jobs": calls * BATCH, **cpu,
            "redis_enqueue_usec_per_job": await _enqueue_usec(h, calls * BATCH),
            "call": latency_summary(call_ms)}  # fmt: skip


async def batch_create(h: Harness) -> WorkloadResult:
    n = _sizes(h).batch_jobs
    r = WorkloadResult("batch", f"Batch create ({BATCH:,} per request)")
    load = [round(x, 2) for x in os.getloadavg()]
    server, base = await h.spawn_server()
    try:
        levels = [await _post_level(h, server, f"{base}/api/jobs/batch", n, k) for k in IN_FLIGHT]
    finally:
        h.procs.stop(server)
    client = await _client_batches(h, n)
    await h.redis.flushall()  # leave no 100,000 jobs behind for the next workload
    best = max(levels, key=lambda level: level["jobs_per_s"])
    r.details = {
        "jobs_per_level": n,
        "batch": BATCH,
        "load_average_at_start": load,
        "best_in_flight": best["in_flight"],
        "http": {f"{level['in_flight']}_in_flight": level for level in levels},
        "client_enqueue_many": client,
    }
    r.add(f"POST /api/jobs/batch, best ({best['in_flight']} in flight)", best["jobs_per_s"], "jobs/s", BATCH_TARGET)
    for level in levels:
        r.add(f"  {level['in_flight']} in flight", level["jobs_per_s"], "jobs/s")
    r.add("  request p50 (best)", best["request"]["p50_ms"], "ms")
    r.add("  request p99 (best)", best["request"]["p99_ms"], "ms")
    r.add("  server CPU per job (best)", best.get("server_cpu_us_per_job"), "us")
    r.add("  Redis CPU per job (best)", best["redis_cpu_us_per_job"], "us")
    r.add("  ENQUEUE script time (commandstats)", best["redis_enqueue_usec_per_job"], "us")
    r.add("  other processes' CPU meanwhile (best)", best.get("other_cpu_share"), "cores")
    r.add(f"Client.enqueue_many ({BATCH:,} per call)", client["jobs_per_s"], "jobs/s")
    r.add("  call p50", client["call"]["p50_ms"], "ms")
    r.add("  client CPU per job", client["bench_client_cpu_us_per_job"], "us")
    r.add("  Redis CPU per job", client["redis_cpu_us_per_job"], "us")
    return r


# -- retention ---------------------------------------------------------------------------------


def _spawn_workers(h: Harness, count: int) -> list[Process]:
    return [h.spawn_worker(concurrency=RETENTION_SLOTS)[0] for _ in range(count)]


async def _completed_total(h: Harness) -> int:
    """Jobs completed so far: the queue's counter (the completed index is capped by retention)."""
    return int(await h.redis.hget(h.keys.meta(QUEUE), "completedTotal") or 0)


async def _sample(h: Harness, jobs: int) -> dict[str, Any]:
    memory = await h.redis.info("memory")
    async with h.redis.pipeline(transaction=False) as pipe:
        pipe.zcard(h.keys.queue_status_index(QUEUE, "completed"))
        pipe.xlen(h.keys.event_log(QUEUE))
        pipe.dbsize()
        completed, events, keys = await pipe.execute()
    return {"jobs": jobs, "used_memory": int(memory["used_memory"]), "completed_kept": completed,
            "event_log": events, "keys": keys}  # fmt: skip


async def _run_through(
    h: Harness, jl: Client, jobs: int, chunk: int, procs: list[Process], done: int
) -> list[dict[str, Any]]:
    """Push `jobs` noop jobs in chunks (Client.enqueue_many, BATCH a call); after each chunk has
    completed (all `done` + pushed so far), one sample. Returns the samples, the first taken before
    any job of this run."""
    samples = [await _sample(h, 0)]
    for start in range(0, jobs, chunk):
        size = min(chunk, jobs - start)
        for at in range(start, start + size, BATCH):
            names = range(at, min(at + BATCH, start + size))
            await jl.enqueue_many([{"type": "noop", "name": f"bench {i}"} for i in names])
        target, deadline = done + start + size, time.monotonic() + max(60, size / 100)
        while await _completed_total(h) < target:
            check_alive(procs)
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {await _completed_total(h) - done} of {start + size} jobs completed")
            await asyncio.sleep(POLL_S)
        samples.append(await _sample(h, start + size))
    return samples


def _growth(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """From the first sample after a chunk with the event log full (else the first after a chunk;
    else the one before the run) to the last; `spread`: the highest less the lowest in between."""
    *earlier, last = samples
    fallback = earlier[1] if len(earlier) > 1 else earlier[0]
    first = next((s for s in earlier[1:] if s["event_log"] >= EVENTS_CAP), fallback)
    grown, jobs = last["used_memory"] - first["used_memory"], last["jobs"] - first["jobs"]
    span = [s["used_memory"] for s in samples[samples.index(first) :]]
    return {
        "from_jobs": first["jobs"],
        "to_jobs": last["jobs"],
        "event_log_full": first["event_log"] >= EVENTS_CAP,
        "bytes": grown,
        "spread_bytes": max(span) - min(span),
        "percent": round(grown * 100 / first["used_memory"], 2),
        "bytes_per_job": round(grown / jobs, 1) if jobs else None,
    }


async def _patch_retention(session: aiohttp.ClientSession, url: str, rule: Any) -> dict[str, Any]:
    async with session.patch(url, json={"retention": rule}) as response:
        body = await response.json()
        if response.status != 200:
            raise RuntimeError(f"PATCH {url}: {response.status} {body}")
    return body


async def retention(h: Harness) -> WorkloadResult:
    s = _sizes(h)
    r = WorkloadResult("retention", f"Retention (keep {s.retention_keep:,} completed)")
    load = [round(x, 2) for x in os.getloadavg()]
    await h.fresh_store()
    server, base = await h.spawn_server()
    workers: list[Process] = []
    url = f"{base}/api/admin/queues/{QUEUE}"
    try:
        async with aiohttp.ClientSession() as session, Client(h.redis_url, prefix=h.keys.prefix) as jl:
            shown = await _patch_retention(session, url, {"completed": {"maxCount": s.retention_keep}})
            workers = _spawn_workers(h, RETENTION_WORKERS)
            procs = [server, *workers]
            await h.wait_workers(RETENTION_WORKERS, procs)
            t0 = time.perf_counter()
            kept = await _run_through(h, jl, s.retention_jobs, s.sample_every, procs, done=0)
            kept_s = time.perf_counter() - t0
            await _patch_retention(session, url, None)
            unkept = await _run_through(h, jl, s.contrast_jobs, s.sample_every, procs, done=s.retention_jobs)
    finally:
        h.procs.stop(*workers, server)
    with_, without = _growth(kept), _growth(unkept)
    left = kept[-1]["completed_kept"]
    r.details = {
        "load_average_at_start": load,
        "jobs": s.retention_jobs,
        "keep": s.retention_keep,
        "chunk": s.sample_every,
        "workers": f"{RETENTION_WORKERS} x {RETENTION_SLOTS} slots",
        "settings_shown": shown,
        "jobs_per_s": round(s.retention_jobs / kept_s, 1),
        "growth": with_,
        "curve": [{"jobs": x["jobs"], "used_memory": x["used_memory"]} for x in kept],
        "samples": kept,
        "without_retention": {"jobs": s.contrast_jobs, "growth": without, "samples": unkept},
    }
    span = f"{with_['from_jobs']:,} -> {with_['to_jobs']:,} jobs"
    r.add(f"used_memory growth, {span}", with_["percent"], "%", FLAT_TARGET)
    r.add("  in bytes", with_["bytes"], "B")
    r.add("  highest less lowest sample since", with_["spread_bytes"], "B")
    r.add("  per job pushed", with_["bytes_per_job"], "B")
    r.add("completed jobs left", left, "", Target("<=", s.retention_keep))
    r.add("used_memory at the end", kept[-1]["used_memory"], "B")
    r.add("without retention: bytes per completed job", without["bytes_per_job"], "B")
    r.add("jobs through the queue", r.details["jobs_per_s"], "jobs/s")
    return r
