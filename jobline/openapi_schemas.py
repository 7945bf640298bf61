"""The building blocks of the OpenAPI document: its component schemas (Job, NewJob, Queue, ...),
the shared parameters, and helpers for bodies and error responses. openapi.py assembles the paths."""

from __future__ import annotations

from typing import Any

from . import queue_settings as qs
from . import validation as v
from .models import STATUSES

JSON = "application/json"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_response(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def request_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": schema}}}


def error_responses(*codes: int) -> dict[str, Any]:
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
    return {str(c): json_response(ref("Error"), text[c]) for c in (*codes, 401, 405, 503)}


IDEMPOTENCY_PARAM = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7E]+$"},
    "description": "Within 24 h, a request with the same key and the same body (byte for byte) gets the "
    "first response again (with Idempotent-Replayed: true) and creates nothing; keys are per route.",
}  # fmt: skip
REPLAYED = {"Idempotent-Replayed": {"schema": {"type": "string", "enum": ["true"]}, "description": "Present on a replay."}}
NULL_INT = {"type": "integer", "nullable": True}
NULL_STR = {"type": "string", "nullable": True}
ID_PARAM = {
    "name": "id", "in": "path", "required": True,
    "schema": {"type": "string", "pattern": v.ID_RE.pattern, "maxLength": 64},
}  # fmt: skip
QUEUE_PARAM = {
    "name": "name", "in": "path", "required": True,
    "schema": {"type": "string", "pattern": v.NAME_RE.pattern, "maxLength": 64},
}  # fmt: skip
EMPTY_BODY = {
    "required": False,
    "content": {JSON: {"schema": {"type": "object", "additionalProperties": False, "maxProperties": 0}}},
}
NAME = {"type": "string", "pattern": v.NAME_RE.pattern, "minLength": 1, "maxLength": 64}
NAME_FILTER = {"type": "string", "pattern": "^([A-Za-z0-9_.-]{1,64})?$", "description": "Empty: no filter."}
STATUS_RE = "(" + "|".join(STATUSES) + ")"
STATUS_FILTER = {
    "type": "string",
    "pattern": f"^({STATUS_RE}(,{STATUS_RE})*)?$",
    "description": "Comma-separated statuses; empty: every status.",
}

