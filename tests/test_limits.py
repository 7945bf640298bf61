"""Queue settings: a rate limit and a global concurrency per queue, enforced across every worker on
Redis's clock, a handler's RateLimited, and retention by count and by age."""

from __future__ import annotations

import asyncio
from typing import Any

from jobline.keys import Keys
from tests.conftest import create_job, wait_all, wait_for_status, wait_until
from tests.sse import SSEReader

Q = "limited"


async def patch(client: Any, queue: str = Q, **settings: Any) -> dict[str, Any]:
    response = await client.patch(f"/api/admin/queues/{queue}", json=settings)
    assert response.status == 200, await response.text()
    return await response.json()


async def queue_view(client: Any, queue: str = Q) -> dict[str, Any]:
    queues = (await (await client.get("/api/admin/queues")).json())["queues"]
    return next(q for q in queues if q["name"] == queue)


# -- the settings themselves ---------------------------------------------------------------------
async def test_settings_are_stored_shown_and_removed_with_null(client: Any) -> None:
    body = await patch(client, rateLimit={"max": 5, "perMs": 1000}, concurrency=3)
    assert body == {
        "name": Q,
        "settings": {"rateLimit": {"max": 5, "perMs": 1000}, "concurrency": 3, "retention": None},
    }
    assert (await queue_view(client))["settings"] == body["settings"]  # the queue exists now
    body = await patch(client, concurrency=None, retention={"completed": {"maxCount": 10}})
    assert body["settings"] == {
        "rateLimit": {"max": 5, "perMs": 1000}, "concurrency": None, "retention": {"completed": {"maxCount": 10}},
    }  # fmt: skip


