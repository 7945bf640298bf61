"""Progress health: telling a job that hangs while its worker is alive from one that is slow.

A job is stuck when it is active, its worker is alive, it has moved its progress at least once in
this attempt, and its progress has not moved for more than three times its average step interval
(and at least STUCK_MIN_MS). A job that never reports progress gives no pace to judge it by. The
dashboard applies the same rule (static/index.html, isStuck).
"""

from __future__ import annotations

from collections.abc import Mapping

STUCK_MIN_MS = 10_000
STUCK_FACTOR = 3
STUCK_FIELDS = ("startedAt", "progressAt", "progressSteps", "workerId")


def is_stuck(job: Mapping[str, str | None], now_ms: int, live_workers: set[str]) -> bool:
    """`job`: the STUCK_FIELDS of an active job's hash."""
    steps = int(job.get("progressSteps") or 0)
    started, moved = job.get("startedAt"), job.get("progressAt")
    if steps < 1 or not started or not moved or job.get("workerId") not in live_workers:
        return False
    average = max(int(moved) - int(started), 0) / steps
    return now_ms - int(moved) > max(STUCK_MIN_MS, STUCK_FACTOR * average)
