"""Operating Jobline over HTTP: queues, workers, bulk actions and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import scripts
from . import validation as v
from .api import STORE
from .errors import ApiError
from .http_errors import read_json
from .queue_settings import SettingsStore, parse_patch
from .queues import QueueAdmin

ADMIN = web.AppKey("admin", QueueAdmin)
SETTINGS = web.AppKey("queue_settings", SettingsStore)


async def list_queues(request: web.Request) -> web.Response:
    return web.json_response({"queues": await request.app[ADMIN].overview()})


async def _known_queue(request: web.Request) -> str:
    name = v.check_queue_name(request.match_info["name"])
    if not await request.app[ADMIN].exists(name):
        raise ApiError(404, "not_found", f"no queue named {name!r}")
    return name


async def _pause(request: web.Request, paused: bool) -> web.Response:
    name = await _known_queue(request)
    v.require_empty_object(await read_json(request, allow_empty=True))
    return web.json_response(await request.app[ADMIN].set_paused(name, paused))


async def patch_queue(request: web.Request) -> web.Response:
    """Rate limit, concurrency and retention; a queue gets them even before its first job."""
    name = v.check_queue_name(request.match_info["name"])
    settings = request.app[SETTINGS]
    body = await read_json(request)
    current = await settings.get(name)
    updated = parse_patch(body, current)
    if updated != current:  # an empty PATCH changes nothing, and makes no queue
        await settings.set(name, updated)
    return web.json_response({"name": name, "settings": updated.to_api()})


async def delete_queue(request: web.Request) -> web.Response:
    name = await _known_queue(request)
    if not await request.app[ADMIN].delete(name):
        raise ApiError(409, "conflict", f"queue {name!r} still holds jobs: delete or clean them first")
    return web.Response(status=204)


async def pause_queue(request: web.Request) -> web.Response:
    return await _pause(request, True)


async def resume_queue(request: web.Request) -> web.Response:
    return await _pause(request, False)


async def clean_queue(request: web.Request) -> web.Response:
    name = v.check_queue_name(request.match_info["name"])
    status, older_than_ms = v.parse_clean(await read_json(request))
    return web.json_response({"removed": await request.app[ADMIN].clean(name, status, older_than_ms)})


async def list_workers(request: web.Request) -> web.Response:
    return web.json_response({"workers": await request.app[ADMIN].workers()})


async def bulk_jobs(request: web.Request) -> web.Response:
    action, ids, status, group = v.parse_bulk(await read_json(request))
    return web.json_response({"affected": await request.app[ADMIN].bulk(action, ids, status, group)})


async def list_failures(request: web.Request) -> web.Response:
    queue = request.query.get("queue") or None
    if queue is not None:
        v.check_queue_name(queue)
    return web.json_response({"groups": await request.app[ADMIN].failures.groups(queue)})


def render_metrics(figures: dict[str, Any]) -> str:
    """Prometheus text exposition format 0.0.4."""
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    queues: dict[str, Any] = figures["queues"]
    family("jobline_jobs", "gauge", "Jobs stored, by queue and status.")
    for queue, q in queues.items():
        for status, count in q["counts"].items():
            lines.append(f'jobline_jobs{{queue="{queue}",status="{status}"}} {count}')
    for outcome in ("completed", "failed"):
        family(f"jobline_jobs_{outcome}_total", "counter", f"Jobs {outcome}, by queue.")
        for queue, q in queues.items():
            lines.append(f'jobline_jobs_{outcome}_total{{queue="{queue}"}} {int(q["meta"].get(f"{outcome}Total", 0))}')
    family("jobline_stuck_jobs", "gauge", "Active jobs whose progress stopped moving while their worker lives.")
    for queue, q in queues.items():
        lines.append(f'jobline_stuck_jobs{{queue="{queue}"}} {q["stuck"]}')
    family("jobline_workers", "gauge", "Live workers (heartbeat within their lease).")
    lines.append(f"jobline_workers {figures['workers']}")
    family("jobline_job_duration_seconds", "histogram", "Run time of completed jobs, by queue.")
    for queue, q in queues.items():
        meta, cumulative = q["meta"], 0
        for le in (*(f"{b:g}" for b in scripts.DURATION_BUCKETS), "+Inf"):
            cumulative += int(meta.get(f"duration:{le}", 0))
            lines.append(f'jobline_job_duration_seconds_bucket{{queue="{queue}",le="{le}"}} {cumulative}')
        lines.append(f'jobline_job_duration_seconds_sum{{queue="{queue}"}} {float(meta.get("durationSum", 0))}')
        lines.append(f'jobline_job_duration_seconds_count{{queue="{queue}"}} {cumulative}')
    return "\n".join(lines) + "\n"


async def metrics(request: web.Request) -> web.Response:
    text = render_metrics(await request.app[ADMIN].metrics())
    return web.Response(body=text.encode(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def add_routes(app: web.Application) -> None:
    async def admin_ctx(app: web.Application) -> Any:
        app[ADMIN] = QueueAdmin(app[STORE])
        app[SETTINGS] = SettingsStore(app[STORE])
        yield

    app.cleanup_ctx.append(admin_ctx)
    app.router.add_routes(
        [
            web.post("/api/jobs/bulk", bulk_jobs),
            web.get("/api/admin/queues", list_queues),
            web.delete("/api/admin/queues/{name}", delete_queue),
            web.patch("/api/admin/queues/{name}", patch_queue),
            web.post("/api/admin/queues/{name}/pause", pause_queue),
            web.post("/api/admin/queues/{name}/resume", resume_queue),
            web.post("/api/admin/queues/{name}/clean", clean_queue),
            web.get("/api/admin/workers", list_workers),
            web.get("/api/admin/failures", list_failures),
            web.get("/metrics", metrics),
        ]
    )
