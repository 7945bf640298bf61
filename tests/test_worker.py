"""The worker, in process: running jobs, concurrency, retries, cancel/delete, delays, priority,
timeouts, queues and handler loading. Real Redis, real HTTP, real workers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from jobline import tasks
import tests.handlers
import tests.plain_handlers
from jobline.keys import Keys
from jobline.tasks import load_handlers
from jobline.worker import Worker, WorkerSettings
from jobline.worker_main import parse_settings
from tests.conftest import create_job, wait_all, wait_for_status, wait_until
from tests.sse import SSEReader

K = Keys()
FINISHED = ("completed", "failed", "cancelled")


# -- helpers -------------------------------------------------------------------------------------
async def get_job(client: Any, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/jobs/{job_id}")
    assert response.status == 200, await response.text()
    return await response.json()


async def list_jobs(client: Any, **query: Any) -> dict[str, Any]:
    query.setdefault("limit", 500)
    response = await client.get("/api/jobs", params={k: str(v) for k, v in query.items()})
    assert response.status == 200, await response.text()
    return await response.json()


async def statuses(redis_client: Any, ids: list[str]) -> list[str | None]:
    """Every job's status, read in one atomic step (a consistent snapshot)."""
    async with redis_client.pipeline(transaction=True) as pipe:
        for job_id in ids:
            pipe.hget(K.job(job_id), "status")
        return await pipe.execute()


async def active_ids(redis_client: Any, ids: list[str]) -> set[str]:
    return {i for i, s in zip(ids, await statuses(redis_client, ids)) if s == "active"}


async def processing(redis_client: Any, worker: Worker, queue: str = "default") -> list[str]:
    return await redis_client.lrange(K.processing(queue, worker.id), 0, -1)


async def sample(probe: Callable[[], Awaitable[Any]], seconds: float, interval: float = 0.02) -> list[Any]:
    """Call probe() repeatedly for `seconds`; return every answer."""
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        out.append(await probe())
        await asyncio.sleep(interval)
    return out


async def open_stream(client: Any) -> SSEReader:
    response = await client.get("/api/jobs/stream")
    assert response.status == 200
    return SSEReader(response)


async def job_events_until(stream: SSEReader, job_id: str, *statuses: str, timeout: float = 20) -> list[dict[str, Any]]:
    """The job's snapshots from the stream, up to the first one in `statuses`."""

    def mine(e: Any) -> bool:
        return e.event == "job" and e.json()["job"]["id"] == job_id

    events = await stream.until(lambda e: mine(e) and e.json()["job"]["status"] in statuses, timeout=timeout)
    return [e.json()["job"] for e in events if mine(e)]


async def snapshots_so_far(client: Any, stream: SSEReader, job_id: str) -> list[dict[str, Any]]:
    """Every snapshot of the job the stream delivers from here up to now (a marker job closes it)."""
    marker = await create_job(client, name="stream marker", type="noop", queue="marker-queue")
    events = await stream.until(lambda e: e.event == "job" and e.json()["job"]["id"] == marker["id"], timeout=10)
    return [e.json()["job"] for e in events if e.event == "job" and e.json()["job"]["id"] == job_id]


def dedupe(seq: list[Any]) -> list[Any]:
    """Consecutive duplicates collapsed: ['a', 'a', 'b', 'a'] -> ['a', 'b', 'a']."""
    return [s for i, s in enumerate(seq) if i == 0 or seq[i - 1] != s]