FLOW_FIELDS = {
    "children": {
        "type": "array", "maxItems": v.MAX_FLOW_JOBS, "items": ref("ChildJob"),
        "description": f"Jobs this one waits for (a flow: at most {v.MAX_FLOW_JOBS} jobs and "
        f"{v.MAX_FLOW_DEPTH} levels, created all at once); they may be on other queues.",
    },
    "onFailure": {
        "type": "string", "enum": ["fail-parent", "ignore"], "default": "fail-parent",
        "description": "For a child: whether its failure (or cancel, or removal) fails its parent at once.",
    },
}  # fmt: skip

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
            "action": NULL_STR,
            "attemptsMade": {"type": "integer", "minimum": 0},
            "maxAttempts": {"type": "integer", "minimum": 1},
            "backoffMs": {"type": "integer", "minimum": 0},
            "maxBackoffMs": {"type": "integer", "minimum": 0},
            "timeoutMs": NULL_INT,
            "createdAt": NULL_INT,
            "startedAt": NULL_INT,
            "finishedAt": NULL_INT,
            "runAt": NULL_INT,
            "failedReason": NULL_STR,
            "result": {"nullable": True},
            "workerId": NULL_STR,
            "parentId": NULL_STR,
            "scheduleId": NULL_STR,
            "children": {
                "type": "object", "nullable": True,
                "description": "A parent's children: how many, and how they ended.",
                "properties": {
                    name: {"type": "integer", "minimum": 0}
                    for name in ("total", "completed", "failed", "cancelled", "pending")
                },
            },  # fmt: skip
            "uniqueKey": NULL_STR,
            "tags": {"type": "array", "items": {"type": "string"}},
            "progressAt": {**NULL_INT, "description": "Epoch ms of the last progress change."},
            "progressSteps": {"type": "integer", "minimum": 0, "description": "Progress changes in this attempt."},
            "failureGroup": {**NULL_STR, "description": "The fingerprint of its last failure (GET /api/admin/failures)."},
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
            "type": {**NAME, "default": "demo"},
            "queue": {**NAME, "default": "default"},
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
            "uniqueKey": {
                "type": "string", "minLength": 1, "maxLength": v.MAX_UNIQUE_KEY_CHARS, "nullable": True,
                "description": "While a job of the queue with this key is unfinished, a create with it "
                "returns that job (200) instead of creating one.",
            },
            "uniqueForMs": {
                "type": "integer", "minimum": 0, "maximum": v.MAX_UNIQUE_FOR_MS,
                "description": "Keeps the uniqueKey taken this long after creation, even once the job "
                "finished (throttling). No effect without a uniqueKey.",
            },
            "tags": {
                "type": "array", "maxItems": v.MAX_TAGS, "uniqueItems": False,
                "items": {"type": "string", "pattern": v.TAG_RE.pattern},
                "description": "Found with GET /api/jobs?tag=.",
            },
            **FLOW_FIELDS,
        },
    },
    "FailureGroup": {
        "type": "object",
        "properties": {
            "fingerprint": {"type": "string", "pattern": v.FINGERPRINT_RE.pattern},
            "queue": {"type": "string"},
            "type": {"type": "string"},
            "pattern": {"type": "string", "description": "The message with its variable parts replaced."},
            "sample": {"type": "string", "description": "The group's latest failure reason."},
            "count": {"type": "integer", "description": "Jobs now failed whose last failure has this fingerprint."},
            "firstSeen": {"type": "integer"},
            "lastSeen": {"type": "integer"},
            "jobIds": {"type": "array", "maxItems": 10, "items": {"type": "string"}},
        },
    },
    "ChildJob": {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "description": "A create body inside a flow (a flow's uniqueKey is its root's).",
        "properties": {},  # filled in below: NewJob's, without uniqueKey and uniqueForMs
    },
    "JobList": {
        "type": "object",
        "required": ["jobs", "total", "limit", "offset"],
        "properties": {
            "jobs": {"type": "array", "items": ref("Job")},
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
            "settings": ref("QueueSettings"),
            "heldBack": {
                "type": "object", "nullable": True,
                "description": "Set while the queue's limits keep its waiting jobs from starting.",
                "properties": {
                    "by": {"type": "string", "enum": ["concurrency", "rateLimit"]},
                    "untilMs": {**NULL_INT, "description": "When the rate limit allows a start (null: when an active job finishes)."},
                },
            },  # fmt: skip
        },
    },
    "QueueSettings": {
        "type": "object",
        "description": "PATCH: a field left out keeps its value; null removes it.",
        "additionalProperties": False,
        "properties": {
            "rateLimit": {
                "type": "object", "nullable": True, "required": ["max", "perMs"], "additionalProperties": False,
                "description": "At most `max` jobs of the queue start in any window of `perMs` ms, across all workers.",
                "properties": {
                    "max": {"type": "integer", "minimum": 1, "maximum": qs.MAX_RATE},
                    "perMs": {"type": "integer", "minimum": 1, "maximum": qs.MAX_WINDOW_MS},
                },
            },
            "concurrency": {
                "type": "integer", "minimum": 1, "maximum": qs.MAX_CONCURRENCY, "nullable": True,
                "description": "At most this many jobs of the queue active at once, across all workers.",
            },
            "retention": {
                "type": "object", "nullable": True, "additionalProperties": False,
                "description": "Finished jobs beyond the count or older than the age are removed (job-removed events).",
                "properties": {
                    status: {
                        "type": "object", "additionalProperties": False, "minProperties": 1,
                        "properties": {
                            "maxCount": {"type": "integer", "minimum": 0, "maximum": qs.MAX_KEEP_COUNT},
                            "maxAgeMs": {"type": "integer", "minimum": 1, "maximum": qs.MAX_AGE_MS},
                        },
                    }
                    for status in qs.FINISHED_STATUSES
                },
            },
        },
    },  # fmt: skip
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

SCHEMAS["ChildJob"]["properties"] = {
    name: schema for name, schema in SCHEMAS["NewJob"]["properties"].items() if name not in ("uniqueKey", "uniqueForMs")
}

_TIMING = {
    "cron": {
        "type": "string", "nullable": True,
        "description": 'A 5-field cron expression in standard syntax, e.g. "0 3 * * *" (03:00 daily). Give cron or everyMs.',
    },
    "everyMs": {"type": "integer", "minimum": 1000, "maximum": 366 * 24 * 3600 * 1000, "nullable": True},
    "timezone": {"type": "string", "default": "UTC", "description": "An IANA time zone name, e.g. Europe/Berlin."},
    "job": ref("NewJob"),
    "paused": {"type": "boolean", "default": False},
}  # fmt: skip
SCHEMAS["NewSchedule"] = {
    "type": "object", "required": ["job"], "additionalProperties": False,
    "properties": {"id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"}, **_TIMING},
}  # fmt: skip
SCHEMAS["ScheduleChange"] = {"type": "object", "additionalProperties": False, "properties": _TIMING}
SCHEMAS["Schedule"] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"}, **_TIMING, "nextRunAt": NULL_INT, "lastRunAt": NULL_INT,
        "lastJobId": NULL_STR, "createdAt": {"type": "integer"},
    },
}  # fmt: skip
