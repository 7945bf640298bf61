"""Faults: worker churn under load, Redis restarts and outages, server restarts under a watching
dashboard, and start-up warnings about a Redis that could lose jobs.

Everything is real: redis-server processes, `python worker.py` subprocesses, the aiohttp app.
Tests that stop, restart or freeze Redis use a redis-server of their own (AOF on, in tmp_path), never
the session one. Each test body runs under a hard `asyncio.timeout`, and every process a test starts
is stopped in a `finally` (a frozen Redis gets SIGCONT first).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis

from jobline.keys import Keys
from jobline.models import Priority
from jobline.server import Settings, create_app
from jobline.connections import connect
from jobline.models import NewJob
from jobline.store import JobStore
from tests.conftest import ROOT, TEST_HANDLERS, RedisProcess, create_job, wait_until
from tests.sse import Event, SSEReader

K = Keys()
FINISHED = ("completed", "failed", "cancelled")
PROCESSING_PATTERN = f"{K.prefix}:queue:*:processing:*"


# -- processes -------------------------------------------------------------------------------------
class LoggedWorker:
    """`python worker.py` as a subprocess whose output goes to a file (a pipe nobody reads could
    fill up and block a long-running worker)."""

    def __init__(self, redis_url: str, log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, str(ROOT / "worker.py"), "--redis-url", redis_url, "--tasks", TEST_HANDLERS, *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    async def terminate(self, timeout: float = 20) -> int:
        """SIGTERM, then wait (without blocking the loop) for it to exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.proc.poll() is None:
            raise AssertionError(f"worker {self.pid} still running {timeout} s after SIGTERM:\n{self.output()}")
        return self.proc.returncode

    def stop(self) -> None:
        self.kill()
        self._log.close()

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., LoggedWorker]]:
    """Start worker subprocesses against any Redis URL; every one is killed when the test ends."""
    started: list[LoggedWorker] = []

    def start(redis_url: str, *args: str) -> LoggedWorker:
        worker = LoggedWorker(redis_url, tmp_path / f"worker-{len(started)}.log", *args)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of this test's own, AOF on, that it may stop, restart and freeze."""
    workdir = tmp_path / "own-redis"
    workdir.mkdir()
    server = RedisProcess(workdir, appendonly=True)
    server.start()
    try:
        yield server
    finally:
        if server.proc and server.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.proc.pid, signal.SIGCONT)  # in case a test left it frozen
        server.stop()


@contextlib.asynccontextmanager
async def frozen(server: RedisProcess) -> AsyncIterator[None]:
    """Redis stopped with SIGSTOP: connections are accepted by the kernel, nothing answers."""
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)


async def own_client(url: str) -> redis.Redis:
    return connect(url, socket_timeout=5)


# -- helpers ---------------------------------------------------------------------------------------
async def processing_lists(client: redis.Redis) -> dict[str, int]:
    """Every worker processing list in Redis (SCAN: fine in a test) and its length."""
    found: dict[str, int] = {}
    async for key in client.scan_iter(match=PROCESSING_PATTERN, count=1000):
        found[key] = await client.llen(key)
    return found


async def status_counts(client: redis.Redis) -> dict[str, int]:
    async with client.pipeline(transaction=True) as pipe:
        for status in ("waiting", "delayed", "active", *FINISHED):
            pipe.zcard(K.queue_status_index("default", status))
        replies = await pipe.execute()
    return dict(zip(("waiting", "delayed", "active", *FINISHED), replies))


async def job_fields(client: redis.Redis, ids: list[str], *fields: str) -> list[list[str | None]]:
    out: list[list[str | None]] = []
    for start in range(0, len(ids), 1000):
        async with client.pipeline(transaction=False) as pipe:
            for job_id in ids[start : start + 1000]:
                pipe.hmget(K.job(job_id), list(fields))
            out += await pipe.execute()
    return out


