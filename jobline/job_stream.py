"""`GET /api/jobs/{id}/stream`: one job's events, for a page that shows one job to the person who
started it.

The dashboard's format and resume rules (event_stream.py), over a `SUBSCRIBE` on the job's own
channel: Redis sends the connection this job's events only, where each dashboard's `PSUBSCRIBE`
gets a copy of every event of every queue. The cursor holds one position, in the job's queue's
log; a replay reads that log and keeps this job's entries. The stream ends after `job-removed`.

A position is the log id of the last event of this job the client got, so a client away while
10,000 events of other jobs of the queue went by is reset (it reloads the job), as a dashboard
away for 10,000 events of the queue would be.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .cursor import Cursor, EventId, entry_position, format_event_id, parse_cursor
from .errors import ApiError
from .event_stream import REPLAY_BATCH, LogStream, serve
from .keys import TAG_LEN, queue_tag
from .validation import check_job_id

ROUTE = r"/api/jobs/{id:[^{}/]+}/stream"

# Where each event of a job names it (queue events name none).
_JOB_ID_OF: dict[str, Callable[[Any], str]] = {
    "job": lambda body: body["job"]["id"],
    "job-removed": lambda body: body["id"],
    "job-event": lambda body: body["jobId"],
}


class JobStream(LogStream):
    """The job's queue is its only one; 404 for a job that is not there (or whose removal the
    client already has)."""

    subscribe_command = "SUBSCRIBE"
    final_event = "job-removed"
    job_id = queue = ""

    def channels(self) -> list[str]:
        return [self.keys.job_channel(self.job_id)]

    async def queues(self) -> list[str]:
        return [self.queue]

    def wants(self, event: str, payload: str) -> bool:
        job_id_of = _JOB_ID_OF.get(event)
        # the substring test first: most entries of the log are other jobs', and need no parsing
        return job_id_of is not None and self.job_id in payload and job_id_of(json.loads(payload)) == self.job_id

    async def start_from(self, last_event_id: str | None) -> bool:
        self.job_id = check_job_id(self.request.match_info["id"])
        resume_from = parse_cursor(last_event_id) if last_event_id is not None else None
        queue = await self.redis.hget(self.keys.job(self.job_id), "queue")
        if queue is None:
            # Removed, maybe while the client was away: then its removal is still to be sent.
            self.queue = await self._removed_after(resume_from or {})
            if not await self.resume(resume_from, [self.queue]):
                raise ApiError(404, "not_found", "no such job")  # its removal is no longer in the log
            return True
        self.queue = queue
        if last_event_id is None:
            await self._start_at_latest()
            return True
        return await self.resume(resume_from, [queue])

    async def _start_at_latest(self) -> None:
        """The log's latest position, read before checking that the job is still there: if it is,
        its removal (whenever it comes) is after that position, and reaches the client."""
        async with self.redis.pipeline(transaction=False) as pipe:  # one slot: in this order
            pipe.xrevrange(self.keys.event_log(self.queue), count=1)
            pipe.exists(self.keys.job(self.job_id))
            newest, exists = await pipe.execute()
        if not exists:
            raise ApiError(404, "not_found", "no such job")
        self.cursor = Cursor({self.queue: entry_position(newest[0][0])} if newest else {})

    async def _removed_after(self, resume_from: dict[str, EventId]) -> str:
        """The queue whose log holds the job's removal after the client's position; 404 if none
        does (the client saw it, or never knew the job)."""
        for queue, position in resume_from.items():
            if queue_tag(queue) != self.job_id[:TAG_LEN]:
                continue  # the job's id starts with its queue's tag
            start = format_event_id(position)
            while entries := await self.redis.xrange(self.keys.event_log(queue), min=f"({start}", count=REPLAY_BATCH):
                if any(f["e"] == self.final_event and self.wants(f["e"], f["d"]) for _, f in entries):
                    return queue
                start = entries[-1][0]
        raise ApiError(404, "not_found", "no such job")


async def one_job_stream(request: web.Request) -> web.StreamResponse:
    return await serve(request, JobStream)
