"""The job model: what a job is, its statuses and priorities.

It lives in `jobline.models` (dataclasses and str Enums, stored as a Redis hash, shown as camelCase
JSON); this file gives it its card name, for `from models import Job`.
"""

from jobline.models import FINISHED, STATUSES, Job, NewJob, Priority, Status

__all__ = ["FINISHED", "STATUSES", "Job", "NewJob", "Priority", "Status"]