async def registered_worker_pids(client: redis.Redis) -> dict[str, int]:
    ids = await client.zrange(K.workers, 0, -1)
    pids = {}
    for worker_id in ids:
        pid = await client.hget(K.worker(worker_id), "pid")
        if pid is not None:
            pids[worker_id] = int(pid)
    return pids


async def api_up(client: Any) -> bool:
    with contextlib.suppress(Exception):
        return (await client.get("/healthz")).status == 200
    return False


async def open_stream(client: Any, last_event_id: str | None = None) -> SSEReader:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    response = await client.get("/api/jobs/stream", headers=headers)
    assert response.status == 200, await response.text()
    return SSEReader(response)


def event_key(event_id: str) -> tuple[int, int]:
    """The default queue's position in an SSE id, comparable."""
    ms, seq = position(event_id).split("-")
    return int(ms), int(seq)


LOG = K.event_log("default")  # these tests' jobs are all in the default queue


def as_events(entries: list[tuple[str, dict[str, str]]]) -> list[tuple[str, str, str]]:
    """XRANGE entries of the default queue's log as (id, event, data): what the SSE stream must
    send for each (its id the stream's cursor, which has only that queue)."""
    return [(f"default={entry_id}", fields["e"], fields["d"]) for entry_id, fields in entries]


def position(sse_id: str | None) -> str:
    """The default queue's log entry id in an SSE id."""
    return (sse_id or "").removeprefix("default=")


def triples(events: list[Event]) -> list[tuple[str | None, str, str]]:
    return [(e.id, e.event, e.data) for e in events]


# == 1. churn: workers killed with SIGKILL and replaced while 5,000 jobs run ========================
CHURN_JOBS = 5_000
CHURN_WORKERS = 3
CHURN_LEASE_MS = 1500
CHURN_KILL_EVERY_S = 2.0