async def test_bad_settings_are_400_naming_the_field_and_change_nothing(client: Any) -> None:
    await patch(client, concurrency=2)
    for body, field in [
        ({"rateLimit": {"max": 0, "perMs": 1000}}, "rateLimit.max"),
        ({"rateLimit": {"max": 1}}, "rateLimit"),
        ({"rateLimit": {"max": 1, "perMs": 1, "burst": 2}}, "rateLimit.burst"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": "2"}, "concurrency"),
        ({"retention": {"done": {"maxCount": 1}}}, "retention.done"),
        ({"retention": {"failed": {"maxAgeMs": 0}}}, "retention.failed.maxAgeMs"),
        ({"retention": {"failed": {}}}, "retention.failed"),
        ({"paused": True}, "paused"),
    ]:
        response = await client.patch(f"/api/admin/queues/{Q}", json=body)
        assert response.status == 400, body
        assert (await response.json())["error"]["field"] == field, body
    assert (await queue_view(client))["settings"]["concurrency"] == 2


# -- concurrency ---------------------------------------------------------------------------------
async def test_global_concurrency_holds_across_workers(client: Any, start_worker: Any) -> None:
    await patch(client, concurrency=2)
    for _ in range(3):
        await start_worker(queues=(Q,), concurrency=5)
    ids = [(await create_job(client, queue=Q, type="sleep", data={"ms": 150}))["id"] for _ in range(8)]
    most = 0
    while True:
        view = await queue_view(client)
        most = max(most, view["counts"]["active"])
        if view["counts"]["completed"] == len(ids):
            break
        await asyncio.sleep(0.01)
    assert most == 2  # never more, and the limit was reached (the jobs did overlap)


async def test_a_queue_at_its_concurrency_says_it_is_held_back(client: Any, start_worker: Any) -> None:
    await patch(client, concurrency=1)
    await start_worker(queues=(Q,))
    first = await create_job(client, queue=Q, type="block")
    await wait_for_status(client, first["id"], "active")
    await create_job(client, queue=Q, type="block")
    view = await queue_view(client)
    assert view["heldBack"] == {"by": "concurrency", "untilMs": None}
    assert view["counts"]["waiting"] == 1


# -- rate limit ----------------------------------------------------------------------------------
async def test_a_rate_limit_holds_across_workers_in_every_window(client: Any, start_worker: Any) -> None:
    await patch(client, rateLimit={"max": 3, "perMs": 400})
    for _ in range(3):
        await start_worker(queues=(Q,), concurrency=5)
    ids = [(await create_job(client, queue=Q, type="echo"))["id"] for _ in range(9)]
    jobs = await wait_all(client, ids, "completed", timeout=20)
    starts = sorted(job["startedAt"] for job in jobs)
    # any 4 consecutive starts span at least one window: no window holds more than 3
    assert all(later - first >= 400 for first, later in zip(starts, starts[3:])), starts
    # and the limit lets them go as soon as a window allows: 9 jobs in about 2 windows
    assert starts[-1] - starts[0] < 400 * 2 + 600, starts


async def test_a_worker_held_back_waits_without_polling_redis(
    client: Any, start_worker: Any, redis_client: Any, on_cluster: bool
) -> None:
    await patch(client, rateLimit={"max": 1, "perMs": 3000})
    await start_worker(queues=(Q,))
    first = await create_job(client, queue=Q, type="echo")
    await wait_for_status(client, first["id"], "completed")
    second = await create_job(client, queue=Q, type="echo")
    await asyncio.sleep(0.2)  # the worker finds the queue held back
    view = await queue_view(client)
    assert view["heldBack"]["by"] == "rateLimit" and view["heldBack"]["untilMs"] > first["createdAt"]
    before = await claims_made(redis_client, on_cluster)
    await asyncio.sleep(1.0)
    # a few calls a second (its other duties included), not a busy loop of claims put back
    assert await claims_made(redis_client, on_cluster) - before <= 5
    done = await wait_for_status(client, second["id"], "completed", timeout=10)
    started = (await (await client.get(f"/api/jobs/{first['id']}")).json())["startedAt"]
    assert 3000 <= done["startedAt"] - started < 3000 + 1500  # as soon as the window allowed


async def claims_made(redis_client: Any, on_cluster: bool) -> int:
    """EVALSHA and BLMOVE calls Redis has served (every node of a cluster)."""
    if on_cluster:
        from redis.asyncio.cluster import RedisCluster

        per_node = await redis_client.info("commandstats", target_nodes=RedisCluster.PRIMARIES)
        stats = list(per_node.values()) if "cmdstat_ping" not in per_node else [per_node]
    else:
        stats = [await redis_client.info("commandstats")]
    return sum(int(s.get(f"cmdstat_{c}", {}).get("calls", 0)) for s in stats for c in ("evalsha", "blmove"))


async def test_rate_limited_in_the_handler_delays_the_job_without_costing_an_attempt(
    client: Any, start_worker: Any
) -> None:
    await start_worker()
    job = await create_job(client, type="rate_limited_once", maxAttempts=1, data={"ms": 300})
    done = await wait_for_status(client, job["id"], "completed", "failed", timeout=10)
    assert done["status"] == "completed", (done["failedReason"], done["attemptsMade"])
    assert done["attemptsMade"] == 1 and done["result"] == {"attempt": 1}
    assert done["startedAt"] - done["createdAt"] >= 300
    full = await (await client.get(f"/api/jobs/{job['id']}")).json()
    assert any("rate limited" in line for line in full["logs"])


# -- retention -----------------------------------------------------------------------------------
async def test_retention_by_count_keeps_the_newest_and_announces_the_rest(
    client: Any, start_worker: Any, redis_client: Any
) -> None:
    await patch(client, retention={"completed": {"maxCount": 3}})
    stream = SSEReader(await client.get("/api/jobs/stream"))
    await start_worker(queues=(Q,), concurrency=1)
    ids = [(await create_job(client, queue=Q, type="echo"))["id"] for _ in range(8)]
    await wait_for_status(client, ids[-1], "completed")
    removed = {
        e.json()["id"] for e in await stream.until(lambda e: e.event == "job-removed" and e.json()["id"] == ids[4])
        if e.event == "job-removed"
    }
    assert removed == set(ids[:5])
    listed = await (await client.get("/api/jobs", params={"queue": Q})).json()
    assert [job["id"] for job in listed["jobs"]] == ids[:4:-1] and listed["total"] == 3
    for job_id in ids[:5]:
        assert await redis_client.exists(Keys().job(job_id), Keys().job_logs(job_id)) == 0


async def test_retention_by_age_removes_jobs_finished_longer_ago(client: Any, start_worker: Any) -> None:
    await patch(client, retention={"failed": {"maxAgeMs": 300}})
    await start_worker(queues=(Q,))
    failed = await create_job(client, queue=Q, type="fail", maxAttempts=1)
    done = await create_job(client, queue=Q, type="echo")
    await wait_for_status(client, failed["id"], "failed")

    async def gone() -> bool:
        return (await client.get(f"/api/jobs/{failed['id']}")).status == 404

    await wait_until(gone, timeout=5)
    assert (await (await client.get(f"/api/jobs/{done['id']}")).json())["status"] == "completed"  # kept


async def test_without_retention_finished_jobs_stay(client: Any, start_worker: Any) -> None:
    await start_worker(queues=(Q,))
    ids = [(await create_job(client, queue=Q, type="echo"))["id"] for _ in range(5)]
    await wait_all(client, ids, "completed")
    await asyncio.sleep(1.2)  # a retention sweep has run
    assert (await (await client.get("/api/jobs", params={"queue": Q})).json())["total"] == 5


async def test_limits_hold_across_worker_processes(client: Any, spawn_worker: Any) -> None:
    """Three `python worker.py` processes: never more than 2 of the queue's jobs active (sampled),
    and never more than 4 started in any second (from startedAt)."""
    await patch(client, concurrency=2, rateLimit={"max": 4, "perMs": 1000})
    for _ in range(3):
        spawn_worker("--queue", Q, "--concurrency", "5")

    async def three_workers() -> bool:
        return len((await (await client.get("/api/admin/workers")).json())["workers"]) == 3

    await wait_until(three_workers, timeout=20)
    ids = [(await create_job(client, queue=Q, type="sleep", data={"ms": 100}))["id"] for _ in range(12)]
    most = 0
    while (view := await queue_view(client))["counts"]["completed"] < len(ids):
        most = max(most, view["counts"]["active"])
        await asyncio.sleep(0.01)
    starts = sorted(job["startedAt"] for job in await wait_all(client, ids, "completed"))
    assert most <= 2
    assert all(later - first >= 1000 for first, later in zip(starts, starts[4:])), starts
