"""The worker workloads, with the peers' definitions (W1-W3, see /work/shared/bench-peers), plus
Redis memory per completed job.

W1 and W2 time a worker from its spawn (interpreter start-up included) to the last completion.
W2 also splits its drain the way issue 15 does: the worker's start-up (spawn -> first claim) and
what each job adds to its slot beyond the 50 ms sleep (ack, claim of the next, timer slack).
W3 measures how soon an idle worker starts a job: `startedAt` (stamped by Redis in the claim) minus
`time.time()` taken just before the enqueue call, on the same machine, so one clock; once with
`JobStore.enqueue` (direct) and once with `POST /api/jobs` (over HTTP, one keep-alive connection).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from .harness import QUEUE, Harness, Process, new_job
from .report import Target, WorkloadResult, latency_summary

# The best of the Python peers on this machine (bench-peers/results/peers-20261123-061441-summary.md):
# the spec asks Jobline to be faster than all of them.
PEER_BEST = {
    "w1_jobs_per_s": (2831, "taskiq"),
    "w1_enqueue_per_s": (6873, "dramatiq"),
    "w2_efficiency": (0.931, "dramatiq"),
    "w3_p99_ms": (1.8, "taskiq"),
}
# Issue 15's W2 target, and its model of a worker that meets it.
W2_EFFICIENCY = Target(">=", 0.97, "issue 15")
W2_FIRST_CLAIM_S = Target("<", 0.1, "issue 15")
W2_OVERHEAD_MS = Target("<", 0.3, "issue 15")


def _peer(key: str, op: str) -> Target:
    bound, lib = PEER_BEST[key]
    return Target(op, bound, f"best peer: {lib}")


async def _drain(h: Harness, n: int, job_type: str, data: dict[str, Any], count_commands: bool) -> dict[str, Any]:
    """Enqueue n jobs one JobStore.enqueue call at a time, then time ONE worker draining them."""
    store = await h.fresh_store()
    t0 = time.perf_counter()
    ids = [(await store.enqueue(new_job(job_type, data))).id for _ in range(n)]
    enqueue_s = time.perf_counter() - t0
    if count_commands:
        await h.redis.config_resetstat()
    worker, t_spawn = h.spawn_worker(concurrency=5)
    try:
        t_end, t_first, done_at_first = await h.wait_completed(n, [worker], timeout=max(60, n / 20))
        stats = await h.redis.info("commandstats") if count_commands else {}
    finally:
        h.procs.stop(worker)
    async with h.redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(h.keys.job(job_id), ["startedAt", "finishedAt"])
        stamps = [(int(started), int(finished)) for started, finished in await pipe.execute()]
    drain_s = t_end - t_spawn
    steady_span = t_end - t_first
    out: dict[str, Any] = {
        "jobs": n,
        "enqueue_s": round(enqueue_s, 4),
        "enqueue_per_s": round(n / enqueue_s, 1),
        "drain_s": round(drain_s, 4),
        "first_done_s": round(t_first - t_spawn, 4),
        "jobs_per_s": round(n / drain_s, 1),
        "jobs_per_s_steady": round((n - done_at_first) / steady_span, 1) if steady_span > 0 else None,
        # Redis stamps startedAt and finishedAt (whole ms) on this machine's clock.
        "first_claim_s": round(min(started for started, _ in stamps) / 1000 - t_spawn, 4),
        "claims_to_last_ack_s": round((max(f for _, f in stamps) - min(s for s, _ in stamps)) / 1000, 4),
    }
    if count_commands:
        out["redis_commands"] = _commands_per_job(stats, n)
    return out


def _commands_per_job(stats: dict[str, Any], n: int) -> dict[str, Any]:
    """INFO commandstats over the drain, per job. Commands run inside Lua scripts count too; the
    benchmark's own ZCARD polling and INFO are left out."""
    own = ("zcard", "info", "config")
    stats = {name.removeprefix("cmdstat_"): value for name, value in stats.items()}
    calls = {name: int(value["calls"]) for name, value in stats.items() if name not in own}
    per_job = {name: round(count / n, 3) for name, count in sorted(calls.items(), key=lambda kv: -kv[1])}
    job_path = ("evalsha", "eval", "blmove")  # what the worker itself sends to run jobs
    # Round trips: one EVALSHA per job (the ack, which also claims the slot's next job), one per
    # claim of the claim loop, and a BLMOVE whenever the queue looked empty. Heartbeats (an
    # EVALSHA every 2 s) count as claims: negligible over a drain.
    round_trips = sum(calls.get(c, 0) for c in job_path)
    # Time Redis spent on the job path (an EVALSHA's usec includes the commands its script runs).
    usec = sum(float(stats[c]["usec"]) for c in job_path if c in stats)
    return {
        "total_per_job": round(sum(calls.values()) / n, 2),
        "redis_usec_per_job": round(usec / n, 1),
        "round_trips_per_job_estimate": round(round_trips / n, 3),
        "per_job": per_job,
    }