async def test_churn_5000_jobs_while_a_worker_is_killed_and_replaced_every_2_s(
    store: JobStore, redis_client: redis.Redis, redis_url: str, client: Any, workers: Any
) -> None:
    lease = ("--lease-ms", str(CHURN_LEASE_MS))
    async with asyncio.timeout(90):
        started = time.monotonic()
        pool = [workers(redis_url, *lease) for _ in range(CHURN_WORKERS)]
        await wait_until(lambda: registered_count(redis_client, CHURN_WORKERS), timeout=20)

        new = NewJob(
            name="churn", type="sleep", queue="default", data={"ms": 20}, priority=Priority.NORMAL,
            delay_ms=0, max_attempts=3, backoff_ms=1000, timeout_ms=None,
        )  # fmt: skip
        ids: list[str] = []
        enqueued_s = 0.0

        async def enqueue_all() -> None:  # runs while the churn below has already begun
            nonlocal enqueued_s
            for _ in range(0, CHURN_JOBS, 50):  # the test client's pool holds 100 connections
                ids.extend(job.id for job in await asyncio.gather(*(store.enqueue(new) for _ in range(50))))
            enqueued_s = time.monotonic() - started

        enqueuing = asyncio.create_task(enqueue_all())
        kills = 0
        turn = 0
        next_kill = time.monotonic() + CHURN_KILL_EVERY_S
        try:
            while True:
                if enqueuing.done():
                    await enqueuing  # its error, if any
                    counts = await status_counts(redis_client)
                    if sum(counts[s] for s in FINISHED) >= CHURN_JOBS:
                        break
                for worker in pool:  # nobody else may die: a worker that exits on its own is a failure
                    assert worker.alive(), worker.output()
                if time.monotonic() >= next_kill:
                    victim = turn % CHURN_WORKERS
                    pool[victim].kill()
                    assert pool[victim].proc.returncode == -signal.SIGKILL
                    pool[victim] = workers(redis_url, *lease)
                    kills += 1
                    turn += 1
                    next_kill = time.monotonic() + CHURN_KILL_EVERY_S
                await asyncio.sleep(0.05)
        finally:
            if not enqueuing.done():
                enqueuing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await enqueuing
        all_finished_s = time.monotonic() - started
        assert len(set(ids)) == len(ids) == CHURN_JOBS

        # the last victims' claims are reaped within the lease; then nothing is held anywhere
        async def settled() -> bool:
            counts = await status_counts(redis_client)
            return (
                counts["completed"] + counts["failed"] + counts["cancelled"] == CHURN_JOBS
                and counts["active"] == counts["waiting"] == counts["delayed"] == 0
                and not any((await processing_lists(redis_client)).values())
            )

        await wait_until(settled, timeout=CHURN_LEASE_MS / 1000 + 15, interval=0.1)
        elapsed = time.monotonic() - started

        counts = await status_counts(redis_client)
        rows = await job_fields(redis_client, ids, "status", "attemptsMade", "result", "failedReason")
        by_status = collections.Counter(row[0] for row in rows)
        attempts = collections.Counter(int(row[1] or 0) for row in rows)
        duplicates = sum(n for made, n in attempts.items() if made > 1)
        print(
            f"\nchurn: {CHURN_JOBS} jobs, {kills} SIGKILLs (one every {CHURN_KILL_EVERY_S:.0f} s), "
            f"enqueued in {enqueued_s:.1f} s, all finished after {all_finished_s:.1f} s, settled after "
            f"{elapsed:.1f} s; duplicates (attemptsMade > 1): {duplicates}; attempts histogram "
            f"{dict(sorted(attempts.items()))}; statuses {dict(by_status)}"
        )
        failed = [(job_id, row) for job_id, row in zip(ids, rows) if row[0] != "completed"]
        assert not failed, failed[:10]
        assert by_status == {"completed": CHURN_JOBS}
        assert counts == {"waiting": 0, "delayed": 0, "active": 0, "completed": CHURN_JOBS, "failed": 0, "cancelled": 0}
        assert all(json.loads(row[2] or "null") == {"slept": 20} for row in rows)
        assert kills >= 3, f"the jobs ran in {all_finished_s:.1f} s: too fast for any churn"
        assert attempts[0] == 0
        assert await redis_client.llen(K.wait("default")) == 0
        assert await redis_client.zcard(K.delayed("default")) == 0
        assert await processing_lists(redis_client) == {}
        listed = await client.get("/api/jobs", params={"limit": "1"})
        assert (await listed.json())["total"] == CHURN_JOBS
        assert await redis_client.zcard(K.queue_jobs("default")) == CHURN_JOBS
        # the killed workers leave the registry (reaped after their lease); the survivors are in it
        alive = {w.pid for w in pool if w.alive()}
        assert len(alive) == CHURN_WORKERS

        async def registry_is_the_survivors() -> bool:
            return set((await registered_worker_pids(redis_client)).values()) == alive

        await wait_until(registry_is_the_survivors, timeout=CHURN_LEASE_MS / 1000 + 10, interval=0.1)


async def registered_count(client: redis.Redis, count: int) -> bool:
    return await client.zcard(K.workers) >= count


