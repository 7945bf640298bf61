"""Turning untrusted request input into validated values, or a clear 4xx `ApiError`."""

from __future__ import annotations

import json
import re
from collections.abc import Set as AbstractSet
from typing import Any

from .errors import ApiError
from .models import (
    DEFAULT_BACKOFF_MS, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_BACKOFF_MS, DEFAULT_QUEUE, DEFAULT_TYPE, NewJob, OnFailure, Priority,
    Status,
)  # fmt: skip

ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Queue and type names: they become part of keys and paths. "." and ".." are refused: browsers
# rewrite such path segments, so the dashboard could never reach that queue.
NAME_RE = re.compile(r"^(?!\.\.?$)[A-Za-z0-9_.-]{1,64}$")
NAME_RULE = "must match ^[A-Za-z0-9_.-]{1,64}$ and not be . or .."
MAX_NAME_CHARS = 200
MAX_DATA_BYTES = 64 * 1024
MAX_DELAY_MS = 366 * 24 * 3600 * 1000
MAX_BACKOFF_MS = 24 * 3600 * 1000
MAX_TIMEOUT_MS = 7 * 24 * 3600 * 1000
MAX_ATTEMPTS = 100
MAX_DEMO_STEPS = 1000
MAX_CLEAN_AGE_MS = 10 * 366 * 24 * 3600 * 1000
MAX_LIMIT = 500
MAX_OFFSET = 10_000_000

BULK_ACTIONS = ("retry", "cancel", "delete")
CLEANABLE = ("completed", "failed", "cancelled")
MAX_BULK_IDS = 10_000
MAX_BATCH_JOBS = 1000
STATUS_VALUES = tuple(s.value for s in Status)
CREATE_FIELDS = frozenset(
    {
        "name", "type", "queue", "data", "priority", "delayMs", "maxAttempts", "backoffMs", "maxBackoffMs",
        "timeoutMs", "uniqueKey", "uniqueForMs", "children", "onFailure", "tags",
    }
)  # fmt: skip
CHILD_FIELDS = CREATE_FIELDS - {"uniqueKey", "uniqueForMs"}  # a flow's uniqueKey is its root's
MAX_FLOW_JOBS = 1000
MAX_FLOW_DEPTH = 10
TAG_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
TAG_RULE = "must match ^[A-Za-z0-9_.:-]{1,64}$"
MAX_TAGS = 10
MAX_QUERY_CHARS = 200
FINGERPRINT_RE = re.compile(r"^[0-9a-f]{16}$")
MAX_UNIQUE_KEY_CHARS = 200
MAX_UNIQUE_FOR_MS = 365 * 24 * 3600 * 1000


def invalid(field: str, message: str) -> ApiError:
    return ApiError(400, "validation_error", f"{field}: {message}", field)


def _int(
    body: dict[str, Any], field: str, default: int | None, low: int, high: int, nullable: bool = False
) -> int | None:
    if field not in body:
        return default
    value = body[field]
    if value is None and nullable:
        return None
    # bool is an int in Python, but `true` is not a number of milliseconds
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(field, "must be an integer")
    if not low <= value <= high:
        raise invalid(field, f"must be between {low} and {high}")
    return value


def _name(body: dict[str, Any], field: str, default: str) -> str:
    value = body.get(field, default)
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise invalid(field, NAME_RULE)
    return value


def parse_new_job(body: Any) -> NewJob:
    """A create body, with its tree of `children` if any (each a create body, of any queue): at
    most MAX_FLOW_JOBS jobs and MAX_FLOW_DEPTH levels. An invalid child is a 400 naming its path
    (children[2].name)."""
    job = _parse_job(body, CREATE_FIELDS, 1)
    if job.tree_size() > MAX_FLOW_JOBS:
        raise invalid("children", f"a flow has at most {MAX_FLOW_JOBS} jobs")
    return job


def _parse_child(body: Any, path: str, depth: int) -> NewJob:
    try:
        return _parse_job(body, CHILD_FIELDS, depth)
    except ApiError as error:
        field = f"{path}.{error.field}" if error.field else path
        message = error.message.removeprefix(f"{error.field}: ") if error.field else error.message
        raise invalid(field, message) from None


