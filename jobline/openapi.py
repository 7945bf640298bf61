"""The OpenAPI 3 description of every route, served at /api/openapi.json.

A test holds it to the app's router, so a new route without a description fails the suite.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import validation as v
from .models import STATUSES

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Invalid JSON or a validation error (the message names the field).",
        401: "Missing or wrong API token (with API_TOKEN set, or from another origin).",
        404: "No such job, queue or route.",
        405: "The path does not take this method (see the Allow header).",
        409: "The job's (or queue's) state forbids the action, or a request with this Idempotency-Key is in progress.",
        422: "idempotency_mismatch: this Idempotency-Key was used with another body.",
        413: "The request body is too large.",
        415: "The body is not application/json.",
        503: "Redis is unavailable.",
    }
    return {str(c): _json(_ref("Error"), text[c]) for c in (*codes, 401, 405, 503)}


_IDEMPOTENCY_PARAM = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7E]+$"},
    "description": "Within 24 h, a request with the same key and the same body (byte for byte) gets the "
    "first response again (with Idempotent-Replayed: true) and creates nothing; keys are per route.",
}  # fmt: skip
_REPLAYED = {"Idempotent-Replayed": {"schema": {"type": "string", "enum": ["true"]}, "description": "Present on a replay."}}
_NULL_INT = {"type": "integer", "nullable": True}
_NULL_STR = {"type": "string", "nullable": True}
_ID_PARAM = {
    "name": "id", "in": "path", "required": True,
    "schema": {"type": "string", "pattern": v.ID_RE.pattern, "maxLength": 64},
}  # fmt: skip
_QUEUE_PARAM = {
    "name": "name", "in": "path", "required": True,
    "schema": {"type": "string", "pattern": v.NAME_RE.pattern, "maxLength": 64},
}  # fmt: skip
_EMPTY_BODY = {
    "required": False,
    "content": {JSON: {"schema": {"type": "object", "additionalProperties": False, "maxProperties": 0}}},
}
_NAME = {"type": "string", "pattern": v.NAME_RE.pattern, "minLength": 1, "maxLength": 64}
_NAME_FILTER = {"type": "string", "pattern": "^([A-Za-z0-9_.-]{1,64})?$", "description": "Empty: no filter."}
_STATUS_RE = "(" + "|".join(STATUSES) + ")"
_STATUS_FILTER = {
    "type": "string",
    "pattern": f"^({_STATUS_RE}(,{_STATUS_RE})*)?$",
    "description": "Comma-separated statuses; empty: every status.",
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {
                        "type": "string",
                        "description": "bad_request, invalid_json, validation_error (with field), unauthorized, "
                        "not_found, method_not_allowed (405: the path exists, the method does not; the Allow "
                        "header lists the methods), request_timeout (408), conflict, too_large, "
                        "unsupported_media_type, idempotency_mismatch (422), misdirected_request (421: not one of the server's host "
                        "names), unavailable (503), internal_error.",
                    },
                    "message": {"type": "string"},
                    "field": {"type": "string"},
                },
            }
        },
    },
    "Job": {
        "type": "object",
        "required": ["id", "name", "type", "queue", "data", "status", "priority", "progress", "rev"],
        "properties": {
            "id": {"type": "string", "pattern": v.ID_RE.pattern},
            "name": {"type": "string"},
            "type": {"type": "string"},
            "queue": {"type": "string"},
            "data": {"type": "object"},
            "status": {"type": "string", "enum": list(STATUSES)},
            "priority": {"type": "string", "enum": ["normal", "high"]},
            "progress": {"type": "integer", "minimum": 0, "maximum": 100},
            "action": _NULL_STR,
            "attemptsMade": {"type": "integer", "minimum": 0},
            "maxAttempts": {"type": "integer", "minimum": 1},
            "backoffMs": {"type": "integer", "minimum": 0},
            "maxBackoffMs": {"type": "integer", "minimum": 0},
            "timeoutMs": _NULL_INT,
            "createdAt": _NULL_INT,
            "startedAt": _NULL_INT,
            "finishedAt": _NULL_INT,
            "runAt": _NULL_INT,
            "failedReason": _NULL_STR,
            "result": {"nullable": True},
            "workerId": _NULL_STR,
            "rev": {"type": "integer", "minimum": 1},
            "logs": {"type": "array", "items": {"type": "string"}, "description": "Only in the single-job view."},
            "events": {
                "type": "array",
                "description": "Only in the single-job view: the handler's custom events (ctx.emit), newest last, at most 100.",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "data": {}, "at": {"type": "integer"}},
                },
            },
            "state": {
                "type": "object",
                "description": "Only in the single-job view: the handler's saved checkpoint (ctx.save_state), {} at first.",
            },
            "dataOmitted": {
                "type": "boolean",
                "description": "Only in stream events: data and result were left out (over 4 KiB); the single-job view has them.",
            },
        },
    },
    "NewJob": {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": {
                "type": "string", "minLength": 1, "maxLength": v.MAX_NAME_CHARS,
                "pattern": "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$",
                "description": "Not blank, no NUL, valid Unicode (no lone surrogates).",
            },
            "type": {**_NAME, "default": "demo"},
            "queue": {**_NAME, "default": "default"},
            "data": {"type": "object", "description": "At most 64 KiB encoded; demo `steps` at most 1,000."},
            "priority": {"type": "string", "enum": ["normal", "high"], "default": "normal"},
            "delayMs": {"type": "integer", "minimum": 0, "maximum": v.MAX_DELAY_MS},
            "maxAttempts": {"type": "integer", "minimum": 1, "maximum": v.MAX_ATTEMPTS, "default": 3},
            "backoffMs": {"type": "integer", "minimum": 0, "maximum": v.MAX_BACKOFF_MS, "default": 1000},
            "maxBackoffMs": {
                "type": "integer", "minimum": 0, "maximum": v.MAX_BACKOFF_MS, "default": 3_600_000,
                "description": "A retry never waits longer than this.",
            },
            "timeoutMs": {"type": "integer", "minimum": 1, "maximum": v.MAX_TIMEOUT_MS, "nullable": True},
        },
    },
    "JobList": {
        "type": "object",
        "required": ["jobs", "total", "limit", "offset"],
        "properties": {
            "jobs": {"type": "array", "items": _ref("Job")},
            "total": {"type": "integer"},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
        },
    },
    "Queue": {
        "type": "object",
        "required": ["name", "paused", "workers", "counts", "activeJobIds", "recentFailures", "throughput"],
        "properties": {
            "name": {"type": "string"},
            "paused": {"type": "boolean"},
            "workers": {"type": "integer", "minimum": 0, "description": "Live workers serving it; 0: its jobs wait."},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "activeJobIds": {"type": "array", "items": {"type": "string"}},
            "recentFailures": {"type": "array", "maxItems": 10, "items": {"type": "object"}},
            "throughput": {
                "type": "object",
                "properties": {"completed": {"type": "integer"}, "failed": {"type": "integer"}},
            },
            "history": {"type": "array", "items": {"type": "object"}},
        },
    },
    "Worker": {
        "type": "object",
        "properties": {
            "id": {"type": "string"}, "host": {"type": "string"}, "pid": {"type": "integer"},
            "queues": {"type": "array", "items": {"type": "string"}}, "concurrency": {"type": "integer"},
            "activeJobIds": {"type": "array", "items": {"type": "string"}}, "startedAt": {"type": "integer"},
            "lastSeen": {"type": "integer"}, "processed": {"type": "integer"}, "failed": {"type": "integer"},
        },  # fmt: skip
    },
}


def _job_action(summary: str, conflict: bool = True) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": [_ID_PARAM],
            "requestBody": _EMPTY_BODY,
            "responses": {"200": _json(_ref("Job"), "The job after the action."), **_errors(400, 404, 409, 415)},
        }
    }


def _queue_action(summary: str) -> dict[str, Any]:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "paused": {"type": "boolean"}}}
    return {
        "post": {
            "summary": summary,
            "parameters": [_QUEUE_PARAM],
            "requestBody": _EMPTY_BODY,
            "responses": {"200": _json(schema, "The queue's pause state."), **_errors(400, 404, 415)},
        }
    }


PATHS: dict[str, Any] = {
    "/api/jobs": {
        "post": {
            "summary": "Create a job",
            "parameters": [_IDEMPOTENCY_PARAM],
            "requestBody": _body(_ref("NewJob")),
            "responses": {
                "201": {**_json(_ref("Job"), "The created job; Location names it."), "headers": _REPLAYED},
                **_errors(400, 409, 413, 415, 422),
            },
        },
        "get": {
            "summary": "List jobs, newest first",
            "parameters": [
                {"name": "status", "in": "query", "schema": _STATUS_FILTER},
                {"name": "type", "in": "query", "schema": _NAME_FILTER},
                {"name": "queue", "in": "query", "schema": _NAME_FILTER},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": v.MAX_LIMIT, "default": 50}},
                {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": v.MAX_OFFSET, "default": 0}},
            ],  # fmt: skip
            "responses": {"200": _json(_ref("JobList"), "A page of jobs."), **_errors(400)},
        },
    },
    "/api/jobs/{id}": {
        "get": {
            "summary": "One job, with its logs",
            "parameters": [_ID_PARAM],
            "responses": {"200": _json(_ref("Job"), "The job with logs."), **_errors(404)},
        },
        "delete": {
            "summary": "Delete a job (an active one is stopped first)",
            "parameters": [_ID_PARAM],
            "responses": {"204": {"description": "Deleted."}, **_errors(404)},
        },
        "patch": {
            "summary": "Change the priority of a waiting or delayed job",
            "parameters": [_ID_PARAM],
            "requestBody": _body({
                "type": "object", "required": ["priority"], "additionalProperties": False,
                "properties": {"priority": {"type": "string", "enum": ["normal", "high"]}},
            }),  # fmt: skip
            "responses": {"200": _json(_ref("Job"), "The job."), **_errors(400, 404, 409, 415)},
        },
    },
    "/api/jobs/{id}/cancel": _job_action("Cancel a waiting, delayed or active job"),
    "/api/jobs/{id}/retry": _job_action("Retry a failed or cancelled job"),
    "/api/jobs/{id}/promote": _job_action("Run a delayed job now"),
    "/api/jobs/batch": {
        "post": {
            "summary": "Create up to 1,000 jobs, all or nothing",
            "parameters": [_IDEMPOTENCY_PARAM],
            "requestBody": _body({
                "type": "object", "required": ["jobs"], "additionalProperties": False,
                "properties": {
                    "jobs": {"type": "array", "minItems": 1, "maxItems": v.MAX_BATCH_JOBS, "items": _ref("NewJob")},
                },
            }),  # fmt: skip
            "responses": {
                "201": {
                    **_json(
                        {"type": "object", "required": ["jobs"], "properties": {"jobs": {"type": "array", "items": _ref("Job")}}},
                        "The created jobs, in the order given.",
                    ),
                    "headers": _REPLAYED,
                },
                **_errors(400, 409, 413, 415, 422),
            },
        }
    },
    "/api/jobs/bulk": {
        "post": {
            "summary": "Retry, cancel or delete jobs by ids or by status",
            "requestBody": _body({
                "type": "object", "required": ["action"], "additionalProperties": False,
                "oneOf": [{"required": ["ids"]}, {"required": ["status"]}],
                "properties": {
                    "action": {"type": "string", "enum": list(v.BULK_ACTIONS)},
                    "ids": {"type": "array", "minItems": 1, "maxItems": v.MAX_BULK_IDS,
                            "items": {"type": "string", "pattern": v.ID_RE.pattern}},
                    "status": {"type": "string", "enum": list(STATUSES)},
                },
            }),  # fmt: skip
            "responses": {
                "200": _json({"type": "object", "properties": {"affected": {"type": "integer"}}}, "How many changed."),
                **_errors(400, 413, 415),
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
    "/api/admin/queues": {
        "get": {
            "summary": "Every queue with counts, active jobs, recent failures and throughput",
            "responses": {
                "200": _json({"type": "object", "properties": {"queues": {"type": "array", "items": _ref("Queue")}}}, "Queues."),
                **_errors(),
            },
        }
    },
    "/api/admin/queues/{name}": {
        "delete": {
            "summary": "Remove an empty queue and its settings (409 while it holds jobs)",
            "parameters": [_QUEUE_PARAM],
            "responses": {"204": {"description": "Removed."}, **_errors(400, 404, 409)},
        }
    },
    "/api/admin/queues/{name}/pause": _queue_action("Pause a queue: it hands out no jobs"),
    "/api/admin/queues/{name}/resume": _queue_action("Resume a paused queue"),
    "/api/admin/queues/{name}/clean": {
        "post": {
            "summary": "Delete a queue's finished jobs by status and age",
            "parameters": [_QUEUE_PARAM],
            "requestBody": _body({
                "type": "object", "required": ["status"], "additionalProperties": False,
                "properties": {
                    "status": {"type": "string", "enum": list(v.CLEANABLE)},
                    "olderThanMs": {"type": "integer", "minimum": 0, "maximum": v.MAX_CLEAN_AGE_MS},
                },
            }),  # fmt: skip
            "responses": {
                "200": _json({"type": "object", "properties": {"removed": {"type": "integer"}}}, "How many were removed."),
                **_errors(400, 415),
            },
        }
    },
    "/api/admin/workers": {
        "get": {
            "summary": "Live workers",
            "responses": {
                "200": _json({"type": "object", "properties": {"workers": {"type": "array", "items": _ref("Worker")}}}, "Workers."),
                **_errors(),
            },
        }
    },
    "/api/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3."}}}},
    "/healthz": {
        "get": {
            "summary": "Redis reachability",
            "responses": {
                "200": _json({"type": "object", "properties": {"redis": {"type": "string"}}}, "Redis answers."),
                "503": _json({"type": "object", "properties": {"redis": {"type": "string"}}}, "Redis is unavailable."),
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
