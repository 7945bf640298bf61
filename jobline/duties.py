"""A worker's background duties: checking its leases, listening for cancels, promoting due
delayed jobs, reaping dead workers and sweeping retention. A mixin of Worker (worker.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .connections import UNAVAILABLE, Subscribers
from .keys import Keys
from .liveness import Registry
from .queue_settings import SettingsStore
from .schedules import ScheduleStore
from .store import JobStore

log = logging.getLogger("jobline.worker")

REDIS_ERRORS = (*UNAVAILABLE, OSError)
RETENTION_SWEEP_S = 1.0
SCHEDULE_CHECK_S = 0.2  # a due time is served within this (plus the job's pickup)


class Duties:
    settings: Any  # WorkerSettings
    id: str
    redis: Any
    keys: Keys
    store: JobStore
    registry: Registry
    queue_settings: SettingsStore
    schedules: ScheduleStore
    running: dict[str, Any]
    _unrun: set[tuple[str, str]]
    _closed: asyncio.Event

    def stop_job(self, job_id: str, reason: str, token: int | None = None) -> None:
        raise NotImplementedError

    async def _pause(self, seconds: float) -> None:
        raise NotImplementedError

    async def _deliver(self, queue: str) -> None:
        raise NotImplementedError

    async def _check_leases(self) -> None:
        """Stop jobs this worker no longer holds (cancelled while a control message was missed), and
        put back jobs it holds but does not run: claimed by a command whose reply was lost."""
        queues, running = self.settings.queues, list(self.running.values())
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.lrange(self.keys.processing(queue, self.id), 0, -1)
            for r in running:
                pipe.hmget(self.keys.job(r.job.id), ["status", "workerId", "token"])
            replies = await pipe.execute()
        for r, (status, worker_id, token) in zip(running, replies[len(queues):]):
            if (status, worker_id, token) != ("active", self.id, str(r.job.token)):
                self.stop_job(r.job.id, "lost", r.job.token)
        # A claim's reply is in flight for milliseconds: only an id unrun at two checks in a row is lost.
        unrun = {(queue, job_id) for queue, ids in zip(queues, replies) for job_id in ids if job_id not in self.running}
        lost, self._unrun = unrun & self._unrun, unrun - self._unrun
        for queue in {queue for queue, _ in lost}:
            ids = [job_id for q, job_id in lost if q == queue]
            log.warning("putting back %d job(s) of %s claimed but never started", len(ids), queue)
            await self.store.requeue(queue, self.id, "shutdown", ids=ids)

    async def _deliver_flows(self) -> None:
        """Ends of child jobs their parents have not counted yet (a crash between the two steps)."""
        for queue in self.settings.queues:
            await self._deliver(queue)

    async def _fire_schedules(self) -> None:
        """Any worker creates the jobs of due schedules (one per due time: schedules.py)."""
        await self.schedules.fire_due()

    async def _sweep_retention(self) -> None:
        """Finished jobs past their queue's age limit go (a count limit applies as jobs finish)."""
        for queue in self.settings.queues:
            await self.queue_settings.sweep(queue)

    async def _reap(self) -> None:
        await self.registry.reap(self.id, self.settings.lease_ms, self.settings.queues)

    async def _listen_for_control(self) -> None:
        """Cancel requests for running jobs arrive on this worker's control channel."""
        subscribers = Subscribers(self.redis)  # on a cluster: one node at a time
        while not self._closed.is_set():
            try:
                async with (await subscribers.get()).pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.keys.worker_channel(self.id))
                    while not self._closed.is_set():
                        message = await pubsub.get_message(timeout=0.5)
                        if message is None:
                            continue
                        command, job_id, token = (str(message["data"]).split(" ") + ["", ""])[:3]
                        if command == "cancel":  # a late one, for an earlier attempt, stops nothing
                            self.stop_job(job_id, "cancelled", int(token) if token.isdigit() else None)
            except REDIS_ERRORS as error:
                log.warning("control channel lost (%s); resubscribing", error)
                subscribers.failed()
                await self._pause(1)
        await subscribers.aclose()

    async def _schedule_delayed(self, queue: str) -> None:
        """Delayed jobs and retry backoffs become waiting when due."""
        while not self._closed.is_set():
            try:
                promoted, wait_ms = await self.store.promote_due(queue)
            except REDIS_ERRORS as error:
                log.warning("delayed-job check for %s failed: %s", queue, error)
                promoted, wait_ms = 0, 1000
            if promoted < 100:
                await self._pause(0.25 if wait_ms < 0 else min(max(wait_ms, 5), 250) / 1000)

    async def _every(self, seconds: float, duty: Any) -> None:
        while not self._closed.is_set():
            await self._pause(seconds)
            if self._closed.is_set():
                return
            try:
                await duty()
            except REDIS_ERRORS as error:
                log.warning("%s failed: %s", duty.__name__, error)
