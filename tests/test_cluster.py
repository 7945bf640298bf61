"""Redis Cluster, as the spec describes it: queues spread over the shards and flows across them
work as on a single Redis (run, list, count, batch create), one stream resumes across every shard,
a worker killed with jobs on two shards loses none, and a stopped node is a 503, never a 500.

Everything runs on a real 3-master cluster: the session's (tests/cluster.py, via conftest), or, for
the test that stops a node, one of the test's own.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from jobline.keys import Keys, queue_tag
from jobline.server import Settings, create_app
from tests.cluster import RedisClusterProcess, slot_ranges
from tests.conftest import create_job, redis_server_binary, wait_all, wait_until
from tests.sse import Event, SSEReader

K = Keys()
SHARDS = 3
FINISHED = ("completed", "failed", "cancelled")


@pytest.fixture
def backend() -> str:
    """Every test here runs on the cluster (conftest then hands out the session cluster's URL)."""
    return "cluster"


def shard_of(queue: str) -> int:
    """The master serving the queue's slot (node i of the harness serves slot_ranges(3)[i])."""
    slot = key_slot(K.wait(queue).encode())
    return next(i for i, slots in enumerate(slot_ranges(SHARDS)) if slot in slots)


def queue_on(shard: int) -> str:
    return next(name for name in (f"queue-{n}" for n in itertools.count()) if shard_of(name) == shard)


QUEUES = [queue_on(shard) for shard in range(SHARDS)]  # one queue on each master


# -- helpers ---------------------------------------------------------------------------------------
async def get_json(client: Any, path: str, **params: Any) -> Any:
    response = await client.get(path, params={k: str(v) for k, v in params.items()})
    assert response.status == 200, await response.text()
    return await response.json()


async def open_stream(client: Any, last_event_id: str | None = None) -> SSEReader:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    response = await client.get("/api/jobs/stream", headers=headers)
    assert response.status == 200, await response.text()
    return SSEReader(response)


async def log_entries(redis_client: Any, queue: str) -> list[tuple[str, dict[str, str]]]:
    return await redis_client.xrange(K.event_log(queue))


def job_of(event: Event) -> dict[str, Any]:
    assert event.event == "job", event
    return event.json()["job"]


# == 1. queues on all three shards ==================================================================
async def test_the_queues_here_live_on_three_different_masters(redis_client: Any) -> None:
    await redis_client.initialize()
    nodes = {queue: redis_client.get_node_from_key(K.wait(queue)).name for queue in QUEUES}
    assert len(set(nodes.values())) == SHARDS, nodes


async def test_a_worker_serving_queues_on_every_shard_runs_all_their_jobs_and_the_counts_show_it(
    client: Any, start_worker: Any
) -> None:
    created = [
        await create_job(client, name=f"{queue} #{n}", type="echo", queue=queue, data={"n": n})
        for n in range(2)
        for queue in QUEUES
    ]
    await start_worker(queues=tuple(QUEUES))
    done = await wait_all(client, [j["id"] for j in created], *FINISHED)
    assert [(j["status"], j["result"]) for j in done] == [("completed", j["data"]) for j in created]

    queues = {q["name"]: q for q in (await get_json(client, "/api/admin/queues"))["queues"]}
    assert set(queues) == set(QUEUES)
    for queue in QUEUES:
        assert queues[queue]["counts"] == {
            "waiting": 0, "delayed": 0, "active": 0, "completed": 2, "failed": 0, "cancelled": 0, "waiting-children": 0,
        }  # fmt: skip
        assert queues[queue]["workers"] == 1


async def test_jobs_of_every_shard_list_newest_first_with_an_exact_total(client: Any) -> None:
    created = [await create_job(client, name=f"{queue} #{n}", queue=queue) for n in range(3) for queue in QUEUES]
    for job in created:
        assert job["id"].startswith(queue_tag(job["queue"]))
    newest_first = [j["id"] for j in reversed(created)]

    listed = await get_json(client, "/api/jobs", limit=500)
    assert (listed["total"], [j["id"] for j in listed["jobs"]]) == (9, newest_first)
    page = await get_json(client, "/api/jobs", limit=3, offset=3)
    assert (page["total"], [j["id"] for j in page["jobs"]]) == (9, newest_first[3:6])
    one_queue = await get_json(client, "/api/jobs", queue=QUEUES[1], status="waiting")
    in_queue = [j["id"] for j in reversed(created) if j["queue"] == QUEUES[1]]
    assert (one_queue["total"], [j["id"] for j in one_queue["jobs"]]) == (3, in_queue)


# == 2. one stream resumes across shards ============================================================
async def test_one_stream_resumes_across_shards_with_exactly_the_missed_events(
    client: Any, redis_client: Any
) -> None:
    stream = await open_stream(client)
    seen_jobs = [await create_job(client, name=f"seen in {queue}", queue=queue) for queue in QUEUES]
    seen = await stream.collect(len(QUEUES))
    assert sorted(job_of(e)["id"] for e in seen) == sorted(j["id"] for j in seen_jobs)  # order: arrival
    stream.response.close()
    before = {queue: {entry_id for entry_id, _ in await log_entries(redis_client, queue)} for queue in QUEUES}

    missed_jobs = [await create_job(client, name=f"missed in {queue}", queue=queue) for queue in QUEUES]
    for job in (seen_jobs[0], missed_jobs[1]):
        assert (await client.post(f"/api/jobs/{job['id']}/cancel", json={})).status == 200
    assert (await client.patch(f"/api/jobs/{missed_jobs[2]['id']}", json={"priority": "high"})).status == 200
    missed = {  # what each queue's log holds after the cursor
        queue: [(f["e"], f["d"]) for entry, f in await log_entries(redis_client, queue) if entry not in before[queue]]
        for queue in QUEUES
    }
    assert sum(map(len, missed.values())) == 6

    resumed = await open_stream(client, last_event_id=seen[-1].id)
    replayed = await resumed.collect(6)
    for queue in QUEUES:
        assert [(e.event, e.data) for e in replayed if job_of(e)["queue"] == queue] == missed[queue]
    assert len({e.id for e in replayed} | {e.id for e in seen}) == 9  # every id distinct
    for job in [*seen_jobs, *missed_jobs]:
        revs = [job_of(e)["rev"] for e in replayed if job_of(e)["id"] == job["id"]]
        assert revs == sorted(set(revs))
    live = await create_job(client, name="live", queue=QUEUES[1])
    assert job_of(await resumed.next())["id"] == live["id"]  # nothing replayed twice, nothing more


# == 3. batch create across shards ==================================================================
async def test_batch_with_jobs_for_every_shard_creates_them_all_in_order(client: Any) -> None:
    bodies = [{"name": f"{queue} #{n}", "queue": queue, "data": {"n": n}} for n in range(3) for queue in QUEUES]
    response = await client.post("/api/jobs/batch", json={"jobs": bodies})
    assert response.status == 201, await response.text()
    jobs = (await response.json())["jobs"]

    assert [(j["name"], j["queue"], j["data"], j["status"]) for j in jobs] == [
        (b["name"], b["queue"], b["data"], "waiting") for b in bodies
    ]
    for job in jobs:
        assert job["id"].startswith(queue_tag(job["queue"]))
        stored = await get_json(client, f"/api/jobs/{job['id']}")
        assert {field: stored[field] for field in job} == job
    listed = await get_json(client, "/api/jobs", limit=500)
    assert listed["total"] == len(bodies)
    assert [j["id"] for j in listed["jobs"]] == [j["id"] for j in reversed(jobs)]


# == 4. kill -9 of a worker holding jobs on two shards ==============================================
async def test_kill_9_of_a_worker_with_jobs_on_two_shards_loses_none_and_runs_none_twice(
    client: Any, spawn_worker: Any, redis_client: Any
) -> None:
    lease_ms = 1000
    two = QUEUES[:2]
    serve = ("--queue", two[0], "--queue", two[1], "--lease-ms", str(lease_ms))
    ids = [
        (await create_job(client, name=f"{queue} #{n}", type="block", queue=queue, data={"seconds": 2}))["id"]
        for n in range(2)
        for queue in two
    ]
    first = spawn_worker(*serve)

    async def all_active() -> bool:
        return [(await get_json(client, f"/api/jobs/{i}"))["status"] for i in ids] == ["active"] * 4

    await wait_until(all_active, timeout=20)
    dead = {(await get_json(client, f"/api/jobs/{i}"))["workerId"] for i in ids}
    assert len(dead) == 1
    dead_id = dead.pop()
    first.kill()
    assert first.proc.returncode == -signal.SIGKILL
    for queue in two:  # its claims survive, one processing list per shard
        assert await redis_client.llen(K.processing(queue, dead_id)) == 2

    second = spawn_worker(*serve)
    done = await wait_all(client, ids, *FINISHED, timeout=lease_ms / 1000 + 20)
    assert [(j["status"], j["result"], j["attemptsMade"]) for j in done] == [("completed", "unblocked", 2)] * 4, (
        second.output()
    )
    assert all(j["workerId"] != dead_id for j in done)
    for job_id in ids:
        assert await redis_client.hget(K.job(job_id), "recoveries") == "1"
    for queue in two:
        completions = [
            json.loads(f["d"])["job"]["id"]
            for _, f in await log_entries(redis_client, queue)
            if f["e"] == "job" and json.loads(f["d"])["job"]["status"] == "completed"
        ]
        assert sorted(completions) == sorted(i for i in ids if i.startswith(queue_tag(queue)))  # once each
        assert await redis_client.llen(K.processing(queue, dead_id)) == 0
        assert await redis_client.llen(K.wait(queue)) == 0
    assert (await get_json(client, "/api/jobs"))["total"] == 4


# == 5. a node stopped ==============================================================================
@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisClusterProcess]:
    """A cluster this test may stop a node of: AOF on (a node restarts with its data), and a short
    node timeout, so that the others declare the cluster failed quickly."""
    cluster = RedisClusterProcess(tmp_path, appendonly=True, node_timeout_ms=1000, binary=redis_server_binary())
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