# == 2. Redis restarts (AOF) while jobs run ==========================================================
async def test_redis_restart_while_jobs_run_every_accepted_job_completes_and_the_worker_reconnects(
    own_redis: RedisProcess, aiohttp_client: Any, workers: Any
) -> None:
    async with asyncio.timeout(120):
        client = await aiohttp_client(create_app(Settings(redis_url=own_redis.url)))
        direct = await own_client(own_redis.url)
        try:
            worker = workers(own_redis.url, "--lease-ms", "3000")
            await wait_until(lambda: registered_count(direct, 1), timeout=20)
            accepted = [
                (await create_job(client, name=f"agent-{i}", data={"steps": 5, "stepMs": 100}))["id"] for i in range(30)
            ]

            async def some_done_some_running() -> bool:
                counts = await status_counts(direct)
                return counts["completed"] >= 3 and counts["active"] >= 1

            await wait_until(some_done_some_running, timeout=30)
            states = await job_fields(direct, accepted, "status")
            active_at_stop = [job_id for job_id, (status,) in zip(accepted, states) if status == "active"]

            own_redis.stop()  # SIGTERM: Redis flushes its AOF and exits
            stopped_at = time.monotonic()
            during: list[int] = []
            while time.monotonic() - stopped_at < 1.0:  # the API keeps answering, with 503
                t0 = time.monotonic()
                response = await client.post("/api/jobs", json={"name": "during the outage"})
                during.append(response.status)
                assert time.monotonic() - t0 < 2
                if response.status == 201:
                    accepted.append((await response.json())["id"])
                else:
                    assert response.status == 503, await response.text()
                    assert (await response.json())["error"]["code"] == "unavailable"
                await asyncio.sleep(0.1)
            own_redis.start()  # same port, same AOF
            restarted_at = time.monotonic()

            await wait_until(lambda: api_up(client), timeout=10)
            api_back_s = time.monotonic() - restarted_at
            await direct.aclose()  # the test's own client: fresh connections (pipelines do not retry)
            direct = await own_client(own_redis.url)
            for i in range(5):  # created after the restart, without restarting the app
                accepted.append((await create_job(client, name=f"after-{i}", type="noop"))["id"])

            async def all_finished() -> bool:
                rows = await job_fields(direct, accepted, "status")
                return all(row[0] in FINISHED for row in rows)

            await wait_until(all_finished, timeout=60, interval=0.1)
            rows = await job_fields(direct, accepted, "status", "attemptsMade", "failedReason")
            attempts = collections.Counter(int(r[1] or 0) for r in rows)
            reasons = collections.Counter(r[2] for r in rows if r[2])
            print(
                f"\nredis restart: {len(active_at_stop)} job(s) active at the stop, API back "
                f"{api_back_s:.2f} s after the restart, statuses during the outage {collections.Counter(during)}, "
                f"attempts histogram {dict(sorted(attempts.items()))}, failure reasons seen {dict(reasons)}"
            )
            assert [r[0] for r in rows] == ["completed"] * len(accepted), list(zip(accepted, rows))
            for job_id in accepted:  # every 201 is still there, also through the API
                response = await client.get(f"/api/jobs/{job_id}")
                assert response.status == 200, await response.text()
            assert 500 not in during
            # the same worker process ran everything: it never exited, it reconnected by itself
            assert worker.alive(), worker.output()
            assert list((await registered_worker_pids(direct)).values()) == [worker.pid]
            ran_by = {job["workerId"] for job in (await (await client.get("/api/jobs?limit=500")).json())["jobs"]}
            assert len(ran_by) == 1 and f"-{worker.pid}-" in ran_by.pop()
            assert await processing_lists(direct) == {}
            assert (await status_counts(direct))["active"] == 0
        finally:
            await direct.aclose()


async def test_a_job_running_through_a_redis_restart_is_not_charged_an_attempt(
    own_redis: RedisProcess, aiohttp_client: Any, workers: Any
) -> None:
    """A Redis restart is the queue's fault, not the job's: a job with maxAttempts 1 that is
    mid-run while Redis restarts must still complete (its progress updates should ride out the
    blip like the acks do), not fail with a ConnectionError as its reason."""
    async with asyncio.timeout(60):
        client = await aiohttp_client(create_app(Settings(redis_url=own_redis.url)))
        direct = await own_client(own_redis.url)
        try:
            worker = workers(own_redis.url, "--lease-ms", "3000")
            await wait_until(lambda: registered_count(direct, 1), timeout=20)
            job = await create_job(client, name="one shot", maxAttempts=1, data={"steps": 20, "stepMs": 100})

            async def running() -> bool:
                return int(await direct.hget(K.job(job["id"]), "progress") or 0) >= 10

            await wait_until(running, timeout=20)
            own_redis.stop()
            await asyncio.sleep(1.0)
            own_redis.start()
            await wait_until(lambda: api_up(client), timeout=10)
            await direct.aclose()
            direct = await own_client(own_redis.url)

            async def finished() -> bool:
                return await direct.hget(K.job(job["id"]), "status") in FINISHED

            await wait_until(finished, timeout=30)
            done = await (await client.get(f"/api/jobs/{job['id']}")).json()
            print(f"\none-shot job through a Redis restart: {done['status']}, reason {done['failedReason']!r}")
            assert worker.alive()
            assert done["status"] == "completed", done
        finally:
            await direct.aclose()


