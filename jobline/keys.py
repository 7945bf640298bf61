"""Every Redis key and channel name Jobline uses, in one place.

Names are built only from the prefix and from values validated before they get here (job ids, queue
and type names match strict patterns), so user text never shapes a key beyond those slots.

**One hash tag per queue.** Every key of a queue (its lines, indexes, counters and event log) and of
its jobs (hash, logs, custom events) carries the queue's tag, `{xxxxxx}`: six hex digits of a hash of
the queue name. So each queue lives in one Redis Cluster slot, queues spread over the shards, and
every script touches one slot. A job id starts with its queue's tag, so a route that has only the id
(`GET /api/jobs/{id}`) finds the job's keys without a lookup. Two queues may share a tag (they then
share a slot, which is harmless: their keys still differ by name).

Global keys (the queue registry, the worker registry, idempotency records) are never touched by a
job-changing script: they cost nothing per job.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass

from .models import STATUSES

DEFAULT_PREFIX = "jobline"
TAG_LEN = 6  # hex digits of a queue's tag, the first characters of each of its job ids


@functools.lru_cache(maxsize=1024)  # a create or an ack builds ~18 key names of one queue
def queue_tag(queue: str) -> str:
    return hashlib.blake2s(queue.encode(), digest_size=TAG_LEN // 2).hexdigest()


def new_job_id(queue: str) -> str:
    """The queue's tag then 12 URL-safe characters (72 random bits): ^[A-Za-z0-9_-]{1,64}$."""
    return queue_tag(queue) + secrets.token_urlsafe(9)


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    # -- global: never on a job's hot path ------------------------------------------------------
    @property
    def queues(self) -> str:
        """Set of the queue names in use (added when a queue gets its first job or a setting)."""
        return f"{self.prefix}:queues"

    def idempotency(self, route: str, key_hash: str) -> str:
        """An Idempotency-Key's claim, then the response it replays (JSON, 24 h). `route` is one of
        our route paths; `key_hash` the SHA-256 of the client's key, so its text never shapes a key."""
        return f"{self.prefix}:idem:{route}:{key_hash}"

    # -- per job (in its queue's slot) --------------------------------------------------------
    def job(self, job_id: str) -> str:
        return f"{self.prefix}:{{{job_id[:TAG_LEN]}}}:job:{job_id}"

    def job_logs(self, job_id: str) -> str:
        return f"{self.job(job_id)}:logs"

    def job_events(self, job_id: str) -> str:
        """List of the job's custom events (ctx.emit) as JSON, newest last, capped."""
        return f"{self.job(job_id)}:events"

    @property
    def channel_prefix(self) -> str:
        """A job's channel is this plus its id plus ':progress' (claims build it so in Lua)."""
        return f"{self.prefix}:job:"

    def job_children(self, job_id: str) -> str:
        """List of a parent's children's ids, in creation order (they may live in other slots)."""
        return f"{self.job(job_id)}:children"

    def job_children_done(self, job_id: str) -> str:
        """Set of the children whose end the parent has counted (flow_step.lua applies each once)."""
        return f"{self.job(job_id)}:children:done"

    def job_channel(self, job_id: str) -> str:
        """Pub/sub channels have no slot: a PUBLISH reaches subscribers on every node."""
        return f"{self.channel_prefix}{job_id}:progress"

    @property
    def job_channel_pattern(self) -> str:
        return f"{self.prefix}:job:*:progress"

    # -- per queue (in its slot) ----------------------------------------------------------------
    def _queue(self, queue: str) -> str:
        return f"{self.prefix}:{{{queue_tag(queue)}}}:queue:{queue}"

    def job_prefix(self, queue: str) -> str:
        """A job hash key is this plus the id: claims build the keys of ids popped inside Lua so.
        Within the queue's slot by construction (the id carries the same tag)."""
        return f"{self.prefix}:{{{queue_tag(queue)}}}:job:"

    def event_log(self, queue: str) -> str:
        """Capped stream of the queue's events, for lossless SSE resume (entry id: the position)."""
        return f"{self._queue(queue)}:log"

    def wait(self, queue: str) -> str:
        return f"{self._queue(queue)}:wait"

    def high(self, queue: str) -> str:
        """Set of the high-priority ids in the wait list (they sit at its head, in FIFO order)."""
        return f"{self._queue(queue)}:high"

    def delayed(self, queue: str) -> str:
        return f"{self._queue(queue)}:delayed"

    def paused(self, queue: str) -> str:
        """The waiting line of a paused queue (moved back to `wait` on resume)."""
        return f"{self._queue(queue)}:paused"

    def meta(self, queue: str) -> str:
        """Hash: paused flag, last job score (`seq`), totals, job duration histogram."""
        return f"{self._queue(queue)}:meta"

    def rate(self, queue: str) -> str:
        """Hash: rings of finished-job counts per second (120 slots) and per minute (60 slots)."""
        return f"{self._queue(queue)}:rate"

    def failures(self, queue: str) -> str:
        """Capped list of the queue's recent failures (JSON), newest first."""
        return f"{self._queue(queue)}:failures"

    def processing(self, queue: str, worker_id: str) -> str:
        return f"{self._queue(queue)}:processing:{worker_id}"

    def queue_jobs(self, queue: str) -> str:
        """Every job of the queue, scored by `seq`: its creation time by the Redis clock in µs (and
        more than the queue's last), so pages of several queues merge newest first."""
        return f"{self._queue(queue)}:jobs"

    def queue_status_index(self, queue: str, status: str) -> str:
        return f"{self._queue(queue)}:status:{status}"

    def type_index(self, queue: str, job_type: str) -> str:
        return f"{self._queue(queue)}:type:{job_type}"

    def names(self, queue: str) -> str:
        """Sorted set of "<id>\t<casefolded name>" by seq: what a search scans (findable.lua)."""
        return f"{self._queue(queue)}:names"

    def tag_index(self, queue: str, tag: str) -> str:
        """Sorted set of the queue's ids that carry `tag`, by seq."""
        return f"{self._queue(queue)}:tag:{tag}"

    def failure_groups(self, queue: str) -> str:
        """Sorted set of failure fingerprints by how many failed jobs are in each group."""
        return f"{self._queue(queue)}:failure-groups"

    def failure_info(self, queue: str) -> str:
        """Hash: per fingerprint, its type, pattern, sample message, first and last seen."""
        return f"{self._queue(queue)}:failure-info"

    def failure_group(self, queue: str, fingerprint: str) -> str:
        """Sorted set of the failed ids of one group, by seq."""
        return f"{self._queue(queue)}:fg:{fingerprint}"

    def temp(self, queue: str, token: str) -> str:
        """Short-lived scratch key for combined listing filters, in the queue's slot."""
        return f"{self._queue(queue)}:tmp:{token}"

    def outbox(self, queue: str) -> str:
        """List of the ends of the queue's child jobs not yet counted by their parents (JSON)."""
        return f"{self._queue(queue)}:outbox"

    def starts(self, queue: str) -> str:
        """Sorted set of the job starts inside the queue's rate-limit window (includes/limits.lua)."""
        return f"{self._queue(queue)}:starts"

    def unique(self, queue: str, unique_key: str) -> str:
        """A uniqueKey's holder, "<job id> <until ms>" (queue_block.lua builds the same name)."""
        return f"{self._queue(queue)}:unique:{hashlib.sha1(unique_key.encode()).hexdigest()}"

    def queue_channel(self, queue: str) -> str:
        return f"{self.prefix}:queue:{queue}:events"

    @property
    def queue_channel_pattern(self) -> str:
        return f"{self.prefix}:queue:*:events"

    def queue_block(self, queue: str) -> list[str]:
        """The keys every job-changing script gets first, in the order scripts.py expects."""
        return [
            self.event_log(queue),
            self.wait(queue),
            self.high(queue),
            self.delayed(queue),
            self.paused(queue),
            self.meta(queue),
            self.rate(queue),
            self.failures(queue),
            *(self.queue_status_index(queue, s) for s in STATUSES),
        ]

    def queue_own_keys(self, queue: str) -> list[str]:
        """Every key that belongs to the queue alone (not its workers' processing lists, nor its
        type indexes, which go with their last job)."""
        return [*self.queue_block(queue), self.queue_jobs(queue), self.starts(queue), self.outbox(queue)]

    # -- schedules: one slot for all of them ------------------------------------------------------
    @property
    def schedules(self) -> str:
        """Sorted set of the ids of the running (not paused) schedules by their next run (epoch ms)."""
        return f"{self.prefix}:{{schedules}}:due"

    @property
    def schedule_ids(self) -> str:
        """Set of every schedule's id."""
        return f"{self.prefix}:{{schedules}}:ids"

    def schedule(self, schedule_id: str) -> str:
        """Hash: the definition (JSON), nextRunAt, lastRunAt, lastJobId, paused."""
        return f"{self.prefix}:{{schedules}}:s:{schedule_id}"

    def schedule_firing(self, schedule_id: str, due_ms: int) -> str:
        """Held by the worker creating a schedule's job for one due time (SET NX PX)."""
        return f"{self.prefix}:{{schedules}}:firing:{schedule_id}:{due_ms}"

    # -- workers: one slot for the registry -----------------------------------------------------
    @property
    def workers(self) -> str:
        """Sorted set of worker ids scored by their last heartbeat (epoch ms)."""
        return f"{self.prefix}:{{workers}}"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:{{workers}}:{worker_id}"

    def worker_channel(self, worker_id: str) -> str:
        """Control messages to one worker (cancel a running job)."""
        return f"{self.prefix}:worker:{worker_id}:control"

    @property
    def reaper_lock(self) -> str:
        return f"{self.prefix}:lock:reaper"
