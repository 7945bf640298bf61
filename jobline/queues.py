"""Queue-level operations and statistics: pause, clean, bulk actions, overview, workers, metrics.

Everything here reads counters, index sizes and capped lists, never job hashes in bulk; the work
that must touch many jobs (clean, bulk) goes in batches of pipelined script calls, so Redis is
never blocked for long.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from . import scripts
from .models import DEFAULT_QUEUE, STATUSES
from .connections import redis_now_ms
from .failures import FailureGroups
from .health import STUCK_FIELDS, is_stuck
from .liveness import Registry
from .queue_settings import QueueSettings
from .store import JobStore

BATCH = 500
HISTORY_MINUTES = 15


def _rate_window(rate: dict[str, str], prefix: str, size: int, newest: int, span: int) -> list[dict[str, int]]:
    """Counts of the ring slots for times newest-span+1 .. newest (a stale slot counts zero)."""
    out = []
    for t in range(newest - span + 1, newest + 1):
        slot = f"{prefix}{t % size}"
        fresh = rate.get(f"{slot}:t") == str(t)
        out.append(
            {
                "t": t,
                "completed": int(rate.get(f"{slot}:completed", 0)) if fresh else 0,
                "failed": int(rate.get(f"{slot}:failed", 0)) if fresh else 0,
            }
        )
    return out


class QueueAdmin:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = store.keys
        self.registry = Registry(store)
        self.failures = FailureGroups(store)
        self._set_paused = self.redis.register_script(scripts.SET_PAUSED)
        self._delete_queue = self.redis.register_script(scripts.DELETE_QUEUE)

    async def now_ms(self) -> int:
        return await redis_now_ms(self.redis)

    async def queue_names(self, live: list[dict[str, str]] | None = None) -> list[str]:
        """Every queue that exists: it has jobs or settings (the queue registry), or a live worker
        serves it."""
        if live is None:
            live = await self.registry.live_workers()
        return sorted(await self.redis.smembers(self.keys.queues) | set(_served(live)))

    async def exists(self, queue: str) -> bool:
        """The default queue always does: it may be paused before anything arrives."""
        return queue == DEFAULT_QUEUE or queue in await self.queue_names()

    async def delete(self, queue: str) -> bool:
        """Remove an empty queue and its settings. False while it holds jobs.

        The name leaves the registry first: a job created meanwhile either lands before the
        script (which then keeps the queue, and the name goes back) or after it, into a queue with
        no `seq`, which registers the name again (store.enqueue_many)."""
        k = self.keys
        await self.redis.srem(k.queues, queue)
        own = [key for key in k.queue_own_keys(queue) if key != k.queue_jobs(queue)]
        if await self._delete_queue(keys=[k.queue_jobs(queue), *own]):
            return True
        await self.redis.sadd(k.queues, queue)
        return False

    # -- control ----------------------------------------------------------------------------------
    async def set_paused(self, queue: str, paused: bool) -> dict[str, Any]:
        await self.redis.sadd(self.keys.queues, queue)
        await self._set_paused(
            keys=self.keys.queue_block(queue), args=[queue, self.keys.queue_channel(queue), int(paused)]
        )
        return {"name": queue, "paused": paused}

    async def _ids_by_status(self, index: str) -> AsyncIterator[list[str]]:
        """Batches of ids in a status index, oldest first; a score cursor survives removals."""
        cursor = "-inf"
        while True:
            page = await self.redis.zrangebyscore(index, cursor, "+inf", start=0, num=BATCH, withscores=True)
            if not page:
                return
            yield [job_id for job_id, _ in page]
            cursor = f"({int(page[-1][1])}"

    async def _ids_in_status(self, status: str) -> AsyncIterator[list[str]]:
        """Batches of the ids in a status, queue by queue."""
        for queue in await self.store.queue_names():
            async for ids in self._ids_by_status(self.keys.queue_status_index(queue, status)):
                yield ids

    async def clean(self, queue: str, status: str, older_than_ms: int) -> int:
        """Delete the queue's jobs in `status` that finished at least `older_than_ms` ago."""
        cutoff = await self.now_ms() - older_than_ms
        removed = 0
        async for ids in self._ids_by_status(self.keys.queue_status_index(queue, status)):
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hget(self.keys.job(job_id), "finishedAt")
                finished = await pipe.execute()
            old = [i for i, at in zip(ids, finished) if at is not None and int(at) <= cutoff]
            replies = await self.store.apply("delete", old, only_status=status)
            removed += sum(1 for reply in replies.values() if reply[0] == "ok")
        return removed

    async def bulk(
        self, action: str, ids: list[str] | None = None, status: str | None = None,
        group: tuple[str, str | None] | None = None,
    ) -> int:  # fmt: skip
        """Apply an action to the given ids, to every job in a status, or to every job of a failure
        group (fingerprint, queue or None: all queues) still failed; returns how many changed."""
        if group is not None:
            batches, only = self.failures.job_ids(*group), "failed"
        else:
            batches, only = _batches(ids) if ids is not None else self._ids_in_status(status or ""), ""
        affected = 0
        async for batch in batches:
            replies = await self.store.apply(action, batch, only_status=only)
            affected += sum(1 for reply in replies.values() if reply[0] == "ok")
        return affected

    # -- overview ---------------------------------------------------------------------------------
    async def overview(self) -> list[dict[str, Any]]:
        k = self.keys
        live = await self.registry.live_workers()
        serving = _served(live)
        names = await self.queue_names(live)
        now_ms = await self.now_ms()  # not in the pipeline: a cluster's has no keyless commands
        now_s = now_ms // 1000
        async with self.redis.pipeline(transaction=False) as pipe:
            for q in names:
                pipe.hmget(k.meta(q), ["paused", "settings"])
                for status in STATUSES:
                    pipe.zcard(k.queue_status_index(q, status))
                pipe.zrange(k.queue_status_index(q, "active"), 0, -1)
                pipe.lrange(k.failures(q), 0, scripts.RECENT_FAILURES - 1)
                pipe.hgetall(k.rate(q))
            replies = await pipe.execute()
        per_queue = 4 + len(STATUSES)
        queues = []
        for i, name in enumerate(names):
            (paused, shown), *rest = replies[i * per_queue : (i + 1) * per_queue]
            settings = QueueSettings.from_api(json.loads(shown)) if shown else QueueSettings()
            counts, (active_ids, failures, rate) = rest[: len(STATUSES)], rest[len(STATUSES) :]
            last_minute = _rate_window(rate, "s", 120, now_s, 60)
            history = _rate_window(rate, "m", 60, now_s // 60, HISTORY_MINUTES)
            queues.append(
                {
                    "name": name,
                    "paused": paused == "1",
                    "workers": serving.count(name),  # live workers serving it: 0 means nothing runs its jobs
                    "counts": dict(zip(STATUSES, counts)),
                    "activeJobIds": active_ids,
                    "recentFailures": [json.loads(f) for f in failures],
                    "throughput": {
                        "completed": sum(s["completed"] for s in last_minute),
                        "failed": sum(s["failed"] for s in last_minute),
                    },
                    "history": [
                        {"minute": m["t"] * 60_000, "completed": m["completed"], "failed": m["failed"]}
                        for m in history
                    ],
                    "settings": settings.to_api(),
                    "heldBack": await self._held_back(name, settings, dict(zip(STATUSES, counts)), now_ms),
                }
            )
        return queues

    async def _held_back(
        self, queue: str, settings: QueueSettings, counts: dict[str, int], now_ms: int
    ) -> dict[str, Any] | None:
        """Whether the queue's limits keep waiting jobs from starting now, and until when (a rate
        limit knows; a concurrency limit waits for a job to finish)."""
        if not counts["waiting"]:
            return None
        if settings.concurrency is not None and counts["active"] >= settings.concurrency:
            return {"by": "concurrency", "untilMs": None}
        if settings.rate_limit:
            per = settings.rate_limit["perMs"]
            window = await self.redis.zrangebyscore(self.keys.starts(queue), f"({now_ms - per}", "+inf", withscores=True)
            if len(window) >= settings.rate_limit["max"]:
                return {"by": "rateLimit", "untilMs": int(window[0][1]) + per}
        return None

    async def workers(self) -> list[dict[str, Any]]:
        """Live workers (heartbeat within their lease), with their claimed jobs read from Redis."""
        k = self.keys
        live = await self.registry.live_workers()
        async with self.redis.pipeline(transaction=False) as pipe:
            for info in live:
                for queue in json.loads(info.get("queues", "[]")):
                    pipe.lrange(k.processing(queue, info["id"]), 0, -1)
            processing = iter(await pipe.execute())
        workers = []
        for info in live:
            queues = json.loads(info.get("queues", "[]"))
            workers.append(
                {
                    "id": info["id"],
                    "host": info.get("host"),
                    "pid": int(info.get("pid", 0)),
                    "queues": queues,
                    "concurrency": int(info.get("concurrency", 0)),
                    "activeJobIds": [job_id for _ in queues for job_id in next(processing)],
                    "startedAt": int(info.get("startedAt", 0)),
                    "lastSeen": int(info.get("lastSeen", 0)),
                    "processed": int(info.get("processed", 0)),
                    "failed": int(info.get("failed", 0)),
                }
            )
        return workers

    async def metrics(self) -> dict[str, Any]:
        """Raw figures for /metrics: per queue status counts, totals and the duration histogram."""
        k = self.keys
        names = await self.queue_names()
        async with self.redis.pipeline(transaction=False) as pipe:
            for q in names:
                for status in STATUSES:
                    pipe.zcard(k.queue_status_index(q, status))
                pipe.hgetall(k.meta(q))
            replies = await pipe.execute()
        per_queue = len(STATUSES) + 1
        live = await self.registry.live_workers()
        stuck = await self.stuck_jobs(names, {info["id"] for info in live})
        out: dict[str, Any] = {"queues": {}, "workers": len(live)}
        for i, name in enumerate(names):
            chunk = replies[i * per_queue : (i + 1) * per_queue]
            out["queues"][name] = {"counts": dict(zip(STATUSES, chunk[:-1])), "meta": chunk[-1], "stuck": stuck[name]}
        return out

    async def stuck_jobs(self, queues: list[str], live_workers: set[str]) -> dict[str, int]:
        """How many active jobs of each queue are stuck (health.is_stuck)."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                pipe.zrange(k.queue_status_index(q, "active"), 0, -1)
            active = await pipe.execute()
        now = await self.now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            for ids in active:
                for job_id in ids:
                    pipe.hmget(k.job(job_id), STUCK_FIELDS)
            fields = iter(await pipe.execute())
        return {
            q: sum(is_stuck(dict(zip(STUCK_FIELDS, next(fields))), now, live_workers) for _ in ids)
            for q, ids in zip(queues, active)
        }


def _served(live: list[dict[str, str]]) -> list[str]:
    """The queues the live workers serve, once per worker serving each."""
    return [queue for info in live for queue in json.loads(info.get("queues", "[]"))]


async def _batches(ids: list[str]) -> AsyncIterator[list[str]]:
    for i in range(0, len(ids), BATCH):
        yield ids[i : i + BATCH]