# -- a job's life --------------------------------------------------------------------------------
async def test_demo_job_runs_from_waiting_to_completed_with_progress_logs_and_result(
    client: Any, start_worker: Any
) -> None:
    stream = await open_stream(client)
    job = await create_job(client, name="agent", type="demo", data={"steps": 5, "stepMs": 80})
    assert job["status"] == "waiting"
    assert job["progress"] == 0 and job["attemptsMade"] == 0 and job["startedAt"] is None

    worker = await start_worker()
    polled: list[tuple[str, int]] = []

    async def poll() -> bool:
        j = await get_job(client, job["id"])
        polled.append((j["status"], j["progress"]))
        return j["status"] in FINISHED

    await wait_until(poll, timeout=20)
    snapshots = await job_events_until(stream, job["id"], *FINISHED)

    # the stream saw every change, in order
    assert dedupe([s["status"] for s in snapshots]) == ["waiting", "active", "completed"]
    progress = [s["progress"] for s in snapshots]
    assert progress == sorted(progress), progress
    assert [p for p in dedupe(progress) if 0 < p < 100] == [20, 40, 60, 80]
    assert progress[-1] == 100
    # polling while it ran saw it active, with progress that only rises
    polled_progress = [p for _, p in polled]
    assert polled_progress == sorted(polled_progress), polled
    assert any(status == "active" and 0 < p < 100 for status, p in polled), polled

    done = await get_job(client, job["id"])
    assert done["status"] == "completed"
    assert done["progress"] == 100
    assert done["result"] == {"steps": 5, "message": "completed 5 web-agent steps"}
    assert done["attemptsMade"] == 1
    assert done["workerId"] == worker.id
    assert done["startedAt"] and done["finishedAt"]
    assert done["createdAt"] <= done["startedAt"] <= done["finishedAt"]
    assert done["finishedAt"] - done["startedAt"] >= 5 * 80
    assert done["failedReason"] is None
    assert len(done["logs"]) == 5
    for step, line in enumerate(done["logs"], start=1):
        assert line.startswith(f"step {step}/5: "), done["logs"]
    assert done["logs"][0] == "step 1/5: Navigating to page"


# -- concurrency ---------------------------------------------------------------------------------
def count(values: list[str | None], status: str) -> int:
    return sum(1 for v in values if v == status)


async def test_one_worker_runs_exactly_five_jobs_at_once_and_never_claims_more(
    client: Any, start_worker: Any, redis_client: Any
) -> None:
    ids = [(await create_job(client, type="block"))["id"] for _ in range(12)]
    worker = await start_worker(grace_s=0.5, block_s=0.25)

    async def five_active() -> bool:
        return len(await active_ids(redis_client, ids)) == 5

    await wait_until(five_active, timeout=10)

    async def probe() -> tuple[int, int, int, int]:
        now = await statuses(redis_client, ids)
        return (
            count(now, "active"),
            len(await processing(redis_client, worker)),
            count(now, "waiting"),
            await redis_client.llen(K.wait("default")),
        )

    samples = await sample(probe, 1.0)
    assert len(samples) >= 10
    # under load: exactly 5 running, 5 in its processing list, the other 7 left in line
    assert set(samples) == {(5, 5, 7, 7)}, samples
    assert len(worker.running) == 5
    assert set(await processing(redis_client, worker)) == await active_ids(redis_client, ids)
    # the first five created are the ones running (FIFO)
    assert await active_ids(redis_client, ids) == set(ids[:5])


async def test_one_worker_never_exceeds_five_while_jobs_churn(
    client: Any, start_worker: Any, redis_client: Any
) -> None:
    ids = [(await create_job(client, type="demo", data={"steps": 3, "stepMs": 60}))["id"] for _ in range(14)]
    worker = await start_worker()
    samples: list[tuple[int, int]] = []

    async def all_done() -> bool:
        now = await statuses(redis_client, ids)
        samples.append((count(now, "active"), len(await processing(redis_client, worker))))
        return count(now, "completed") == len(ids)

    await wait_until(all_done, timeout=30, interval=0.01)
    assert max(a for a, _ in samples) == 5, samples
    assert max(p for _, p in samples) <= 5, samples
    for job in await wait_all(client, ids, "completed"):
        assert job["attemptsMade"] == 1


async def test_concurrency_two_runs_at_most_two(client: Any, start_worker: Any, redis_client: Any) -> None:
    ids = [(await create_job(client, type="block"))["id"] for _ in range(6)]
    worker = await start_worker(concurrency=2, grace_s=0.5, block_s=0.25)

    async def two_active() -> bool:
        return len(await active_ids(redis_client, ids)) == 2

    await wait_until(two_active, timeout=10)

    async def probe() -> tuple[int, int, int]:
        now = await statuses(redis_client, ids)
        return count(now, "active"), len(await processing(redis_client, worker)), count(now, "waiting")

    samples = await sample(probe, 0.8)
    assert set(samples) == {(2, 2, 4)}, samples


async def test_concurrency_two_never_exceeds_two_while_jobs_churn(
    client: Any, start_worker: Any, redis_client: Any
) -> None:
    ids = [(await create_job(client, type="demo", data={"steps": 2, "stepMs": 40}))["id"] for _ in range(8)]
    await start_worker(concurrency=2)
    counts: list[int] = []

    async def all_done() -> bool:
        now = await statuses(redis_client, ids)
        counts.append(count(now, "active"))
        return count(now, "completed") == len(ids)

    await wait_until(all_done, timeout=30, interval=0.01)
    assert max(counts) == 2, counts


