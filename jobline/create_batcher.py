"""Group commit for single creates: the `POST /api/jobs` requests that arrive in one turn of the
event loop go to Redis together, one ENQUEUE call per queue.

A create's cost in the server is mostly the Redis round trip and redis-py's work around it, not
the job: shared by the requests in flight, it is paid once per turn instead of once per request.
A lone request waits no longer than one turn of the loop. Each job is still created exactly as a
create of its own would (in arrival order, its uniqueKey checked against those before it), and a
request's failure is only its queue's.
"""

from __future__ import annotations

import asyncio

from .models import Job, NewJob
from .store import JobStore

Waiter = tuple[NewJob, "asyncio.Future[tuple[Job, bool]]"]


class CreateBatcher:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._pending: list[Waiter] = []
        self._flushing: set[asyncio.Task[None]] = set()  # held: a task nobody references may vanish

    async def create(self, new: NewJob) -> tuple[Job, bool]:
        """(the job, True), or (the job holding its uniqueKey, False), as JobStore.create."""
        if new.children:  # a flow is all or nothing by itself: its own call
            return (await self.store.create([new]))[0]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Job, bool]] = loop.create_future()
        self._pending.append((new, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        by_queue: dict[str, list[Waiter]] = {}
        for waiter in self._pending:
            by_queue.setdefault(waiter[0].queue, []).append(waiter)
        self._pending = []
        for waiters in by_queue.values():
            task = asyncio.create_task(self._create(waiters))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    async def _create(self, waiters: list[Waiter]) -> None:
        try:
            outcomes = await self.store.create([new for new, _ in waiters])
        except asyncio.CancelledError:  # the server is stopping
            for _, future in waiters:
                future.cancel()
            raise
        except Exception as error:  # every request of the call answers it (a 503, say)
            for _, future in waiters:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), outcome in zip(waiters, outcomes):
            if not future.done():  # its request may have been cancelled (the client went away)
                future.set_result(outcome)
