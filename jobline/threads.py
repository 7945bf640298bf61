"""Plain `def` handlers: run in threads, so blocking code does not stop the worker's event loop.

The worker's slots already cap how many jobs run at once, so at most `concurrency` threads do live
work. A thread whose job the worker stopped waiting for (cancel, timeout, shutdown) cannot be
killed: it is left to finish on its own, holds no slot, and its ctx calls and result are
discarded. The threads are daemons, so such a thread never keeps a stopped worker's process alive,
and the pool keeps at most `size` of them idle for the next jobs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any

from .context import JobContext, SyncJobContext

_names = itertools.count(1)


def is_async(handler: Callable[..., Any]) -> bool:
    """An `async def` handler (or an object whose `__call__` is one) runs on the event loop."""
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(getattr(handler, "__call__", None))


class HandlerThreads:
    """A pool of daemon threads that grows when every thread is busy (even with abandoned work)
    and keeps at most `size` threads between jobs."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._work: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...]]]
        self._work = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            spawn = self._idle == 0
            if spawn:
                self._threads += 1
            else:
                self._idle -= 1  # an idle thread takes this work
        self._work.put((future, fn, args))
        if spawn:
            threading.Thread(target=self._serve, name=f"jobline-handler-{next(_names)}", daemon=True).start()
        return future

    def _serve(self) -> None:
        while True:
            future, fn, args = self._work.get()
            if future.set_running_or_notify_cancel():  # False: the worker stopped waiting before it began
                try:
                    future.set_result(fn(*args))
                except BaseException as error:  # noqa: BLE001  (handed to the waiting worker)
                    future.set_exception(error)
            del future, fn, args  # a finished job's data is not kept alive by an idle thread
            with self._lock:
                if self._threads > self.size:
                    self._threads -= 1
                    return
                self._idle += 1

    async def run(self, handler: Callable[..., Any], ctx: JobContext, data: dict[str, Any]) -> Any:
        """Run a plain handler in a thread with a blocking ctx; wait for its result. However this
        wait ends (a result, an error, cancelled, timed out), the thread is abandoned after it."""
        sync_ctx = SyncJobContext(ctx, asyncio.get_running_loop())
        try:
            return await asyncio.wrap_future(self.submit(handler, sync_ctx, data))
        finally:
            sync_ctx.abandon()