async def test_two_workers_run_ten_jobs_at_once(client: Any, start_worker: Any, redis_client: Any) -> None:
    ids = [(await create_job(client, type="block"))["id"] for _ in range(14)]
    first = await start_worker(grace_s=0.5, block_s=0.25)
    second = await start_worker(grace_s=0.5, block_s=0.25)

    async def ten_active() -> bool:
        return len(await active_ids(redis_client, ids)) == 10

    await wait_until(ten_active, timeout=10)

    async def probe() -> tuple[int, int, int]:
        return (
            len(await active_ids(redis_client, ids)),
            len(await processing(redis_client, first)),
            len(await processing(redis_client, second)),
        )

    samples = await sample(probe, 0.8)
    assert set(samples) == {(10, 5, 5)}, samples
    by_worker: dict[str, int] = {}
    for job_id in await active_ids(redis_client, ids):
        worker_id = (await get_job(client, job_id))["workerId"]
        by_worker[worker_id] = by_worker.get(worker_id, 0) + 1
    assert by_worker == {first.id: 5, second.id: 5}


async def test_listing_active_jobs_shows_the_jobs_a_worker_runs(
    client: Any, start_worker: Any, redis_client: Any
) -> None:
    ids = [(await create_job(client, type="block"))["id"] for _ in range(7)]
    worker = await start_worker(grace_s=0.5, block_s=0.25)

    async def five_active() -> bool:
        return len(await active_ids(redis_client, ids)) == 5

    await wait_until(five_active, timeout=10)
    running = set(await processing(redis_client, worker))
    active = await list_jobs(client, status="active")
    assert active["total"] == 5, active
    assert {j["id"] for j in active["jobs"]} == running
    waiting = await list_jobs(client, status="waiting")
    assert {j["id"] for j in waiting["jobs"]} == set(ids) - running


# -- failure and retry ---------------------------------------------------------------------------
async def test_failing_job_is_retried_with_exponential_backoff_then_failed(
    client: Any, start_worker: Any
) -> None:
    stream = await open_stream(client)
    await start_worker()
    job = await create_job(
        client, type="fail", data={"message": "kaboom"}, maxAttempts=3, backoffMs=100
    )
    snapshots = await job_events_until(stream, job["id"], "failed", "completed", "cancelled")

    assert dedupe([s["status"] for s in snapshots]) == [
        "waiting", "active", "delayed", "waiting", "active", "delayed", "waiting", "active", "failed",
    ]  # fmt: skip
    delayed = [s for s in snapshots if s["status"] == "delayed"]
    assert [s["attemptsMade"] for s in delayed] == [1, 2]
    assert all("kaboom" in s["failedReason"] for s in delayed)
    starts = sorted({s["startedAt"] for s in snapshots if s["status"] == "active"})
    assert len(starts) == 3
    # runAt = time of failure + backoffMs * 2^(n-1): about 100 ms, then about 200 ms after each start
    waits = [d["runAt"] - d["startedAt"] for d in delayed]
    assert 100 <= waits[0] < 100 + 900, waits
    assert 200 <= waits[1] < 200 + 900, waits
    # and no attempt starts before its backoff is over
    assert starts[1] >= delayed[0]["runAt"]
    assert starts[2] >= delayed[1]["runAt"]

    done = await get_job(client, job["id"])
    assert done["status"] == "failed"
    assert done["attemptsMade"] == 3
    assert "kaboom" in done["failedReason"]
    assert done["finishedAt"] is not None
    assert done["result"] is None


async def test_timeout_fails_the_job_with_a_timed_out_reason(client: Any, start_worker: Any) -> None:
    await start_worker()
    job = await create_job(client, type="block", timeoutMs=200, maxAttempts=1)
    done = await wait_for_status(client, job["id"], *FINISHED)
    assert done["status"] == "failed"
    assert "timed out" in done["failedReason"]
    assert done["attemptsMade"] == 1
    assert done["finishedAt"] - done["startedAt"] >= 200


async def test_unknown_type_fails_at_once_naming_the_type_without_retry(
    client: Any, start_worker: Any
) -> None:
    await start_worker()
    job = await create_job(client, type="no_such_task", maxAttempts=3, backoffMs=50)
    done = await wait_for_status(client, job["id"], *FINISHED)
    assert done["status"] == "failed"
    assert "no_such_task" in done["failedReason"]
    await asyncio.sleep(0.4)  # well past a 50 ms backoff: it must not come back
    again = await get_job(client, job["id"])
    assert again["status"] == "failed"
    assert again["attemptsMade"] == 1


