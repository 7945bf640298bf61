"""POST /api/jobs/batch as the spec describes it: up to 1,000 jobs in one request, created in order,
all or nothing, in one atomic round trip to Redis.

Real HTTP (aiohttp test client on `create_app`) against a real, throwaway redis-server.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis.asyncio as redis
import redis.exceptions

from jobline.keys import Keys
from jobline.models import API_FIELDS
from jobline.store import JobStore
from jobline.validation import MAX_BATCH_JOBS, parse_new_job
from tests.conftest import create_job, wait_all

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
WORK_QUEUE = "work"
KEYS = Keys()


# -- helpers -------------------------------------------------------------------------------------


async def post_batch(client: Any, jobs: Any) -> Any:
    return await client.post("/api/jobs/batch", json={"jobs": jobs})


async def created(client: Any, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = await post_batch(client, jobs)
    assert response.status == 201, await response.text()
    body = await response.json()
    assert list(body) == ["jobs"]
    return body["jobs"]


async def total(client: Any) -> int:
    response = await client.get("/api/jobs")
    assert response.status == 200, await response.text()
    return (await response.json())["total"]


async def get_job(client: Any, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/jobs/{job_id}")
    assert response.status == 200, await response.text()
    return await response.json()


async def validation_error(response: Any) -> dict[str, Any]:
    assert response.status == 400, await response.text()
    error = (await response.json())["error"]
    assert error["code"] == "validation_error"
    return error


async def commands_seen(r: redis.Redis) -> dict[str, int]:
    """INFO commandstats since the last CONFIG RESETSTAT, without our own INFO and CONFIG."""
    stats = await r.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    return {name: n for name, n in calls.items() if name not in ("info", "config")}


# -- creating ------------------------------------------------------------------------------------


async def test_batch_creates_the_jobs_in_order_as_the_api_shows_them(client: Any) -> None:
    bodies = [
        {"name": "first", "type": "echo", "data": {"i": 0}},
        {"name": "second", "queue": "emails.v2", "maxAttempts": 7, "backoffMs": 250, "timeoutMs": 5000},
        {"name": "third", "priority": "high", "data": {"nested": {"ok": True, "none": None}}},
        {"name": "fourth", "delayMs": 60_000},
    ]
    jobs = await created(client, bodies)

    assert [job["name"] for job in jobs] == ["first", "second", "third", "fourth"]
    assert all(list(job) == list(API_FIELDS) for job in jobs)  # as POST /api/jobs shows a job
    assert all(ID_PATTERN.match(job["id"]) for job in jobs) and len({job["id"] for job in jobs}) == 4
    for body, job in zip(bodies, jobs):
        shown = {field: value for field, value in body.items() if field != "delayMs"}  # shown as runAt
        assert {field: job[field] for field in shown} == shown
    assert [job["status"] for job in jobs] == ["waiting", "waiting", "waiting", "delayed"]
    assert [job["createdAt"] for job in jobs] == sorted(job["createdAt"] for job in jobs)
    # Listed newest first: the batch's order, reversed.
    listed = (await (await client.get("/api/jobs")).json())["jobs"]
    assert [job["id"] for job in listed] == [job["id"] for job in reversed(jobs)]


async def test_a_job_created_by_batch_is_the_job_get_shows(client: Any) -> None:
    jobs = await created(client, [{"name": f"job {i}", "type": "echo", "data": {"i": i}} for i in range(10)])
    for job in jobs:
        shown = await get_job(client, job["id"])
        assert {k: v for k, v in shown.items() if k not in ("logs", "events", "state")} == job


async def test_a_batch_job_has_the_defaults_of_a_single_create(client: Any) -> None:
    [batch] = await created(client, [{"name": "same"}])
    single = await create_job(client, name="same")
    differ = {"id", "createdAt"}
    assert {k: v for k, v in batch.items() if k not in differ} == {k: v for k, v in single.items() if k not in differ}


async def test_priorities_and_delays_are_honoured_per_job(
    client: Any, redis_client: redis.Redis, start_worker: Any
) -> None:
    bodies = [
        {"name": "normal 1"},
        {"name": "high 1", "priority": "high"},
        {"name": "later", "delayMs": 60_000},
        {"name": "high 2", "priority": "high"},
        {"name": "normal 2", "delayMs": 0},
    ]
    jobs = await created(client, [{**body, "queue": WORK_QUEUE, "type": "noop"} for body in bodies])
    later = jobs[2]
    assert later["status"] == "delayed"
    assert abs(later["runAt"] - (later["createdAt"] + 60_000)) <= 50
    assert [job["priority"] for job in jobs] == ["normal", "high", "normal", "high", "normal"]
    in_line = await redis_client.lrange(KEYS.wait(WORK_QUEUE), 0, -1)
    assert in_line == [jobs[i]["id"] for i in (1, 3, 0, 4)]  # high first, each in the batch's order

    await start_worker(queues=(WORK_QUEUE,), block_s=0.1, concurrency=1)
    normal_1, high_1, high_2, normal_2 = await wait_all(
        client, [job["id"] for i, job in enumerate(jobs) if i != 2], "completed"
    )
    # One at a time (timestamps may tie at the millisecond): the high jobs first, each line in order.
    assert high_1["finishedAt"] <= high_2["startedAt"] <= high_2["finishedAt"] <= normal_1["startedAt"]
    assert normal_1["finishedAt"] <= normal_2["startedAt"]
    assert (await get_job(client, later["id"]))["status"] == "delayed"


async def test_a_full_batch_is_one_atomic_round_trip_to_redis(
    client: Any, redis_client: redis.Redis, round_trips: list[int]
) -> None:
    await create_job(client, name="warm-up")  # the app's connection is open
    await redis_client.config_resetstat()
    before = round_trips[0]
    jobs = await created(client, [{"name": f"n{i}", "type": "noop"} for i in range(MAX_BATCH_JOBS)])
    assert round_trips[0] - before == 1
    seen = await commands_seen(redis_client)
    assert seen["evalsha"] == 1  # one script call per queue: Redis applies all of it or none
    assert "multi" not in seen
    assert len(jobs) == MAX_BATCH_JOBS and [job["name"] for job in jobs] == [f"n{i}" for i in range(MAX_BATCH_JOBS)]
    assert await total(client) == MAX_BATCH_JOBS + 1


async def test_a_redis_out_of_memory_creates_none_of_the_batch(store: JobStore, redis_client: redis.Redis) -> None:
    """Redis fills up after the first queue's jobs: the second queue's are refused, and the first
    queue's are removed again."""
    news = [
        parse_new_job({"name": f"j{i}", "queue": "first" if i < 500 else "second", "data": {"pad": "x" * 200}})
        for i in range(MAX_BATCH_JOBS)
    ]
    used = (await redis_client.info("memory"))["used_memory"]
    policy = (await redis_client.config_get("maxmemory-policy"))["maxmemory-policy"]
    await redis_client.config_set("maxmemory-policy", "noeviction")
    await redis_client.config_set("maxmemory", used + 200_000)  # room for some of the jobs, not all
    try:
        with pytest.raises(redis.exceptions.ResponseError, match="maxmemory"):
            await store.enqueue_many(news)
        for queue in ("first", "second"):
            assert await redis_client.zcard(KEYS.queue_jobs(queue)) == 0
            assert await redis_client.llen(KEYS.wait(queue)) == 0
        assert await redis_client.keys(KEYS.job("*")) == []
    finally:
        await redis_client.config_set("maxmemory", 0)
        await redis_client.config_set("maxmemory-policy", policy)
    assert len(await store.enqueue_many(news[:3])) == 3  # and with room again, it works


