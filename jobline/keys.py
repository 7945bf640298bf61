"""Every Redis key and channel name Jobline uses, in one place.

Names are built only from the prefix and from values validated before they get here (job ids, queue
and type names match strict patterns), so user text never shapes a key beyond those slots.
"""

from __future__ import annotations

from dataclasses import dataclass

from .models import STATUSES

DEFAULT_PREFIX = "jobline"


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    # -- global -------------------------------------------------------------------------------
    @property
    def seq(self) -> str:
        """Counter that orders jobs by creation (the score of every job index)."""
        return f"{self.prefix}:seq"

    @property
    def events(self) -> str:
        """Capped stream of every published event, for lossless SSE resume."""
        return f"{self.prefix}:events"

    @property
    def queues(self) -> str:
        """Set of every queue name ever used."""
        return f"{self.prefix}:queues"

    @property
    def all_jobs(self) -> str:
        return f"{self.prefix}:jobs"

    def status_index(self, status: str) -> str:
        return f"{self.prefix}:status:{status}"

    def type_index(self, job_type: str) -> str:
        return f"{self.prefix}:type:{job_type}:jobs"

    def temp(self, token: str) -> str:
        """Short-lived scratch key for combined listing filters."""
        return f"{self.prefix}:tmp:{token}"

    def idempotency(self, route: str, key_hash: str) -> str:
        """An Idempotency-Key's claim, then the response it replays (JSON, 24 h). `route` is one of
        our route paths; `key_hash` the SHA-256 of the client's key, so its text never shapes a key."""
        return f"{self.prefix}:idem:{route}:{key_hash}"

    # -- per job ------------------------------------------------------------------------------
    @property
    def job_prefix(self) -> str:
        """What a job's hash key is made of: this plus the id. The scripts that claim ids popped
        inside Lua build the hash key (and the channel, the key plus ':progress') the same way."""
        return f"{self.prefix}:job:"

    def job(self, job_id: str) -> str:
        return f"{self.job_prefix}{job_id}"

    def job_logs(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:logs"

    def job_events(self, job_id: str) -> str:
        """List of the job's custom events (ctx.emit) as JSON, newest last, capped."""
        return f"{self.prefix}:job:{job_id}:events"

    def job_channel(self, job_id: str) -> str:
        return f"{self.job(job_id)}:progress"

    @property
    def job_channel_pattern(self) -> str:
        return f"{self.prefix}:job:*:progress"

    # -- per queue ----------------------------------------------------------------------------
    def wait(self, queue: str) -> str:
        return f"{self.prefix}:queue:{queue}:wait"

    def high(self, queue: str) -> str:
        """Set of the high-priority ids in the wait list (they sit at its head, in FIFO order)."""
        return f"{self.prefix}:queue:{queue}:high"

    def delayed(self, queue: str) -> str:
        return f"{self.prefix}:queue:{queue}:delayed"

    def paused(self, queue: str) -> str:
        """The waiting line of a paused queue (moved back to `wait` on resume)."""
        return f"{self.prefix}:queue:{queue}:paused"

    def meta(self, queue: str) -> str:
        """Hash: paused flag, completed/failed totals, job duration histogram."""
        return f"{self.prefix}:queue:{queue}:meta"

    def rate(self, queue: str) -> str:
        """Hash: rings of finished-job counts per second (120 slots) and per minute (60 slots)."""
        return f"{self.prefix}:queue:{queue}:rate"

    def failures(self, queue: str) -> str:
        """Capped list of the queue's recent failures (JSON), newest first."""
        return f"{self.prefix}:queue:{queue}:failures"

    def processing(self, queue: str, worker_id: str) -> str:
        return f"{self.prefix}:queue:{queue}:processing:{worker_id}"

    def queue_jobs(self, queue: str) -> str:
        return f"{self.prefix}:queue:{queue}:jobs"

    def queue_status_index(self, queue: str, status: str) -> str:
        return f"{self.prefix}:queue:{queue}:status:{status}"

    def queue_channel(self, queue: str) -> str:
        return f"{self.prefix}:queue:{queue}:events"

    @property
    def queue_channel_pattern(self) -> str:
        return f"{self.prefix}:queue:*:events"

    def queue_block(self, queue: str) -> list[str]:
        """The keys every job-changing script gets first, in the order scripts.py expects."""
        return [
            self.events,
            self.wait(queue),
            self.high(queue),
            self.delayed(queue),
            self.paused(queue),
            self.meta(queue),
            self.rate(queue),
            self.failures(queue),
            *(self.status_index(s) for s in STATUSES),
            *(self.queue_status_index(queue, s) for s in STATUSES),
        ]

    def queue_own_keys(self, queue: str) -> list[str]:
        """Every key that belongs to the queue alone (not its workers' processing lists)."""
        return [
            self.wait(queue), self.high(queue), self.delayed(queue), self.paused(queue), self.meta(queue),
            self.rate(queue), self.failures(queue), self.queue_jobs(queue),
            *(self.queue_status_index(queue, s) for s in STATUSES),
        ]  # fmt: skip

    # -- workers ------------------------------------------------------------------------------
    @property
    def workers(self) -> str:
        """Sorted set of worker ids scored by their last heartbeat (epoch ms)."""
        return f"{self.prefix}:workers"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}"

    def worker_channel(self, worker_id: str) -> str:
        """Control messages to one worker (cancel a running job)."""
        return f"{self.prefix}:worker:{worker_id}:control"

    @property
    def reaper_lock(self) -> str:
        return f"{self.prefix}:lock:reaper"