# == 3. Redis down or frozen: fast 503s, and back to work with no manual step =====================
PROBES = ("POST /api/jobs", "GET /api/jobs", "GET /api/jobs/{id}", "GET /api/admin/queues", "GET /healthz")


HEALTH_MAX_AGE_S = 1.0  # /healthz answers from a result at most this old


async def probe(client: Any, what: str, job_id: str, expected: int = 0) -> tuple[int, Any, float]:
    method, path = what.split(" ")
    path = path.replace("{id}", job_id)
    if path == "/healthz" and expected:  # a cached answer may lag the change by up to a second
        await wait_until(lambda: _health_is(client, expected), timeout=HEALTH_MAX_AGE_S + 2.5)
    t0 = time.monotonic()
    if method == "POST":
        response = await client.post(path, json={"name": "probe", "type": "noop"})
    else:
        response = await client.get(path)
    body = await response.json()
    return response.status, body, time.monotonic() - t0


async def assert_unavailable(client: Any, job_id: str, rounds: int = 2) -> dict[str, float]:
    """Every probe answers 503 (never 500) within 2 s; returns the slowest time per probe."""
    slowest: dict[str, float] = {}
    for _ in range(rounds):  # the first round meets stale pooled connections, the next fresh ones
        for what in PROBES:
            status, body, took = await probe(client, what, job_id, expected=503)
            assert status == 503, (what, status, body)
            if what.endswith("/healthz"):
                assert body == {"redis": "unavailable"}, body
            else:
                assert body["error"]["code"] == "unavailable", body
                assert body["error"]["message"]
            assert took < 2.0, (what, took)
            slowest[what] = max(slowest.get(what, 0.0), took)
    return slowest


async def _health_is(client: Any, status: int) -> bool:
    return (await client.get("/healthz")).status == status


def latencies(slowest: dict[str, float]) -> str:
    return ", ".join(f"{what} {took * 1000:.0f} ms" for what, took in slowest.items())


async def assert_available(client: Any, job_id: str) -> None:
    expected = {"POST": 201, "GET": 200}
    for what in PROBES:
        status, body, took = await probe(client, what, job_id, expected[what.split(" ")[0]])
        assert status == expected[what.split(" ")[0]], (what, status, body)


async def test_redis_down_the_api_answers_503_fast_and_recovers_by_itself(
    own_redis: RedisProcess, aiohttp_client: Any
) -> None:
    async with asyncio.timeout(60):
        client = await aiohttp_client(create_app(Settings(redis_url=own_redis.url)))
        job = await create_job(client, type="noop")
        await assert_available(client, job["id"])

        own_redis.stop()
        slowest = await assert_unavailable(client, job["id"])
        print(f"\n503 latencies with Redis down (slowest of 2 rounds): {latencies(slowest)}")

        own_redis.start()
        await wait_until(lambda: api_up(client), timeout=5)
        await assert_available(client, job["id"])  # the job survived (AOF), the app was never restarted


