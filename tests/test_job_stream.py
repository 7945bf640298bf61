"""GET /api/jobs/{id}/stream: one job's events only, the dashboard stream's resume rules, its end
after `job-removed`, and the same gates (token, origin, host, MAX_STREAMS).

The job's changes are made through the store (claims, progress, custom events), as a worker makes
them, so each test says exactly which events exist.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from jobline.keys import Keys
from jobline.models import Job, Priority
from jobline.server import Settings, create_app
from jobline.store import JobStore
from tests.conftest import clients_of, create_job, wait_until
from tests.sse import Event, SSEReader


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> Any:
    """The app with a short ping interval, so that a client's departure shows up quickly."""
    return await aiohttp_client(create_app(replace(settings, sse_ping_s=0.2)))


async def open_job_stream(client: Any, job_id: str, last_event_id: str | None = None) -> SSEReader:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    response = await client.get(f"/api/jobs/{job_id}/stream", headers=headers)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return SSEReader(response)


async def claim(store: JobStore, queue: str, job_id: str) -> Job:
    [job] = await store.claim(queue, "w1", 1)
    assert job.id == job_id
    return job


def jobs_of(events: list[Event]) -> list[dict[str, Any]]:
    return [e.json()["job"] for e in events if e.event == "job"]


async def subscriptions(redis_client: Any) -> list[tuple[int, int]]:
    """(channels, patterns) of every connection subscribed to anything, on every node."""
    return [
        (int(c.get("sub", 0)), int(c.get("psub", 0)))
        for c in await clients_of(redis_client)
        if int(c.get("sub", 0)) or int(c.get("psub", 0))
    ]


async def test_unknown_or_malformed_job_is_a_json_404(client: Any) -> None:
    for job_id in ("abcdefNoSuchJob123", "not%20an%20id", "x" * 65):
        response = await client.get(f"/api/jobs/{job_id}/stream")
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"


async def test_only_the_jobs_own_events_arrive_in_rev_order_through_completion(client: Any, store: JobStore) -> None:
    # on two queues: on a cluster they live on different shards
    mine = await create_job(client, name="mine", queue="alpha")
    other = await create_job(client, name="other", queue="beta")
    stream = await open_job_stream(client, mine["id"])

    running, theirs = await claim(store, "alpha", mine["id"]), await claim(store, "beta", other["id"])
    for percent in (25, 50, 75):
        assert await store.update(theirs, progress=percent)
        assert await store.update(running, progress=percent, action=f"step {percent}")
    await store.complete(theirs, None)
    await store.complete(running, {"ok": True})

    events = await stream.until(lambda e: e.event == "job" and e.json()["job"]["status"] == "completed")
    jobs = jobs_of(events)
    assert len(events) == len(jobs) == 5 and {j["id"] for j in jobs} == {mine["id"]}
    assert [(j["status"], j["progress"]) for j in jobs] == [
        ("active", 0), ("active", 25), ("active", 50), ("active", 75), ("completed", 100),
    ]  # fmt: skip
    assert [j["rev"] for j in jobs] == sorted({j["rev"] for j in jobs})
    assert jobs[-1]["result"] == {"ok": True} and "logs" not in jobs[-1]
    # its ids are positions in its queue's log, as on the dashboard's stream
    assert all(e.id and e.id.startswith("alpha=") for e in events) and len({e.id for e in events}) == 5


async def test_the_handlers_custom_events_arrive_too(client: Any, store: JobStore) -> None:
    job = await create_job(client)
    stream = await open_job_stream(client, job["id"])
    running = await claim(store, "default", job["id"])
    assert await store.emit(running, "screenshot.taken", {"n": 1})
    event = (await stream.until(lambda e: e.event == "job-event"))[-1]
    assert {k: v for k, v in event.json().items() if k != "at"} == {
        "jobId": job["id"], "name": "screenshot.taken", "data": {"n": 1},
    }  # fmt: skip


