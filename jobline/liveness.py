"""Worker liveness, in one place: the registry of workers and their heartbeats, what counts as
alive, and the reaper that puts the jobs of dead workers back in line.

A worker is alive while its last heartbeat (stamped with the Redis clock, the one every host
shares) is at most its lease old. The heartbeat beats in a thread of its own, on a connection of
its own, so a handler that blocks the event loop does not stop it; a frozen or killed process
does. One reaper at a time (a `SET NX PX` lock) acts on the others.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any


from . import scripts
from .connections import connect_sync, redis_now_ms
from .keys import Keys
from .store import JobStore

log = logging.getLogger("jobline.worker")

DEFAULT_LEASE_MS = 10_000
MAX_RECOVERIES = 2  # a job recovered from dead workers more than this fails as stalled


def is_live(now_ms: int, last_seen_ms: float, lease_ms: int | None) -> bool:
    return now_ms - last_seen_ms <= (lease_ms or DEFAULT_LEASE_MS)


class HeartbeatThread:
    """Beats every `interval_s` from its own thread with a synchronous client of its own, until
    `stop()`; the first beat (registration) is the worker's own. `info()` gives what each beat
    writes into the worker's hash (read from this thread: plain values only)."""

    def __init__(
        self,
        redis_url: str,
        cluster: bool,
        keys: Keys,
        worker_id: str,
        info: Callable[[], dict[str, Any]],
        interval_s: float,
    ) -> None:
        self.interval_s = interval_s
        # A stalled reply must not outlast the lease: give up on it and beat again.
        timeout = max(interval_s, 1.0)
        self._client = connect_sync(redis_url, cluster, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._script = self._client.register_script(scripts.HEARTBEAT)
        self._keys = [keys.workers, keys.worker(worker_id)]
        self._worker_id, self._info = worker_id, info
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"jobline-heartbeat-{worker_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """No beat after this returns (blocks until a beat in flight ends)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        self._client.close()

    def beat(self) -> None:
        fields = [item for pair in self._info().items() for item in pair]
        self._script(keys=self._keys, args=[self._worker_id, *fields])

    def _run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            try:
                self.beat()
            except Exception as error:  # noqa: BLE001  (this thread must outlive any one failure)
                log.warning("heartbeat failed: %s", error)


class Registry:
    """The workers' registry: a sorted set of ids by last heartbeat, and a hash per worker."""

    def __init__(self, store: JobStore) -> None:
        self.store, self.redis, self.keys = store, store.redis, store.keys
        self._heartbeat = self.redis.register_script(scripts.HEARTBEAT)

    async def heartbeat(self, worker_id: str, info: dict[str, Any]) -> None:
        await self._heartbeat(
            keys=[self.keys.workers, self.keys.worker(worker_id)],
            args=[worker_id, *(item for pair in info.items() for item in pair)],
        )

    async def deregister(self, worker_id: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:  # no MULTI: cluster clients lack it
            pipe.zrem(self.keys.workers, worker_id)
            pipe.delete(self.keys.worker(worker_id))
            await pipe.execute()

    async def live_workers(self) -> list[dict[str, str]]:
        """The hashes of the workers alive now."""
        now = await redis_now_ms(self.redis)
        entries = await self.redis.zrange(self.keys.workers, 0, -1, withscores=True)
        async with self.redis.pipeline(transaction=False) as pipe:
            for worker_id, _ in entries:
                pipe.hgetall(self.keys.worker(worker_id))
            infos = await pipe.execute()
        return [
            info
            for (_, last_seen), info in zip(entries, infos)
            if info and is_live(now, last_seen, int(info.get("leaseMs", 0)))
        ]

    async def reap(self, me: str, lease_ms: int, queues: Sequence[str]) -> None:
        """If no other worker reaps right now: put the jobs of every dead worker back in line, and
        any job of `queues` left active on a worker that is gone (see store.recover_orphans)."""
        if not await self.redis.set(self.keys.reaper_lock, me, nx=True, px=max(lease_ms // 5, 100)):
            return
        now = await redis_now_ms(self.redis)
        for worker_id, last_seen in await self.redis.zrange(self.keys.workers, 0, -1, withscores=True):
            if worker_id == me:
                continue
            served, lease = await self.redis.hmget(self.keys.worker(worker_id), ["queues", "leaseMs"])
            if is_live(now, last_seen, int(lease or lease_ms)):
                continue
            recovered = 0
            for queue in json.loads(served or "[]") or queues:
                recovered += await self.store.requeue(queue, worker_id, "stalled", MAX_RECOVERIES)
            await self.deregister(worker_id)
            log.warning("worker %s is gone (silent for %d ms): recovered %d job(s)", worker_id, now - last_seen, recovered)
        for queue in queues:
            orphans = await self.store.recover_orphans(queue, lease_ms, MAX_RECOVERIES)
            if orphans:
                log.warning("put back %d job(s) of %s left active on a worker that is gone", orphans, queue)
