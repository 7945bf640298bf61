"""A queue's settings: its rate limit, its global concurrency and its retention.

`PATCH /api/admin/queues/{name}` changes any of them; a field left out keeps its value, `null`
removes it. They are kept in the queue's meta hash twice: as the API shows them (JSON, `settings`),
and flattened into the fields the Lua scripts enforce (`includes/limits.lua`, `retention.lua`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from . import scripts
from .errors import ApiError
from .store import JobStore
from .validation import invalid

FINISHED_STATUSES = ("completed", "failed", "cancelled")
MAX_RATE = 1_000_000
MAX_WINDOW_MS = 24 * 3600 * 1000
MAX_CONCURRENCY = 100_000
MAX_KEEP_COUNT = 10_000_000
MAX_AGE_MS = 10 * 365 * 24 * 3600 * 1000
SETTING_FIELDS = frozenset({"rateLimit", "concurrency", "retention"})


@dataclass(frozen=True)
class QueueSettings:
    rate_limit: dict[str, int] | None = None  # {"max", "perMs"}
    concurrency: int | None = None
    retention: dict[str, dict[str, int]] | None = None  # status -> {"maxCount"?, "maxAgeMs"?}

    def to_api(self) -> dict[str, Any]:
        return {"rateLimit": self.rate_limit, "concurrency": self.concurrency, "retention": self.retention}

    @classmethod
    def from_api(cls, shown: dict[str, Any]) -> QueueSettings:
        return cls(shown.get("rateLimit"), shown.get("concurrency"), shown.get("retention"))

    def meta_fields(self) -> list[str]:
        """Field/value pairs for the meta hash ('' removes a field), as the scripts read them."""
        rate = self.rate_limit or {}
        pairs: dict[str, Any] = {
            "concurrency": self.concurrency,
            "rateMax": rate.get("max"),
            "ratePerMs": rate.get("perMs"),
        }
        for status in FINISHED_STATUSES:
            rule = (self.retention or {}).get(status) or {}
            pairs[f"keep:{status}:count"] = rule.get("maxCount")
            pairs[f"keep:{status}:age"] = rule.get("maxAgeMs")
        return [item for name, value in pairs.items() for item in (name, "" if value is None else str(value))]


def _int_in(value: Any, path: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(path, f"must be an integer from {low} to {high}")
    return value


def _object(value: Any, path: str, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(path, "must be a JSON object or null")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise invalid(f"{path}.{unknown[0]}", f"unknown field (allowed: {', '.join(sorted(allowed))})")
    return value


def parse_patch(body: Any, current: QueueSettings) -> QueueSettings:
    """The settings after applying a PATCH body to `current`; a 400 naming the field if invalid."""
    if not isinstance(body, dict):
        raise ApiError(400, "validation_error", f"the body must be a JSON object with any of: {', '.join(sorted(SETTING_FIELDS))}")
    unknown = sorted(set(body) - SETTING_FIELDS)
    if unknown:
        raise invalid(unknown[0], f"unknown field (allowed: {', '.join(sorted(SETTING_FIELDS))})")
    rate_limit, concurrency, retention = current.rate_limit, current.concurrency, current.retention
    if "rateLimit" in body:
        rate_limit = None
        if body["rateLimit"] is not None:
            rate = _object(body["rateLimit"], "rateLimit", frozenset({"max", "perMs"}))
            if set(rate) != {"max", "perMs"}:
                raise invalid("rateLimit", 'must have "max" and "perMs"')
            rate_limit = {
                "max": _int_in(rate["max"], "rateLimit.max", 1, MAX_RATE),
                "perMs": _int_in(rate["perMs"], "rateLimit.perMs", 1, MAX_WINDOW_MS),
            }
    if "concurrency" in body:
        concurrency = None
        if body["concurrency"] is not None:
            concurrency = _int_in(body["concurrency"], "concurrency", 1, MAX_CONCURRENCY)
    if "retention" in body:
        retention = None
        if body["retention"] is not None:
            rules = _object(body["retention"], "retention", frozenset(FINISHED_STATUSES))
            retention = {}
            for status, rule in rules.items():
                path = f"retention.{status}"
                rule = _object(rule, path, frozenset({"maxCount", "maxAgeMs"}))
                if not rule:
                    raise invalid(path, 'must have "maxCount", "maxAgeMs" or both')
                retention[status] = {}
                if "maxCount" in rule:
                    retention[status]["maxCount"] = _int_in(rule["maxCount"], f"{path}.maxCount", 0, MAX_KEEP_COUNT)
                if "maxAgeMs" in rule:
                    retention[status]["maxAgeMs"] = _int_in(rule["maxAgeMs"], f"{path}.maxAgeMs", 1, MAX_AGE_MS)
            retention = retention or None
    return QueueSettings(rate_limit, concurrency, retention)


class SettingsStore:
    """Reads and writes queue settings, and runs the retention sweep."""

    def __init__(self, store: JobStore) -> None:
        self.store, self.redis, self.keys = store, store.redis, store.keys
        self._set = self.redis.register_script(scripts.SET_SETTINGS)
        self._sweep = self.redis.register_script(scripts.RETENTION)

    async def get(self, queue: str) -> QueueSettings:
        shown = await self.redis.hget(self.keys.meta(queue), "settings")
        return QueueSettings.from_api(json.loads(shown)) if shown else QueueSettings()

    async def set(self, queue: str, settings: QueueSettings) -> QueueSettings:
        shown = json.dumps(settings.to_api(), separators=(",", ":"))
        await self.redis.sadd(self.keys.queues, queue)  # a queue with a setting exists
        await self._set(
            keys=self.keys.queue_block(queue),
            args=[queue, self.keys.queue_channel(queue), shown, *settings.meta_fields()],
        )
        return settings

    async def sweep(self, queue: str, per_status: int = 200) -> int:
        """Remove the queue's finished jobs past their retention; how many went."""
        return int(await self._sweep(keys=self.keys.queue_block(queue), args=[per_status]))