async def test_unserializable_result_fails_the_job(client: Any, start_worker: Any) -> None:
    await start_worker()
    job = await create_job(client, type="unserializable", maxAttempts=1)
    done = await wait_for_status(client, job["id"], *FINISHED)
    assert done["status"] == "failed"
    assert "serializ" in done["failedReason"].lower()
    assert done["result"] is None


# -- cancel and delete ---------------------------------------------------------------------------
async def test_cancel_waiting_job_without_worker(client: Any, start_worker: Any, redis_client: Any) -> None:
    job = await create_job(client, type="echo")
    response = await client.post(f"/api/jobs/{job['id']}/cancel")
    assert response.status == 200
    assert (await response.json())["status"] == "cancelled"
    assert job["id"] not in await redis_client.lrange(K.wait("default"), 0, -1)

    # a worker that starts later never runs it
    await start_worker()
    marker = await create_job(client, type="echo")
    await wait_for_status(client, marker["id"], "completed")
    cancelled = await get_job(client, job["id"])
    assert cancelled["status"] == "cancelled"
    assert cancelled["attemptsMade"] == 0 and cancelled["startedAt"] is None
    assert cancelled["logs"] == []


async def test_cancel_active_job_stops_it_and_frees_the_slot_within_a_second(
    client: Any, start_worker: Any, redis_client: Any
) -> None:
    stream = await open_stream(client)
    worker = await start_worker(concurrency=1)
    blocker = await create_job(client, type="block", data={"seconds": 30})
    await wait_for_status(client, blocker["id"], "active")
    queued = await create_job(client, type="echo", data={"n": 1})

    response = await client.post(f"/api/jobs/{blocker['id']}/cancel")
    assert response.status == 200
    assert (await response.json())["status"] == "cancelled"

    before = await job_events_until(stream, blocker["id"], "cancelled")
    nxt = await wait_for_status(client, queued["id"], "completed", timeout=10)
    cancelled = await get_job(client, blocker["id"])
    # the only slot was free again within 1 s of the cancel (both stamps from the Redis clock)
    assert nxt["startedAt"] - cancelled["finishedAt"] < 1000, (cancelled, nxt)
    assert cancelled["status"] == "cancelled"
    assert blocker["id"] not in worker.running
    assert blocker["id"] not in await processing(redis_client, worker)
    assert await processing(redis_client, worker) == []

    await asyncio.sleep(0.3)
    later = await snapshots_so_far(client, stream, blocker["id"])
    statuses_seen = [snap["status"] for snap in before + later]
    assert "cancelled" in statuses_seen
    assert "completed" not in statuses_seen and "failed" not in statuses_seen, statuses_seen
    final = await get_job(client, blocker["id"])
    assert final["status"] == "cancelled"
    assert final["result"] is None and final["failedReason"] is None


async def test_cancelled_active_job_never_completes_later(
    client: Any, start_worker: Any, redis_client: Any
) -> None:
    # A short job whose handler would finish 0.6 s later if the worker did not stop it.
    await start_worker()
    job = await create_job(client, type="block", data={"seconds": 0.6})
    await wait_for_status(client, job["id"], "active")
    response = await client.post(f"/api/jobs/{job['id']}/cancel")
    assert response.status == 200
    await asyncio.sleep(1.2)
    final = await get_job(client, job["id"])
    assert final["status"] == "cancelled"
    assert final["result"] is None
    assert await statuses(redis_client, [job["id"]]) == ["cancelled"]


async def test_cancel_finished_job_is_a_conflict(client: Any, start_worker: Any) -> None:
    await start_worker()
    job = await create_job(client, type="echo")
    await wait_for_status(client, job["id"], "completed")
    response = await client.post(f"/api/jobs/{job['id']}/cancel")
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "conflict"
    assert (await get_job(client, job["id"]))["status"] == "completed"