async def w1_drain_noop(h: Harness) -> WorkloadResult:
    r = WorkloadResult("w1", "W1 drain noop")
    d = r.details = await _drain(h, h.sizes.w1_jobs, "noop", {}, count_commands=True)
    r.add("enqueue (JobStore.enqueue)", d["enqueue_per_s"], "jobs/s", _peer("w1_enqueue_per_s", ">="))
    r.add("drain (spawn -> all done)", d["drain_s"], "s")
    r.add("throughput", d["jobs_per_s"], "jobs/s", _peer("w1_jobs_per_s", ">="))
    r.add("steady throughput", d["jobs_per_s_steady"], "jobs/s")
    r.add("Redis commands per job (incl. in Lua)", d["redis_commands"]["total_per_job"], "cmds")
    r.add("worker round trips per job (est.)", d["redis_commands"]["round_trips_per_job_estimate"], "")
    r.add("Redis time per job (claim + complete)", d["redis_commands"]["redis_usec_per_job"], "us")
    return r


async def w2_drain_sleep(h: Harness) -> WorkloadResult:
    n, ms = h.sizes.w2_jobs, h.sizes.w2_sleep_ms
    r = WorkloadResult("w2", f"W2 drain {ms} ms sleeps")
    d = await _drain(h, n, "sleep", {"ms": ms}, count_commands=False)
    ideal_s = n * ms / 1000 / 5
    # Each of the 5 slots runs n/5 jobs in a row: what a job adds to its slot beyond its sleep.
    overhead_ms = d["claims_to_last_ack_s"] * 1000 / (n / 5) - ms
    d.update(ideal_s=ideal_s, efficiency=round(ideal_s / d["drain_s"], 4))
    d["overhead_ms_per_job_and_slot"] = round(overhead_ms, 3)
    r.details = d
    r.add("drain (spawn -> all done)", d["drain_s"], "s")
    r.add("efficiency (ideal / drain)", d["efficiency"], "", W2_EFFICIENCY)
    r.add("efficiency against the best peer", d["efficiency"], "", _peer("w2_efficiency", ">="))
    r.add("start-up (spawn -> first claim)", d["first_claim_s"], "s", W2_FIRST_CLAIM_S)
    r.add("added per job and slot", d["overhead_ms_per_job_and_slot"], "ms", W2_OVERHEAD_MS)
    return r


Enqueue = Callable[[], Awaitable[str]]  # enqueues one noop job; returns its id


async def _pickups(h: Harness, enqueue: Enqueue, worker: Process, done_before: int) -> list[float]:
    """w3_jobs jobs, w3_gap_ms apart, to an idle worker: each one's startedAt minus the time taken
    just before its enqueue call (ms)."""
    n, gap_s = h.sizes.w3_jobs, h.sizes.w3_gap_ms / 1000
    await asyncio.sleep(1.0)  # let the worker go idle (blocked in BLMOVE)
    before_ms: dict[str, float] = {}
    next_t = time.perf_counter()
    for _ in range(n):
        await asyncio.sleep(max(0.0, next_t - time.perf_counter()))
        t = time.time() * 1000
        before_ms[await enqueue()] = t
        next_t += gap_s
    await h.wait_completed(done_before + n, [worker], timeout=60)
    async with h.redis.pipeline(transaction=False) as pipe:
        for job_id in before_ms:
            pipe.hget(h.keys.job(job_id), "startedAt")
        started = await pipe.execute()
    return [int(s) - t for s, t in zip(started, before_ms.values(), strict=True)]


