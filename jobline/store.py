"""The queue on Redis: every read and write of jobs, shared by the server and the worker.

Multi-key changes go through the Lua scripts in scripts.py (registered once per store); reads are
pipelined. Nothing here scans the keyspace: listings page through sorted-set indexes.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis

from . import scripts
from .keys import Keys
from .models import ACTION_MAX, EVENTS_CAP, Job, LOG_CAP, LOG_LINE_MAX, NewJob, Priority, REASON_MAX, Status, new_job_id


class JobNotFound(LookupError):
    """No job with that id."""


class JobStateConflict(Exception):
    """The job's state forbids the action (e.g. retrying a completed job)."""

    def __init__(self, action: str, status: str) -> None:
        super().__init__(f"cannot {action} a job that is {status}")
        self.status = status


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2]))


def _jobs(flats: list[list[str]]) -> list[Job]:
    return [Job.from_redis(_pairs(flat)) for flat in flats]


class JobStore:
    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        self.redis = client
        self.keys = keys or Keys()
        register = client.register_script
        self._enqueue = register(scripts.ENQUEUE)
        self._claim = register(scripts.CLAIM)
        self._update = register(scripts.UPDATE)
        self._emit = register(scripts.EMIT)
        self._complete = register(scripts.COMPLETE)
        self._fail = register(scripts.FAIL)
        self._requeue = register(scripts.REQUEUE)
        self._recover_orphans = register(scripts.RECOVER_ORPHANS)
        self._promote_due = register(scripts.PROMOTE_DUE)
        self._cancel = register(scripts.CANCEL)
        self._retry = register(scripts.RETRY)
        self._promote = register(scripts.PROMOTE)
        self._set_priority = register(scripts.SET_PRIORITY)
        self._delete = register(scripts.DELETE)

    # -- creating and reading -----------------------------------------------------------------
    async def enqueue(self, new: NewJob) -> Job:
        job = Job(
            id=new_job_id(),
            name=new.name,
            type=new.type,
            queue=new.queue,
            data=new.data,
            priority=new.priority,
            max_attempts=new.max_attempts,
            backoff_ms=new.backoff_ms,
            max_backoff_ms=new.max_backoff_ms,
            timeout_ms=new.timeout_ms,
        )
        k = self.keys
        fields = [item for pair in job.to_redis().items() for item in pair]
        flat = await self._enqueue(
            keys=[
                *k.queue_block(job.queue),
                k.job(job.id), k.seq, k.all_jobs, k.queue_jobs(job.queue),
                k.type_index(job.type), k.queues,
            ],  # fmt: skip
            args=[job.id, k.job_channel(job.id), new.delay_ms, job.queue, *fields],
        )
        return Job.from_redis(_pairs(flat))

    async def get(self, job_id: str, with_logs: bool = False) -> tuple[Job, list[str]]:
        job, logs, _ = await self.get_full(job_id) if with_logs else (await self._get(job_id), [], [])
        return job, logs

    async def _get(self, job_id: str) -> Job:
        found = await self.redis.hgetall(self.keys.job(job_id))
        if not found:
            raise JobNotFound(job_id)
        return Job.from_redis(found)

    async def get_full(self, job_id: str) -> tuple[Job, list[str], list[dict[str, Any]]]:
        """The job, its log lines and its custom events, read together."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.job(job_id))
            pipe.lrange(self.keys.job_logs(job_id), 0, -1)
            pipe.lrange(self.keys.job_events(job_id), 0, -1)
            found, logs, events = await pipe.execute()
        if not found:
            raise JobNotFound(job_id)
        return Job.from_redis(found), logs, [json.loads(e) for e in events]

    async def list(
        self,
        statuses: list[Status],
        queue: str | None,
        job_type: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Job], int]:
        """Newest first. One index answers a single filter; several are combined in a temp key."""
        k = self.keys
        if queue:
            sources = [k.queue_status_index(queue, s) for s in statuses] or [k.queue_jobs(queue)]
        else:
            sources = [k.status_index(s) for s in statuses] or [k.all_jobs]
        if job_type and sources == [k.all_jobs]:
            sources, job_type = [k.type_index(job_type)], None  # the type index alone answers
        combined = len(sources) > 1 or job_type is not None
        source = k.temp(secrets.token_hex(8)) if combined else sources[0]
        async with self.redis.pipeline(transaction=True) as pipe:
            if combined:
                pipe.zunionstore(source, sources, aggregate="MAX")
                if job_type:
                    pipe.zinterstore(source, [source, k.type_index(job_type)], aggregate="MAX")
            pipe.zcard(source)
            pipe.zrevrange(source, offset, offset + limit - 1)
            if combined:
                pipe.delete(source)
            replies = await pipe.execute()
        total, ids = replies[-3:-1] if combined else replies[-2:]
        return await self._load(ids), total

    async def _load(self, ids: list[str]) -> list[Job]:
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(self.keys.job(job_id))
            hashes = await pipe.execute()
        return [Job.from_redis(h) for h in hashes if h]  # a job deleted meanwhile is skipped

    # -- API actions --------------------------------------------------------------------------
    # One code path for single and bulk actions: read each job's queue/type/worker, then call the
    # action's script for every job in one pipeline. A script re-checks state atomically.

    async def apply(
        self, action: str, ids: list[str], extra: tuple[Any, ...] = (), only_status: str = ""
    ) -> dict[str, list[Any]]:
        """Run `action` (cancel, retry, promote, priority, delete) on jobs; id -> script reply."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(k.job(job_id), ["queue", "type", "workerId"])
            targets = await pipe.execute()
        present = [(i, t) for i, t in zip(ids, targets) if t[0] is not None]
        if not present:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, (queue, job_type, worker_id) in present:
                script, keys, args = self._action_call(action, job_id, queue, job_type, worker_id or "")
                if action == "delete":
                    args.append(only_status)
                await script(keys=keys, args=[*args, *extra], client=pipe)
            replies = await pipe.execute()
        return {job_id: reply for (job_id, _), reply in zip(present, replies)}

    def _action_call(
        self, action: str, job_id: str, queue: str, job_type: str, worker_id: str
    ) -> tuple[Any, list[str], list[Any]]:
        k = self.keys
        keys = [*k.queue_block(queue), k.job(job_id)]
        args: list[Any] = [job_id, k.job_channel(job_id)]
        stops_worker = [k.worker_channel(worker_id), worker_id]
        if action == "cancel":
            return self._cancel, [*keys, k.processing(queue, worker_id)], [*args, *stops_worker]
        if action == "delete":
            keys += [
                k.job_logs(job_id), k.all_jobs, k.queue_jobs(queue), k.type_index(job_type),
                k.processing(queue, worker_id), k.job_events(job_id),
            ]  # fmt: skip
            return self._delete, keys, [*args, *stops_worker]
        script = {"retry": self._retry, "promote": self._promote, "priority": self._set_priority}[action]
        return script, keys, args

    async def _apply_one(self, action: str, job_id: str, *extra: Any) -> list[Any]:
        while True:  # loops only if an active job changed worker between the read and the script
            reply = (await self.apply(action, [job_id], extra)).get(job_id)
            if reply is None or reply[0] == "missing":
                raise JobNotFound(job_id)
            if reply[0] == "conflict":
                verb = "change the priority of" if action == "priority" else action
                raise JobStateConflict(verb, reply[1])
            if reply[0] != "moved":
                return reply

    async def retry(self, job_id: str) -> Job:
        return Job.from_redis(_pairs((await self._apply_one("retry", job_id))[1]))

    async def promote(self, job_id: str) -> Job:
        return Job.from_redis(_pairs((await self._apply_one("promote", job_id))[1]))

    async def set_priority(self, job_id: str, priority: Priority) -> Job:
        return Job.from_redis(_pairs((await self._apply_one("priority", job_id, priority.value))[1]))

    async def cancel(self, job_id: str) -> Job:
        """Waiting/delayed: cancelled now. Active: cancelled now, and its worker told to stop it."""
        return Job.from_redis(_pairs((await self._apply_one("cancel", job_id))[1]))

    async def delete(self, job_id: str) -> None:
        await self._apply_one("delete", job_id)

    # -- worker side --------------------------------------------------------------------------
    async def claim(self, queue: str, worker_id: str, count: int, moved: Sequence[str] = ()) -> list[Job]:
        """Mark `moved` ids (already in the worker's processing list) active, then move and claim
        waiting jobs until `count` are claimed or the queue is empty: one round trip."""
        k = self.keys
        claimed = await self._claim(
            keys=[*k.queue_block(queue), k.processing(queue, worker_id)],
            args=[worker_id, k.job_prefix, count, *moved],
        )
        return _jobs(claimed)

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
            keys=[k.events, k.job(job.id), k.job_logs(job.id)],
            args=[
                k.job_channel(job.id), job.worker_id or "", job.token,
                "" if progress is None else progress,
                "0" if action is None else "1", (action or "")[:ACTION_MAX],
                "0" if log is None else "1", (log or "")[:LOG_LINE_MAX], LOG_CAP,
                "0" if state is None else "1", "" if state is None else _compact(state),
            ],  # fmt: skip
        )
        return applied == 1

    async def emit(self, job: Job, name: str, data: Any = None) -> bool:
        """A custom event of the job's handler: kept with the job, sent on the streams. False: the
        lease was lost."""
        k = self.keys
        applied = await self._emit(
            keys=[k.events, k.job(job.id), k.job_events(job.id)],
            args=[k.job_channel(job.id), job.worker_id or "", job.token, name, _compact(data), EVENTS_CAP],
        )
        return applied == 1

    def _ack_keys(self, job: Job) -> list[str]:
        k, worker_id = self.keys, job.worker_id or ""
        return [
            *k.queue_block(job.queue), k.processing(job.queue, worker_id), k.job(job.id), k.worker(worker_id)
        ]  # fmt: skip

    # The acks free a slot: with claim_next=1 they claim the next waiting job of the queue for it,
    # in the same round trip, and return it with the outcome.

    async def complete(self, job: Job, result: Any, claim_next: int = 0) -> tuple[bool, list[Job]]:
        """Returns (False if the lease was lost, the jobs claimed next)."""
        result_json = json.dumps(result, separators=(",", ":"), allow_nan=False)
        done, claimed = await self._complete(
            keys=self._ack_keys(job),
            args=[
                job.id, self.keys.job_channel(job.id), job.worker_id or "", job.token, result_json,
                claim_next, self.keys.job_prefix,
            ],  # fmt: skip
        )
        return done == 1, _jobs(claimed)

    async def fail(self, job: Job, reason: str, retry: bool = True, claim_next: int = 0) -> tuple[str, list[Job]]:
        """Returns (the job's new status: 'delayed' for a retry, 'failed', or '' if the lease was
        lost; the jobs claimed next). The reason is also appended to the job's logs."""
        status, claimed = await self._fail(
            keys=[*self._ack_keys(job), self.keys.job_logs(job.id)],
            args=[
                job.id, self.keys.job_channel(job.id), job.worker_id or "", job.token, reason[:REASON_MAX],
                "1" if retry else "0", claim_next, self.keys.job_prefix, LOG_CAP,
            ],  # fmt: skip
        )
        return status, _jobs(claimed)

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
        keys: list[str] = [*k.queue_block(queue), k.workers]
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

    async def enqueue_many(self, news: Sequence[NewJob]) -> list[Job]:
        """`enqueue` for several jobs in one round trip: its ENQUEUE call per job, in one MULTI/EXEC.
        All or none: Redis runs the calls back to back with nothing in between; a call it refuses
        while queuing (say, out of memory) aborts the EXEC, and a connection lost before EXEC drops
        the queue, so no job is created (a plain pipeline leaves a full Redis with the first jobs of
        the batch only). EXEC does not undo a call that fails when run, but on validated jobs with
        fresh ids none does. The transaction opens with SCRIPT LOAD (a no-op when Redis has the
        script) and calls EVALSHA itself: a pipeline that runs a registered script first asks
        SCRIPT EXISTS, a second round trip."""
        k = self.keys
        blocks: dict[str, list[str]] = {}  # queue -> its queue block, built once per call
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.script_load(self._enqueue.script)
            for new in news:
                job = Job(
                    id=new_job_id(), name=new.name, type=new.type, queue=new.queue, data=new.data,
                    priority=new.priority, max_attempts=new.max_attempts, backoff_ms=new.backoff_ms,
                    max_backoff_ms=new.max_backoff_ms, timeout_ms=new.timeout_ms,
                )  # fmt: skip
                if job.queue not in blocks:
                    blocks[job.queue] = k.queue_block(job.queue)
                keys = [
                    *blocks[job.queue], k.job(job.id), k.seq, k.all_jobs, k.queue_jobs(job.queue),
                    k.type_index(job.type), k.queues,
                ]  # fmt: skip
                fields = [item for pair in job.to_redis().items() for item in pair]
                args = [job.id, k.job_channel(job.id), new.delay_ms, job.queue, *fields]
                pipe.evalsha(self._enqueue.sha, len(keys), *keys, *args)
            _, *flats = await pipe.execute()
        return [Job.from_redis(_pairs(flat)) for flat in flats]
