"""The worker workloads, with the peers' definitions (W1-W3, see /work/shared/bench-peers), plus
Redis memory per completed job.

W1 and W2 time a worker from its spawn (interpreter start-up included) to the last completion;
W3 measures how soon an idle worker starts a job: `startedAt` (stamped by Redis in the claim) minus
`time.time()` taken just before the enqueue call, on the same machine, so one clock.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .harness import QUEUE, Harness, new_job
from .report import Target, WorkloadResult, latency_summary

# The best of the Python peers on this machine (bench-peers/results/peers-20261123-061441-summary.md):
# the spec asks Jobline to be faster than all of them.
PEER_BEST = {
    "w1_jobs_per_s": (2831, "taskiq"),
    "w1_enqueue_per_s": (6873, "dramatiq"),
    "w2_efficiency": (0.931, "dramatiq"),
    "w3_p99_ms": (1.8, "taskiq"),
}


def _peer(key: str, op: str) -> Target:
    bound, lib = PEER_BEST[key]
    return Target(op, bound, f"best peer: {lib}")


async def _drain(h: Harness, n: int, job_type: str, data: dict[str, Any], count_commands: bool) -> dict[str, Any]:
    """Enqueue n jobs one JobStore.enqueue call at a time, then time ONE worker draining them."""
    store = await h.fresh_store()
    t0 = time.perf_counter()
    for _ in range(n):
        await store.enqueue(new_job(job_type, data))
    enqueue_s = time.perf_counter() - t0
    if count_commands:
        await h.redis.config_resetstat()
    worker, t_spawn = h.spawn_worker(concurrency=5)
    try:
        t_end, t_first, done_at_first = await h.wait_completed(n, [worker], timeout=max(60, n / 20))
        stats = await h.redis.info("commandstats") if count_commands else {}
    finally:
        h.procs.stop(worker)
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
    d.update(ideal_s=ideal_s, efficiency=round(ideal_s / d["drain_s"], 4))
    r.details = d
    r.add("drain (spawn -> all done)", d["drain_s"], "s")
    r.add("efficiency (ideal / drain)", d["efficiency"], "", _peer("w2_efficiency", ">="))
    return r


async def w3_pickup_latency(h: Harness) -> WorkloadResult:
    n, gap_s = h.sizes.w3_jobs, h.sizes.w3_gap_ms / 1000
    r = WorkloadResult("w3", "W3 pickup latency")
    store = await h.fresh_store()
    worker, t_spawn = h.spawn_worker(concurrency=5)
    try:
        await store.enqueue(new_job("noop", name="warm-up"))  # proves the worker is consuming
        await h.wait_completed(1, [worker], timeout=30)
        ready_s = time.time() - t_spawn
        await asyncio.sleep(1.0)  # let it go idle (blocked in BLMOVE)
        before_ms: dict[str, float] = {}
        next_t = time.perf_counter()
        for _ in range(n):
            await asyncio.sleep(max(0.0, next_t - time.perf_counter()))
            t = time.time() * 1000
            job = await store.enqueue(new_job("noop"))
            before_ms[job.id] = t
            next_t += gap_s
        await h.wait_completed(n + 1, [worker], timeout=60)
    finally:
        h.procs.stop(worker)
    async with h.redis.pipeline(transaction=False) as pipe:
        for job_id in before_ms:
            pipe.hget(h.keys.job(job_id), "startedAt")
        started = await pipe.execute()
    latencies = [int(s) - t for s, t in zip(started, before_ms.values(), strict=True)]
    r.details = {"jobs": n, "gap_ms": gap_s * 1000, "worker_ready_s": round(ready_s, 3), **latency_summary(latencies)}
    r.details["resolution_ms"] = 1  # startedAt is whole ms
    for p in (50, 95):
        r.add(f"p{p}", r.details[f"p{p}_ms"], "ms")
    r.add("p99", r.details["p99_ms"], "ms", _peer("w3_p99_ms", "<="))
    r.add("max", r.details["max_ms"], "ms")
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
