"""Finding jobs: `q=` (a job id, or a piece of a name), `tag=` and `failureGroup=` on GET /api/jobs.

No keyspace scan and no long call: each queue keeps a name index and an index per tag
(lua/includes/findable.lua, kept in the same step as every create and removal), and a search
walks the smallest index a match must be in, newest first, in steps of at most SCAN_STEP entries
(lua/search.lua). Each step of every queue goes in one pipeline per round, so a search costs
rounds, not calls, and `total` stays exact: every step counts its matches.
"""

from __future__ import annotations

from typing import Any

from . import scripts
from .models import Job, Status
from .store import Call, JobStore
from .validation import ID_RE

# Entries one step scans. A name index entry costs well under a microsecond to test, so a step
# stays near half a millisecond of Redis time (and its garbage small); other indexes cost a name
# lookup per entry.
SCAN_STEP = {True: 2000, False: 1000}


class Search:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._search = store.redis.register_script(scripts.SEARCH)

    async def find(
        self,
        q: str | None,
        tags: list[str],
        statuses: list[Status],
        queue: str | None,
        job_type: str | None,
        limit: int,
        offset: int,
        group: str | None = None,
    ) -> tuple[list[Job], int]:
        """The matching jobs newest first (offset, limit) and how many match in all; with `group`,
        only failed jobs whose last failure has that fingerprint."""
        k = self.store.keys
        want = offset + limit
        folded = q.casefold() if q else ""
        queues = [queue] if queue else await self.store.queue_names()
        steps: dict[str, tuple[list[str], list[Any]]] = {}
        for name in queues:
            keys = [k.names(name), *(k.queue_status_index(name, s) for s in statuses)]
            if job_type:
                keys.append(k.type_index(name, job_type))
            keys += [k.tag_index(name, tag) for tag in tags]
            if group:  # its ids: every one of them must match too, as a tag's do
                keys.append(k.failure_group(name, group))
            steps[name] = (keys, [len(statuses), "1" if job_type else "0", *statuses])
        cursors = dict.fromkeys(queues, "")
        found = dict.fromkeys(queues, 0)  # a queue's steps go newest first: past `want`, only count
        total, scored = 0, []
        while cursors:
            calls: list[Call] = []
            for name, cursor in cursors.items():
                keys, rest = steps[name]
                budget = SCAN_STEP[bool(folded) and not tags]
                calls.append((self._search, keys, [cursor, budget, max(want - found[name], 0), folded, *rest]))
            replies = await self.store.run_scripts(calls)
            for name, (cursor, count, page) in zip(list(cursors), replies):
                total += count
                found[name] += count
                scored += [(float(seq), job_id) for job_id, seq in zip(page[::2], page[1::2])]
                if cursor:
                    cursors[name] = cursor
                else:
                    del cursors[name]
        by_id = await self._exact_id(q, folded, tags, statuses, queue, job_type, group)
        if by_id is not None:  # a job whose name holds its own id was counted by the scan
            total += 1
            scored.append(by_id)
        scored.sort(reverse=True)
        return await self.store.load([job_id for _, job_id in scored[offset : offset + limit]]), total

    async def _exact_id(
        self, q: str | None, folded: str, tags: list[str], statuses: list[Status], queue: str | None,
        job_type: str | None, group: str | None,
    ) -> tuple[float, str] | None:  # fmt: skip
        """The job whose id is `q`, as (seq, id), if it passes the other filters."""
        if not q or not ID_RE.fullmatch(q):
            return None
        found = await self.store.redis.hgetall(self.store.keys.job(q))
        if not found or "seq" not in found:
            return None
        job = Job.from_redis(found)
        if (
            folded in job.name.casefold()
            or (statuses and job.status not in statuses)
            or (queue and job.queue != queue)
            or (job_type and job.type != job_type)
            or not set(tags) <= set(job.tags)
            or (group and (job.status != Status.FAILED or job.failure_group != group))
        ):
            return None
        return float(found["seq"]), job.id