async def test_redis_frozen_the_api_answers_503_within_2_s_and_recovers(
    own_redis: RedisProcess, aiohttp_client: Any
) -> None:
    async with asyncio.timeout(60):
        client = await aiohttp_client(create_app(Settings(redis_url=own_redis.url)))
        job = await create_job(client, type="noop")
        await assert_available(client, job["id"])

        async with frozen(own_redis):
            slowest = await assert_unavailable(client, job["id"], rounds=1)
        print(f"\n503 latencies with Redis frozen (SIGSTOP): {latencies(slowest)}")

        await wait_until(lambda: api_up(client), timeout=5)
        await assert_available(client, job["id"])


async def test_app_started_while_redis_is_down_answers_503_then_works(tmp_path: Path, aiohttp_client: Any) -> None:
    own = RedisProcess(tmp_path, appendonly=True)  # not started yet
    try:
        async with asyncio.timeout(60):
            client = await aiohttp_client(create_app(Settings(redis_url=own.url)))
            slowest = await assert_unavailable(client, "no-such-job", rounds=1)
            print(f"\n503 latencies, app started with Redis down: {latencies(slowest)}")
            own.start()
            await wait_until(lambda: api_up(client), timeout=5)
            job = await create_job(client, type="noop")
            await assert_available(client, job["id"])
    finally:
        own.stop()


async def test_worker_started_while_redis_is_down_waits_then_works(
    tmp_path: Path, aiohttp_client: Any, workers: Any
) -> None:
    own = RedisProcess(tmp_path, appendonly=True)  # its port is chosen; nothing listens there yet
    try:
        async with asyncio.timeout(60):
            worker = workers(own.url, "--lease-ms", "2000")
            await asyncio.sleep(3)
            assert worker.alive(), worker.output()
            own.start()
            client = await aiohttp_client(create_app(Settings(redis_url=own.url)))
            direct = await own_client(own.url)
            try:
                await wait_until(lambda: registered_count(direct, 1), timeout=15)
                job = await create_job(client, type="echo", data={"hello": "world"})

                async def done() -> bool:
                    return await direct.hget(K.job(job["id"]), "status") in FINISHED

                await wait_until(done, timeout=20)
                finished = await (await client.get(f"/api/jobs/{job['id']}")).json()
                assert finished["status"] == "completed", finished
                assert finished["result"] == {"hello": "world"}
                assert f"-{worker.pid}-" in finished["workerId"]
                assert worker.alive()
                assert "cannot reach Redis" in worker.output()
            finally:
                await direct.aclose()
    finally:
        own.stop()


# == 4. the server restarts while a dashboard watches: Last-Event-ID resume on a new instance ========
async def test_dashboard_resumes_on_a_new_server_instance_with_every_missed_event_in_order(
    redis_url: str, redis_client: redis.Redis, store: JobStore, aiohttp_client: Any, start_worker: Any
) -> None:
    async with asyncio.timeout(60):
        settings = Settings(redis_url=redis_url, sse_ping_s=0.5)
        app_a = await aiohttp_client(create_app(settings))
        stream_a = await open_stream(app_a)
        before = [await create_job(app_a, name=f"before-{i}", data={"steps": 3, "stepMs": 20}) for i in range(3)]
        seen_a = await stream_a.collect(3)
        assert [e.json()["job"]["id"] for e in seen_a] == [j["id"] for j in before]
        last_id = seen_a[-1].id
        assert last_id

        await app_a.close()  # the server goes away, its open stream with it

        # while no server runs: jobs are created, run, cancelled, deleted, through the store and a worker
        more = [
            await store.enqueue(
                NewJob(
                    name=f"meanwhile-{i}", type="demo", queue="default", data={"steps": 3, "stepMs": 20},
                    priority=Priority.NORMAL, delay_ms=0, max_attempts=3, backoff_ms=1000, timeout_ms=None,
                )  # fmt: skip
            )
            for i in range(5)
        ]
        await store.delete(before[0]["id"])
        await start_worker()
        everything = [j["id"] for j in before[1:]] + [j.id for j in more]

        async def all_done() -> bool:
            rows = await job_fields(redis_client, everything, "status")
            return all(r[0] == "completed" for r in rows)

        await wait_until(all_done, timeout=30)
        missed = as_events(await redis_client.xrange(LOG, min=f"({position(last_id)}"))
        assert len(missed) >= 5 * 6, len(missed)  # created, claimed, 3 × progress, completed for each

        app_b = await aiohttp_client(create_app(settings))
        stream_b = await open_stream(app_b, last_id)
        replayed = await stream_b.collect(len(missed), timeout=10)
        assert triples(replayed) == missed  # every missed event, in order, no gap, no duplicate
        assert not any(e.event == "reset" for e in replayed)

        live = await create_job(app_b, name="live", type="noop")
        nxt = await stream_b.next(timeout=10)
        assert nxt.event == "job" and nxt.json()["job"]["id"] == live["id"], nxt
        assert event_key(nxt.id) > event_key(missed[-1][0])
        after = as_events(await redis_client.xrange(LOG, min=f"({position(missed[-1][0])}"))
        assert (nxt.id, nxt.event, nxt.data) == after[0]


