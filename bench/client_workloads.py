"""The Python client's producer workload: `Client.enqueue` one awaited call at a time, then
`Client.enqueue_many` with 1,000 jobs per call, from one process, as a user's producer would.

Both go through the whole client path (validation as the API does it, the ENQUEUE script, the
returned Job), so the figures compare with the peers' producers (bench-peers W1 enqueue).
"""

from __future__ import annotations

import time
from typing import Any

from jobline.client import Client

from .harness import Harness
from .report import Target, WorkloadResult, latency_summary

BATCH = 1000  # jobs per enqueue_many call
# The Python peers' producers (RQ, SAQ, arq, Celery) on this machine, one process (issue 10).
PEER_PRODUCERS = Target(">=", 3700, "peers' producers: 2,400-3,700 jobs/s")
MANY_RATIO = Target(">=", 10, "issue 10")


async def client_enqueue(h: Harness) -> WorkloadResult:
    n = h.sizes.w1_jobs  # as many as W1 enqueues with JobStore.enqueue
    batches = max(2, n // 250)  # 20 calls of 1,000 at full size
    r = WorkloadResult("client", "Python client producer")
    await h.redis.flushall()
    async with Client(h.redis_url, prefix=h.keys.prefix) as jl:
        await jl.enqueue("noop", name="warm-up")  # opens the connection, loads the script
        await jl.enqueue_many([{"type": "noop", "name": "warm-up"}])

        t0 = time.perf_counter()
        for _ in range(n):
            await jl.enqueue("noop", name="bench", data={"n": 1})
        single_s = time.perf_counter() - t0

        specs: list[dict[str, Any]] = [{"type": "noop", "name": "bench", "data": {"n": 1}}] * BATCH
        await h.redis.config_resetstat()
        call_ms = []
        for _ in range(batches):
            t = time.perf_counter()
            jobs = await jl.enqueue_many(specs)
            call_ms.append((time.perf_counter() - t) * 1000)
            assert len(jobs) == BATCH
        stats = await h.redis.info("commandstats")
    many_s = sum(call_ms) / 1000
    single_rate, many_rate = n / single_s, batches * BATCH / many_s
    evalsha = stats.get("cmdstat_evalsha", {})
    r.details = {
        "enqueue_jobs": n,
        "enqueue_s": round(single_s, 4),
        "enqueue_per_s": round(single_rate, 1),
        "enqueue_us_per_call": round(single_s / n * 1e6, 1),
        "enqueue_many_calls": batches,
        "enqueue_many_batch": BATCH,
        "enqueue_many_s": round(many_s, 4),
        "enqueue_many_per_s": round(many_rate, 1),
        "enqueue_many_call": latency_summary(call_ms),
        "ratio": round(many_rate / single_rate, 2),
        # Where a batch's time goes: Redis runs one ENQUEUE script per queue (here one per call,
        # for its 1,000 jobs); the rest is Python.
        "redis_usec_per_job": round(float(evalsha.get("usec", 0)) / (batches * BATCH), 2),
        "evalsha_per_call": int(evalsha.get("calls", 0)) / batches,
    }
    r.add("Client.enqueue (sequential awaits)", r.details["enqueue_per_s"], "jobs/s", PEER_PRODUCERS)
    r.add(f"Client.enqueue_many ({BATCH:,} per call)", r.details["enqueue_many_per_s"], "jobs/s")
    r.add("enqueue_many / enqueue", r.details["ratio"], "x", MANY_RATIO)
    r.add("enqueue_many call p50", r.details["enqueue_many_call"]["p50_ms"], "ms")
    r.add("Redis time per job (ENQUEUE script)", r.details["redis_usec_per_job"], "us")
    return r