async def unavailable(response: Any) -> bool:
    assert response.status != 500, await response.text()
    return response.status == 503 and (await response.json())["error"]["code"] == "unavailable"


async def test_a_stopped_node_is_a_503_unavailable_and_the_same_app_recovers_when_it_is_back(
    own_cluster: RedisClusterProcess, aiohttp_client: Any
) -> None:
    client = await aiohttp_client(create_app(Settings(redis_url=own_cluster.url, redis_cluster=True)))
    stopped, other = 1, QUEUES[2]  # not the node of the app's REDIS_URL; a queue of another shard
    before = await create_job(client, queue=QUEUES[stopped])
    assert await health(client) == (200, {"redis": "ok"})

    await asyncio.to_thread(own_cluster.stop_node, stopped, True)
    started = time.monotonic()
    assert await unavailable(await client.get("/api/jobs"))
    assert await unavailable(await client.post("/api/jobs", json={"name": "refused", "queue": other}))
    await wait_until(lambda: health_is(client, 503, {"redis": "unavailable"}), timeout=3)  # checked once a second
    assert time.monotonic() - started < 10  # answered, not hung

    await asyncio.to_thread(own_cluster.start_node, stopped)

    async def back() -> bool:
        response = await client.get("/api/jobs")
        assert response.status in (200, 503), await response.text()  # a 503 until the cluster is ok
        return response.status == 200

    await wait_until(back, timeout=15, interval=0.1)
    after = await create_job(client, queue=other)
    listed = await get_json(client, "/api/jobs")
    assert [j["id"] for j in listed["jobs"]] == [after["id"], before["id"]]
    await wait_until(lambda: health_is(client, 200, {"redis": "ok"}), timeout=3)


async def health(client: Any) -> tuple[int, Any]:
    response = await client.get("/healthz")
    return response.status, await response.json()


async def health_is(client: Any, status: int, body: Any) -> bool:
    got = await health(client)
    assert got[0] != 500, got
    return got == (status, body)
