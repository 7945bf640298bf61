"""The OpenAPI 3 description of every route, served at /api/openapi.json.

A test holds it to the app's router, so a new route without a description fails the suite.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import validation as v
from .models import STATUSES
from .schedules import SCHEDULE_ID_RE
from .openapi_schemas import (
    ref,
    json_response,
    request_body,
    error_responses,
    IDEMPOTENCY_PARAM,
    REPLAYED,
    ID_PARAM,
    QUEUE_PARAM,
    EMPTY_BODY,
    NAME,
    NAME_FILTER,
    STATUS_FILTER,
    SCHEMAS,
)

PAGE_PARAMS = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": v.MAX_LIMIT, "default": 50}},
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": v.MAX_OFFSET, "default": 0}},
]  # fmt: skip


SCHEDULE_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": SCHEDULE_ID_RE.pattern}}


def _only(field: str, *without: str) -> dict[str, Any]:
    """A schema: `field` is given and none of `without` is."""
    return {"required": [field], "not": {"anyOf": [{"required": [other]} for other in without]}}


def _schedule_action(summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": [SCHEDULE_PARAM],
            "requestBody": EMPTY_BODY,
            "responses": {"200": json_response(ref("Schedule"), "The schedule."), **error_responses(404)},
        }
    }


def _job_action(summary: str, conflict: bool = True) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": [ID_PARAM],
            "requestBody": EMPTY_BODY,
            "responses": {"200": json_response(ref("Job"), "The job after the action."), **error_responses(400, 404, 409, 415)},
        }
    }


def _queue_action(summary: str) -> dict[str, Any]:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "paused": {"type": "boolean"}}}
    return {
        "post": {
            "summary": summary,
            "parameters": [QUEUE_PARAM],
            "requestBody": EMPTY_BODY,
            "responses": {"200": json_response(schema, "The queue's pause state."), **error_responses(400, 404, 415)},
        }
    }


PATHS: dict[str, Any] = {
    "/api/jobs": {
        "post": {
            "summary": "Create a job",
            "parameters": [IDEMPOTENCY_PARAM],
            "requestBody": request_body(ref("NewJob")),
            "responses": {
                "201": {**json_response(ref("Job"), "The created job; Location names it."), "headers": REPLAYED},
                "200": {
                    **json_response(ref("Job"), "Not created: the unfinished job that holds its uniqueKey."),
                    "headers": REPLAYED,
                },
                **error_responses(400, 409, 413, 415, 422),
            },
        },
        "get": {
            "summary": "List jobs, newest first",
            "parameters": [
                {"name": "status", "in": "query", "schema": STATUS_FILTER},
                {"name": "type", "in": "query", "schema": NAME_FILTER},
                {"name": "queue", "in": "query", "schema": NAME_FILTER},
                {"name": "q", "in": "query", "description": "A job id exactly, or a piece of the name (any case).",
                 "schema": {"type": "string", "maxLength": v.MAX_QUERY_CHARS}},
                {"name": "tag", "in": "query", "description": "Jobs with this tag; repeat it: all must match.",
                 "style": "form", "explode": True,
                 "schema": {"type": "array", "maxItems": v.MAX_TAGS, "items": {"type": "string", "pattern": v.TAG_RE.pattern}}},
                {"name": "failureGroup", "in": "query", "description": "Failed jobs of this failure group (empty: no filter).",
                 "schema": {"type": "string", "pattern": "^([0-9a-f]{16})?$"}},
                *PAGE_PARAMS,
            ],  # fmt: skip
            "responses": {"200": json_response(ref("JobList"), "A page of jobs."), **error_responses(400)},
        },
    },
    "/api/jobs/{id}": {
        "get": {
            "summary": "One job, with its logs",
            "parameters": [ID_PARAM],
            "responses": {"200": json_response(ref("Job"), "The job with logs."), **error_responses(404)},
        },
        "delete": {
            "summary": "Delete a job (an active one is stopped first)",
            "parameters": [ID_PARAM],
            "responses": {"204": {"description": "Deleted."}, **error_responses(404)},
        },
        "patch": {
            "summary": "Change the priority of a waiting or delayed job",
            "parameters": [ID_PARAM],
            "requestBody": request_body({
                "type": "object", "required": ["priority"], "additionalProperties": False,
                "properties": {"priority": {"type": "string", "enum": ["normal", "high"]}},
            }),  # fmt: skip
            "responses": {"200": json_response(ref("Job"), "The job."), **error_responses(400, 404, 409, 415)},
        },
    },
    "/api/jobs/{id}/children": {
        "get": {
            "summary": "A parent's children, in creation order",
            "parameters": [ID_PARAM, *PAGE_PARAMS],
            "responses": {"200": json_response(ref("JobList"), "A page of its children."), **error_responses(400, 404)},
        },
    },
    "/api/jobs/{id}/stream": {
        "get": {
            "summary": "Server-Sent Events of one job: its job and job-event events, then job-removed, which ends the stream",
            "parameters": [
                ID_PARAM,
                {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                {"name": "lastEventId", "in": "query", "schema": {"type": "string"}},
            ],
            "responses": {
                "200": {"description": "The job's events, until its removal.", "content": {"text/event-stream": {}}},
                **error_responses(404),
            },
        }
    },
    "/api/jobs/{id}/cancel": _job_action("Cancel a waiting, delayed, active or waiting-children job (and its descendants)"),
    "/api/jobs/{id}/retry": _job_action("Retry a failed or cancelled job"),
    "/api/jobs/{id}/promote": _job_action("Run a delayed job now"),
    "/api/jobs/batch": {
        "post": {
            "summary": "Create up to 1,000 jobs, all or nothing",
            "parameters": [IDEMPOTENCY_PARAM],
            "requestBody": request_body({
                "type": "object", "required": ["jobs"], "additionalProperties": False,
                "properties": {
                    "jobs": {"type": "array", "minItems": 1, "maxItems": v.MAX_BATCH_JOBS, "items": ref("NewJob")},
                },
            }),  # fmt: skip
            "responses": {
                "201": {
                    **json_response(
                        {"type": "object", "required": ["jobs"], "properties": {"jobs": {"type": "array", "items": ref("Job")}}},
                        "The created jobs, in the order given.",
                    ),
                    "headers": REPLAYED,
                },
                **error_responses(400, 409, 413, 415, 422),
            },
        }
    },
    "/api/jobs/bulk": {
        "post": {
            "summary": "Retry, cancel or delete jobs by ids, by status, or by failure group",
            "requestBody": request_body({
                "type": "object", "required": ["action"], "additionalProperties": False,
                "oneOf": [_only("ids", "status", "failureGroup", "queue"), _only("status", "ids", "failureGroup", "queue"),
                          _only("failureGroup", "ids", "status")],
                "properties": {
                    "action": {"type": "string", "enum": list(v.BULK_ACTIONS)},
                    "ids": {"type": "array", "minItems": 1, "maxItems": v.MAX_BULK_IDS,
                            "items": {"type": "string", "pattern": v.ID_RE.pattern}},
                    "status": {"type": "string", "enum": list(STATUSES)},
                    "failureGroup": {"type": "string", "pattern": v.FINGERPRINT_RE.pattern,
                                     "description": "Every job still failed in this group (GET /api/admin/failures)."},
                    "queue": {**NAME, "description": "With failureGroup: only this queue's jobs."},
                },
            }),  # fmt: skip
            "responses": {
                "200": json_response({"type": "object", "properties": {"affected": {"type": "integer"}}}, "How many changed."),
                **error_responses(400, 413, 415),
            },
        }
    },
    "/api/jobs/stream": {
        "get": {
            "summary": "Server-Sent Events: job, job-removed, queue and reset events",
            "parameters": [
                {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                {"name": "lastEventId", "in": "query", "schema": {"type": "string"}},
            ],
            "responses": {"200": {"description": "An endless event stream.", "content": {"text/event-stream": {}}}},
        }
    },
    "/api/schedules": {
        "post": {
            "summary": "Create a schedule: a job on a cron timetable (in a time zone) or every N ms",
            "parameters": [IDEMPOTENCY_PARAM],
            "requestBody": request_body(ref("NewSchedule")),
            "responses": {
                "201": {**json_response(ref("Schedule"), "The schedule; Location names it."), "headers": REPLAYED},
                **error_responses(400, 409, 413, 415, 422),
            },
        },
        "get": {
            "summary": "Every schedule",
            "responses": {
                "200": json_response(
                    {"type": "object", "properties": {"schedules": {"type": "array", "items": ref("Schedule")}}},
                    "The schedules, by id.",
                ),
            },
        },
    },
    "/api/schedules/{id}": {
        "get": {
            "summary": "One schedule",
            "parameters": [SCHEDULE_PARAM],
            "responses": {"200": json_response(ref("Schedule"), "The schedule."), **error_responses(404)},
        },
        "patch": {
            "summary": "Change a schedule's cron, everyMs, timezone, job or paused (its timetable restarts from now)",
            "parameters": [SCHEDULE_PARAM],
            "requestBody": request_body(ref("ScheduleChange")),
            "responses": {"200": json_response(ref("Schedule"), "The schedule."), **error_responses(400, 404, 415)},
        },
        "delete": {
            "summary": "Remove a schedule (the jobs it created stay)",
            "parameters": [SCHEDULE_PARAM],
            "responses": {"204": {"description": "Removed."}, **error_responses(404)},
        },
    },
    "/api/schedules/{id}/pause": _schedule_action("Pause a schedule: it creates no jobs until resumed"),
    "/api/schedules/{id}/resume": _schedule_action("Resume a paused schedule (its next run counts from now)"),
    "/api/schedules/{id}/trigger": {
        "post": {
            "summary": "Create the schedule's job now, outside its timetable",
            "parameters": [SCHEDULE_PARAM],
            "requestBody": EMPTY_BODY,
            "responses": {"201": json_response(ref("Job"), "The job created."), **error_responses(404)},
        },
    },
    "/api/admin/queues": {
        "get": {
            "summary": "Every queue with counts, active jobs, recent failures and throughput",
            "responses": {
                "200": json_response({"type": "object", "properties": {"queues": {"type": "array", "items": ref("Queue")}}}, "Queues."),
                **error_responses(),
            },
        }
    },
    "/api/admin/queues/{name}": {
        "delete": {
            "summary": "Remove an empty queue and its settings (409 while it holds jobs)",
            "parameters": [QUEUE_PARAM],
            "responses": {"204": {"description": "Removed."}, **error_responses(400, 404, 409)},
        },
        "patch": {
            "summary": "Set a queue's rate limit, concurrency and retention (the queue exists from then on)",
            "parameters": [QUEUE_PARAM],
            "requestBody": request_body(ref("QueueSettings")),
            "responses": {
                "200": json_response(
                    {"type": "object", "properties": {"name": {"type": "string"}, "settings": ref("QueueSettings")}},
                    "The queue's settings now.",
                ),
                **error_responses(400, 415),
            },
        },
    },
    "/api/admin/queues/{name}/pause": _queue_action("Pause a queue: it hands out no jobs"),
    "/api/admin/queues/{name}/resume": _queue_action("Resume a paused queue"),
    "/api/admin/queues/{name}/clean": {
        "post": {
            "summary": "Delete a queue's finished jobs by status and age",
            "parameters": [QUEUE_PARAM],
            "requestBody": request_body({
                "type": "object", "required": ["status"], "additionalProperties": False,
                "properties": {
                    "status": {"type": "string", "enum": list(v.CLEANABLE)},
                    "olderThanMs": {"type": "integer", "minimum": 0, "maximum": v.MAX_CLEAN_AGE_MS},
                },
            }),  # fmt: skip
            "responses": {
                "200": json_response({"type": "object", "properties": {"removed": {"type": "integer"}}}, "How many were removed."),
                **error_responses(400, 415),
            },
        }
    },
    "/api/admin/failures": {
        "get": {
            "summary": "Failure groups: failed jobs grouped by the fingerprint of their last failure, most jobs first",
            "parameters": [{"name": "queue", "in": "query", "schema": NAME_FILTER}],
            "responses": {
                "200": json_response(
                    {"type": "object", "properties": {"groups": {"type": "array", "items": ref("FailureGroup")}}}, "Groups."
                ),
                **error_responses(400),
            },
        }
    },
    "/api/admin/workers": {
        "get": {
            "summary": "Live workers",
            "responses": {
                "200": json_response({"type": "object", "properties": {"workers": {"type": "array", "items": ref("Worker")}}}, "Workers."),
                **error_responses(),
            },
        }
    },
    "/api/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3."}}}},
    "/healthz": {
        "get": {
            "summary": "Redis reachability",
            "responses": {
                "200": json_response({"type": "object", "properties": {"redis": {"type": "string"}}}, "Redis answers."),
                "503": json_response({"type": "object", "properties": {"redis": {"type": "string"}}}, "Redis is unavailable."),
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "responses": {"200": {"description": "Text format 0.0.4.", "content": {"text/plain": {}}}},
        }
    },
    "/": {"get": {"summary": "The dashboard", "responses": {"200": {"description": "HTML.", "content": {"text/html": {}}}}}},
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "Jobline",
        "version": "1.0.0",
        "description": "A small, fast job queue on Redis. Errors are {\"error\": {\"code\", \"message\"}}.",
    },
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
    "security": [{}, {"bearer": []}],
}


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(DOCUMENT)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/openapi.json", openapi_json)