async def test_delete_active_job_stops_it_and_the_worker_takes_new_work(
    client: Any, start_worker: Any, redis_client: Any
) -> None:
    worker = await start_worker(concurrency=1)
    blocker = await create_job(client, type="block", data={"seconds": 30})
    await wait_for_status(client, blocker["id"], "active")
    queued = await create_job(client, type="echo")

    response = await client.delete(f"/api/jobs/{blocker['id']}")
    assert response.status == 204
    assert (await client.get(f"/api/jobs/{blocker['id']}")).status == 404

    await wait_for_status(client, queued["id"], "completed", timeout=10)
    assert blocker["id"] not in worker.running
    assert await processing(redis_client, worker) == []
    # gone everywhere: no hash, no logs, in no listing
    assert await redis_client.exists(K.job(blocker["id"]), K.job_logs(blocker["id"])) == 0
    listed = await list_jobs(client)
    assert [j["id"] for j in listed["jobs"]] == [queued["id"]]
    assert listed["total"] == 1
    # and the worker did not resurrect it when its handler stopped
    await asyncio.sleep(0.3)
    assert (await client.get(f"/api/jobs/{blocker['id']}")).status == 404


# -- delayed jobs --------------------------------------------------------------------------------
async def test_delayed_job_becomes_waiting_then_runs_when_due(client: Any, start_worker: Any) -> None:
    stream = await open_stream(client)
    await start_worker()
    job = await create_job(client, type="echo", delayMs=700)
    assert job["status"] == "delayed"
    run_at = job["runAt"]
    assert run_at is not None and run_at - job["createdAt"] == 700

    await asyncio.sleep(0.3)
    assert (await get_job(client, job["id"]))["status"] == "delayed"

    done = await wait_for_status(client, job["id"], "completed", timeout=10)
    snapshots = await job_events_until(stream, job["id"], "completed")
    assert dedupe([s["status"] for s in snapshots]) == ["delayed", "waiting", "active", "completed"]
    assert done["startedAt"] >= run_at


async def test_promote_runs_a_delayed_job_now(client: Any, start_worker: Any) -> None:
    await start_worker()
    job = await create_job(client, type="echo", delayMs=60_000)
    await asyncio.sleep(0.3)
    assert (await get_job(client, job["id"]))["status"] == "delayed"

    response = await client.post(f"/api/jobs/{job['id']}/promote")
    assert response.status == 200
    promoted = await response.json()
    assert promoted["status"] in ("waiting", "active", "completed")
    assert promoted["runAt"] is None

    done = await wait_for_status(client, job["id"], "completed", timeout=10)
    assert done["startedAt"] < job["runAt"]


# -- priority ------------------------------------------------------------------------------------
def started_order(jobs: list[dict[str, Any]]) -> list[str]:
    return [j["name"] for j in sorted(jobs, key=lambda j: j["startedAt"])]


async def test_high_priority_jobs_run_first_in_fifo_order_then_normal_fifo(
    client: Any, start_worker: Any
) -> None:
    step = {"steps": 1, "stepMs": 30}  # ~30 ms each, so startedAt values are distinct
    ids = [(await create_job(client, name=f"normal-{i}", data=step))["id"] for i in range(3)]
    ids += [(await create_job(client, name=f"high-{i}", data=step, priority="high"))["id"] for i in range(3)]
    ids += [(await create_job(client, name=f"normal-{i}", data=step))["id"] for i in range(3, 5)]
    await start_worker(concurrency=1)

    jobs = await wait_all(client, ids, "completed")
    assert started_order(jobs) == [
        "high-0", "high-1", "high-2", "normal-0", "normal-1", "normal-2", "normal-3", "normal-4",
    ]  # fmt: skip


async def test_patch_priority_to_high_moves_a_waiting_job_ahead(client: Any, start_worker: Any) -> None:
    step = {"steps": 1, "stepMs": 30}
    ids = [(await create_job(client, name=f"job-{i}", data=step))["id"] for i in range(4)]
    response = await client.patch(f"/api/jobs/{ids[2]}", json={"priority": "high"})
    assert response.status == 200
    assert (await response.json())["priority"] == "high"
    await start_worker(concurrency=1)

    jobs = await wait_all(client, ids, "completed")
    assert started_order(jobs) == ["job-2", "job-0", "job-1", "job-3"]


# -- queues --------------------------------------------------------------------------------------
async def test_worker_with_two_queues_runs_jobs_of_both(client: Any, start_worker: Any) -> None:
    worker = await start_worker(queues=("a", "b"))
    in_a = await create_job(client, type="echo", queue="a", data={"q": "a"})
    in_b = await create_job(client, type="echo", queue="b", data={"q": "b"})
    for job, queue in ((in_a, "a"), (in_b, "b")):
        done = await wait_for_status(client, job["id"], "completed")
        assert done["queue"] == queue
        assert done["result"] == {"q": queue}
        assert done["workerId"] == worker.id


