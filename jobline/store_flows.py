"""Flows on Redis: parents that wait for their children. A mixin of JobStore (store.py).

A child's end is written to its queue's outbox in the step that ends it; `deliver_to_parents`
takes each entry to the parent (FLOW_STEP, in the parent's slot, which counts each child once) and
only then drops it, so a crash between the two steps delays the parent but never strands it: every
worker delivers its queues' outboxes every second. Cancel and delete reach every descendant;
retrying a failed parent retries its failed and cancelled children and waits for them again.
"""

from __future__ import annotations

import json
from typing import Any

from redis.commands.core import AsyncScript

from .keys import Keys
from .models import Job, Status

OUTBOX_BATCH = 100


class FlowSide:
    redis: Any
    keys: Keys
    _flow_step: AsyncScript
    _flow_retry: AsyncScript

    async def apply(self, action: str, ids: list[str], extra: tuple[Any, ...] = (), only_status: str = "") -> dict[str, list[Any]]:
        raise NotImplementedError

    async def load(self, ids: list[str]) -> list[Job]:
        raise NotImplementedError

    async def deliver_to_parents(self, queue: str) -> int:
        """Take the ends of the queue's children to their parents; how many were delivered."""
        k, delivered = self.keys, 0
        while True:
            entries = await self.redis.lrange(k.outbox(queue), 0, OUTBOX_BATCH - 1)
            for raw in entries:
                end = json.loads(raw)
                parent, parent_queue = end["p"], end["q"]
                unfinished = await self._flow_step(
                    keys=[*k.queue_block(parent_queue), k.job(parent)],
                    args=[parent, k.job_channel(parent), end["c"], end["o"], end["r"], end["f"]],
                )
                if unfinished:  # the parent failed: its other children stop too
                    await self.apply("cancel", list(unfinished))
                await self.redis.lrem(k.outbox(queue), 1, raw)
                delivered += 1
            if len(entries) < OUTBOX_BATCH:
                return delivered

    async def descendants(self, ids: list[str]) -> list[str]:
        """Every job below these, parents before their children (breadth first)."""
        found: list[str] = []
        level = ids
        while level:
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in level:
                    pipe.lrange(self.keys.job_children(job_id), 0, -1)
                below = [child for children in await pipe.execute() for child in children]
            found += below
            level = below
        return found

    async def retry_parents(self, parents: list[str]) -> dict[str, list[Any]]:
        """Retry failed or cancelled parents with their failed and cancelled children."""
        replies: dict[str, list[Any]] = {}
        for parent in parents:
            children = await self.redis.lrange(self.keys.job_children(parent), 0, -1)
            async with self.redis.pipeline(transaction=False) as pipe:
                for child in children:
                    pipe.hget(self.keys.job(child), "status")
                statuses = await pipe.execute()
            again = [(c, s) for c, s in zip(children, statuses) if s in (Status.FAILED, Status.CANCELLED)]
            queue = await self.redis.hget(self.keys.job(parent), "queue")
            if queue is None:
                replies[parent] = ["missing"]
                continue
            replies[parent] = await self._flow_retry(
                keys=[*self.keys.queue_block(queue), self.keys.job(parent)],
                args=[parent, self.keys.job_channel(parent), *(item for pair in again for item in pair)],
            )
            if replies[parent][0] == "ok" and again:
                await self.apply("retry", [child for child, _ in again])
        return replies

    async def children_results(self, job_id: str) -> dict[str, Any]:
        """{child id: its result (None until it completed)}, in creation order."""
        children = await self.redis.lrange(self.keys.job_children(job_id), 0, -1)
        async with self.redis.pipeline(transaction=False) as pipe:
            for child in children:
                pipe.hget(self.keys.job(child), "result")
            results = await pipe.execute()
        return {child: None if raw is None else json.loads(raw) for child, raw in zip(children, results)}

    async def children(self, job_id: str, limit: int, offset: int) -> tuple[list[Job], int]:
        """A parent's children, in creation order, and how many it has."""
        key = self.keys.job_children(job_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(key)
            pipe.lrange(key, offset, offset + limit - 1)
            total, ids = await pipe.execute()
        return await self.load(ids), total
