"""The worker's side of the queue on Redis: claiming, progress and events, acks, and putting jobs
back. A mixin of JobStore (store.py), which registers the scripts these methods call."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from redis.commands.core import AsyncScript

from .keys import Keys
from .models import ACTION_MAX, EVENTS_CAP, Job, LOG_CAP, LOG_LINE_MAX, REASON_MAX, Status


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def pairs(flat: list[str]) -> dict[str, str]:
    """A hash as Redis (or a script) returns it flat, as a dict."""
    return dict(zip(flat[::2], flat[1::2]))


def jobs_from(flats: list[list[str]]) -> list[Job]:
    return [Job.from_redis(pairs(flat)) for flat in flats]


class WorkerSide:
    redis: Any
    keys: Keys
    _claim: AsyncScript
    _update: AsyncScript
    _emit: AsyncScript
    _complete: AsyncScript
    _fail: AsyncScript
    _requeue: AsyncScript
    _recover_orphans: AsyncScript
    _promote_due: AsyncScript

    async def claim(self, queue: str, worker_id: str, count: int, moved: Sequence[str] = ()) -> list[Job]:
        """Mark `moved` ids (already in the worker's processing list) active, then move and claim
        waiting jobs until `count` are claimed or the queue is empty (or its limits allow no
        more): one round trip."""
        return (await self.claim_held(queue, worker_id, count, moved))[0]

    async def claim_held(
        self, queue: str, worker_id: str, count: int, moved: Sequence[str] = ()
    ) -> tuple[list[Job], int]:
        """`claim`, and how long (ms) the queue's limits hold it back (0: they do not). A moved id
        they hold back goes back to the front of the line."""
        k = self.keys
        claimed, hold_ms = await self._claim(
            keys=[*k.queue_block(queue), k.processing(queue, worker_id)],
            args=[worker_id, k.job_prefix(queue), k.channel_prefix, count, *moved],
        )
        return jobs_from(claimed), int(hold_ms)

    async def wait_for_job(self, queue: str, worker_id: str, block_s: float) -> str | None:
        """Wait up to `block_s` for a job of `queue` and move its id into the worker's processing
        list (the reliable-queue BLMOVE); `claim` then marks it active."""
        return await self.redis.blmove(
            self.keys.wait(queue), self.keys.processing(queue, worker_id), block_s, "LEFT", "RIGHT"
        )

    async def update(
        self,
        job: Job,
        progress: int | None = None,
        action: str | None = None,
        log: str | None = None,
        state: dict[str, Any] | None = None,
    ) -> bool:
        """Progress, action, a log line and/or the saved state, published as one change. False:
        the lease was lost."""
        k = self.keys
        applied = await self._update(
            keys=[k.event_log(job.queue), k.job(job.id), k.job_logs(job.id)],
            args=[
                k.job_channel(job.id), job.worker_id or "", job.token,
                "" if progress is None else progress,
                "0" if action is None else "1", (action or "")[:ACTION_MAX],
                "0" if log is None else "1", (log or "")[:LOG_LINE_MAX], LOG_CAP,
                "0" if state is None else "1", "" if state is None else compact_json(state),
            ],  # fmt: skip
        )
        return applied == 1

    async def emit(self, job: Job, name: str, data: Any = None) -> bool:
        """A custom event of the job's handler: kept with the job, sent on the streams. False: the
        lease was lost."""
        k = self.keys
        applied = await self._emit(
            keys=[k.event_log(job.queue), k.job(job.id), k.job_events(job.id)],
            args=[k.job_channel(job.id), job.worker_id or "", job.token, name, compact_json(data), EVENTS_CAP],
        )
        return applied == 1

    def _ack_keys(self, job: Job) -> list[str]:
        k, worker_id = self.keys, job.worker_id or ""
        return [*k.queue_block(job.queue), k.processing(job.queue, worker_id), k.job(job.id)]

    # The acks free a slot: with claim_next=1 they claim the next waiting job of the queue for it,
    # in the same round trip, and return it with the outcome.

    async def complete(self, job: Job, result: Any, claim_next: int = 0) -> tuple[bool, list[Job]]:
        """Returns (False if the lease was lost, the jobs claimed next)."""
        result_json = json.dumps(result, separators=(",", ":"), allow_nan=False)
        done, claimed = await self._complete(
            keys=self._ack_keys(job),
            args=[
                job.id, self.keys.job_channel(job.id), job.worker_id or "", job.token, result_json,
                claim_next, self.keys.job_prefix(job.queue), self.keys.channel_prefix,
            ],  # fmt: skip
        )
        return done == 1, jobs_from(claimed)

    async def fail(
        self, job: Job, reason: str, retry: bool = True, claim_next: int = 0, rate_limited_ms: int = 0
    ) -> tuple[str, list[Job]]:
        """Returns (the job's new status: 'delayed' for a retry, 'failed', or '' if the lease was
        lost; the jobs claimed next). The reason is also appended to the job's logs. With
        `rate_limited_ms`, the job is delayed that long and the attempt does not count."""
        status, claimed = await self._fail(
            keys=[*self._ack_keys(job), self.keys.job_logs(job.id)],
            args=[
                job.id, self.keys.job_channel(job.id), job.worker_id or "", job.token, reason[:REASON_MAX],
                "1" if retry else "0", claim_next, self.keys.job_prefix(job.queue), LOG_CAP,
                self.keys.channel_prefix, rate_limited_ms,
            ],  # fmt: skip
        )
        return status, jobs_from(claimed)

    async def requeue(
        self, queue: str, worker_id: str, mode: str, max_recoveries: int = 2, ids: Sequence[str] | None = None
    ) -> int:
        """Put a worker's jobs of one queue (all, or those of `ids`) back in line: 'stalled' (it
        died: recovered jobs count towards the stalled limit), 'shutdown' (a graceful stop), or
        'unclaimed' (only ids moved but not yet marked active, e.g. when the worker began to stop
        mid-claim)."""
        k = self.keys
        processing = k.processing(queue, worker_id)
        if ids is None:
            ids = await self.redis.lrange(processing, 0, -1)
        if not ids:
            return 0
        args: list[Any] = [worker_id, mode, max_recoveries]
        for job_id in ids:
            args += [job_id, k.job_channel(job_id)]
        return await self._requeue(
            keys=[*k.queue_block(queue), processing, *map(k.job, ids)], args=args
        )

    async def recover_orphans(self, queue: str, min_age_ms: int, max_recoveries: int = 2) -> int:
        """Put back the queue's active jobs whose worker is gone, claimed more than `min_age_ms`
        ago, wherever their ids are: no job stays active on a dead worker, whatever bug or
        late reply put it there. Returns how many were put back."""
        k = self.keys
        active = await self.redis.zrange(k.queue_status_index(queue, Status.ACTIVE.value), 0, -1)
        if not active:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in active:
                pipe.hget(k.job(job_id), "workerId")
            pipe.zrange(k.workers, 0, -1)
            *owners, live = await pipe.execute()
        live_workers = set(live)
        keys: list[str] = k.queue_block(queue)
        args: list[Any] = [min_age_ms, max_recoveries]
        for job_id, worker_id in zip(active, owners):
            if worker_id is not None and worker_id not in live_workers:
                keys += [k.job(job_id), k.processing(queue, worker_id)]
                args += [job_id, k.job_channel(job_id), worker_id]
        if len(args) == 2:
            return 0
        return await self._recover_orphans(keys=keys, args=args)

    async def promote_due(self, queue: str, batch: int = 100) -> tuple[int, int]:
        """Delayed jobs that are due become waiting. Returns (promoted, ms to the next one or -1)."""
        k = self.keys
        ids = await self.redis.zrange(k.delayed(queue), 0, batch - 1)
        if not ids:
            return 0, -1
        args: list[str] = []
        for job_id in ids:
            args += [job_id, k.job_channel(job_id)]
        promoted, wait_ms = await self._promote_due(
            keys=[*k.queue_block(queue), *map(k.job, ids)], args=args
        )
        return promoted, wait_ms
