"""Failure groups: failed jobs grouped by the fingerprint of their last failure.

The groups are kept by the scripts in the same step as each failure, retry and removal
(lua/includes/findable.lua), so reading them is a few small calls per queue.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from . import scripts
from .store import Call, JobStore

MAX_GROUPS_PER_QUEUE = 100
SAMPLE_IDS = 10
BATCH = 500


class FailureGroups:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._groups = store.redis.register_script(scripts.FAILURE_GROUPS)

    async def groups(self, queue: str | None = None) -> list[dict[str, Any]]:
        """Every queue's groups (or one queue's), most jobs first."""
        k = self.store.keys
        queues = [queue] if queue else await self.store.queue_names()
        calls: list[Call] = [
            (self._groups, [k.failure_groups(q), k.failure_info(q)], [MAX_GROUPS_PER_QUEUE, SAMPLE_IDS]) for q in queues
        ]
        out = []
        for name, groups in zip(queues, await self.store.run_scripts(calls)):
            for fingerprint, count, job_type, pattern, sample, first, last, ids in groups:
                out.append(
                    {
                        "fingerprint": fingerprint,
                        "queue": name,
                        "type": job_type,
                        "pattern": pattern,
                        "sample": sample,
                        "count": int(float(count)),
                        "firstSeen": int(first),
                        "lastSeen": int(last),
                        "jobIds": ids,
                    }
                )
        out.sort(key=lambda g: (-g["count"], -g["lastSeen"], g["queue"], g["fingerprint"]))
        return out

    async def job_ids(self, fingerprint: str, queue: str | None = None) -> AsyncIterator[list[str]]:
        """The group's failed ids in every queue (or one), in batches, oldest first."""
        redis, k = self.store.redis, self.store.keys
        for name in [queue] if queue else await self.store.queue_names():
            key, low = k.failure_group(name, fingerprint), "-inf"
            while True:  # by seq, not by rank: the caller's action takes ids out of the set
                batch = await redis.zrangebyscore(key, low, "+inf", start=0, num=BATCH, withscores=True)
                if not batch:
                    break
                yield [job_id for job_id, _ in batch]
                if len(batch) < BATCH:
                    break
                low = f"({batch[-1][1]:.0f}"
