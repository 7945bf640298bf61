"""uniqueKey and uniqueForMs: a create while the key's job is unfinished returns that job (200); the
key is free again exactly when the job finishes (or its uniqueForMs ends), is cancelled, deleted or
cleaned, even when its worker was killed and Redis restarted meanwhile."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import redis.asyncio as redis
from aiohttp import ClientResponse

from jobline.keys import Keys
from jobline.server import Settings, create_app
from tests.conftest import RedisProcess, WorkerProcess, create_job, wait_for_status, wait_until


async def create(client: Any, **fields: Any) -> ClientResponse:
    fields.setdefault("name", "unique job")
    return await client.post("/api/jobs", json=fields)


async def created_id(client: Any, **fields: Any) -> str:
    response = await create(client, **fields)
    assert response.status == 201, await response.text()
    return (await response.json())["id"]


async def held_by(client: Any, job_id: str, **fields: Any) -> None:
    """A create with these fields returns the job `job_id` with 200 and creates nothing."""
    response = await create(client, **fields)
    assert response.status == 200, await response.text()
    assert (await response.json())["id"] == job_id


async def test_a_second_create_while_the_first_is_unfinished_returns_the_first(client: Any) -> None:
    first = await created_id(client, uniqueKey="invoice:42", delayMs=60_000)
    await held_by(client, first, uniqueKey="invoice:42", name="again")
    listed = await (await client.get("/api/jobs")).json()
    assert listed["total"] == 1 and listed["jobs"][0]["uniqueKey"] == "invoice:42"


async def test_the_key_is_per_queue(client: Any) -> None:
    await created_id(client, uniqueKey="k", queue="a", delayMs=60_000)
    await created_id(client, uniqueKey="k", queue="b", delayMs=60_000)


async def test_the_key_is_free_once_the_job_completes(client: Any, start_worker: Any, redis_client: Any) -> None:
    await start_worker()
    first = await created_id(client, uniqueKey="k", type="echo")
    await wait_for_status(client, first, "completed")
    assert await _gone(redis_client, Keys().unique("default", "k"))  # released, not merely stale
    assert await created_id(client, uniqueKey="k", type="echo") != first


async def test_the_key_is_free_once_the_job_fails_for_good(client: Any, start_worker: Any, redis_client: Any) -> None:
    await start_worker()
    first = await created_id(client, uniqueKey="k", type="fail", maxAttempts=1)
    await wait_for_status(client, first, "failed")
    assert await _gone(redis_client, Keys().unique("default", "k"))
    await created_id(client, uniqueKey="k", delayMs=60_000)


async def test_the_key_is_free_once_the_job_is_cancelled(client: Any, redis_client: Any) -> None:
    first = await created_id(client, uniqueKey="k", delayMs=60_000)
    assert (await client.post(f"/api/jobs/{first}/cancel")).status == 200
    assert await _gone(redis_client, Keys().unique("default", "k"))
    await created_id(client, uniqueKey="k", delayMs=60_000)


async def test_the_key_is_free_once_the_job_is_deleted(client: Any, redis_client: Any) -> None:
    first = await created_id(client, uniqueKey="k", delayMs=60_000)
    assert (await client.delete(f"/api/jobs/{first}")).status == 204
    assert await redis_client.exists(Keys().unique("default", "k")) == 0
    await created_id(client, uniqueKey="k", delayMs=60_000)


async def test_cleaning_a_finished_job_inside_its_window_frees_the_key(client: Any, redis_client: Any) -> None:
    first = await created_id(client, uniqueKey="k", uniqueForMs=3_600_000, delayMs=60_000)
    assert (await client.post(f"/api/jobs/{first}/cancel")).status == 200
    await held_by(client, first, uniqueKey="k")  # inside its window
    cleaned = await client.post("/api/admin/queues/default/clean", json={"status": "cancelled", "olderThanMs": 0})
    assert (await cleaned.json())["removed"] == 1
    assert await redis_client.exists(Keys().unique("default", "k")) == 0
    await created_id(client, uniqueKey="k")


async def test_unique_for_ms_holds_the_key_after_the_job_finished_until_it_ends(
    client: Any, start_worker: Any, redis_client: Any
) -> None:
    await start_worker()
    first = await created_id(client, uniqueKey="throttle", uniqueForMs=1500, type="echo")
    await wait_for_status(client, first, "completed")
    await held_by(client, first, uniqueKey="throttle", type="echo")
    # Redis lets the key go by itself when the window ends: nothing is left behind.
    await wait_until(lambda: _gone(redis_client, Keys().unique("default", "throttle")), timeout=5)
    await created_id(client, uniqueKey="throttle", type="echo")


async def _gone(redis_client: Any, key: str) -> bool:
    return await redis_client.exists(key) == 0


async def test_retrying_a_failed_job_takes_its_key_again(client: Any) -> None:
    first = await created_id(client, uniqueKey="k", delayMs=60_000)
    assert (await client.post(f"/api/jobs/{first}/cancel")).status == 200
    assert (await client.post(f"/api/jobs/{first}/retry")).status == 200
    await held_by(client, first, uniqueKey="k")


async def test_a_batch_with_a_key_twice_creates_one_job(client: Any) -> None:
    response = await client.post(
        "/api/jobs/batch",
        json={"jobs": [{"name": "a", "uniqueKey": "k", "delayMs": 60_000}, {"name": "b", "uniqueKey": "k"}]},
    )
    assert response.status == 201
    jobs = (await response.json())["jobs"]
    assert jobs[0]["id"] == jobs[1]["id"] and jobs[0]["name"] == "a"
    assert (await (await client.get("/api/jobs")).json())["total"] == 1


async def test_concurrent_creates_with_one_key_create_one_job(client: Any) -> None:
    responses = await asyncio.gather(*(create(client, uniqueKey="race", delayMs=60_000) for _ in range(20)))
    assert sorted(r.status for r in responses) == [200] * 19 + [201]
    assert len({(await r.json())["id"] for r in responses}) == 1


async def test_a_bad_unique_key_or_window_is_400_and_creates_nothing(client: Any) -> None:
    for fields, field in [
        ({"uniqueKey": ""}, "uniqueKey"),
        ({"uniqueKey": "x" * 201}, "uniqueKey"),
        ({"uniqueKey": 7}, "uniqueKey"),
        ({"uniqueKey": "k", "uniqueForMs": -1}, "uniqueForMs"),
    ]:
        response = await create(client, **fields)
        assert response.status == 400, fields
        assert (await response.json())["error"]["field"] == field
    assert (await (await client.get("/api/jobs")).json())["total"] == 0


async def test_the_key_is_released_after_a_kill_9_and_a_redis_restart(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    """bullmq#4311: dedup keys outlived their jobs after an outage and jammed the queue. Here the
    job is recovered after its worker is killed and Redis restarts, runs to the end, and the key
    goes with it."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisProcess(workdir, appendonly=True)
    server.start()
    workers: list[WorkerProcess] = []
    try:
        client = await aiohttp_client(create_app(Settings(redis_url=server.url)))
        args = ("--lease-ms", "1000", "--concurrency", "1")
        workers.append(WorkerProcess(server.url, *args))
        job_id = await created_id(client, uniqueKey="nightly", type="block", data={"seconds": 1})
        await wait_for_status(client, job_id, "active")
        workers[0].kill()  # kill -9, mid-job
        server.stop()
        server.start()  # from its append-only file: the key and the job, still active
        await held_by(client, job_id, uniqueKey="nightly")
        workers.append(WorkerProcess(server.url, *args))  # recovers it once the lease runs out
        done = await wait_for_status(client, job_id, "completed", timeout=20)
        assert done["attemptsMade"] == 2
        direct = redis.Redis.from_url(server.url)
        try:
            assert await direct.exists(Keys().unique("default", "nightly")) == 0  # released, not left behind
        finally:
            await direct.aclose()
        assert await created_id(client, uniqueKey="nightly", delayMs=60_000) != job_id
    finally:
        for worker in workers:
            worker.kill()
        server.stop()
