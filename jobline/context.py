"""What a handler gets: the job, progress reporting and logging."""

from __future__ import annotations

from typing import Any, Protocol

from .models import Job


class JobTimedOut(Exception):
    """The run took longer than the job's timeoutMs."""


class _Runner(Protocol):
    store: Any

    async def _retrying(self, call: Any, *args: Any, **kwargs: Any) -> Any: ...

    def stop_job(self, job_id: str, reason: str) -> None: ...


class JobContext:
    """What a handler gets: the job, progress reporting and logging."""

    def __init__(self, job: Job, worker: _Runner) -> None:
        self.job = job
        self._worker = worker

    async def progress(self, percent: int, action: str | None = None, log: str | None = None) -> None:
        """Report progress (0-100), the current step's text, and optionally a log line."""
        percent = max(0, min(100, int(percent)))
        await self._update(progress=percent, action=action, log=log)

    async def log(self, text: str) -> None:
        await self._update(log=str(text))

    async def _update(self, **changes: Any) -> None:
        # A Redis blip must not cost the job an attempt: ride it out (the update is fenced).
        if not await self._worker._retrying(self._worker.store.update, self.job, **changes):
            # Cancelled, or recovered by another worker while we were stalled: stop quietly.
            self._worker.stop_job(self.job.id, "lost")
