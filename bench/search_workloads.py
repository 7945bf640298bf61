"""Issue 14's figures: searching 100,000 stored jobs, and reading failure groups.

- `search`: 100,000 jobs in 4 queues (names like "Send invoice 48213 to customer-1234", a tag
  per customer for one job in ten, a fifth of them failed with one of a few messages), created
  with `Client.enqueue_many` and failed through the store as a worker would. Then, against the
  real server, sequential `GET /api/jobs` searches of several shapes (a rare name piece, a common
  one that matches every job, a tag, a piece with a status and a tag, an exact id), each
  returning the first 50 matches with an exact `total`: latency p50/p99, and Redis's SLOWLOG
  (threshold 0, so every call is logged) for the slowest single call the searches made. Then
  `GET /api/admin/failures` the same way.
"""

from __future__ import annotations

import random
import time
from typing import Any

import aiohttp

from jobline import Client
from jobline.models import NewJob, Priority

from .harness import QUICK, Harness
from .http_workloads import get_latencies
from .report import Target, WorkloadResult, latency_summary

QUEUES = ("billing", "mail", "media", "reports")
P99_TARGET = Target("<", 100, "issue 14")
SLOWEST_CALL_TARGET = Target("<", 5, "issue 14")
MESSAGES = ("KeyError: customer {n} not found", "TimeoutError: gateway 10.0.{n}.1 timed out after 30 s",
            "ValueError: invoice '{n}' has no lines")  # fmt: skip


async def search(h: Harness) -> WorkloadResult:
    quick = h.sizes == QUICK
    n, requests = (2000, 20) if quick else (100_000, 200)
    r = WorkloadResult("search", f"Search and failure groups ({n:,} jobs stored)")
    store = await h.fresh_store()
    rng = random.Random(14)
    t0 = time.perf_counter()
    async with Client(h.redis_url) as client:
        for start in range(0, n, 1000):
            await store.enqueue_many([_job(rng, i) for i in range(start, min(start + 1000, n))])
        for queue in QUEUES:  # a fifth of them fail, as a worker would fail them
            while True:
                claimed = await store.claim(queue, "bench-worker", 1000)
                if not claimed:
                    break
                for job in claimed:
                    if rng.random() < 0.2:
                        await store.fail(job, rng.choice(MESSAGES).format(n=rng.randint(1, 999)), retry=False)
                    else:
                        await store.complete(job, None)
        sample = (await client.find(queue="mail", limit=1))[0][0]
    create_s = time.perf_counter() - t0
    queries = {
        "rare piece (q=48213)": "q=48213",
        "common piece (q=invoice, all match)": "q=invoice",
        "tag (tag=customer:1234)": "tag=customer:1234",
        "piece + status + tag": "q=send&status=failed&tag=customer:77",
        "piece + queue (q=customer-12&queue=mail)": "q=customer-12&queue=mail",
        "exact id": f"q={sample.id}",
    }
    server, base = await h.spawn_server()
    results: dict[str, Any] = {}
    slowest_us = 0
    try:
        async with aiohttp.ClientSession() as session:
            for name, query in {**queries, "failure groups": None}.items():
                url = f"{base}/api/jobs?{query}" if query else f"{base}/api/admin/failures"
                await get_latencies(session, url, 2 if quick else 5, budget_s=2)  # warm-up
                # Every call over 0.5 ms is logged (the slowest is what counts), and the calls are
                # counted from INFO commandstats: a log of every call would cost more than it shows.
                await h.redis.config_set("slowlog-log-slower-than", 500)
                await h.redis.config_set("slowlog-max-len", 4096)
                await h.redis.slowlog_reset()
                calls_before = await _calls(h)
                latencies, body = await get_latencies(session, url, requests, budget_s=10)
                calls = await _calls(h) - calls_before - 1  # less the INFO that read them
                log = [e for e in await h.redis.slowlog_get(4096) if not _said(e).upper().startswith(("SLOWLOG", "CONFIG", "INFO"))]
                await h.redis.config_set("slowlog-log-slower-than", 10_000)
                slowest = max(log, key=lambda e: e["duration"], default=None)
                top = slowest["duration"] if slowest else 0
                slowest_us = max(slowest_us, top)
                results[name] = {
                    **latency_summary(latencies), "total": body.get("total", len(body.get("groups", []))),
                    "slowest_call_us": top, "slowest_call": _said(slowest), "redis_calls_per_request": round(calls / max(len(latencies), 1), 1),
                }  # fmt: skip
    finally:
        h.procs.stop(server)
    r.details = {"jobs": n, "create_s": round(create_s, 1), "queries": results}
    for name, summary in results.items():
        r.add(f"{name} p50", summary["p50_ms"], "ms")
        r.add(f"{name} p99", summary["p99_ms"], "ms", P99_TARGET)
    r.add("slowest Redis call", slowest_us / 1000, "ms", SLOWEST_CALL_TARGET)
    return r


def _job(rng: random.Random, i: int) -> NewJob:
    customer = rng.randint(1, 2000)
    return NewJob(
        name=f"Send invoice {i} to customer-{customer}", type="noop", queue=QUEUES[i % len(QUEUES)], data={},
        priority=Priority.NORMAL, delay_ms=0, max_attempts=1, backoff_ms=0, timeout_ms=None,
        tags=(f"customer:{customer}",) if i % 10 == 0 else (),
    )  # fmt: skip


async def _calls(h: Harness) -> int:
    """Commands Redis has run, scripts' own calls included."""
    stats = await h.redis.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


def _said(entry: dict[str, Any] | None) -> str:
    """A SLOWLOG entry's command, shortened (a script by its first word and key)."""
    if not entry:
        return ""
    command = entry["command"]
    text = command.decode(errors="replace") if isinstance(command, bytes) else str(command)
    return text[:120]
