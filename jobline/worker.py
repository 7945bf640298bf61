"""Jobline worker: `python worker.py [--queue NAME ...] [--concurrency 5] [--redis-url URL] [--tasks MODULE ...]`.

Runs at most `concurrency` jobs at once. A slot is taken *before* a job is claimed, and a claim moves
the id into this worker's processing list, so a claimed job is never only in memory: if the worker
dies, its heartbeat stops and another worker's reaper puts its jobs back in line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import socket
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis
import redis.exceptions

from . import tasks
from .keys import DEFAULT_PREFIX, Keys
from .models import Job, now_ms
from .connections import connect, durability_warnings
from .store import JobStore
from .context import JobContext, JobTimedOut, RateLimited
from .duties import REDIS_ERRORS, RETENTION_SWEEP_S, SCHEDULE_CHECK_S, Duties
from .liveness import DEFAULT_LEASE_MS, HeartbeatThread, Registry
from .queue_settings import SettingsStore
from .schedules import ScheduleStore
from .tasks import Handler
from .threads import HandlerThreads, is_async

log = logging.getLogger("jobline.worker")



@dataclass(frozen=True)
class WorkerSettings:
    redis_url: str = "redis://localhost:6379/0"
    redis_cluster: bool = False  # redis_url is any node of a Redis Cluster
    queues: tuple[str, ...] = ("default",)
    concurrency: int = 5
    task_modules: tuple[str, ...] = ()
    lease_ms: int = DEFAULT_LEASE_MS  # no heartbeat for this long: the worker is dead, its jobs are recovered
    grace_s: float = 25.0  # on SIGTERM, how long active jobs may run on before being put back
    block_s: float = 1.0  # BLMOVE timeout: how soon an idle worker notices it should stop
    prefix: str = DEFAULT_PREFIX


@dataclass
class Running:
    job: Job
    handler_task: asyncio.Task[Any] | None = None
    stop_reason: str | None = None  # "cancelled", "lost" or "shutdown" when we stopped it


@dataclass
class Worker(Duties):
    settings: WorkerSettings
    handlers: dict[str, Handler] = field(default_factory=lambda: dict(tasks.TASKS))
    client: redis.Redis | None = None

    def __post_init__(self) -> None:
        host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40] or "host"
        self.id = f"{host}-{os.getpid()}-{secrets.token_hex(3)}"
        self.host = socket.gethostname()
        self._own_client = self.client is None
        # The socket timeout must outlast the blocking BLMOVE.
        self.redis = self.client or connect(
            self.settings.redis_url,
            cluster=self.settings.redis_cluster,
            socket_timeout=self.settings.block_s + 10,
            max_connections=2 * self.settings.concurrency + 20,  # every slot may talk at once, plus duties
        )
        self.keys = Keys(self.settings.prefix)
        self.store = JobStore(self.redis, self.keys)
        self.registry = Registry(self.store)
        self.queue_settings = SettingsStore(self.store)
        self.schedules = ScheduleStore(self.store)
        self._held_until: dict[str, float] = {}  # queue -> loop time its limits hold it back until
        self._delivering: dict[str, bool] = {}  # queue -> a slot drains its outbox; True: go round again
        self.running: dict[str, Running] = {}
        self._executors: set[asyncio.Task[None]] = set()
        self._unrun: set[tuple[str, str]] = set()  # (queue, id) held but not run at the last lease check
        self._slots = asyncio.Semaphore(self.settings.concurrency)
        self._threads = HandlerThreads(self.settings.concurrency)  # for plain `def` handlers
        self._stopping = asyncio.Event()  # claim nothing new
        self._closed = asyncio.Event()  # background duties end
        self._started_at = now_ms()
        self.processed = self.failed = 0  # jobs completed, attempts failed (shown with the worker)

    # -- lifecycle -------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Claim nothing new; active jobs get the grace period."""
        if not self._stopping.is_set():
            log.info("worker %s stopping: %d active job(s) get %.0f s", self.id, len(self.running), self.settings.grace_s)
        self._stopping.set()

    async def run(self) -> None:
        s = self.settings
        if not await self._register():
            return
        # The heartbeat has a thread and a connection of its own: a handler that blocks the event
        # loop must not make this worker look dead (a frozen or killed process still does).
        heart = HeartbeatThread(s.redis_url, s.redis_cluster, self.keys, self.id, self._info, s.lease_ms / 5000)
        heart.start()
        # The claimer's task first, so the first claim goes out before anything else: the duties
        # and the start-up checks can run while the first jobs do.
        claimer = asyncio.create_task(self._claim_loop())
        # Background duties run until the very end (the heartbeat must go on while jobs drain) and
        # stop on a flag: a cancellation can be lost inside a redis-py command with a socket timeout.
        background = [
            asyncio.create_task(self._warn_about_durability()),
            asyncio.create_task(self._every(s.lease_ms / 5000, self._check_leases)),
            asyncio.create_task(self._every(s.lease_ms / 5000, self._reap)),
            asyncio.create_task(self._every(RETENTION_SWEEP_S, self._sweep_retention)),
            asyncio.create_task(self._every(RETENTION_SWEEP_S, self._deliver_flows)),
            asyncio.create_task(self._every(SCHEDULE_CHECK_S, self._fire_schedules)),
            asyncio.create_task(self._listen_for_control()),
            *(asyncio.create_task(self._schedule_delayed(q)) for q in s.queues),
        ]
        log.info("worker %s started: queues=%s concurrency=%d", self.id, ",".join(s.queues), s.concurrency)
        clean = False
        try:
            await self._stopping.wait()
            await self._finish(claimer, timeout=self.settings.block_s + 2)
            clean = await self._drain()
        finally:
            self._closed.set()
            await self._finish(*background, timeout=5)
            await asyncio.to_thread(heart.stop)
            if clean:  # else our heartbeat lapses and a reaper recovers what we could not put back
                await self._deregister()
            if self._own_client:
                await self.redis.aclose()
        log.info("worker %s stopped", self.id)

    async def _register(self) -> bool:
        """The first heartbeat, retried while Redis is unreachable; False if told to stop meanwhile."""
        delay = 0.1
        while not self._stopping.is_set():
            try:
                await self.registry.heartbeat(self.id, self._info())
                await self.redis.sadd(self.keys.queues, *self.settings.queues)  # listed even before a job
                return True
            except REDIS_ERRORS as error:
                log.warning("cannot reach Redis (%s); retrying in %.1f s", error, delay)
                await self._sleep(delay)
                delay = min(delay * 2, 5)
        if self._own_client:
            await self.redis.aclose()
        return False

    @staticmethod
    async def _finish(*tasks: asyncio.Task[None], timeout: float) -> None:
        """Wait for tasks that stop on a flag; cancel any still running after `timeout`."""
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1)

    async def _drain(self) -> bool:
        """Let active jobs finish within the grace period, then put the rest back in line.
        Returns True when everything this worker held is back in Redis's hands."""
        if self._executors:
            await asyncio.wait(set(self._executors), timeout=self.settings.grace_s)
        for job_id in list(self.running):
            self.stop_job(job_id, "shutdown")
        if self._executors:
            await asyncio.wait(set(self._executors), timeout=5)
        clean = not self._executors
        for queue in self.settings.queues:
            try:
                requeued = await self.store.requeue(queue, self.id, "shutdown")
            except REDIS_ERRORS as error:
                log.warning("could not put jobs of %s back (%s); a reaper will", queue, error)
                clean = False
                continue
            if requeued:
                log.info("put %d unfinished job(s) of queue %s back to waiting", requeued, queue)
        return clean

    async def _warn_about_durability(self) -> None:
        with contextlib.suppress(*REDIS_ERRORS):
            for warning in await durability_warnings(self.redis):
                log.warning(warning)

    async def _deregister(self) -> None:
        with contextlib.suppress(*REDIS_ERRORS):
            await self.registry.deregister(self.id)

    # -- claiming and running ----------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        """Take every free slot (waiting for one), then claim that many jobs, queues in the order
        given, one round trip per queue looked at. Only when all are empty, block on one queue with
        one slot: BLMOVE watches a single list, so several queues take turns with a short block
        each. Busy slots mostly refill themselves: an ack claims the slot's next job (_ack). A queue
        its limits hold back is left alone until they allow a start (or a recheck is due), so a
        held worker costs Redis a few commands per second, not a busy loop."""
        queues = self.settings.queues
        block_s = self.settings.block_s if len(queues) == 1 else min(self.settings.block_s, 0.2)
        turn = failures = 0
        while not self._stopping.is_set():
            taken = await self._take_slots()
            if self._stopping.is_set():  # began to stop while waiting for a slot
                self._release(taken)
                return
            started = 0
            try:
                for queue in queues:
                    if started < taken and not self._held(queue):
                        started += self._start_all(await self._claim(queue, taken - started))
                open_queues = [queue for queue in queues if not self._held(queue)]
                if not started and not open_queues:
                    await self._sleep(self._until_a_hold_ends())
                elif not started:
                    self._release(taken - 1)
                    taken = 1
                    queue = open_queues[turn % len(open_queues)]
                    turn += 1
                    job_id = await self.store.wait_for_job(queue, self.id, block_s)
                    if job_id is not None and self._stopping.is_set():  # claim nothing new: undo the move
                        await self.store.requeue(queue, self.id, "unclaimed")
                    elif job_id is not None:
                        started += self._start_all(await self._claim(queue, 1, [job_id]))
                failures = 0
            except REDIS_ERRORS as error:
                failures += 1
                log.warning("claiming failed (%s); retrying", error)
            finally:
                self._release(taken - started)
            if failures:
                await self._sleep(min(0.1 * 2**failures, 5))
                with contextlib.suppress(*REDIS_ERRORS):  # ids moved before the error go back
                    for queue in queues:
                        await self.store.requeue(queue, self.id, "unclaimed")

    async def _deliver(self, queue: str) -> None:
        """Children's ends to their parents: one slot at a time drains the queue's outbox (the
        others' entries are in it too), so no end is taken to its parent over and over."""
        if queue in self._delivering:  # a slot is at it: it goes round again for this end
            self._delivering[queue] = True
            return
        try:
            self._delivering[queue] = True
            while self._delivering[queue]:
                self._delivering[queue] = False
                await self._retrying(self.store.deliver_to_parents, queue)
        finally:
            del self._delivering[queue]

    async def _claim(self, queue: str, count: int, moved: Sequence[str] = ()) -> list[Job]:
        jobs, hold_ms = await self.store.claim_held(queue, self.id, count, moved)
        if hold_ms:
            self._held_until[queue] = asyncio.get_running_loop().time() + hold_ms / 1000
        return jobs

    def _held(self, queue: str) -> bool:
        return asyncio.get_running_loop().time() < self._held_until.get(queue, 0)

    def _until_a_hold_ends(self) -> float:
        return max(min(self._held_until.values()) - asyncio.get_running_loop().time(), 0.001)

    async def _take_slots(self) -> int:
        """Wait for a free slot, then take every other free one without waiting."""
        await self._slots.acquire()
        taken = 1
        while taken < self.settings.concurrency and not self._slots.locked():
            await self._slots.acquire()
            taken += 1
        return taken

    def _release(self, count: int) -> None:
        for _ in range(count):
            self._slots.release()

    def _start_all(self, jobs: list[Job]) -> int:
        """Run each claimed job in a task of its own, which holds one slot until it ends."""
        for job in jobs:
            task = asyncio.create_task(self._execute(job))
            self._executors.add(task)
            task.add_done_callback(self._executors.discard)
        return len(jobs)

    def stop_job(self, job_id: str, reason: str, token: int | None = None) -> None:
        """Stop the job's run here; with `token`, only that attempt's (the job may have been
        retried and claimed again since)."""
        running = self.running.get(job_id)
        if running is None or running.stop_reason or (token is not None and running.job.token != token):
            return
        running.stop_reason = reason
        if running.handler_task:
            running.handler_task.cancel()

    async def _execute(self, job: Job | None) -> None:
        """Run jobs in one slot: this one, then each next job its ack claimed."""
        try:
            while job is not None:
                job = await self._run(job)
        finally:
            self._slots.release()

    async def _run(self, job: Job) -> Job | None:
        """Run one job and ack it. Returns the job the ack claimed for this slot, if any."""
        running = self.running[job.id] = Running(job)
        try:
            handler = self.handlers.get(job.type)
            if handler is None:
                return await self._ack(self.store.fail, job, f"no handler for job type {job.type!r}", False)
            running.handler_task = asyncio.create_task(self._call(handler, job))
            try:
                result = await running.handler_task
                json.dumps(result, allow_nan=False)  # a result the API cannot show fails the attempt
            except asyncio.CancelledError:
                if running.stop_reason is None:
                    raise  # we ourselves are being cancelled
                log.info("job %s stopped: %s", job.id, running.stop_reason)
                return None
            except JobTimedOut:
                return await self._ack(self.store.fail, job, f"timed out after {job.timeout_ms} ms")
            except RateLimited as limited:
                return await self._ack(self.store.fail, job, str(limited), rate_limited_ms=limited.ms)
            except Exception as error:
                return await self._ack(self.store.fail, job, f"{type(error).__name__}: {error}")
            return await self._ack(self.store.complete, job, result)
        finally:
            if self.running.get(job.id) is running:  # not a newer attempt's, claimed meanwhile
                del self.running[job.id]

    async def _ack(self, ack: Any, job: Job, *args: Any, **options: Any) -> Job | None:
        """Complete or fail the job; the same round trip claims the slot's next job, unless the
        worker is stopping or the job's queue is not the first (queues are served in order)."""
        claim_next = int(not self._stopping.is_set() and job.queue == self.settings.queues[0])
        outcome, claimed = await self._retrying(ack, job, *args, claim_next=claim_next, **options)
        if outcome is True:  # counted here, not in Redis: the worker's hash is in another slot
            self.processed += 1
        elif outcome:
            self.failed += 1
        if job.parent_id and outcome in (True, "failed"):  # its parent counts it now (else the sweep does, within a second)
            await self._deliver(job.queue)
        return claimed[0] if claimed else None

    async def _call(self, handler: Handler, job: Job) -> Any:
        """An `async def` handler runs on the loop; a plain one in a thread (see threads.py)."""
        ctx = JobContext(job, self)
        run = handler(ctx, job.data) if is_async(handler) else self._threads.run(handler, ctx, job.data)
        if not job.timeout_ms:
            return await run
        timeout = asyncio.timeout(job.timeout_ms / 1000)
        try:
            async with timeout:
                return await run
        except TimeoutError:
            if timeout.expired():
                raise JobTimedOut() from None
            raise

    # -- background duties -------------------------------------------------------------------------
    def _info(self) -> dict[str, Any]:
        """What every heartbeat writes into this worker's hash."""
        s = self.settings
        return {
            "id": self.id, "host": self.host, "pid": os.getpid(), "queues": json.dumps(list(s.queues)),
            "concurrency": s.concurrency, "startedAt": self._started_at, "leaseMs": s.lease_ms,
            "processed": self.processed, "failed": self.failed,
        }  # fmt: skip

    # -- helpers -----------------------------------------------------------------------------------
    async def _retrying(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        """Acks and progress must not be lost to a Redis blip; fencing makes a late repeat harmless."""
        delay = 0.1
        while True:
            try:
                return await call(*args, **kwargs)
            except REDIS_ERRORS as error:
                log.warning("%s failed (%s); retrying in %.1f s", getattr(call, "__name__", call), error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up when the worker begins to stop."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up when background duties must end."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._closed.wait(), seconds)
