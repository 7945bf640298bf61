"""The job model: what a job is, how it is stored in its Redis hash, and how the API shows it."""

from __future__ import annotations

import json
import time
import typing
from dataclasses import dataclass, field, fields
from enum import Enum, StrEnum
from typing import Any


class Status(StrEnum):
    WAITING = "waiting"
    DELAYED = "delayed"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    WAITING_CHILDREN = "waiting-children"  # a parent whose children have not all finished


class OnFailure(StrEnum):
    """What a child's failure (or cancel, or removal) does to its parent."""

    FAIL_PARENT = "fail-parent"
    IGNORE = "ignore"


class Priority(StrEnum):
    NORMAL = "normal"
    HIGH = "high"


STATUSES: tuple[str, ...] = tuple(s.value for s in Status)
FINISHED: frozenset[Status] = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})

DEFAULT_TYPE = "demo"
DEFAULT_QUEUE = "default"
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_BACKOFF_MS = 1000
DEFAULT_MAX_BACKOFF_MS = 3_600_000  # a retry never waits longer than this (scripts.FAIL)
LOG_CAP = 1000  # lines kept per job, newest last
LOG_LINE_MAX = 2000  # characters per log line
EVENTS_CAP = 100  # custom events (ctx.emit) kept per job, newest last
STATE_MAX_BYTES = 64 * 1024  # a saved state, JSON-encoded
EVENT_DATA_MAX_BYTES = 16 * 1024  # a custom event's data, JSON-encoded
ACTION_MAX = 500  # characters of the current step's text
REASON_MAX = 2000  # characters of a failure's reason

def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Job:
    id: str
    name: str
    type: str = DEFAULT_TYPE
    queue: str = DEFAULT_QUEUE
    data: dict[str, Any] = field(default_factory=dict)
    status: Status = Status.WAITING
    priority: Priority = Priority.NORMAL
    progress: int = 0
    action: str | None = None
    attempts_made: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff_ms: int = DEFAULT_BACKOFF_MS
    max_backoff_ms: int = DEFAULT_MAX_BACKOFF_MS
    timeout_ms: int | None = None
    created_at: int | None = None
    started_at: int | None = None
    finished_at: int | None = None
    run_at: int | None = None
    failed_reason: str | None = None
    result: Any = None
    worker_id: str | None = None
    parent_id: str | None = None
    # A parent's children: {"total", "completed", "failed", "cancelled", "pending"}; None if it has none.
    children: dict[str, Any] | None = None
    schedule_id: str | None = None  # the schedule that created it
    # While this job is unfinished (and for unique_for_ms after its creation), a create with the
    # same key in its queue returns this job instead of creating one.
    unique_key: str | None = None
    tags: list[str] = field(default_factory=list)
    progress_at: int | None = None  # epoch ms of the last progress change
    progress_steps: int = 0  # progress changes in the current attempt (progress health)
    failure_group: str | None = None  # the fingerprint of its last failure (failure groups)
    rev: int = 0
    # The handler's saved checkpoint (ctx.save_state): only the single-job view shows it.
    state: dict[str, Any] | None = field(default=None, metadata={"api": False})
    # Internal bookkeeping, stored but not shown by the API:
    recoveries: int = field(default=0, metadata={"api": False})  # times its worker was lost under it
    token: int = field(default=0, metadata={"api": False})  # lease fence: grows with every claim
    unique_for_ms: int | None = field(default=None, metadata={"api": False})
    parent_queue: str | None = field(default=None, metadata={"api": False})
    on_failure: str | None = field(default=None, metadata={"api": False})  # OnFailure; None: fail-parent

    def to_redis(self) -> dict[str, str]:
        """The hash fields; a None value is stored as an absent field."""
        out: dict[str, str] = {}
        for name, attr in _FIELD_ATTRS.items():
            value = getattr(self, attr)
            if value is None:
                continue
            if name in _JSON_FIELDS:
                out[name] = json.dumps(value, separators=(",", ":"))
            elif isinstance(value, Enum):
                out[name] = value.value
            else:
                out[name] = str(value)
        return out

    @classmethod
    def from_redis(cls, fields: dict[str, str]) -> Job:
        kwargs: dict[str, Any] = {}
        for name, attr in _FIELD_ATTRS.items():
            raw = fields.get(name)
            if raw is None:
                continue
            if name in _JSON_FIELDS:
                kwargs[attr] = json.loads(raw)
            elif name in _INT_FIELDS:
                kwargs[attr] = int(raw)
            else:
                kwargs[attr] = raw
        kwargs["status"] = Status(kwargs.get("status", Status.WAITING))
        kwargs["priority"] = Priority(kwargs.get("priority", Priority.NORMAL))
        return cls(**kwargs)

    def to_api(self, logs: list[str] | None = None, events: list[Any] | None = None) -> dict[str, Any]:
        """The API's job; with `logs` (and `events`), the single-job view, which also shows the
        saved state."""
        out: dict[str, Any] = {}
        for name in API_FIELDS:
            value = getattr(self, _FIELD_ATTRS[name])
            out[name] = value.value if isinstance(value, Enum) else value
        if logs is not None:
            out["logs"] = logs
            out["events"] = events or []
            out["state"] = self.state or {}
        return out


# Everything about a job's fields is derived from the Job dataclass above, so that a new field is
# a one-place change: its camelCase name (hash field and API key), whether it is stored as an
# integer or as JSON text, and whether the API shows it.
def _camel(attr: str) -> str:
    head, *rest = attr.split("_")
    return head + "".join(part.title() for part in rest)


_HINTS = typing.get_type_hints(Job)
_FIELD_ATTRS: dict[str, str] = {_camel(f.name): f.name for f in fields(Job)}
_INT_FIELDS = frozenset(
    {_camel(f.name) for f in fields(Job) if _HINTS[f.name] in (int, int | None)} | {"seq"}  # seq: hash only
)
_JSON_FIELDS = frozenset(
    _camel(f.name)
    for f in fields(Job)
    if _HINTS[f.name] in (Any, dict[str, Any], dict[str, Any] | None, list[str])
)
# The API's job fields, in order. scripts.py builds the same JSON in Lua for events; a test holds
# the two to the same output.
API_FIELDS: tuple[str, ...] = tuple(_camel(f.name) for f in fields(Job) if f.metadata.get("api", True))
# The API fields whose stored text is already JSON (numbers, data, result): events embed them raw.
RAW_API_FIELDS: tuple[str, ...] = tuple(n for n in API_FIELDS if n in _INT_FIELDS or n in _JSON_FIELDS)


@dataclass(frozen=True)
class NewJob:
    """A validated create request."""

    name: str
    type: str
    queue: str
    data: dict[str, Any]
    priority: Priority
    delay_ms: int
    max_attempts: int
    backoff_ms: int
    timeout_ms: int | None
    max_backoff_ms: int = DEFAULT_MAX_BACKOFF_MS
    unique_key: str | None = None
    unique_for_ms: int = 0
    children: tuple[NewJob, ...] = ()
    on_failure: OnFailure = OnFailure.FAIL_PARENT
    job_id: str | None = None  # given (a schedule's job for one due time), else a fresh one
    schedule_id: str | None = None
    tags: tuple[str, ...] = ()

    def tree_size(self) -> int:
        return 1 + sum(child.tree_size() for child in self.children)
