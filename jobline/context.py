"""What a handler gets: the job, its saved state, progress reporting, logging and custom events.

An `async def` handler gets a `JobContext`, whose methods are awaited. A plain `def` handler runs in
a thread and gets a `SyncJobContext`: the same methods as plain calls, each run on the worker's
event loop while the thread waits. Once the worker stops waiting for the thread (cancel, timeout,
shutdown), the thread is abandoned and its calls do nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .models import EVENT_DATA_MAX_BYTES, STATE_MAX_BYTES, Job

EVENT_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class JobTimedOut(Exception):
    """The run took longer than the job's timeoutMs."""


class RateLimited(Exception):
    """Raised by a handler when the service it calls says "too many requests": the job goes back
    to `delayed` for `ms` and the attempt does not count."""

    def __init__(self, ms: int, message: str = "") -> None:
        if not isinstance(ms, int) or isinstance(ms, bool) or ms < 1:
            raise ValueError("RateLimited(ms): ms must be a positive integer")
        super().__init__(message or f"rate limited for {ms} ms")
        self.ms = ms


class _Runner(Protocol):
    store: Any

    async def _retrying(self, call: Any, *args: Any, **kwargs: Any) -> Any: ...

    def stop_job(self, job_id: str, reason: str, token: int | None = None) -> None: ...


def _json_bytes(value: Any, what: str, limit: int) -> None:
    """Raise ValueError unless `value` is JSON of at most `limit` bytes encoded."""
    try:
        encoded = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must be JSON: {error}") from None
    if len(encoded.encode()) > limit:
        raise ValueError(f"{what} is {len(encoded.encode())} bytes as JSON; at most {limit} are allowed")


class JobContext:
    """What an `async def` handler gets: the job, its saved state, progress, logs and events."""

    def __init__(self, job: Job, worker: _Runner) -> None:
        self.job = job
        self._worker = worker
        if job.state is None:
            job.state = {}

    @property
    def state(self) -> dict[str, Any]:
        """The state the last `save_state` stored (in this attempt or an earlier one); {} at first."""
        return self.job.state  # type: ignore[return-value]  # never None: set in __init__

    async def progress(self, percent: int, action: str | None = None, log: str | None = None) -> None:
        """Report progress (0-100), the current step's text, and optionally a log line."""
        percent = max(0, min(100, int(percent)))
        await self._update(self._worker.store.update, progress=percent, action=action, log=log)

    async def log(self, text: str) -> None:
        await self._update(self._worker.store.update, log=str(text))

    async def save_state(self, obj: dict[str, Any]) -> None:
        """Store a checkpoint: the next attempt (a retry, or a recovery after this worker died)
        starts with it as `ctx.state`. A JSON object of at most 64 KiB."""
        if not isinstance(obj, dict):
            raise ValueError(f"the state must be a JSON object (a dict), not {type(obj).__name__}")
        _json_bytes(obj, "the state", STATE_MAX_BYTES)
        if await self._update(self._worker.store.update, state=obj):
            self.job.state = obj

    async def emit(self, name: str, data: Any = None) -> None:
        """Append a custom event to the job's history; it goes out on the streams as `job-event`."""
        if not isinstance(name, str) or not EVENT_NAME_RE.fullmatch(name):
            raise ValueError(f"an event name must match {EVENT_NAME_RE.pattern}, not {name!r}")
        _json_bytes(data, "the event's data", EVENT_DATA_MAX_BYTES)
        await self._update(self._worker.store.emit, name=name, data=data)

    async def children_results(self) -> dict[str, Any]:
        """A parent's children's results, {child id: result}, in creation order (a child that
        failed, or was cancelled and the parent ran anyway, has None)."""
        return await self._worker._retrying(self._worker.store.children_results, self.job.id)

    async def _update(self, call: Callable[..., Awaitable[bool]], **changes: Any) -> bool:
        # A Redis blip must not cost the job an attempt: ride it out (the change is fenced).
        if await self._worker._retrying(call, self.job, **changes):
            return True
        # Cancelled, or recovered by another worker while we were stalled: stop quietly.
        self._worker.stop_job(self.job.id, "lost", self.job.token)
        return False


class SyncJobContext:
    """What a plain `def` handler gets, in its thread: JobContext's methods as blocking calls."""

    _WAIT_S = 0.5  # how often a waiting call looks whether its thread was abandoned

    def __init__(self, inner: JobContext, loop: asyncio.AbstractEventLoop) -> None:
        self._inner = inner
        self._loop = loop
        self._abandoned = threading.Event()

    @property
    def job(self) -> Job:
        return self._inner.job

    @property
    def state(self) -> dict[str, Any]:
        return self._inner.state

    def progress(self, percent: int, action: str | None = None, log: str | None = None) -> None:
        self._call(self._inner.progress, percent, action, log)

    def log(self, text: str) -> None:
        self._call(self._inner.log, text)

    def save_state(self, obj: dict[str, Any]) -> None:
        self._call(self._inner.save_state, obj)

    def emit(self, name: str, data: Any = None) -> None:
        self._call(self._inner.emit, name, data)

    def children_results(self) -> dict[str, Any]:
        return self._call(self._inner.children_results) or {}

    def abandon(self) -> None:
        """The worker no longer waits for this thread: whatever it does from now on is discarded."""
        self._abandoned.set()

    def _call(self, method: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run `method(*args)` on the worker's loop and wait for its result; None once abandoned."""
        if self._abandoned.is_set():
            return
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:  # no loop in this thread: the usual case
            on_loop = False
        if on_loop:  # waiting here would block the very loop that must run the call
            raise RuntimeError("a plain handler's ctx is for its own thread, not the event loop")
        try:
            future = asyncio.run_coroutine_threadsafe(self._unless_abandoned(method, *args), self._loop)
        except RuntimeError:  # the loop is closed: the worker is gone
            return
        while True:
            try:
                return future.result(timeout=self._WAIT_S)
            except concurrent.futures.CancelledError:
                return
            except TimeoutError:  # still running (a Redis blip is being ridden out)
                if self._abandoned.is_set():
                    future.cancel()
                    return

    async def _unless_abandoned(self, method: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        # Checked again on the loop: the worker may have stopped waiting while the call was on its way.
        if not self._abandoned.is_set():
            return await method(*args)
        return None
