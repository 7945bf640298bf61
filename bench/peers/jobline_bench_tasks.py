"""Handlers for the shared peer benchmark (/work/shared/bench-peers), loaded by the Jobline worker
with `--tasks bench.peers.jobline_bench_tasks` (start the worker with /work/main as its cwd).

* `stamp` -- W3 pickup latency: its first line takes `time.time()`, then it HSETs that into
  `bench:start` under `data.idx`, on the Redis named by BENCH_REDIS_URL (set by the harness for
  the worker process; else REDIS_URL, else the worker's own --redis-url).
* `noop` and `sleep` (`{"ms": 50}`) are Jobline's built-ins (tasks.py): W1 and W2 use those.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

if TYPE_CHECKING:
    from jobline.context import JobContext

STAMP_KEY = "bench:start"
_client: aioredis.Redis | None = None


def _redis_url(ctx: JobContext) -> str:
    url = os.environ.get("BENCH_REDIS_URL") or os.environ.get("REDIS_URL")
    if url:
        return url
    return ctx._worker.settings.redis_url  # the worker's own --redis-url


async def stamp(ctx: JobContext, data: dict[str, Any]) -> None:
    t = time.time()
    global _client
    if _client is None:
        _client = aioredis.Redis.from_url(_redis_url(ctx))
    await _client.hset(STAMP_KEY, str(data["idx"]), repr(t))


TASKS = {"stamp": stamp}
