"""The Python client: enqueue, read, wait for and act on jobs straight on Redis, with no HTTP hop.

    async with Client("redis://localhost:6379/0") as jl:
        job = await jl.enqueue("email", name="welcome", data={"to": "a@example.com"})
        job = await jl.wait(job.id, timeout=30)

It shares its code path with the HTTP API: a create goes through `validation.parse_new_job` (the
same camelCase body `POST /api/jobs` takes) and then `JobStore.enqueue`, so the two cannot drift.
`SyncClient` is the same client for code without an event loop (WSGI apps, scripts).
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import weakref
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar


from .connections import UNAVAILABLE, Subscribers, connect
from .keys import DEFAULT_PREFIX, Keys
from .models import (
    DEFAULT_BACKOFF_MS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_BACKOFF_MS,
    DEFAULT_QUEUE,
    DEFAULT_TYPE,
    FINISHED,
    Job,
    Priority,
)
from .store import JobNotFound, JobStateConflict, JobStore
from .client_admin import ClientAdmin
from .client_bodies import InvalidJob, new_job
from .failures import FailureGroups
from .search import Search
from .queue_settings import SettingsStore
from .schedules import ScheduleStore
from .validation import ID_RE

__all__ = ["Client", "InvalidJob", "JobNotFound", "JobStateConflict", "SyncClient"]

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
_FINISHED = frozenset(s.value for s in FINISHED)


class Client(ClientAdmin):
    """Jobs on Redis, for asyncio code. One client per event loop; it is safe to share between
    that loop's tasks. Its Redis connections open on first use; `close()` (or `async with`)
    closes them."""

    def __init__(
        self, redis_url: str = DEFAULT_REDIS_URL, *, prefix: str = DEFAULT_PREFIX, cluster: bool = False
    ) -> None:
        self.redis = connect(redis_url, cluster=cluster)
        self.keys = Keys(prefix)
        self.store = JobStore(self.redis, self.keys)
        self.subscribers = Subscribers(self.redis)  # for wait(): on a cluster, one node at a time
        self.queue_settings = SettingsStore(self.store)
        self.schedules_store = ScheduleStore(self.store)
        self.search = Search(self.store)
        self.failures = FailureGroups(self.store)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.subscribers.aclose()
        await self.redis.aclose()

    async def enqueue(
        self,
        type: str = DEFAULT_TYPE,  # noqa: A002
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
    ) -> Job:
        """Create a job, as `POST /api/jobs` does (same options, camelCase there). Returns it
        `waiting` (or `delayed` with `delay_ms`; `waiting-children` with `children`, each a dict
        of these same arguments, whole trees created at once). Raises InvalidJob with the API's
        message."""
        new = new_job(
            type, name=name, data=data, queue=queue, priority=priority, delay_ms=delay_ms,
            max_attempts=max_attempts, backoff_ms=backoff_ms, max_backoff_ms=max_backoff_ms,
            timeout_ms=timeout_ms, unique_key=unique_key, unique_for_ms=unique_for_ms, children=children,
            on_failure=on_failure, tags=tags,
        )  # fmt: skip
        return await self.store.enqueue(new)

    async def enqueue_many(self, jobs: Sequence[Mapping[str, Any]]) -> list[Job]:
        """Create several jobs in one round trip; each item holds `enqueue`'s keyword arguments
        (`type` included). All are checked first: one invalid item raises (InvalidJob, or
        TypeError for an unknown option, naming its index) and no job is created. Returns the
        jobs in the order given."""
        news = []
        for index, spec in enumerate(jobs):
            if not isinstance(spec, Mapping):
                raise TypeError(f"jobs[{index}]: expected a dict of enqueue options, got {type(spec).__name__}")
            try:
                news.append(new_job(**spec))
            except InvalidJob as error:
                raise InvalidJob(str(error), error.field, index) from None
            except TypeError as error:  # an unknown or missing option
                raise TypeError(f"jobs[{index}]: {error}") from None
        return await self.store.enqueue_many(news) if news else []

    async def get(self, job_id: str) -> Job:
        """The job as it is now. Raises JobNotFound."""
        job, _ = await self.store.get(_job_id(job_id))
        return job

    async def cancel(self, job_id: str) -> Job:
        """Cancel a waiting, delayed or active job (its worker is told to stop it). Raises
        JobNotFound, or JobStateConflict for a job that already finished."""
        return await self.store.cancel(_job_id(job_id))

    async def retry(self, job_id: str) -> Job:
        """Put a failed or cancelled job back in line. Raises JobNotFound or JobStateConflict."""
        return await self.store.retry(_job_id(job_id))

    async def delete(self, job_id: str) -> None:
        """Remove the job everywhere (an active one is stopped first). Raises JobNotFound."""
        await self.store.delete(_job_id(job_id))

    async def children(self, job_id: str) -> list[Job]:
        """A parent's children, in creation order. Raises JobNotFound."""
        await self.store.get(_job_id(job_id))
        jobs, _ = await self.store.children(job_id, 1000, 0)
        return jobs

    async def wait(self, job_id: str, timeout: float | None = 30.0) -> Job:
        """The job once it is finished (completed, failed or cancelled). Raises TimeoutError after
        `timeout` seconds (None: no limit), JobNotFound if it does not exist or is deleted meanwhile.

        No polling: it subscribes to the job's channel, then reads the job (it may be finished
        already), then sleeps until an event says the job finished. Subscribing first means no
        change can fall between the read and the subscription."""
        job_id = _job_id(job_id)
        async with asyncio.timeout(timeout):
            while True:
                try:
                    return await self._wait_subscribed(job_id)
                except _SubscriptionLost:
                    await asyncio.sleep(0.05)  # subscribe again, then read the job again

    async def _wait_subscribed(self, job_id: str) -> Job:
        pubsub = (await self.subscribers.get()).pubsub()
        try:
            await pubsub.subscribe(self.keys.job_channel(job_id))
            # The confirmation says Redis has registered the subscription: from here on no event
            # is missed, so the read below cannot be stale without a message following it.
            while (await pubsub.get_message(timeout=None) or {}).get("type") != "subscribe":
                pass
            job = await self.get(job_id)
            while job.status not in FINISHED:
                try:
                    await _until_finished(pubsub, job_id)
                except UNAVAILABLE:
                    self.subscribers.failed()
                    raise _SubscriptionLost from None  # events may have been missed meanwhile
                job = await self.get(job_id)  # the whole job (an event may leave out data/result)
            return job
        finally:
            await pubsub.aclose()


