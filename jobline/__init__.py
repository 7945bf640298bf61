"""Jobline: a job queue on Redis, with a live dashboard.

    from jobline import Client, SyncClient, Job, Status, RateLimited

The names here are loaded on first use, so `import jobline.models` (or `keys`, `validation`) stays
free of redis and aiohttp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import Client, InvalidJob, JobNotFound, JobStateConflict, SyncClient
    from .context import RateLimited
    from .schedules import ScheduleNotFound
    from .models import Job, Status

# public name -> the module that defines it
_EXPORTS = {
    "Client": "client",
    "SyncClient": "client",
    "InvalidJob": "client",
    "JobNotFound": "client",
    "JobStateConflict": "client",
    "Job": "models",
    "Status": "models",
    "RateLimited": "context",
    "ScheduleNotFound": "schedules",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next lookup does not come here
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