async def w3_pickup_latency(h: Harness) -> WorkloadResult:
    """Direct (JobStore.enqueue, as the peers enqueue) and over HTTP (POST /api/jobs on one
    keep-alive connection), one idle worker for both."""
    r = WorkloadResult("w3", "W3 pickup latency")
    store = await h.fresh_store()
    worker, t_spawn = h.spawn_worker(concurrency=5)
    server: Process | None = None

    async def direct() -> str:
        return (await store.enqueue(new_job("noop"))).id

    try:
        await store.enqueue(new_job("noop", name="warm-up"))  # proves the worker is consuming
        await h.wait_completed(1, [worker], timeout=30)
        ready_s = time.time() - t_spawn
        latencies = {"direct": await _pickups(h, direct, worker, done_before=1)}
        server, base = await h.spawn_server()
        async with aiohttp.ClientSession() as session:

            async def post() -> str:
                async with session.post(f"{base}/api/jobs", json={"name": "bench", "type": "noop"}) as response:
                    if response.status != 201:
                        raise RuntimeError(f"POST /api/jobs: {response.status} {await response.text()}")
                    return str((await response.json())["id"])

            await post()  # opens the connection, and the server's to Redis
            latencies["http"] = await _pickups(h, post, worker, done_before=h.sizes.w3_jobs + 2)
    finally:
        h.procs.stop(*(proc for proc in (worker, server) if proc is not None))
    r.details = {"jobs": h.sizes.w3_jobs, "gap_ms": h.sizes.w3_gap_ms, "worker_ready_s": round(ready_s, 3)}
    r.details["resolution_ms"] = 1  # startedAt is whole ms
    for way, values in latencies.items():
        summary = r.details[way] = latency_summary(values)
        label = "" if way == "direct" else " over HTTP"
        for p in (50, 95):
            r.add(f"p{p}{label}", summary[f"p{p}_ms"], "ms")
        r.add(f"p99{label}", summary["p99_ms"], "ms", _peer("w3_p99_ms", "<="))
        r.add(f"max{label}", summary["max_ms"], "ms")
    return r


async def memory_per_job(h: Harness) -> WorkloadResult:
    """used_memory before and after N completed demo jobs (10 steps: 13 events and 10 log lines
    each), divided by N. It includes the job's share of its queue's capped event log (10,000 entries)."""
    n = h.sizes.memory_jobs
    r = WorkloadResult("memory", "Memory per job")
    store = await h.fresh_store()
    worker, _ = h.spawn_worker(concurrency=5)
    try:
        await h.wait_workers(1, [worker])
        await asyncio.sleep(0.5)  # its connections and first heartbeat are in the baseline
        before = (await h.redis.info("memory"))["used_memory"]
        for _ in range(n):
            await store.enqueue(new_job("demo", {"steps": 10, "stepMs": 0}))
        await h.wait_completed(n, [worker], timeout=max(60, n / 10))
        after = (await h.redis.info("memory"))["used_memory"]
        events_bytes = await h.redis.memory_usage(h.keys.event_log(QUEUE), samples=0) or 0
        events_len = await h.redis.xlen(h.keys.event_log(QUEUE))
    finally:
        h.procs.stop(worker)
    per_job = (after - before) / n
    r.details = {
        "jobs": n,
        "used_memory_before": before,
        "used_memory_after": after,
        "bytes_per_job": round(per_job),
        "event_stream_entries": events_len,
        "event_stream_bytes": events_bytes,
        "bytes_per_job_without_event_stream": round((after - before - events_bytes) / n),
    }
    r.add("Redis bytes per completed job", r.details["bytes_per_job"], "B")
    r.add("... without the event stream", r.details["bytes_per_job_without_event_stream"], "B")
    return r