async def test_removal_is_the_last_event_and_ends_the_stream_and_its_subscription(
    client: Any, redis_client: Any
) -> None:
    job = await create_job(client)
    stream = await open_job_stream(client, job["id"])
    await wait_until(lambda: _subscriptions_are(redis_client, [(1, 0)]))  # one SUBSCRIBE, no pattern
    assert (await client.delete(f"/api/jobs/{job['id']}")).status == 204
    removed = await stream.next()
    assert (removed.event, removed.json()) == ("job-removed", {"id": job["id"]})
    with pytest.raises(EOFError):
        await stream.next()
    await wait_until(lambda: _subscriptions_are(redis_client, []))


async def _subscriptions_are(redis_client: Any, expected: list[tuple[int, int]]) -> bool:
    return await subscriptions(redis_client) == expected


async def test_a_client_that_leaves_frees_its_subscription(client: Any, redis_client: Any) -> None:
    jobs = [await create_job(client) for _ in range(5)]
    streams = [await open_job_stream(client, job["id"]) for job in jobs]
    await wait_until(lambda: _subscriptions_are(redis_client, [(1, 0)] * 5))
    for stream in streams:
        stream.response.close()
    await wait_until(lambda: _subscriptions_are(redis_client, []))


async def test_resume_replays_exactly_the_jobs_missed_events_then_goes_live(client: Any, store: JobStore) -> None:
    mine, other = await create_job(client, name="mine"), await create_job(client, name="other")
    stream = await open_job_stream(client, mine["id"])
    running, theirs = await claim(store, "default", mine["id"]), await claim(store, "default", other["id"])
    seen = await stream.next()
    stream.response.close()

    for percent in (10, 20):  # missed, between events of another job
        await store.update(theirs, progress=percent)
        await store.update(running, progress=percent * 3)
    resumed = await open_job_stream(client, mine["id"], last_event_id=seen.id)
    assert [j["progress"] for j in jobs_of(await resumed.collect(2))] == [30, 60]
    await store.update(theirs, progress=30)
    await store.update(running, progress=90)
    live = await resumed.next()  # no duplicate of the replayed ones, nothing of the other job
    assert (live.json()["job"]["id"], live.json()["job"]["progress"]) == (mine["id"], 90)


async def test_resume_reaches_the_jobs_events_past_pages_of_other_jobs_events(client: Any, store: JobStore) -> None:
    mine, other = await create_job(client, name="mine"), await create_job(client, name="other")
    stream = await open_job_stream(client, mine["id"])
    await store.set_priority(mine["id"], Priority.HIGH)
    seen = await stream.next()
    stream.response.close()
    for i in range(1200):  # more than two replay pages with nothing for this stream
        await store.set_priority(other["id"], Priority.HIGH if i % 2 == 0 else Priority.NORMAL)
    await store.set_priority(mine["id"], Priority.NORMAL)
    resumed = await open_job_stream(client, mine["id"], last_event_id=seen.id)
    event = await resumed.next()
    assert (event.json()["job"]["id"], event.json()["job"]["priority"]) == (mine["id"], "normal")
    with pytest.raises(asyncio.TimeoutError):  # and nothing else
        await resumed.next(timeout=0.5)


async def test_a_client_away_when_the_job_was_removed_gets_the_removal_then_a_404(client: Any, store: JobStore) -> None:
    job = await create_job(client)
    stream = await open_job_stream(client, job["id"])
    await store.set_priority(job["id"], Priority.HIGH)
    seen = await stream.next()
    stream.response.close()
    await store.delete(job["id"])

    resumed = await open_job_stream(client, job["id"], last_event_id=seen.id)
    removed = await resumed.next()
    assert (removed.event, removed.json()) == ("job-removed", {"id": job["id"]})
    with pytest.raises(EOFError):
        await resumed.next()
    # EventSource reconnects with the removal's id: nothing is left to say, and a 404 stops it
    response = await client.get(f"/api/jobs/{job['id']}/stream", headers={"Last-Event-ID": removed.id})
    assert response.status == 404


