"""What the Client sends: `enqueue`'s arguments as the API's create body, checked by the API's
own validation, and the error a refused one raises."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import ApiError
from .models import (
    DEFAULT_BACKOFF_MS, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_BACKOFF_MS, DEFAULT_QUEUE, DEFAULT_TYPE, NewJob, Priority,
)  # fmt: skip
from .validation import parse_new_job


class InvalidJob(ValueError):
    """A create the API would refuse with 400: the same message, and the field it is about.
    `index` is the position of the offending job in an `enqueue_many` call."""

    def __init__(self, message: str, field: str | None, index: int | None = None) -> None:
        super().__init__(message if index is None else f"jobs[{index}]: {message}")
        self.field, self.index = field, index


def new_job(*args: Any, **options: Any) -> NewJob:
    """The create request `POST /api/jobs` would get for `enqueue`'s arguments, checked by the
    API's own validation. Raises InvalidJob with the API's message."""
    body = job_body(*args, **options)
    try:
        return parse_new_job(body)
    except ApiError as error:
        raise InvalidJob(error.message, error.field) from None


def job_body(
    type: str = DEFAULT_TYPE,  # noqa: A002 - the API's name for it
    *,
    name: str,
    data: Mapping[str, Any] | None = None,
    queue: str = DEFAULT_QUEUE,
    priority: Priority | str = Priority.NORMAL,
    delay_ms: int = 0,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    backoff_ms: int = DEFAULT_BACKOFF_MS,
    max_backoff_ms: int = DEFAULT_MAX_BACKOFF_MS,
    timeout_ms: int | None = None,
    unique_key: str | None = None,
    unique_for_ms: int = 0,
    children: Sequence[Mapping[str, Any]] = (),
    on_failure: str = "fail-parent",
    tags: Sequence[str] = (),
) -> dict[str, Any]:
    """`enqueue`'s arguments as the API's create body (camelCase), children included."""
    try:
        # What the API receives is JSON: `data` goes through JSON as well, so the job holds what
        # it would hold when created over HTTP (tuples become lists; NaN or a set is refused).
        data_json = json.dumps({} if data is None else data, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidJob(f"data: must be JSON ({error})", "data") from None
    body = {
        "name": name, "type": type, "queue": queue, "data": json.loads(data_json), "priority": priority,
        "delayMs": delay_ms, "maxAttempts": max_attempts, "backoffMs": backoff_ms,
        "maxBackoffMs": max_backoff_ms, "timeoutMs": timeout_ms, "onFailure": on_failure,
        "tags": tags if isinstance(tags, str) else list(tags),  # a lone string is refused, not split
    }  # fmt: skip
    if unique_key is not None or unique_for_ms:  # only a flow's root may have them
        body.update(uniqueKey=unique_key, uniqueForMs=unique_for_ms)
    if children:
        body["children"] = [job_body(**child) for child in children]
    return body
