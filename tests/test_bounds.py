"""Bounded by design: one request cannot inflate Redis, blank the dashboard or outgrow a date.

Findings 4, 5 and 11 of issue 17: events leave big data out, the event log has a byte cap as well
as a count cap, demo steps are capped, retry delays are capped (so `runAt` is always a valid
date), and queue names `.` and `..` are refused.
"""

from __future__ import annotations

from typing import Any

import pytest

from jobline import scripts
from jobline.keys import Keys
from jobline.models import now_ms
from jobline.models import NewJob
from jobline.store import JobStore
from jobline.models import Priority
from tests.conftest import create_job, wait_for_status
from tests.sse import SSEReader

K = Keys()
MAX_JS_DATE = 8.64e15


async def test_an_event_leaves_out_data_over_4_kib_and_says_so(client: Any) -> None:
    stream = SSEReader(await client.get("/api/jobs/stream"))
    big = {"blob": "x" * 5000}
    job = await create_job(client, name="big data", type="echo", data=big)
    event = (await stream.next()).json()["job"]
    assert event["id"] == job["id"] and event["dataOmitted"] is True
    assert "data" not in event and "result" not in event
    assert len(event["name"]) and event["status"] == "waiting"
    # the single-job view has everything
    full = await (await client.get(f"/api/jobs/{job['id']}")).json()
    assert full["data"] == big


async def test_an_event_keeps_small_data(client: Any) -> None:
    stream = SSEReader(await client.get("/api/jobs/stream"))
    await create_job(client, name="small", data={"steps": 2})
    event = (await stream.next()).json()["job"]
    assert event["data"] == {"steps": 2} and "dataOmitted" not in event


async def test_the_event_log_never_holds_more_than_its_byte_cap(redis_client: Any) -> None:
    """The cap is 64 MiB; the same script with a 512 KiB cap shows the mechanism on real Redis."""
    cap, step = 512 * 1024, 8 * 1024
    assert scripts.EVENTS_MAX_BYTES == 64 * 1024 * 1024
    script = scripts.ENQUEUE.replace(str(scripts.EVENTS_MAX_BYTES), str(cap)).replace(str(scripts.EVENTS_TRIM_STEP), str(step))
    store = JobStore(redis_client)
    store._enqueue = redis_client.register_script(script)
    held = 0
    for i in range(250):  # ~4.3 KB events: ~1.1 MB in all
        await store.enqueue(
            NewJob(f"job {i}", "noop", "default", {"pad": "y" * 4000}, Priority.NORMAL, 0, 3, 1000, None)
        )
        entries = await redis_client.xrange(K.event_log("default"))
        held = sum(len(fields["d"]) + len(fields["e"]) for _, fields in entries)
        assert held <= cap, (i, held)
    # and it keeps the newest events, as many as fit
    assert held > cap - step - 2 * 4400, held
    assert entries[-1][1]["d"].find('"name":"job 249"') > 0


async def test_demo_steps_are_capped_at_1000(client: Any) -> None:
    response = await client.post("/api/jobs", json={"name": "x", "data": {"steps": 10_000, "stepMs": 0}})
    assert response.status == 400
    assert (await response.json())["error"]["field"] == "data.steps"
    assert (await client.post("/api/jobs", json={"name": "x", "data": {"steps": 1000}})).status == 201


@pytest.mark.parametrize("name", [".", ".."])
async def test_queue_names_dot_and_dot_dot_are_refused(client: Any, name: str) -> None:
    response = await client.post("/api/jobs", json={"name": "x", "queue": name})
    assert response.status == 400
    assert (await response.json())["error"]["field"] == "queue"
    assert (await client.get("/api/jobs", params={"queue": name})).status == 400
    assert (await client.post("/api/jobs", json={"name": "x", "queue": "a.b"})).status == 201


async def test_retry_delays_are_capped_so_run_at_stays_a_valid_date(client: Any, start_worker: Any) -> None:
    """The attack: a day's backoff, 100 attempts, promoted each time it is delayed: after 29
    attempts runAt was beyond a JavaScript Date, at 40 an overflowed integer."""
    await start_worker()
    job = await create_job(client, name="poison", type="fail", maxAttempts=100, backoffMs=86_400_000)
    for attempt in range(1, 45):
        delayed = await wait_for_status(client, job["id"], "delayed")
        assert delayed["attemptsMade"] == attempt
        assert 0 < delayed["runAt"] - now_ms() <= 3_600_000 + 5_000, delayed["runAt"]
        assert delayed["runAt"] < MAX_JS_DATE
        promoted = await client.post(f"/api/jobs/{job['id']}/promote", json={})
        assert promoted.status == 200, await promoted.text()


async def test_max_backoff_is_a_create_option(client: Any) -> None:
    job = await create_job(client, name="x", maxBackoffMs=5000)
    assert job["maxBackoffMs"] == 5000
    default = await create_job(client, name="y")
    assert default["maxBackoffMs"] == 3_600_000
    assert (await client.post("/api/jobs", json={"name": "z", "maxBackoffMs": -1})).status == 400
