"""Lua scripts for every multi-key change, registered once per client by store.py.

Each script is a file, `lua/<name>.lua`, that opens with its KEYS/ARGV header and names its keys
at the top; this module loads each one once, at import, as the constant `<NAME>` (Lua source).
Two things are expanded on load, and an unknown one raises `ScriptError` there, not at run time:

- `--@include <name>` (a line of its own) is replaced by `lua/includes/<name>.lua`. Includes may
  include others; each goes in once per script. `queue_block` includes `prelude`.
- `{{NAME}}` is replaced by a constant from Python (`CONSTANTS` below), so limits live here.

Every job-changing script includes `queue_block`, and so takes the same *queue block* as
KEYS[1..B] (see `Keys.queue_block`; `includes/queue_block.lua` names them, B is its BLOCK), then
its own keys from KEYS[B+1]:

    KEYS[1]      the queue's event log (capped; its entry id is the queue's part of the SSE id)
    KEYS[2..8]   the queue's wait list, high-priority set, delayed set, paused list, meta hash,
                 rate hash and recent failures
    KEYS[9..B]   the queue's status indexes, in models.STATUSES order

Every key a script is given or builds is in one queue's slot (keys.py), so each runs on one shard
of a Redis Cluster; no script touches a global key. Each change bumps the job's `rev`, appends the
event to the queue's log and publishes it, in one atomic step, so listeners see a job's events in
rev order. Time comes from Redis `TIME`, one clock for every host. User text only ever arrives in
ARGV.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path

from .models import API_FIELDS, DEFAULT_MAX_BACKOFF_MS, RAW_API_FIELDS, STATUSES, Job

EVENTS_CAP = 10_000
EVENTS_MAX_BYTES = 64 * 1024 * 1024  # the event log keeps at most this much (and EVENTS_CAP events)
EVENTS_TRIM_STEP = EVENTS_MAX_BYTES // 256  # how often (in bytes appended) the byte cap is checked
EVENT_FIELD_MAX = 4096  # an event's job leaves out data and result when either is longer
RECENT_FAILURES = 10
# A queue at its concurrency limit is asked again this often by each worker held back (a job of
# it may finish any time; a rate limit says when it frees up).
CONCURRENCY_RECHECK_MS = 250
# Upper bounds (seconds) of the job duration histogram; +Inf is implied.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)

LUA_DIR = Path(__file__).with_name("lua")


def _lua_table(items: Iterable[str]) -> str:
    return "{" + ", ".join(items) + "}"


# What each {{NAME}} in the Lua stands for (Lua source text).
CONSTANTS: dict[str, str] = {
    "API_FIELDS": _lua_table(f"'{name}'" for name in API_FIELDS),
    "RAW_API_FIELDS": _lua_table(f"{name} = true" for name in RAW_API_FIELDS),
    "STATUS_SLOT": _lua_table(f"['{status}'] = {i}" for i, status in enumerate(STATUSES)),
    "DURATION_BUCKETS": _lua_table(repr(b) for b in DURATION_BUCKETS),
    "EVENTS_CAP": str(EVENTS_CAP),
    "EVENTS_MAX_BYTES": str(EVENTS_MAX_BYTES),
    "EVENTS_TRIM_STEP": str(EVENTS_TRIM_STEP),
    "EVENT_FIELD_MAX": str(EVENT_FIELD_MAX),
    "RECENT_FAILURES": str(RECENT_FAILURES),
    "DEFAULT_MAX_BACKOFF_MS": str(DEFAULT_MAX_BACKOFF_MS),
    "QUEUE_BLOCK_SIZE": str(8 + len(STATUSES)),  # keys.Keys.queue_block
    "CONCURRENCY_RECHECK_MS": str(CONCURRENCY_RECHECK_MS),
}

_INCLUDE = re.compile(r"^--@include[ \t]+(\S+)[ \t]*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


class ScriptError(ValueError):
    """A Lua file names an include or a placeholder that does not exist."""


@cache
def _read(path: Path) -> str:
    if not path.is_file():
        raise ScriptError(f"no such Lua file: {path}")
    return path.read_text(encoding="utf-8")


def load(name: str, root: Path = LUA_DIR, constants: Mapping[str, str] = CONSTANTS) -> str:
    """The Lua source of `root/<name>.lua`, its includes and placeholders expanded."""
    included: set[str] = set()

    def expand(path: Path) -> str:
        def include(match: re.Match[str]) -> str:
            dep = match.group(1)
            if dep in included:
                return ""
            included.add(dep)
            try:  # the marker line finds it again from a Redis error's line number
                return f"-- includes/{dep}.lua\n" + expand(root / "includes" / f"{dep}.lua")
            except ScriptError as error:
                raise ScriptError(f"{path.name}: --@include {dep}: {error}") from None

        return _INCLUDE.sub(include, _read(path))

    def constant(match: re.Match[str]) -> str:
        if match.group(1) not in constants:
            raise ScriptError(f"{name}.lua: no constant for placeholder {match.group(0)}")
        return constants[match.group(1)]

    source = _PLACEHOLDER.sub(constant, expand(root / f"{name}.lua"))
    for mark in ("{{", "--@include"):  # malformed (`{{ X }}`) or misplaced (not at a line's start)
        if mark in source:
            raise ScriptError(f"{name}.lua: left unexpanded: {source[source.index(mark):][:40]!r}")
    return source


ENQUEUE = load("enqueue")


def enqueue_fields(job: Job) -> list[str]:
    """A job's field/value pairs as ENQUEUE takes them: its hash, and its name casefolded for the
    search index (lua/includes/findable.lua), which is not saved."""
    return [item for pair in job.to_redis().items() for item in pair] + ["foldedName", job.name.casefold()]


CLAIM = load("claim")
UPDATE = load("update")
EMIT = load("emit")
COMPLETE = load("complete")
FAIL = load("fail")
REQUEUE = load("requeue")
RECOVER_ORPHANS = load("recover_orphans")
PROMOTE_DUE = load("promote_due")
PAGE = load("page")
SEARCH = load("search")
FAILURE_GROUPS = load("failure_groups")
# API actions on one job: ARGV[1] id, ARGV[2] job channel; each returns {outcome, detail}.
CANCEL = load("cancel")
RETRY = load("retry")
PROMOTE = load("promote")
SET_PRIORITY = load("set_priority")
DELETE = load("delete")
# Queue and worker bookkeeping.
SET_PAUSED = load("set_paused")
DELETE_QUEUE = load("delete_queue")
SET_SETTINGS = load("set_settings")
FLOW_STEP = load("flow_step")
FLOW_RETRY = load("flow_retry")
SCHEDULE_ADVANCE = load("schedule_advance")
RETENTION = load("retention")
IDEMPOTENCY_FINISH = load("idempotency_finish")
HEARTBEAT = load("heartbeat")