async def test_an_unusable_last_event_id_gets_a_reset_from_which_it_resumes(client: Any, store: JobStore) -> None:
    job = await create_job(client)
    stream = await open_job_stream(client, job["id"], last_event_id="garbage")
    reset = await stream.next()
    log = await store.redis.xrevrange(Keys().event_log("default"), count=1)
    assert (reset.event, reset.id) == ("reset", f"default={log[0][0]}")
    stream.response.close()

    resumed = await open_job_stream(client, job["id"], last_event_id=reset.id)
    await store.set_priority(job["id"], Priority.HIGH)
    event = await resumed.next()
    assert event.event == "job" and event.json()["job"]["priority"] == "high"  # no second reset


async def test_a_position_trimmed_from_the_log_gets_a_reset(client: Any, store: JobStore) -> None:
    job, other = await create_job(client), await create_job(client)
    stream = await open_job_stream(client, job["id"])
    await store.set_priority(job["id"], Priority.HIGH)
    seen = await stream.next()
    stream.response.close()
    for i in range(20):
        await store.set_priority(other["id"], Priority.HIGH if i % 2 == 0 else Priority.NORMAL)
    await store.redis.xtrim(Keys().event_log("default"), maxlen=5, approximate=False)
    resumed = await open_job_stream(client, job["id"], last_event_id=seen.id)
    assert (await resumed.next()).event == "reset"


async def test_the_token_origin_and_host_rules_are_the_dashboard_streams(aiohttp_client: Any, settings: Settings) -> None:
    guarded = await aiohttp_client(create_app(replace(settings, api_token="s3cret")))
    bearer = {"Authorization": "Bearer s3cret"}
    created = await guarded.post("/api/jobs", json={"name": "guarded"}, headers=bearer)
    job_id = (await created.json())["id"]
    path = f"/api/jobs/{job_id}/stream"
    assert (await guarded.get(path)).status == 401
    assert (await guarded.get(path, headers={"Authorization": "Bearer wrong"})).status == 401
    ok = await guarded.get(path, headers=bearer)
    assert ok.status == 200
    ok.close()
    # EventSource cannot send headers: the token may come as ?access_token=, as on /api/jobs/stream
    by_query = await guarded.get(f"{path}?access_token=s3cret")
    assert by_query.status == 200
    by_query.close()

    open_app = await aiohttp_client(create_app(settings))
    job = await create_job(open_app)
    path = f"/api/jobs/{job['id']}/stream"
    assert (await open_app.get(path, headers={"Origin": "https://evil.example"})).status == 401
    assert (await open_app.get(path, headers={"Host": "evil.example"})).status == 421


async def test_job_streams_and_dashboard_streams_share_max_streams(aiohttp_client: Any, settings: Settings) -> None:
    capped = await aiohttp_client(create_app(replace(settings, sse_ping_s=0.2, max_streams=2)))
    job = await create_job(capped)
    dashboard = await capped.get("/api/jobs/stream")
    one = await open_job_stream(capped, job["id"])
    refused = await capped.get(f"/api/jobs/{job['id']}/stream")
    assert refused.status == 503 and int(refused.headers["Retry-After"]) > 0
    assert (await refused.json())["error"]["code"] == "unavailable"
    one.response.close()
    await wait_until(lambda: _opens(capped, f"/api/jobs/{job['id']}/stream"), timeout=5)
    dashboard.close()


async def _opens(client: Any, path: str) -> bool:
    response = await client.get(path)
    response.close()
    return response.status == 200


async def test_shutdown_ends_open_job_streams(client: Any) -> None:
    job = await create_job(client)
    streams = [await open_job_stream(client, job["id"]) for _ in range(3)]
    async with asyncio.timeout(3):
        await client.server.close()
    for stream in streams:
        with pytest.raises((EOFError, aiohttp.ClientPayloadError)):
            await stream.next()