async def test_get_on_the_batch_path_is_not_a_job_lookup(client: Any) -> None:
    response = await client.get("/api/jobs/batch")
    assert response.status == 405
    assert response.headers["Allow"] == "POST"


# -- all or nothing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "jobs, field",
    [
        ([{"name": "a"}, {"name": "b"}, {"type": "echo"}, {"name": "d"}], "jobs[2].name"),
        ([{"name": "a"}, {"name": "b"}, {"name": ""}], "jobs[2].name"),
        ([{"name": "a", "type": "demo", "data": {"steps": 0}}], "jobs[0].data.steps"),
        ([{"name": "a"}, {"name": "b", "tags": ["no spaces"]}], "jobs[1].tags"),
        ([{"name": "a"}, "not an object"], "jobs[1]"),
        ([{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d", "maxAttempts": 0}], "jobs[3].maxAttempts"),
        ([{"name": "a", "priority": "urgent"}], "jobs[0].priority"),
        ([{"name": "a", "queue": ".."}], "jobs[0].queue"),
    ],
)
async def test_one_invalid_job_is_a_400_naming_it_and_nothing_is_created(
    client: Any, jobs: list[Any], field: str
) -> None:
    error = await validation_error(await post_batch(client, jobs))
    assert error["field"] == field
    assert error["message"].startswith(f"{field}: ")
    assert await total(client) == 0


async def test_the_first_invalid_job_is_the_one_named(client: Any) -> None:
    jobs = [{"name": "ok"}, {"name": "a", "delayMs": -1}, {"type": "echo"}]
    error = await validation_error(await post_batch(client, jobs))
    assert error["field"] == "jobs[1].delayMs"
    assert error["message"] == "jobs[1].delayMs: must be between 0 and 31622400000"


@pytest.mark.parametrize("count", [0, MAX_BATCH_JOBS + 1])
async def test_zero_jobs_or_more_than_the_limit_is_a_400(client: Any, count: int) -> None:
    error = await validation_error(await post_batch(client, [{"name": "x"}] * count))
    assert error["field"] == "jobs"
    assert str(MAX_BATCH_JOBS) in error["message"]
    assert await total(client) == 0


@pytest.mark.parametrize(
    "body, field",
    [
        ([{"name": "a"}], None),
        ("jobs", None),
        ({}, "jobs"),
        ({"jobs": {"name": "a"}}, "jobs"),
        ({"jobs": None}, "jobs"),
        ({"jobs": [{"name": "a"}], "atomic": True}, "atomic"),
    ],
)
async def test_a_body_that_is_not_a_jobs_object_is_a_400(client: Any, body: Any, field: str | None) -> None:
    error = await validation_error(await client.post("/api/jobs/batch", json=body))
    assert error.get("field") == field
    assert await total(client) == 0


async def test_a_batch_past_the_body_limit_is_a_413(client: Any) -> None:
    jobs = [{"name": f"big {i}", "data": {"pad": "x" * 60_000}} for i in range(20)]  # ~1.2 MB
    response = await post_batch(client, jobs)
    assert response.status == 413, await response.text()
    assert (await response.json())["error"]["code"] == "too_large"
    assert await total(client) == 0
