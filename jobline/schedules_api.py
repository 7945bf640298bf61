"""`/api/schedules`: create, list, read, change, pause, resume, trigger and remove schedules."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aiohttp import web

from .api import STORE
from .errors import ApiError
from .http_errors import read_json
from .idempotency import idempotent
from .schedules import SCHEDULE_ID_RE, Schedule, ScheduleNotFound, ScheduleStore, parse_schedule

SCHEDULES = web.AppKey("schedules", ScheduleStore)


async def _found(request: web.Request) -> Schedule:
    schedule_id = request.match_info["id"]
    if not SCHEDULE_ID_RE.fullmatch(schedule_id):
        raise ApiError(404, "not_found", "no schedule with that id")
    try:
        return await request.app[SCHEDULES].get(schedule_id)
    except ScheduleNotFound:
        raise ApiError(404, "not_found", f"no schedule with id {schedule_id!r}") from None


def _shown(schedule: Schedule, status: int = 200) -> web.Response:
    return web.json_response(schedule.to_api(), status=status)


@idempotent(STORE)
async def create_schedule(request: web.Request) -> web.Response:
    schedule = parse_schedule(await read_json(request))
    created = await request.app[SCHEDULES].create(schedule)
    response = _shown(created, 201)
    response.headers["Location"] = f"/api/schedules/{created.id}"
    return response


async def list_schedules(request: web.Request) -> web.Response:
    return web.json_response({"schedules": [s.to_api() for s in await request.app[SCHEDULES].all()]})


async def get_schedule(request: web.Request) -> web.Response:
    return _shown(await _found(request))


async def patch_schedule(request: web.Request) -> web.Response:
    current = await _found(request)
    body: Any = await read_json(request)
    return _shown(await _change(request, current, parse_schedule(body, current)))


async def _change(request: web.Request, current: Schedule, changed: Schedule) -> Schedule:
    # The timetable starts again from now when it changed, or when a paused schedule resumes.
    timing = (changed.cron, changed.every_ms, changed.timezone) != (current.cron, current.every_ms, current.timezone)
    return await request.app[SCHEDULES].update(changed, timing or (current.paused and not changed.paused))


async def pause_schedule(request: web.Request) -> web.Response:
    current = await _found(request)
    return _shown(await _change(request, current, replace(current, paused=True)))


async def resume_schedule(request: web.Request) -> web.Response:
    current = await _found(request)
    return _shown(await _change(request, current, replace(current, paused=False)))


async def trigger_schedule(request: web.Request) -> web.Response:
    schedule = await _found(request)
    job = await request.app[SCHEDULES].trigger(schedule.id)
    return web.json_response(job.to_api(), status=201, headers={"Location": f"/api/jobs/{job.id}"})


async def delete_schedule(request: web.Request) -> web.Response:
    schedule = await _found(request)
    await request.app[SCHEDULES].delete(schedule.id)
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    async def schedules_ctx(app: web.Application) -> Any:
        app[SCHEDULES] = ScheduleStore(app[STORE])
        yield

    app.cleanup_ctx.append(schedules_ctx)
    one = "/api/schedules/{id}"
    app.router.add_routes(
        [
            web.post("/api/schedules", create_schedule),
            web.get("/api/schedules", list_schedules),
            web.get(one, get_schedule),
            web.patch(one, patch_schedule),
            web.delete(one, delete_schedule),
            web.post(one + "/pause", pause_schedule),
            web.post(one + "/resume", resume_schedule),
            web.post(one + "/trigger", trigger_schedule),
        ]
    )