async def test_job_in_a_queue_no_worker_serves_stays_waiting(
    client: Any, start_worker: Any, redis_client: Any
) -> None:
    await start_worker(queues=("a", "b"))
    orphan = await create_job(client, type="echo", queue="c")
    served = await create_job(client, type="echo", queue="a")
    await wait_for_status(client, served["id"], "completed")
    await asyncio.sleep(0.5)
    still = await get_job(client, orphan["id"])
    assert still["status"] == "waiting"
    assert still["attemptsMade"] == 0 and still["workerId"] is None
    assert await redis_client.lrange(K.wait("c"), 0, -1) == [orphan["id"]]


# -- stopping ------------------------------------------------------------------------------------
async def test_stopping_worker_claims_no_job_that_arrives_after_the_stop(
    client: Any, start_worker: Any, redis_client: Any
) -> None:
    # An idle worker sits in a blocking BLMOVE; a job created just after the stop request must
    # not be claimed by it (made active, an attempt counted), only left in line.
    stream = await open_stream(client)
    worker = await start_worker(block_s=2.0)
    await asyncio.sleep(0.2)  # let it enter the blocking wait
    worker.request_stop()
    job = await create_job(client, type="echo")
    await wait_until(lambda: worker_gone(redis_client, worker), timeout=10)
    final = await get_job(client, job["id"])
    assert final["status"] == "waiting", final
    seen = [(j["status"], j["attemptsMade"], j["workerId"]) for j in await snapshots_so_far(client, stream, job["id"])]
    assert "active" not in [status for status, _, _ in seen], seen
    assert final["attemptsMade"] == 0 and final["startedAt"] is None and final["workerId"] is None, final


async def worker_gone(redis_client: Any, worker: Worker) -> bool:
    return await redis_client.zscore(K.workers, worker.id) is None


# -- handler loading -----------------------------------------------------------------------------
def test_load_handlers_includes_builtins_and_the_module_tasks() -> None:
    handlers = load_handlers(["tests.handlers"])
    for name, fn in tasks.TASKS.items():
        assert handlers[name] is fn
    for name, fn in tests.handlers.TASKS.items():
        assert handlers[name] is fn
    assert set(handlers) == set(tasks.TASKS) | set(tests.handlers.TASKS)
    assert {"demo", "noop", "sleep", "block", "fail", "echo", "die", "unserializable"} <= set(handlers)


def test_load_handlers_without_modules_gives_the_builtins() -> None:
    assert load_handlers([]) == tasks.TASKS


def test_load_handlers_of_a_module_without_tasks_takes_its_public_functions() -> None:
    handlers = load_handlers(["tests.plain_handlers"])
    assert set(handlers) == set(tasks.TASKS) | {"greet", "shout", "whisper"}
    assert handlers["whisper"] is tests.plain_handlers.whisper
    assert handlers["greet"] is tests.plain_handlers.greet
    assert handlers["shout"] is tests.plain_handlers.shout


def test_load_handlers_of_a_missing_module_raises() -> None:
    with pytest.raises(ImportError):
        load_handlers(["tests.no_such_module_here"])


async def test_worker_runs_a_handler_from_a_plain_module(client: Any, redis_url: str, on_cluster: bool) -> None:
    settings = WorkerSettings(redis_url=redis_url, redis_cluster=on_cluster, lease_ms=2000, grace_s=1)
    worker = Worker(settings, load_handlers(["tests.plain_handlers"]))
    task = asyncio.create_task(worker.run())
    try:
        job = await create_job(client, type="greet", data={"who": "jobline"})
        done = await wait_for_status(client, job["id"], *FINISHED)
        assert done["status"] == "completed", done
        assert done["result"] == {"greeting": "hello jobline"}
        assert done["logs"] == ["greeting"]
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 15)


async def test_cli_tasks_flag_loads_a_plain_module(client: Any, spawn_worker: Any) -> None:
    proc = spawn_worker("--tasks", "tests.plain_handlers", "--lease-ms", "2000", "--grace", "1")
    shouted = await create_job(client, type="shout", data={"text": "hi"})
    blocked = await create_job(client, type="echo", data={"from": "tests.handlers"})
    done = await wait_for_status(client, shouted["id"], *FINISHED, timeout=20)
    assert done["status"] == "completed", proc.output()
    assert done["result"] == "HI"
    # the first --tasks module (tests.handlers, from the fixture) is loaded too
    assert (await wait_for_status(client, blocked["id"], *FINISHED))["status"] == "completed"


