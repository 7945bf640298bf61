"""The Client's queue settings and schedules (a mixin of Client, client.py): the same as
`PATCH /api/admin/queues/{name}` and `/api/schedules`, straight on Redis."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from multidict import MultiDict

from .client_bodies import InvalidJob, job_body
from .errors import ApiError
from .failures import FailureGroups
from .models import Job
from .queue_settings import SettingsStore, parse_patch
from .schedules import ScheduleStore, parse_schedule
from .search import Search
from .validation import check_queue_name, parse_list_query, parse_search_query



class ClientAdmin:
    queue_settings: SettingsStore
    schedules_store: ScheduleStore
    search: Search
    failures: FailureGroups

    async def find(
        self, q: str | None = None, *, tags: Sequence[str] = (), status: Sequence[str] = (),
        queue: str | None = None, type: str | None = None, limit: int = 50, offset: int = 0,  # noqa: A002
        failure_group: str | None = None,
    ) -> tuple[list[Job], int]:  # fmt: skip
        """Jobs as `GET /api/jobs?q=&tag=` finds them: `q` a job id or a piece of the name (any
        case), every tag in `tags`, any status in `status`, the failed jobs of `failure_group`;
        newest first, and how many match.
        Raises InvalidJob (with the field) for a bad argument."""
        statuses_given = [status] if isinstance(status, str) else list(status)
        fields = {"status": ",".join(statuses_given), "queue": queue, "type": type, "q": q, "failureGroup": failure_group,
                  "limit": str(limit), "offset": str(offset)}
        tag_list = [tags] if isinstance(tags, str) else list(tags)
        query = MultiDict([*((k, v) for k, v in fields.items() if v), *(("tag", tag) for tag in tag_list)])
        try:  # the API's own checks, on the query it would get
            statuses, queue, job_type, limit, offset = parse_list_query(query)
            q, tag_list, group = parse_search_query(query)
        except ApiError as error:
            raise InvalidJob(error.message, error.field) from None
        if not q and not tag_list and not group:
            return await self.search.store.list(statuses, queue, job_type, limit, offset)
        return await self.search.find(q, tag_list, statuses, queue, job_type, limit, offset, group)

    async def failure_groups(self, queue: str | None = None) -> list[dict[str, Any]]:
        """Failed jobs grouped by the fingerprint of their last failure, as
        `GET /api/admin/failures`; most jobs first."""
        return await self.failures.groups(check_queue_name(queue) if queue else None)

    async def set_queue_settings(self, queue: str, **changes: Any) -> dict[str, Any]:
        """A queue's limits and retention, as `PATCH /api/admin/queues/{name}`: any of
        `rate_limit={"max": 10, "perMs": 1000}`, `concurrency=3`,
        `retention={"completed": {"maxCount": 1000}}`; None removes one, one left out stays.
        Returns the queue's settings (camelCase, as the API shows them). Raises InvalidJob (with
        the field) for a bad value, TypeError for an unknown option."""
        names = {"rate_limit": "rateLimit", "concurrency": "concurrency", "retention": "retention"}
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise TypeError(f"set_queue_settings() got an unexpected keyword argument {unknown[0]!r}")
        try:
            check_queue_name(queue)
            current = await self.queue_settings.get(queue)
            updated = parse_patch({names[name]: value for name, value in changes.items()}, current)
        except ApiError as error:
            raise InvalidJob(error.message, error.field) from None
        if updated != current:
            await self.queue_settings.set(queue, updated)
        return updated.to_api()

    # -- schedules: as /api/schedules (the dicts are the API's schedule JSON) --------------------
    async def add_schedule(
        self,
        job: Mapping[str, Any],
        *,
        cron: str | None = None,
        every_ms: int | None = None,
        timezone: str = "UTC",
        id: str | None = None,  # noqa: A002 - the API's name for it
        paused: bool = False,
    ) -> dict[str, Any]:
        """A schedule that creates `job` (a dict of `enqueue`'s arguments) on a cron timetable in
        `timezone`, or every `every_ms`. Raises InvalidJob naming the field, or ValueError if
        the id is taken."""
        body: dict[str, Any] = {"job": job_body(**job), "timezone": timezone, "paused": paused}
        body.update({"cron": cron} if cron is not None else {"everyMs": every_ms})
        if id is not None:
            body["id"] = id
        try:
            return (await self.schedules_store.create(parse_schedule(body))).to_api()
        except ApiError as error:
            if error.status == 409:
                raise ValueError(error.message) from None
            raise InvalidJob(error.message, error.field) from None

    async def schedules(self) -> list[dict[str, Any]]:
        return [s.to_api() for s in await self.schedules_store.all()]

    async def trigger_schedule(self, schedule_id: str) -> Job:
        """Create the schedule's job now. Raises ScheduleNotFound."""
        return await self.schedules_store.trigger(schedule_id)

    async def remove_schedule(self, schedule_id: str) -> None:
        """Remove the schedule (its jobs stay). Raises ScheduleNotFound."""
        await self.schedules_store.delete(schedule_id)
