"""A handler's saved state and custom events, as the store and the API keep them (issue 16).

The worker's ctx.save_state and ctx.emit call these; here a claim made through the store stands in
for a worker, so the fencing can be shown with two attempts of one job.
"""

from __future__ import annotations

from typing import Any

from jobline.keys import Keys
from jobline.models import EVENTS_CAP
from jobline.store import JobStore
from tests.conftest import create_job
from tests.sse import SSEReader

K = Keys()


async def claimed(store: JobStore, worker_id: str = "w1") -> Any:
    [job] = await store.claim("default", worker_id, 1)
    return job


async def single(client: Any, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/jobs/{job_id}")
    assert response.status == 200
    return await response.json()


async def test_a_new_job_shows_empty_state_and_no_events(client: Any) -> None:
    job = await create_job(client, name="fresh")
    view = await single(client, job["id"])
    assert view["state"] == {} and view["events"] == []
    listed = (await (await client.get("/api/jobs")).json())["jobs"][0]
    assert "state" not in listed and "events" not in listed  # the single-job view only


async def test_saved_state_is_kept_for_the_next_attempt(client: Any, store: JobStore) -> None:
    job = await create_job(client, name="checkpoints")
    running = await claimed(store)
    assert await store.update(running, progress=40, state={"step": 4, "cursor": "abc"})
    assert (await single(client, job["id"]))["state"] == {"step": 4, "cursor": "abc"}
    # the worker dies; the job is put back and claimed again: the next attempt starts with it
    await store.requeue("default", "w1", "stalled")
    again = await claimed(store, "w2")
    assert again.attempts_made == 2 and again.state == {"step": 4, "cursor": "abc"}


async def test_a_stale_attempt_cannot_overwrite_the_state_or_emit(client: Any, store: JobStore) -> None:
    job = await create_job(client, name="fenced")
    first = await claimed(store)
    await store.requeue("default", "w1", "stalled")
    second = await claimed(store, "w2")
    assert await store.update(second, state={"step": 7})
    assert not await store.update(first, state={"step": 1})
    assert not await store.emit(first, "late", {"x": 1})
    view = await single(client, job["id"])
    assert view["state"] == {"step": 7} and view["events"] == []


async def test_custom_events_are_kept_newest_last_and_capped(client: Any, store: JobStore) -> None:
    job = await create_job(client, name="chatty")
    running = await claimed(store)
    for i in range(EVENTS_CAP + 5):
        assert await store.emit(running, "tick", {"i": i})
    events = (await single(client, job["id"]))["events"]
    assert len(events) == EVENTS_CAP
    assert [e["data"]["i"] for e in events] == list(range(5, EVENTS_CAP + 5))
    assert all(e["name"] == "tick" and isinstance(e["at"], int) for e in events)


async def test_a_custom_event_goes_out_on_the_stream_and_is_replayed(client: Any, store: JobStore) -> None:
    job = await create_job(client, name="live")
    stream = SSEReader(await client.get("/api/jobs/stream"))
    running = await claimed(store)
    assert await store.emit(running, "screenshot", {"url": "<b>x</b>"})
    seen = await stream.until(lambda e: e.event == "job-event")
    event = seen[-1]
    assert event.id and event.json() == {
        "jobId": job["id"], "name": "screenshot", "data": {"url": "<b>x</b>"}, "at": event.json()["at"],
    }  # fmt: skip
    # a client that reconnects from before it gets it again
    before = seen[-2].id
    resumed = SSEReader(await client.get("/api/jobs/stream", headers={"Last-Event-ID": before}))
    assert (await resumed.next()).id == event.id


async def test_deleting_a_job_removes_its_events(client: Any, store: JobStore, redis_client: Any) -> None:
    job = await create_job(client, name="gone")
    running = await claimed(store)
    assert await store.emit(running, "x")
    assert await redis_client.exists(K.job_events(job["id"]))
    assert (await client.delete(f"/api/jobs/{job['id']}")).status == 204
    assert not await redis_client.exists(K.job_events(job["id"]))
