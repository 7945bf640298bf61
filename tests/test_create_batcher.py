"""Group commit: single creates that arrive together go to Redis together, and each still gets
exactly the answer a create of its own would."""

from __future__ import annotations

import asyncio
from typing import Any

from jobline.create_batcher import CreateBatcher
from jobline.models import NewJob, Priority
from jobline.store import JobStore


def new(name: str, queue: str = "default", **fields: Any) -> NewJob:
    return NewJob(
        name=name, type="noop", queue=queue, data={}, priority=Priority.NORMAL, delay_ms=0,
        max_attempts=3, backoff_ms=1000, timeout_ms=None, **fields,
    )  # fmt: skip


async def test_concurrent_posts_are_each_created_in_one_round_trip(client: Any, round_trips: list[int]) -> None:
    await client.post("/api/jobs", json={"name": "warm-up"})  # scripts loaded, queue registered
    round_trips[0] = 0
    responses = await asyncio.gather(*(client.post("/api/jobs", json={"name": f"job {i}"}) for i in range(20)))
    assert [r.status for r in responses] == [201] * 20
    ids = {(await r.json())["id"] for r in responses}
    assert len(ids) == 20
    listed = await (await client.get("/api/jobs", params={"limit": 100})).json()
    assert listed["total"] == 21 and ids <= {job["id"] for job in listed["jobs"]}
    assert round_trips[0] < 20  # far fewer than one a request (the listing's own included)


async def test_a_uniquekey_taken_earlier_in_the_same_turn_is_answered_with_its_holder(store: JobStore) -> None:
    batcher = CreateBatcher(store)
    first, second, other = await asyncio.gather(
        batcher.create(new("a", unique_key="k")), batcher.create(new("b", unique_key="k")), batcher.create(new("c"))
    )
    assert first[1] and not second[1] and other[1]
    assert second[0].id == first[0].id


async def test_a_failing_queue_fails_only_its_own_requests(store: JobStore, redis_client: Any) -> None:
    batcher = CreateBatcher(store)
    # a wrong type at one of the queue's keys makes its ENQUEUE call fail; the other queue's works
    await redis_client.set(store.keys.queue_jobs("broken"), "not a sorted set")
    broken, fine = await asyncio.gather(
        batcher.create(new("x", queue="broken")), batcher.create(new("y", queue="fine")), return_exceptions=True
    )
    assert isinstance(broken, Exception) and "WRONGTYPE" in str(broken)
    assert not isinstance(fine, BaseException) and fine[1] and fine[0].queue == "fine"


async def test_a_flow_is_created_by_a_call_of_its_own(store: JobStore) -> None:
    batcher = CreateBatcher(store)
    parent = new("parent", children=(new("child", queue="kids"),))
    (job, created), (lone, _) = await asyncio.gather(batcher.create(parent), batcher.create(new("lone")))
    assert created and job.children == {"total": 1, "completed": 0, "failed": 0, "cancelled": 0, "pending": 1}
    assert lone.name == "lone"