# -- more of the worker's contract ---------------------------------------------------------------
async def test_demo_fail_at_step_fails_the_attempt_at_that_step(client: Any, start_worker: Any) -> None:
    await start_worker()
    job = await create_job(client, data={"steps": 4, "stepMs": 20, "failAtStep": 3}, maxAttempts=1)
    done = await wait_for_status(client, job["id"], *FINISHED)
    assert done["status"] == "failed"
    assert "step 3 of 4" in done["failedReason"], done
    assert done["progress"] == 50  # steps 1 and 2 reported, step 3 failed
    assert done["logs"] == [
        "step 1/4: Navigating to page", "step 2/4: Clicking button",
        "attempt 1 failed: DemoFailure: Typing text failed at step 3 of 4",
    ]  # fmt: skip


async def test_builtin_noop_and_sleep_run(client: Any, start_worker: Any) -> None:
    await start_worker()
    noop = await create_job(client, type="noop")
    slept = await create_job(client, type="sleep", data={"ms": 120})
    done = await wait_for_status(client, noop["id"], *FINISHED)
    assert done["status"] == "completed" and done["result"] is None
    done = await wait_for_status(client, slept["id"], *FINISHED)
    assert done["status"] == "completed" and done["result"] == {"slept": 120}
    assert done["finishedAt"] - done["startedAt"] >= 120


async def test_paused_queue_hands_out_nothing_and_resume_lets_the_worker_run_it(
    client: Any, start_worker: Any
) -> None:
    await start_worker()
    running = await create_job(client, data={"steps": 5, "stepMs": 100})
    await wait_for_status(client, running["id"], "active")
    assert (await client.post("/api/admin/queues/default/pause")).status == 200
    held = await create_job(client, type="echo")
    # the active one finishes; the new one is not handed out while paused
    assert (await wait_for_status(client, running["id"], *FINISHED))["status"] == "completed"
    await asyncio.sleep(0.5)
    still = await get_job(client, held["id"])
    assert still["status"] == "waiting" and still["attemptsMade"] == 0

    assert (await client.post("/api/admin/queues/default/resume")).status == 200
    done = await wait_for_status(client, held["id"], *FINISHED, timeout=10)
    assert done["status"] == "completed"


async def test_cancelled_active_job_retried_at_once_runs_again_cleanly(
    client: Any, start_worker: Any
) -> None:
    await start_worker()
    job = await create_job(client, data={"steps": 4, "stepMs": 100})
    await wait_for_status(client, job["id"], "active")
    assert (await client.post(f"/api/jobs/{job['id']}/cancel")).status == 200
    response = await client.post(f"/api/jobs/{job['id']}/retry")
    assert response.status == 200
    assert (await response.json())["attemptsMade"] == 0
    done = await wait_for_status(client, job["id"], *FINISHED)
    assert done["status"] == "completed", done
    assert done["attemptsMade"] == 1
    assert done["result"] == {"steps": 4, "message": "completed 4 web-agent steps"}
    await asyncio.sleep(0.5)  # the stopped first run must not change it afterwards
    assert (await get_job(client, job["id"]))["status"] == "completed"


async def test_worker_with_two_queues_fills_every_slot_from_the_busy_one(
    client: Any, start_worker: Any, redis_client: Any
) -> None:
    # Queue "a" is empty, queue "b" has 10 jobs: the worker has 5 free slots, so 5 must run, at once
    # (here within 3 s; each job takes a couple of Redis round trips to start).
    ids = [(await create_job(client, type="block", queue="b"))["id"] for _ in range(10)]
    await start_worker(queues=("a", "b"), grace_s=0.5)

    async def five_active() -> bool:
        return len(await active_ids(redis_client, ids)) == 5

    try:
        await wait_until(five_active, timeout=3)
    except AssertionError:
        counts = [len(x) for x in await sample(lambda: active_ids(redis_client, ids), 1.0, 0.1)]
        raise AssertionError(f"a 5-slot worker ran only {counts} of 10 waiting jobs in queue b") from None


def test_worker_settings_from_flags() -> None:
    s = parse_settings(
        ["--queue", "a", "--queue", "b", "--queue", "a", "--concurrency", "2", "--redis-url", "redis://h:1/2",
         "--tasks", "tests.handlers", "--lease-ms", "1500", "--grace", "3"]
    )  # fmt: skip
    assert s.queues == ("a", "b")
    assert s.concurrency == 2
    assert s.redis_url == "redis://h:1/2"
    assert s.task_modules == ("tests.handlers",)
    assert s.lease_ms == 1500 and s.grace_s == 3