def _parse_job(body: Any, fields: AbstractSet[str], depth: int) -> NewJob:
    body = _object(body, fields)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise invalid("name", "is required and must be a non-empty string")
    _text(name, "name", MAX_NAME_CHARS)
    unique_key = body.get("uniqueKey")
    if unique_key is not None:
        if not isinstance(unique_key, str) or not unique_key:
            raise invalid("uniqueKey", f"must be a string of 1 to {MAX_UNIQUE_KEY_CHARS} characters")
        _text(unique_key, "uniqueKey", MAX_UNIQUE_KEY_CHARS)
    unique_for_ms = _int(body, "uniqueForMs", 0, 0, MAX_UNIQUE_FOR_MS) or 0  # no effect without a key
    data = body.get("data", {})
    if not isinstance(data, dict):
        raise invalid("data", "must be a JSON object")
    if len(json.dumps(data, separators=(",", ":")).encode()) > MAX_DATA_BYTES:
        raise invalid("data", f"must be at most {MAX_DATA_BYTES} bytes encoded")
    job_type = _name(body, "type", DEFAULT_TYPE)
    if job_type == "demo":
        _check_demo_data(data)
    try:
        priority = Priority(body.get("priority", Priority.NORMAL.value))
    except ValueError:
        raise invalid("priority", 'must be "normal" or "high"') from None
    return NewJob(
        name=name,
        type=job_type,
        queue=_name(body, "queue", DEFAULT_QUEUE),
        data=data,
        priority=priority,
        delay_ms=_int(body, "delayMs", 0, 0, MAX_DELAY_MS) or 0,
        max_attempts=_int(body, "maxAttempts", DEFAULT_MAX_ATTEMPTS, 1, MAX_ATTEMPTS) or DEFAULT_MAX_ATTEMPTS,
        backoff_ms=_int(body, "backoffMs", DEFAULT_BACKOFF_MS, 0, MAX_BACKOFF_MS) or 0,
        max_backoff_ms=_int(body, "maxBackoffMs", DEFAULT_MAX_BACKOFF_MS, 0, MAX_BACKOFF_MS) or 0,
        timeout_ms=_int(body, "timeoutMs", None, 1, MAX_TIMEOUT_MS, nullable=True),  # null: no timeout
        unique_key=unique_key,
        unique_for_ms=unique_for_ms,
        children=_children(body.get("children", []), depth),
        on_failure=_on_failure(body.get("onFailure", OnFailure.FAIL_PARENT.value)),
        tags=_tags(body.get("tags", [])),
    )


