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
from tests.conftest import create_job, redis_server_binary, wait_all, wait_for_status, wait_until
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
async def test_queues_on_three_shards_run_list_newest_first_and_count(
    client: Any, start_worker: Any, redis_client: Any
) -> None:
    await redis_client.initialize()
    assert len({redis_client.get_node_from_key(K.wait(q)).name for q in QUEUES}) == SHARDS
    created = [
        await create_job(client, name=f"{queue} #{n}", type="echo", queue=queue, data={"n": n})
        for n in range(2)
        for queue in QUEUES
    ]
    for job in created:
        assert job["id"].startswith(queue_tag(job["queue"]))

    await start_worker(queues=tuple(QUEUES))
    done = await wait_all(client, [j["id"] for j in created], *FINISHED)
    assert [(j["status"], j["result"]) for j in done] == [("completed", j["data"]) for j in created]

    newest_first = [j["id"] for j in reversed(created)]
    listed = await get_json(client, "/api/jobs", limit=500)
    assert listed["total"] == 6
    assert [j["id"] for j in listed["jobs"]] == newest_first
    page = await get_json(client, "/api/jobs", limit=2, offset=2)
    assert (page["total"], [j["id"] for j in page["jobs"]]) == (6, newest_first[2:4])
    one_queue = await get_json(client, "/api/jobs", queue=QUEUES[1], status="completed")
    in_queue = [j["id"] for j in reversed(created) if j["queue"] == QUEUES[1]]
    assert (one_queue["total"], [j["id"] for j in one_queue["jobs"]]) == (2, in_queue)

    queues = {q["name"]: q for q in (await get_json(client, "/api/admin/queues"))["queues"]}
    assert set(queues) == set(QUEUES)
    for queue in QUEUES:
        assert queues[queue]["counts"] == {
            "waiting": 0, "delayed": 0, "active": 0, "completed": 2, "failed": 0, "cancelled": 0,
        }  # fmt: skip
        assert queues[queue]["workers"] == 1