def test_worker_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_URL", "JOBLINE_QUEUES", "JOBLINE_CONCURRENCY", "JOBLINE_TASKS"):
        monkeypatch.delenv(name, raising=False)
    s = parse_settings([])
    assert s.queues == ("default",) and s.concurrency == 5 and s.grace_s == 25
    monkeypatch.setenv("REDIS_URL", "redis://env:6379/0")
    monkeypatch.setenv("JOBLINE_QUEUES", "x,y")
    assert parse_settings([]).redis_url == "redis://env:6379/0"
    assert parse_settings([]).queues == ("x", "y")
    assert parse_settings(["--redis-url", "redis://flag:1/0"]).redis_url == "redis://flag:1/0"  # flags win


@pytest.mark.parametrize(
    "argv", [["--concurrency", "0"], ["--queue", "bad queue"], ["--lease-ms", "10"]], ids=["conc0", "queue", "lease"]
)
def test_worker_rejects_bad_settings(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_settings(argv)


async def test_nan_result_fails_the_job_instead_of_storing_invalid_json(client: Any, start_worker: Any) -> None:
    await start_worker()
    job = await create_job(client, type="nan_result", maxAttempts=1)
    done = await wait_for_status(client, job["id"], *FINISHED)
    assert done["status"] == "failed", done
    assert done["result"] is None
    listed = await list_jobs(client)  # the job still reads back as valid JSON everywhere
    assert listed["jobs"][0]["id"] == job["id"]


async def test_stop_always_ends_the_worker_even_when_it_lands_on_a_background_redis_call(
    redis_url: str, on_cluster: bool
) -> None:
    # The heartbeat, reaper and delayed-job loops call Redis every lease/5 (here every 100 ms), so a
    # stop often lands while one of those calls is in flight. run() must still return, every time.
    for attempt in range(1, 9):
        settings = WorkerSettings(redis_url=redis_url, redis_cluster=on_cluster, lease_ms=500, block_s=0.1, grace_s=0.5)
        worker = Worker(settings, load_handlers([]))
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(0.3)
        worker.request_stop()
        done, _ = await asyncio.wait([task], timeout=3)
        if not done:
            stuck = [
                t.get_coro().__qualname__
                for t in asyncio.all_tasks()
                if t is not asyncio.current_task() and t.get_coro().__qualname__.startswith("Worker.")
            ]
            for _ in range(100):  # clean up: cancel until it really ends
                if task.done():
                    break
                task.cancel()
                await asyncio.sleep(0.05)
            pytest.fail(f"stop #{attempt}: Worker.run() still running 3 s after request_stop; stuck: {stuck}")


# -- every attempt's failure in the job's logs ---------------------------------------------------
async def test_every_failed_attempt_is_in_the_job_logs_in_order(client: Any, start_worker: Any) -> None:
    await start_worker()
    job = await create_job(client, type="fail", data={"message": "disk full"}, maxAttempts=2, backoffMs=0)
    done = await wait_for_status(client, job["id"], "failed")
    assert done["attemptsMade"] == 2, done
    assert done["logs"] == [
        "attempt 1 failed: RuntimeError: disk full",
        "attempt 2 failed: RuntimeError: disk full",
    ], done
    assert done["failedReason"] == "RuntimeError: disk full"


async def test_a_stale_workers_failure_adds_no_log_line(store: Any, redis_client: Any) -> None:
    from dataclasses import replace

    from jobline.validation import parse_new_job

    await store.enqueue(parse_new_job({"name": "stale", "type": "echo", "maxAttempts": 1}))
    [job] = await store.claim("default", "test-worker", 1)
    # an earlier claim's fencing token: that attempt's worker lost the job, its failure is stale
    assert await store.fail(replace(job, token=job.token - 1), "RuntimeError: late", retry=False) == ("", [])
    assert await redis_client.lrange(K.job_logs(job.id), 0, -1) == []
    assert await redis_client.hget(K.job(job.id), "status") == "active"
    assert await store.fail(job, "RuntimeError: on time", retry=False) == ("failed", [])
    assert await redis_client.lrange(K.job_logs(job.id), 0, -1) == ["attempt 1 failed: RuntimeError: on time"]
