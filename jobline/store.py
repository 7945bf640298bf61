"""The queue on Redis: every read and write of jobs, shared by the server and the worker.

Multi-key changes go through the Lua scripts in scripts.py (registered once per store), each on
one queue's keys (one Redis Cluster slot); reads are pipelined. Nothing here scans the keyspace:
listings page through each queue's sorted-set indexes and merge the pages.

The same code runs on a single Redis and on a Redis Cluster (`redis.asyncio.RedisCluster`): calls
that touch several queues go out as one pipeline on a single Redis, and concurrently on a cluster,
whose client runs no scripts in pipelines.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError
from redis.commands.core import AsyncScript

from . import scripts
from .keys import Keys, new_job_id
from .store_flows import FlowSide
from .store_worker import WorkerSide, pairs
from .models import Job, NewJob, Priority, Status

REGISTER_EVERY_S = 10.0

# A script call: the registered script, its keys and its args.
Call = tuple[AsyncScript, list[str], list[Any]]


class JobNotFound(LookupError):
    """No job with that id."""


class JobStateConflict(Exception):
    """The job's state forbids the action (e.g. retrying a completed job)."""

    def __init__(self, action: str, status: str) -> None:
        super().__init__(f"cannot {action} a job that is {status}")
        self.status = status


# A job to create: the job, its delay, its children's ids.
Node = tuple[Job, int, list[str]]


def _flatten(new: NewJob, parent: Job | None = None) -> list[Node]:
    """A create request's tree, parents before their children, each child knowing its parent."""
    job = _new_job(new)
    if parent is not None:
        job.parent_id, job.parent_queue, job.on_failure = parent.id, parent.queue, new.on_failure.value
    below = [_flatten(child, job) for child in new.children]
    if below:
        total = len(below)
        job.children = {"total": total, "completed": 0, "failed": 0, "cancelled": 0, "pending": total}
    return [(job, new.delay_ms, [tree[0][0].id for tree in below]), *(node for tree in below for node in tree)]


def _new_job(new: NewJob) -> Job:
    return Job(
        id=new.job_id or new_job_id(new.queue), schedule_id=new.schedule_id, name=new.name, type=new.type, queue=new.queue, data=new.data,
        priority=new.priority, max_attempts=new.max_attempts, backoff_ms=new.backoff_ms,
        max_backoff_ms=new.max_backoff_ms, timeout_ms=new.timeout_ms, unique_key=new.unique_key,
        unique_for_ms=new.unique_for_ms or None, tags=list(new.tags),
    )  # fmt: skip