def _tags(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_TAGS:
        raise invalid("tags", f"must be a list of at most {MAX_TAGS} tags")
    for tag in value:
        if not isinstance(tag, str) or not TAG_RE.fullmatch(tag):
            raise invalid("tags", f"every tag {TAG_RULE}")
    return tuple(dict.fromkeys(value))


def _children(items: Any, depth: int) -> tuple[NewJob, ...]:
    if not isinstance(items, list):
        raise invalid("children", "must be a list of job bodies")
    if len(items) >= MAX_FLOW_JOBS:  # with their parent, over the limit
        raise invalid("children", f"a flow has at most {MAX_FLOW_JOBS} jobs")
    if items and depth >= MAX_FLOW_DEPTH:
        raise invalid("children", f"a flow has at most {MAX_FLOW_DEPTH} levels")
    return tuple(_parse_child(item, f"children[{i}]", depth + 1) for i, item in enumerate(items))


def _on_failure(value: Any) -> OnFailure:
    try:
        return OnFailure(value)
    except ValueError:
        raise invalid("onFailure", '"fail-parent" (the default) or "ignore"') from None


def _text(value: str, field: str, max_chars: int) -> None:
    """A name-like text: not too long, no NUL, encodable (no lone surrogates)."""
    if len(value) > max_chars:
        raise invalid(field, f"must be at most {max_chars} characters")
    if "\x00" in value:
        raise invalid(field, "must not contain NUL characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise invalid(field, "must be valid Unicode text (no lone surrogates)") from None


def parse_batch(body: Any) -> list[NewJob]:
    """{"jobs": [create bodies]} -> every job checked, in order. The first invalid one is a 400
    whose field names it by its path (jobs[3].name), so nothing is created."""
    body = _object(body, {"jobs"})
    jobs = body.get("jobs")
    if not isinstance(jobs, list) or not 1 <= len(jobs) <= MAX_BATCH_JOBS:
        raise invalid("jobs", f"must be a list of 1 to {MAX_BATCH_JOBS} job bodies")
    news = []
    for index, item in enumerate(jobs):
        path = f"jobs[{index}]"
        if not isinstance(item, dict):
            raise invalid(path, "must be a JSON object")
        try:
            news.append(parse_new_job(item))
        except ApiError as error:
            field = f"{path}.{error.field}" if error.field else path
            message = error.message.removeprefix(f"{error.field}: ") if error.field else error.message
            raise invalid(field, message) from None
    return news


def _check_demo_data(data: dict[str, Any]) -> None:
    """The built-in demo's knobs, checked before the job exists (tasks.demo reads them)."""
    steps = data.get("steps", 10)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_DEMO_STEPS:
        raise invalid("data.steps", f"must be an integer from 1 to {MAX_DEMO_STEPS}")


def parse_priority_patch(body: Any) -> Priority:
    body = _object(body, {"priority"})
    if "priority" not in body:
        raise invalid("priority", "is required")
    try:
        return Priority(body["priority"])
    except (ValueError, TypeError):
        raise invalid("priority", 'must be "normal" or "high"') from None


def require_empty_object(body: Any) -> None:
    """Action routes take an empty body or {}."""
    if body != {}:
        raise ApiError(400, "validation_error", "this action takes an empty body or {}")


def check_job_id(job_id: str) -> str:
    if not ID_RE.fullmatch(job_id):
        raise ApiError(404, "not_found", "no such job")
    return job_id


def _query_int(query: Any, field: str, default: int, low: int, high: int) -> int:
    raw = query.get(field)
    if raw is None:
        return default
    if not re.fullmatch(r"-?[0-9]{1,12}", raw):
        raise invalid(field, "must be an integer")
    value = int(raw)
    if not low <= value <= high:
        raise invalid(field, f"must be between {low} and {high}")
    return value


def parse_search_query(query: Any) -> tuple[str | None, list[str], str | None]:
    """?q=&tag=&tag=&failureGroup= -> (q, tags, group): q a job id or a piece of a name, every
    tag to match, the failure group (fingerprint) its failed jobs are in."""
    q = query.get("q") or None
    if q is not None and len(q) > MAX_QUERY_CHARS:
        raise invalid("q", f"must be at most {MAX_QUERY_CHARS} characters")
    tags = query.getall("tag", []) if hasattr(query, "getall") else list(filter(None, [query.get("tag")]))
    if len(tags) > MAX_TAGS:
        raise invalid("tag", f"at most {MAX_TAGS} tags")
    for tag in tags:
        if not TAG_RE.fullmatch(tag):
            raise invalid("tag", TAG_RULE)
    group = query.get("failureGroup") or None
    if group is not None and not FINGERPRINT_RE.fullmatch(group):
        raise invalid("failureGroup", "must be a failure group's fingerprint (16 hex digits)")
    return q, list(dict.fromkeys(tags)), group


def parse_list_query(query: Any) -> tuple[list[Status], str | None, str | None, int, int]:
    """?status=a,b&type=&queue=&limit=&offset= -> (statuses, queue, type, limit, offset)."""
    statuses: list[Status] = []
    raw_statuses = query.get("status", "")
    for raw in raw_statuses.split(",") if raw_statuses else []:
        try:
            statuses.append(Status(raw))
        except ValueError:
            raise invalid("status", f"unknown status; use any of {', '.join(s.value for s in Status)}") from None
    names: dict[str, str | None] = {}
    for field in ("queue", "type"):
        value = query.get(field) or None
        if value is not None and not NAME_RE.fullmatch(value):
            raise invalid(field, NAME_RULE)
        names[field] = value
    limit = _query_int(query, "limit", 50, 1, MAX_LIMIT)
    offset = _query_int(query, "offset", 0, 0, MAX_OFFSET)
    return list(dict.fromkeys(statuses)), names["queue"], names["type"], limit, offset


def parse_page_query(query: Any) -> tuple[int, int]:
    """?limit=&offset= -> (limit, offset), as GET /api/jobs takes them."""
    return _query_int(query, "limit", 50, 1, MAX_LIMIT), _query_int(query, "offset", 0, 0, MAX_OFFSET)



def _object(body: Any, allowed: AbstractSet[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "validation_error", "the request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise invalid(unknown[0], "unknown field")
    return body


def check_queue_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise invalid("name", NAME_RULE)
    return name


def parse_bulk(body: Any) -> tuple[str, list[str] | None, str | None, tuple[str, str | None] | None]:
    """{"action", "ids": [...]}, {"action", "status"} or {"action", "failureGroup", "queue"?} ->
    (action, ids, status, (fingerprint, queue or None))."""
    body = _object(body, {"action", "ids", "status", "failureGroup", "queue"})
    action = body.get("action")
    if action not in BULK_ACTIONS:
        raise invalid("action", f"must be one of {', '.join(BULK_ACTIONS)}")
    if sum(field in body for field in ("ids", "status", "failureGroup")) != 1:
        raise invalid("ids", 'give one of "ids", "status" or "failureGroup"')
    if "queue" in body and "failureGroup" not in body:
        raise invalid("queue", 'goes with "failureGroup" only')
    if "failureGroup" in body:
        group = body["failureGroup"]
        if not isinstance(group, str) or not FINGERPRINT_RE.fullmatch(group):
            raise invalid("failureGroup", "must be a failure group's fingerprint (16 hex digits)")
        queue = body.get("queue")
        if "queue" in body and (not isinstance(queue, str) or not NAME_RE.fullmatch(queue)):
            raise invalid("queue", NAME_RULE)
        return action, None, None, (group, queue)
    if "status" in body:
        if body["status"] not in STATUS_VALUES:
            raise invalid("status", f"unknown status; use any of {', '.join(STATUS_VALUES)}")
        return action, None, body["status"], None
    ids = body["ids"]
    if not isinstance(ids, list) or not ids:
        raise invalid("ids", "must be a non-empty list of job ids")
    if len(ids) > MAX_BULK_IDS:
        raise invalid("ids", f"at most {MAX_BULK_IDS} ids per request")
    if not all(isinstance(i, str) and ID_RE.fullmatch(i) for i in ids):
        raise invalid("ids", "every id must match ^[A-Za-z0-9_-]{1,64}$")
    return action, list(dict.fromkeys(ids)), None, None


def parse_clean(body: Any) -> tuple[str, int]:
    body = _object(body, {"status", "olderThanMs"})
    status = body.get("status")
    if status not in CLEANABLE:
        raise invalid("status", f"must be one of {', '.join(CLEANABLE)}")
    older_than = _int(body, "olderThanMs", 0, 0, MAX_CLEAN_AGE_MS)
    return status, older_than or 0

