"""Schedules: jobs that come back on time (a 5-field cron in an IANA time zone, or every N ms).

Exactly one job per due time, whatever the number of workers and servers, across restarts:
- every worker looks for due schedules (the `{schedules}` sorted set, by next run) a few times a
  second; for a due time, one of them wins a short lock (SET NX PX) and creates the job;
- the job's id is derived from the schedule and the due time, so creating it again (the winner
  died before the next step, and the lock ran out) is refused as a duplicate;
- then SCHEDULE_ADVANCE moves the schedule to its next run only if it still names that due time.
A due time served a little late (a busy moment) is followed by the next one even if it is past
already, so every due time gets its job; after downtime (served over 10 s, or two intervals, late)
the first missed time gets its job and the schedule moves to the first time after now: one
catch-up job, not a storm. Cron is parsed by cronsim, which runs a time that a
daylight-saving change skips once, at the change, and a time it repeats once.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from . import scripts
from .connections import redis_now_ms
from .errors import ApiError
from .keys import queue_tag
from .models import Job, NewJob
from .store import JobStore
from .validation import invalid, parse_new_job

SCHEDULE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
MIN_EVERY_MS = 1000
MAX_EVERY_MS = 366 * 24 * 3600 * 1000
FIRING_LOCK_MS = 30_000  # a worker that died while firing is replaced after this
DUE_BATCH = 100
FIRING_AT_ONCE = 20  # schedules of a batch fired side by side, each a few round trips
CATCH_UP_MS = 10_000  # a due time served later than this (or two intervals) skips to the future
FIELDS = frozenset({"id", "cron", "everyMs", "timezone", "job", "paused"})
CHANGEABLE = FIELDS - {"id"}


class ScheduleNotFound(LookupError):
    pass


@dataclass(frozen=True)
class Schedule:
    id: str
    job: dict[str, Any]  # a create body, validated
    cron: str | None = None
    every_ms: int | None = None
    timezone: str = "UTC"
    paused: bool = False
    next_run_at: int | None = None
    last_run_at: int | None = None
    last_job_id: str | None = None
    created_at: int | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id, "cron": self.cron, "everyMs": self.every_ms, "timezone": self.timezone,
            "job": self.job, "paused": self.paused, "nextRunAt": self.next_run_at, "lastRunAt": self.last_run_at,
            "lastJobId": self.last_job_id, "createdAt": self.created_at,
        }  # fmt: skip

    def to_redis(self) -> dict[str, str]:
        definition = {
            "id": self.id, "cron": self.cron, "everyMs": self.every_ms, "timezone": self.timezone, "job": self.job,
            "createdAt": self.created_at,
        }  # fmt: skip
        return {
            "definition": json.dumps(definition, separators=(",", ":")), "paused": "1" if self.paused else "0",
            "nextRunAt": str(self.next_run_at or ""), "lastRunAt": str(self.last_run_at or ""),
            "lastJobId": self.last_job_id or "",
        }  # fmt: skip

    @classmethod
    def from_redis(cls, fields: dict[str, str]) -> Schedule:
        shown = json.loads(fields["definition"])
        return cls(
            id=shown["id"], job=shown["job"], cron=shown["cron"], every_ms=shown["everyMs"],
            timezone=shown["timezone"], created_at=shown["createdAt"], paused=fields.get("paused") == "1",
            next_run_at=int(fields["nextRunAt"]) if fields.get("nextRunAt") else None,
            last_run_at=int(fields["lastRunAt"]) if fields.get("lastRunAt") else None,
            last_job_id=fields.get("lastJobId") or None,
        )  # fmt: skip

    def new_job(self, due_ms: int | None) -> NewJob:
        """The job for one due time (its id fixed by it), or for a trigger (None: a fresh id)."""
        new = replace(parse_new_job(self.job), schedule_id=self.id)
        if due_ms is None:
            return new
        digest = hashlib.sha256(f"{self.id}:{due_ms}".encode()).digest()
        return replace(new, job_id=queue_tag(new.queue) + base64.urlsafe_b64encode(digest)[:12].decode())

    def next_after(self, after_ms: int) -> int:
        """The first due time strictly after `after_ms`."""
        if self.every_ms:
            base = self.last_run_at or self.created_at or after_ms
            steps = max((after_ms - base) // self.every_ms + 1, 1)
            return base + steps * self.every_ms
        zone = ZoneInfo(self.timezone)
        start = datetime.fromtimestamp(after_ms / 1000, timezone.utc).astimezone(zone).replace(microsecond=0)
        for due in CronSim(self.cron or "", start):
            due_ms = int(due.timestamp() * 1000)
            if due_ms > after_ms:
                return due_ms
        raise ValueError("the cron expression never runs")  # not reached: cronsim raises first


def _timezone(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise invalid("timezone", "must be an IANA time zone name, e.g. Europe/Berlin")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise invalid("timezone", f"unknown time zone {value!r} (use an IANA name, e.g. Europe/Berlin)") from None
    return value


def _cron(value: Any) -> str:
    if not isinstance(value, str) or len(value.split()) != 5 or len(value) > 200:
        raise invalid("cron", 'must have 5 fields: minute hour day-of-month month day-of-week, e.g. "0 3 * * *"')
    try:
        next(CronSim(value, datetime(2000, 1, 1)))
    except (CronSimError, StopIteration) as error:
        raise invalid("cron", f"not a valid cron expression: {error}") from None
    return value


def _job_body(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid("job", "must be a job's create body (a JSON object)")
    try:
        parse_new_job(value)
    except ApiError as error:
        field = f"job.{error.field}" if error.field else "job"
        raise invalid(field, error.message.removeprefix(f"{error.field}: ") if error.field else error.message) from None
    return value


def parse_schedule(body: Any, current: Schedule | None = None) -> Schedule:
    """A create body (`current` None) or a PATCH applied to `current`; 400 naming the field."""
    if not isinstance(body, dict):
        raise ApiError(400, "validation_error", "the request body must be a JSON object")
    allowed = FIELDS if current is None else CHANGEABLE
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise invalid(unknown[0], "unknown field" if unknown[0] != "id" else "cannot be changed")
    if current is None:
        schedule_id = body.get("id", secrets.token_urlsafe(9).replace("-", "x").replace("_", "y"))
        if not isinstance(schedule_id, str) or not SCHEDULE_ID_RE.fullmatch(schedule_id):
            raise invalid("id", f"must match {SCHEDULE_ID_RE.pattern}")
        if "job" not in body:
            raise invalid("job", "is required: the job to create on each run")
        current = Schedule(id=schedule_id, job={})
    cron, every_ms = current.cron, current.every_ms
    if "cron" in body or "everyMs" in body:
        cron, every_ms = body.get("cron"), body.get("everyMs")
        if (cron is None) == (every_ms is None):
            raise invalid("cron", "give either cron or everyMs")
        if cron is not None:
            cron = _cron(cron)
        if every_ms is not None and (
            isinstance(every_ms, bool) or not isinstance(every_ms, int) or not MIN_EVERY_MS <= every_ms <= MAX_EVERY_MS
        ):
            raise invalid("everyMs", f"must be an integer from {MIN_EVERY_MS} to {MAX_EVERY_MS}")
    elif cron is None and every_ms is None:
        raise invalid("cron", "give either cron or everyMs")
    paused = body.get("paused", current.paused)
    if not isinstance(paused, bool):
        raise invalid("paused", "must be true or false")
    return replace(
        current,
        cron=cron,
        every_ms=every_ms,
        timezone=_timezone(body["timezone"]) if "timezone" in body else current.timezone,
        job=_job_body(body["job"]) if "job" in body else current.job,
        paused=paused,
    )


class ScheduleStore:
    def __init__(self, store: JobStore) -> None:
        self.store, self.redis, self.keys = store, store.redis, store.keys
        self._advance = self.redis.register_script(scripts.SCHEDULE_ADVANCE)

    async def create(self, schedule: Schedule) -> Schedule:
        """409 if the id is taken."""
        now = await redis_now_ms(self.redis)
        schedule = replace(schedule, created_at=now)
        schedule = replace(schedule, next_run_at=schedule.next_after(now))
        if not await self.redis.sadd(self.keys.schedule_ids, schedule.id):
            raise ApiError(409, "conflict", f"a schedule with id {schedule.id!r} exists")
        await self._save(schedule)
        return schedule

    async def update(self, schedule: Schedule, timing_changed: bool) -> Schedule:
        if timing_changed:
            schedule = replace(schedule, next_run_at=schedule.next_after(await redis_now_ms(self.redis)))
        await self._save(schedule)
        return schedule

    async def _save(self, schedule: Schedule) -> None:
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:  # one slot; no MULTI on a cluster
            pipe.hset(k.schedule(schedule.id), mapping=schedule.to_redis())
            if schedule.paused:
                pipe.zrem(k.schedules, schedule.id)
            else:
                pipe.zadd(k.schedules, {schedule.id: schedule.next_run_at or 0})
            await pipe.execute()

    async def get(self, schedule_id: str) -> Schedule:
        found = await self.redis.hgetall(self.keys.schedule(schedule_id))
        if not found:
            raise ScheduleNotFound(schedule_id)
        return Schedule.from_redis(found)

    async def all(self) -> list[Schedule]:
        ids = sorted(await self.redis.smembers(self.keys.schedule_ids))
        async with self.redis.pipeline(transaction=False) as pipe:
            for schedule_id in ids:
                pipe.hgetall(self.keys.schedule(schedule_id))
            found = await pipe.execute()
        return [Schedule.from_redis(f) for f in found if f]

    async def delete(self, schedule_id: str) -> None:
        await self.get(schedule_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(self.keys.schedules, schedule_id)
            pipe.srem(self.keys.schedule_ids, schedule_id)
            pipe.delete(self.keys.schedule(schedule_id))
            await pipe.execute()

    async def trigger(self, schedule_id: str) -> Job:
        """One job now, outside the timetable."""
        schedule = await self.get(schedule_id)
        return await self.store.enqueue(schedule.new_job(None))

    async def fire_due(self) -> int:
        """Create the jobs of the schedules that are due (see the module's docstring), a batch at
        a time, the schedules of a batch side by side; returns how many due times were served."""
        fired = 0
        while True:
            now = await redis_now_ms(self.redis)
            due = await self.redis.zrangebyscore(
                self.keys.schedules, "-inf", now, start=0, num=DUE_BATCH, withscores=True
            )
            gate = asyncio.Semaphore(FIRING_AT_ONCE)

            async def fire(schedule_id: str, due_ms: int) -> int:
                async with gate:
                    return await self._fire(schedule_id, due_ms, now)

            fired += sum(await asyncio.gather(*(fire(i, int(score)) for i, score in due)))
            if len(due) < DUE_BATCH:
                return fired

    async def _fire(self, schedule_id: str, due_ms: int, now: int) -> int:
        if not await self.redis.set(self.keys.schedule_firing(schedule_id, due_ms), "1", nx=True, px=FIRING_LOCK_MS):
            return 0  # another worker has it
        try:
            schedule = await self.get(schedule_id)
        except ScheduleNotFound:
            return 0
        if schedule.paused or schedule.next_run_at != due_ms:
            return 0
        new = schedule.new_job(due_ms)
        try:
            await self.store.enqueue(new)
        except Exception as error:  # noqa: BLE001
            if "job id taken" not in str(error):
                raise
        served = replace(schedule, last_run_at=due_ms)
        # Late by a little (a busy moment): the next due time, even if it is already past, so every
        # due time gets its job. Late by more (nothing ran for a while): the first one after now,
        # so one job covers the downtime, not a storm.
        next_run = served.next_after(due_ms)
        if now - due_ms > max(CATCH_UP_MS, 2 * (schedule.every_ms or 0)):
            next_run = served.next_after(now)
        return int(
            await self._advance(
                keys=[self.keys.schedules, self.keys.schedule(schedule_id)],
                args=[schedule_id, due_ms, next_run, new.job_id or ""],
            )
        )
