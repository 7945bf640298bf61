"""The jobs API: HTTP in, store calls, JSON out. Errors are raised and shaped by the middleware."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import validation as v
from .http_errors import read_json
from .idempotency import idempotent
from .models import Job
from .create_batcher import CreateBatcher
from .search import Search
from .store import JobStore

STORE = web.AppKey("store", JobStore)
SEARCH = web.AppKey("search", Search)
CREATOR = web.AppKey("creator", CreateBatcher)


def job_response(job: Job, status: int = 200, logs: list[str] | None = None) -> web.Response:
    return web.json_response(job.to_api(logs), status=status)


@idempotent(STORE)
async def create_job(request: web.Request) -> web.Response:
    new = v.parse_new_job(await read_json(request))
    job, created = await request.app[CREATOR].create(new)
    response = job_response(job, status=201 if created else 200)  # 200: its uniqueKey's holder
    response.headers["Location"] = f"/api/jobs/{job.id}"
    return response


@idempotent(STORE)
async def create_jobs(request: web.Request) -> web.Response:
    """Up to 1,000 jobs, all or nothing: every body is checked before one atomic write to Redis."""
    news = v.parse_batch(await read_json(request))
    jobs = await request.app[STORE].enqueue_many(news)
    return web.json_response({"jobs": [job.to_api() for job in jobs]}, status=201)


async def list_jobs(request: web.Request) -> web.Response:
    statuses, queue, job_type, limit, offset = v.parse_list_query(request.query)
    q, tags, group = v.parse_search_query(request.query)
    if q or tags or group:
        jobs, total = await request.app[SEARCH].find(q, tags, statuses, queue, job_type, limit, offset, group)
    else:
        jobs, total = await request.app[STORE].list(statuses, queue, job_type, limit, offset)
    return web.json_response(
        {"jobs": [j.to_api() for j in jobs], "total": total, "limit": limit, "offset": offset}
    )


async def get_job(request: web.Request) -> web.Response:
    job_id = v.check_job_id(request.match_info["id"])
    job, logs, events = await request.app[STORE].get_full(job_id)
    return web.json_response(job.to_api(logs, events))


async def list_children(request: web.Request) -> web.Response:
    """A parent's children, in creation order, paginated like GET /api/jobs."""
    job_id = v.check_job_id(request.match_info["id"])
    limit, offset = v.parse_page_query(request.query)
    store = request.app[STORE]
    await store.get(job_id)  # 404 for a job that is not there
    jobs, total = await store.children(job_id, limit, offset)
    return web.json_response({"jobs": [j.to_api() for j in jobs], "total": total, "limit": limit, "offset": offset})


async def delete_job(request: web.Request) -> web.Response:
    job_id = v.check_job_id(request.match_info["id"])
    await request.app[STORE].delete(job_id)
    return web.Response(status=204)


async def _action(request: web.Request) -> tuple[JobStore, str]:
    job_id = v.check_job_id(request.match_info["id"])
    v.require_empty_object(await read_json(request, allow_empty=True))
    return request.app[STORE], job_id


async def cancel_job(request: web.Request) -> web.Response:
    store, job_id = await _action(request)
    return job_response(await store.cancel(job_id))


async def retry_job(request: web.Request) -> web.Response:
    store, job_id = await _action(request)
    return job_response(await store.retry(job_id))


async def promote_job(request: web.Request) -> web.Response:
    store, job_id = await _action(request)
    return job_response(await store.promote(job_id))


async def patch_job(request: web.Request) -> web.Response:
    job_id = v.check_job_id(request.match_info["id"])
    priority = v.parse_priority_patch(await read_json(request))
    return job_response(await request.app[STORE].set_priority(job_id, priority))


# "batch", "bulk" and "stream" are routes of their own, never job ids (so e.g. GET /api/jobs/bulk is a 405).
JOB = r"/api/jobs/{id:(?!batch$|bulk$|stream$)[^{}/]+}"


def add_routes(app: web.Application) -> None:
    async def helpers_ctx(app: web.Application) -> Any:
        app[SEARCH] = Search(app[STORE])
        app[CREATOR] = CreateBatcher(app[STORE])
        yield

    app.cleanup_ctx.append(helpers_ctx)
    app.router.add_routes(
        [
            web.post("/api/jobs", create_job),
            web.post("/api/jobs/batch", create_jobs),
            web.get("/api/jobs", list_jobs),
            web.get(JOB, get_job),
            web.delete(JOB, delete_job),
            web.patch(JOB, patch_job),
            web.post(JOB + "/cancel", cancel_job),
            web.post(JOB + "/retry", retry_job),
            web.post(JOB + "/promote", promote_job),
            web.get(JOB + "/children", list_children),
        ]
    )
