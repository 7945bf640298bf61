"""Progress health: `progressAt` and `progressSteps` on every job, the stuck rule, and the number of
stuck jobs per queue on /metrics."""

from __future__ import annotations

from typing import Any

from jobline.health import is_stuck
from jobline.store import JobStore
from tests.conftest import create_job, wait_for_status, wait_until


def test_a_job_is_stuck_past_three_average_steps_and_at_least_ten_seconds() -> None:
    live = {"w1"}
    # four steps in 40 s: 10 s a step, so stuck after 30 s without progress
    job = {"startedAt": "0", "progressAt": "40000", "progressSteps": "4", "workerId": "w1"}
    assert not is_stuck(job, 70_000, live)
    assert is_stuck(job, 70_001, live)
    # fast steps: the floor of 10 s holds
    quick = {"startedAt": "0", "progressAt": "100", "progressSteps": "10", "workerId": "w1"}
    assert not is_stuck(quick, 10_100, live) and is_stuck(quick, 10_101, live)


def test_a_job_is_not_stuck_when_its_worker_is_gone_or_it_never_reported_progress() -> None:
    job = {"startedAt": "0", "progressAt": "1000", "progressSteps": "1", "workerId": "w1"}
    assert not is_stuck(job, 1_000_000, {"w2"})  # a lost worker is the reaper's business
    assert not is_stuck({"startedAt": "0", "progressSteps": "0", "workerId": "w1"}, 1_000_000, {"w1"})


async def test_progress_sets_progress_at_and_counts_steps(client: Any, store: JobStore) -> None:
    job = await create_job(client, name="steps")
    assert job["progressAt"] is None and job["progressSteps"] == 0
    [claimed] = await store.claim("default", "w", 1)
    await store.update(claimed, progress=10)
    await store.update(claimed, progress=10)  # unchanged: not a step
    await store.update(claimed, progress=20)
    seen = await (await client.get(f"/api/jobs/{job['id']}")).json()
    assert seen["progress"] == 20 and seen["progressSteps"] == 2
    assert seen["progressAt"] >= seen["startedAt"]


async def test_a_new_attempt_starts_counting_steps_again(client: Any, store: JobStore) -> None:
    job = await create_job(client, name="again", backoffMs=0)
    [claimed] = await store.claim("default", "w", 1)
    await store.update(claimed, progress=50)
    await store.fail(claimed, "E: once")
    await client.post(f"/api/jobs/{job['id']}/promote", json={})
    await store.claim("default", "w", 1)
    assert (await (await client.get(f"/api/jobs/{job['id']}")).json())["progressSteps"] == 0


async def test_metrics_count_stuck_jobs_per_queue(client: Any, start_worker: Any, redis_client: Any, store: JobStore) -> None:
    await start_worker(queues=("slow",), grace_s=0.2)
    job = await create_job(client, name="hangs", type="block", queue="slow")
    await wait_for_status(client, job["id"], "active")
    await wait_until(lambda: _steps(client, job["id"]))
    assert 'jobline_stuck_jobs{queue="slow"} 0' in await _metrics(client)
    # A minute passes with no progress: moved back in time, as the clock would have moved on.
    key = store.keys.job(job["id"])
    started, moved = (int(x) for x in await redis_client.hmget(key, "startedAt", "progressAt"))
    await redis_client.hset(key, mapping={"startedAt": started - 60_000, "progressAt": moved - 60_000})
    assert 'jobline_stuck_jobs{queue="slow"} 1' in await _metrics(client)


async def _steps(client: Any, job_id: str) -> bool:
    return (await (await client.get(f"/api/jobs/{job_id}")).json())["progressSteps"] >= 1


async def _metrics(client: Any) -> str:
    response = await client.get("/metrics")
    assert response.status == 200
    return await response.text()