# == 5. a stream stays open through a Redis restart and replays what it missed ======================
async def test_an_open_stream_survives_a_redis_restart_and_skips_no_stored_event(
    own_redis: RedisProcess, aiohttp_client: Any
) -> None:
    async with asyncio.timeout(60):
        client = await aiohttp_client(create_app(Settings(redis_url=own_redis.url, sse_ping_s=0.5)))
        stream = await open_stream(client)
        first = [await create_job(client, name=f"before-{i}", type="noop") for i in range(2)]
        received = await stream.collect(2)
        assert [e.json()["job"]["id"] for e in received] == [j["id"] for j in first]

        own_redis.stop()
        await asyncio.sleep(1.0)
        own_redis.start()
        # straight away, before the stream has resubscribed: these can only reach it by replay
        direct = await own_client(own_redis.url)
        try:
            behind = JobStore(direct)
            quick = [
                (await behind.enqueue(
                    NewJob(
                        name=f"right-after-{i}", type="noop", queue="default", data={}, priority=Priority.NORMAL,
                        delay_ms=0, max_attempts=3, backoff_ms=1000, timeout_ms=None,
                    )  # fmt: skip
                )).id
                for i in range(5)
            ]
            await wait_until(lambda: api_up(client), timeout=10)
            later = [(await create_job(client, name=f"after-{i}", type="noop"))["id"] for i in range(5)]
            wanted = set(quick + later)

            def all_seen() -> bool:
                return wanted <= {e.json()["job"]["id"] for e in received if e.event == "job"}

            deadline = time.monotonic() + 20
            while not all_seen():
                assert time.monotonic() < deadline, f"missing {wanted - {e.json()['job']['id'] for e in received}}"
                received.append(await stream.next(timeout=max(deadline - time.monotonic(), 0.1)))

            assert not stream.response.closed  # the same HTTP connection all along
            assert not any(e.event == "reset" for e in received)
            stored = as_events(await direct.xrange(LOG, min=position(received[0].id)))
            assert triples(received) == stored  # nothing of the history skipped, nothing twice
            print(f"\nstream through a Redis restart: {len(received)} events, comments {sorted(set(stream.comments))}")
        finally:
            await direct.aclose()