class _SubscriptionLost(Exception):
    pass


async def _until_finished(pubsub: Any, job_id: str) -> None:
    """Sleep until an event on the job's channel says it finished; JobNotFound if it was removed.
    An event it cannot read also returns, so the caller reads the job itself."""
    while True:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
        if message is None or message.get("type") != "message":
            continue
        try:
            _, _, event, payload = message["data"].split("\n", 3)  # "<queue>\n<entry id>\n<event>\n<json>"
            if event == "job-removed":
                raise JobNotFound(job_id)
            if event != "job" or json.loads(payload)["job"]["status"] in _FINISHED:
                return
        except (ValueError, KeyError, TypeError):
            return


def _job_id(job_id: str) -> str:
    """An id the API would 404 on is not found here either (it must not shape a key)."""
    if not isinstance(job_id, str) or not ID_RE.fullmatch(job_id):
        raise JobNotFound(job_id)
    return job_id


# -- the synchronous twin ---------------------------------------------------------------------

P = ParamSpec("P")
R = TypeVar("R")


def _blocking(
    method: Callable[Concatenate[Client, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[SyncClient, P], R]:
    """Client's coroutine method as a plain call that runs it on the SyncClient's loop."""

    @functools.wraps(method)
    def call(self: SyncClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._run(lambda: method(self._client, *args, **kwargs))

    return call


class SyncClient:
    """`Client` for code without an event loop: the same methods as plain calls. It runs one
    private event loop in a daemon thread and hands each call to it, so it is safe to share
    between threads (a WSGI app's, say). `close()` (or `with`) stops the thread. Create it after
    forking (e.g. in a gunicorn `post_fork` hook or lazily), as threads do not survive a fork."""

    def __init__(
        self, redis_url: str = DEFAULT_REDIS_URL, *, prefix: str = DEFAULT_PREFIX, cluster: bool = False
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="jobline-client", daemon=True)
        self._thread.start()
        # Not closed before it is garbage collected (or failing here): stop the loop thread anyway.
        self._finalizer = weakref.finalize(self, _stop_loop, self._loop, self._thread)
        self._lock = threading.Lock()
        self._closed = False
        try:
            self._client = self._run(lambda: _make_client(redis_url, prefix, cluster))
        except BaseException:
            self._finalizer()
            raise

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _run(self, make: Callable[[], Coroutine[Any, Any, R]]) -> R:
        with self._lock:
            if self._closed:
                raise RuntimeError("this SyncClient is closed")
            future: Future[R] = asyncio.run_coroutine_threadsafe(make(), self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. Ctrl-C in the calling thread: stop the call too
            raise

    enqueue = _blocking(Client.enqueue)
    enqueue_many = _blocking(Client.enqueue_many)
    get = _blocking(Client.get)
    cancel = _blocking(Client.cancel)
    retry = _blocking(Client.retry)
    delete = _blocking(Client.delete)
    wait = _blocking(Client.wait)
    set_queue_settings = _blocking(Client.set_queue_settings)
    children = _blocking(Client.children)
    find = _blocking(Client.find)
    failure_groups = _blocking(Client.failure_groups)
    add_schedule = _blocking(Client.add_schedule)
    schedules = _blocking(Client.schedules)
    trigger_schedule = _blocking(Client.trigger_schedule)
    remove_schedule = _blocking(Client.remove_schedule)

    def close(self) -> None:
        """Stop the calls still running (they raise CancelledError), close the connections and
        the loop thread. Calls after this raise RuntimeError."""
        with self._lock:
            if self._closed:
                return
            closing = asyncio.run_coroutine_threadsafe(_shut_down(self._client), self._loop)
            self._closed = True
        try:
            closing.result()
        finally:
            self._finalizer()


async def _make_client(redis_url: str, prefix: str, cluster: bool) -> Client:
    return Client(redis_url, prefix=prefix, cluster=cluster)  # made on the loop that will use it


async def _shut_down(client: Client) -> None:
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    await client.close()


def _stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    if loop.is_closed():
        return
    loop.call_soon_threadsafe(loop.stop)
    if thread is not threading.current_thread():  # collected on the loop's own thread: just stop
        thread.join()
        loop.close()