class JobStore(WorkerSide, FlowSide):
    """Every read and write of jobs: creating, reading, listing and the API's actions here, the
    worker's claims, acks and recoveries in WorkerSide (store_worker.py)."""

    def __init__(self, client: redis.Redis | RedisCluster, keys: Keys | None = None) -> None:
        self.redis = client
        self.keys = keys or Keys()
        self.cluster = isinstance(client, RedisCluster)
        self._registered: dict[str, float] = {}  # queue -> when this process last registered it
        register = client.register_script
        self._enqueue = register(scripts.ENQUEUE)
        self._flow_step = register(scripts.FLOW_STEP)
        self._flow_retry = register(scripts.FLOW_RETRY)
        self._page = register(scripts.PAGE)
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
        return (await self.create([new]))[0][0]

    async def enqueue_many(self, news: Sequence[NewJob]) -> list[Job]:
        return [job for job, _ in await self.create(news)]

    async def create(self, news: Sequence[NewJob]) -> list[tuple[Job, bool]]:
        """Create jobs, in order, all or none: one ENQUEUE call per queue, which creates all of
        that queue's jobs or none. With several queues, the calls go in one MULTI/EXEC on a single
        Redis (a call refused while queuing aborts it whole) and concurrently on a cluster; if a
        call fails when run (say, Redis ran out of memory after the first queue's jobs), the jobs
        the other calls created are deleted again before the error is raised.

        Returns (the job, True) for each job created, and (the job holding its uniqueKey, False)
        where such a job stood in."""
        trees = [_flatten(new) for new in news]
        outcome: dict[str, tuple[Job, bool]] = {}
        # A flow whose root has a uniqueKey: the root first, alone; its children only if it was
        # created (if not, its holder stands in, and nothing of the flow is created).
        for tree in trees:
            root = tree[0][0]
            if root.unique_key and len(tree) > 1:
                outcome.update(await self._create_nodes(tree[:1]))
                if outcome[root.id][1]:
                    try:
                        outcome.update(await self._create_nodes(tree[1:]))
                    except BaseException:
                        await self.apply("delete", [root.id])
                        raise
        rest = [node for tree in trees if not (tree[0][0].unique_key and len(tree) > 1) for node in tree]
        if rest:
            outcome.update(await self._create_nodes(rest))
        return [outcome[tree[0][0].id] for tree in trees]

    async def _create_nodes(self, nodes: list[Node]) -> dict[str, tuple[Job, bool]]:
        k = self.keys
        by_queue: dict[str, list[Node]] = {}
        for node in nodes:
            by_queue.setdefault(node[0].queue, []).append(node)
        await self._register(list(by_queue))
        # One clock reading (µs) for a batch across queues, so that it lists in its own order.
        base: int | str = ""
        if len(by_queue) > 1:
            seconds, micros = await self.redis.time()
            base = seconds * 1_000_000 + micros
        place = {node[0].id: i for i, node in enumerate(nodes)}
        calls: list[Call] = []
        for queue, members in by_queue.items():
            keys, args = [*k.queue_block(queue), k.queue_jobs(queue)], [base]
            for job, delay, child_ids in members:
                fields = scripts.enqueue_fields(job)
                keys += [k.job(job.id), k.type_index(queue, job.type)]
                args += [
                    job.id, k.job_channel(job.id), delay, place[job.id], len(fields) // 2, *fields,
                    len(child_ids), *child_ids,
                ]  # fmt: skip
            calls.append((self._enqueue, keys, args))
        replies = await self._run_each(calls)
        failed = [reply for reply in replies if isinstance(reply, Exception)]
        if failed:
            created = [  # not the holders of uniqueKeys that stood in: they were there before
                node[0].id
                for reply, members in zip(replies, by_queue.values())
                if not isinstance(reply, Exception)
                for node, made in zip(members, reply[1])
                if made == 1
            ]
            for start in range(0, len(created), 500):
                await self.apply("delete", created[start : start + 500])
            raise failed[0]
        outcome: dict[str, tuple[Job, bool]] = {}  # our id -> (the job, or its uniqueKey's holder; created)
        new_queues = []
        for (queue, members), (new_queue, created, *flats) in zip(by_queue.items(), replies):
            if new_queue:
                new_queues.append(queue)
            for (job, _, _), made, reply in zip(members, created, flats):
                if made == 1:  # as saved: what the script set, on the job we sent
                    job.status, job.created_at, job.rev = Status(reply[0]), int(reply[1]), 1
                    job.run_at = int(reply[2]) if reply[2] else None
                    outcome[job.id] = (job, True)
                else:
                    outcome[job.id] = (Job.from_redis(pairs(reply)), False)
        if new_queues:  # the registry is global: kept out of the scripts, written once per queue
            await self.redis.sadd(k.queues, *new_queues)
        return outcome

    async def _register(self, queues: list[str]) -> None:
        """Name the queues in the registry before their first event goes out: a stream that
        subscribes meanwhile replays the logs of the queues it finds there. Once per queue every
        REGISTER_EVERY_S per process (the scripts' new-queue flag covers a queue deleted since)."""
        now = time.monotonic()
        stale = [q for q in queues if now - self._registered.get(q, -REGISTER_EVERY_S) >= REGISTER_EVERY_S]
        if stale:
            await self.redis.sadd(self.keys.queues, *stale)
            self._registered.update(dict.fromkeys(stale, now))

    async def _run_each(self, calls: list[Call]) -> list[Any]:
        """Each call's reply, or the exception it failed with."""
        if len(calls) == 1:
            script, keys, args = calls[0]
            return [await script(keys=keys, args=args)]  # one call: all or nothing by itself
        if self.cluster:
            return await self._cluster_pipeline(calls)
        async with self.redis.pipeline(transaction=True) as pipe:
            # SCRIPT LOAD (a no-op when Redis has it) then EVALSHA: a pipeline that runs a
            # registered script would first ask SCRIPT EXISTS, a second round trip.
            pipe.script_load(self._enqueue.script)
            for script, keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            return (await pipe.execute(raise_on_error=False))[1:]

    async def run_scripts(self, calls: list[Call]) -> list[Any]:
        """Independent script calls (each may fail on its own), in one pipeline: on a cluster, one
        per node. Raises the first call's error, if any."""
        if not calls:
            return []
        if self.cluster:
            replies = await self._cluster_pipeline(calls)
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return replies
        async with self.redis.pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                await script(keys=keys, args=args, client=pipe)
            return await pipe.execute()

    async def _cluster_pipeline(self, calls: list[Call]) -> list[Any]:
        """Each call's reply or error. redis-py's cluster pipeline refuses its script helpers, but
        sends a raw EVALSHA to its keys' node; a node that lacks a script (new, or restarted) gets
        it loaded, and those calls go again."""
        replies: list[Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        for attempt in range(2):
            async with self.redis.pipeline(transaction=False) as pipe:
                for i in pending:
                    script, keys, args = calls[i]
                    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                for i, reply in zip(pending, await pipe.execute(raise_on_error=False)):
                    replies[i] = reply
            pending = [i for i in pending if isinstance(replies[i], NoScriptError)]
            if not pending or attempt:
                break
            for script in {calls[i][0].sha: calls[i][0] for i in pending}.values():
                await self.redis.script_load(script.script)  # on every primary
        return replies

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

    async def queue_names(self) -> list[str]:
        return sorted(await self.redis.smembers(self.keys.queues))

    async def list(
        self,
        statuses: list[Status],
        queue: str | None,
        job_type: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Job], int]:
        """Newest first, `total` exact. Each queue answers its first offset+limit ids with their
        scores (one PAGE call, which combines several indexes in a scratch key of its own slot);
        the pages are merged by score (creation time), which orders jobs across queues."""
        k = self.keys
        queues = [queue] if queue else await self.queue_names()
        calls: list[Call] = []
        for q in queues:
            sources = [k.queue_status_index(q, s) for s in statuses]
            if not sources:
                sources = [k.type_index(q, job_type) if job_type else k.queue_jobs(q)]
            elif job_type:
                sources.append(k.type_index(q, job_type))
            typed = "1" if statuses and job_type else "0"
            calls.append((self._page, [k.temp(q, secrets.token_hex(8)), *sources], [offset + limit, typed]))
        total, scored = 0, []
        for queue_total, page in await self.run_scripts(calls):
            total += queue_total
            scored += [(float(score), job_id) for job_id, score in zip(page[::2], page[1::2])]
        scored.sort(reverse=True)
        return await self.load([job_id for _, job_id in scored[offset : offset + limit]]), total

    async def load(self, ids: list[str]) -> list[Job]:
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:  # on a cluster: one per node
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
        """Run `action` (cancel, retry, promote, priority, delete) on jobs; id -> script reply.
        Cancel and delete reach every descendant of a parent too (the parent first: it is cancelled,
        not failed by its children's end); retrying a parent retries its failed children."""
        targets = await self._targets(ids)
        parents = [job_id for job_id, t in zip(ids, targets) if t[0] is not None and t[4] is not None]
        if action in ("cancel", "delete") and parents:
            asked = set(ids)
            below = [i for i in await self.descendants(parents) if i not in asked]
            ids, targets = [*ids, *below], [*targets, *await self._targets(below)]
        replies: dict[str, list[Any]] = {}
        if action == "retry" and parents:
            replies.update(await self.retry_parents(parents))
        present = [(i, t) for i, t in zip(ids, targets) if t[0] is not None and i not in replies]
        calls: list[Call] = []
        for job_id, (queue, job_type, worker_id, _, _) in present:
            script, keys, args = self._action_call(action, job_id, queue, job_type, worker_id or "")
            if action == "delete":
                args.append(only_status)
            calls.append((script, keys, [*args, *extra]))
        replies.update({job_id: reply for (job_id, _), reply in zip(present, await self.run_scripts(calls))})
        for queue in {t[0] for _, t in present if t[3] is not None}:  # children ended: tell their parents
            await self.deliver_to_parents(queue)
        return replies

    async def _targets(self, ids: list[str]) -> list[list[str | None]]:
        """Per job: queue, type, workerId, parentId, children (None where absent)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(self.keys.job(job_id), ["queue", "type", "workerId", "parentId", "children"])
            return await pipe.execute()

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
                k.job_logs(job_id), k.queue_jobs(queue), k.type_index(queue, job_type),
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
        return Job.from_redis(pairs((await self._apply_one("retry", job_id))[1]))

    async def promote(self, job_id: str) -> Job:
        return Job.from_redis(pairs((await self._apply_one("promote", job_id))[1]))

    async def set_priority(self, job_id: str, priority: Priority) -> Job:
        return Job.from_redis(pairs((await self._apply_one("priority", job_id, priority.value))[1]))

    async def cancel(self, job_id: str) -> Job:
        """Waiting/delayed: cancelled now. Active: cancelled now, and its worker told to stop it."""
        return Job.from_redis(pairs((await self._apply_one("cancel", job_id))[1]))

    async def delete(self, job_id: str) -> None:
        await self._apply_one("delete", job_id)