async def test_an_open_stream_whose_pubsub_connection_is_killed_misses_nothing(
    aiohttp_client: Any, redis_url: str, redis_client: redis.Redis, store: JobStore
) -> None:
    """CLIENT KILL TYPE pubsub while events flow: Redis stays up, so redis-py may reconnect and
    resubscribe on its own; events published in between must still reach the client."""
    async with asyncio.timeout(60):
        client = await aiohttp_client(create_app(Settings(redis_url=redis_url, sse_ping_s=0.5)))
        stream = await open_stream(client)
        new = NewJob(
            name="flow", type="noop", queue="default", data={}, priority=Priority.NORMAL,
            delay_ms=0, max_attempts=3, backoff_ms=1000, timeout_ms=None,
        )  # fmt: skip
        first = await store.enqueue(new)
        received = [await stream.next()]
        assert received[0].json()["job"]["id"] == first.id

        stop = asyncio.Event()
        made: list[str] = []

        async def produce() -> None:
            while not stop.is_set():
                made.append((await store.enqueue(new)).id)
                await asyncio.sleep(0.002)

        producer = asyncio.create_task(produce())
        try:
            for _ in range(5):
                await asyncio.sleep(0.3)
                killed = await redis_client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
                assert killed >= 1
            await asyncio.sleep(0.3)
        finally:
            stop.set()
            await producer

        # events arrive in order: once the last job's is in, anything not seen by then was lost
        last = made[-1]
        with contextlib.suppress(asyncio.TimeoutError):
            while received[-1].json()["job"]["id"] != last:
                received.append(await stream.next(timeout=10))
        seen = {e.json()["job"]["id"] for e in received}
        wanted = set(made)
        stored = as_events(await redis_client.xrange(LOG, min=position(received[0].id)))
        print(f"\npubsub killed 5 times: {len(made)} jobs made, {len(wanted - seen)} never announced")
        assert wanted <= seen, f"{len(wanted - seen)} of {len(wanted)} job-created events never reached the stream"
        assert triples(received) == stored[: len(received)]


# == 6. start-up warnings about a Redis that could lose jobs =========================================
WARNING_LOGGERS = ("jobline", "server", "__main__", "worker")
CONFIGS = {
    # name: (appendonly, maxmemory-policy, expected warning keywords)
    "evicting": (True, "allkeys-lru", {"maxmemory-policy"}),
    "no-persistence": (False, "noeviction", {"persistence"}),
    "safe": (True, "noeviction", set()),
}


def keywords_in(messages: list[str]) -> set[str]:
    return {word for word in ("maxmemory-policy", "persistence") for m in messages if word in m}


@pytest.fixture
def configured_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[RedisProcess, set[str]]]:
    appendonly, policy, expected = CONFIGS[request.param]
    workdir = tmp_path / "configured-redis"
    workdir.mkdir()
    server = RedisProcess(workdir, appendonly=appendonly)
    server.start()
    try:
        import redis as sync_redis

        with sync_redis.Redis.from_url(server.url) as r:
            r.config_set("maxmemory-policy", policy)
        yield server, expected
    finally:
        server.stop()


@pytest.mark.parametrize("configured_redis", list(CONFIGS), indirect=True)
async def test_server_warns_at_start_when_redis_could_lose_jobs(
    configured_redis: tuple[RedisProcess, set[str]], aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server, expected = configured_redis
    caplog.set_level(logging.WARNING)
    async with asyncio.timeout(20):
        client = await aiohttp_client(create_app(Settings(redis_url=server.url)))
        assert (await client.get("/healthz")).status == 200
    messages = [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith(WARNING_LOGGERS)
    ]
    assert keywords_in(messages) == expected, messages


@pytest.mark.parametrize("configured_redis", list(CONFIGS), indirect=True)
async def test_worker_warns_at_start_when_redis_could_lose_jobs(
    configured_redis: tuple[RedisProcess, set[str]], workers: Any
) -> None:
    server, expected = configured_redis
    async with asyncio.timeout(40):
        worker = workers(server.url, "--lease-ms", "2000")
        await wait_until(lambda: "started" in worker.output(), timeout=20)
        assert await worker.terminate() == 0
    lines = re.findall(r" WARNING (\S+): (.*)", worker.output())
    messages = [message for name, message in lines if name.startswith(WARNING_LOGGERS)]
    assert keywords_in(messages) == expected, worker.output()
