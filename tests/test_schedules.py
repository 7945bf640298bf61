"""Schedules: cron (with a time zone) or everyMs; exactly one job per due time whatever the number of
workers, across restarts and crashes; one catch-up job after downtime, not a storm."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jobline.keys import Keys
from jobline.schedules import Schedule, ScheduleStore
from jobline.server import Settings, create_app
from jobline.store import JobStore
from tests.conftest import RedisProcess, WorkerProcess, wait_until

EVERY = {"everyMs": 1000, "job": {"name": "tick", "type": "noop", "queue": "ticks"}}


async def create(client: Any, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/schedules", json=body)
    assert response.status == 201, await response.text()
    return await response.json()


async def jobs_of(client: Any, schedule_id: str, queue: str = "ticks") -> list[dict[str, Any]]:
    listed = await (await client.get("/api/jobs", params={"queue": queue, "limit": 500})).json()
    return [job for job in listed["jobs"] if job["scheduleId"] == schedule_id]


async def test_a_schedule_is_created_listed_read_changed_and_removed(client: Any) -> None:
    made = await create(client, id="nightly", cron="0 3 * * *", timezone="Europe/Berlin", job={"name": "report"})
    assert made["id"] == "nightly" and made["paused"] is False and made["lastRunAt"] is None
    local = datetime.fromtimestamp(made["nextRunAt"] / 1000, ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute) == (3, 0)
    assert [s["id"] for s in (await (await client.get("/api/schedules")).json())["schedules"]] == ["nightly"]
    assert (await (await client.get("/api/schedules/nightly")).json()) == made
    changed = await (await client.patch("/api/schedules/nightly", json={"cron": "15 4 * * *"})).json()
    local = datetime.fromtimestamp(changed["nextRunAt"] / 1000, ZoneInfo("Europe/Berlin"))
    assert (changed["cron"], local.hour, local.minute) == ("15 4 * * *", 4, 15)
    assert (await client.post("/api/schedules", json={"id": "nightly", **EVERY})).status == 409
    assert (await client.delete("/api/schedules/nightly")).status == 204
    assert (await client.get("/api/schedules/nightly")).status == 404
    assert (await client.delete("/api/schedules/nightly")).status == 404


async def test_bad_schedules_are_400_naming_the_field(client: Any) -> None:
    for body, field in [
        ({"cron": "* * *", "job": {"name": "x"}}, "cron"),
        ({"cron": "61 * * * *", "job": {"name": "x"}}, "cron"),
        ({"cron": "0 3 * * *", "everyMs": 1000, "job": {"name": "x"}}, "cron"),
        ({"job": {"name": "x"}}, "cron"),
        ({"everyMs": 999, "job": {"name": "x"}}, "everyMs"),
        ({"everyMs": 1000, "timezone": "Mars/Olympus", "job": {"name": "x"}}, "timezone"),
        ({"everyMs": 1000, "job": {"name": ""}}, "job.name"),
        ({"everyMs": 1000}, "job"),
        ({"id": "no spaces", **EVERY}, "id"),
    ]:
        response = await client.post("/api/schedules", json=body)
        assert response.status == 400, body
        assert (await response.json())["error"]["field"] == field, body
    assert (await (await client.get("/api/schedules")).json())["schedules"] == []


async def test_every_due_time_gets_exactly_one_job_with_three_workers_racing(
    client: Any, start_worker: Any
) -> None:
    for _ in range(3):
        await start_worker(queues=("ticks",))
    schedule = await create(client, id="ticker", **EVERY)
    await asyncio.sleep(3.6)
    paused = await (await client.post("/api/schedules/ticker/pause")).json()
    served = (paused["lastRunAt"] - schedule["nextRunAt"]) // 1000 + 1  # due times from the first to the last
    jobs = await jobs_of(client, "ticker")
    assert served >= 3 and len(jobs) == served, (served, [j["createdAt"] for j in jobs])
    assert paused["lastJobId"] in {j["id"] for j in jobs}


async def test_one_catch_up_job_after_downtime_not_a_storm(client: Any, store: JobStore, start_worker: Any) -> None:
    await create(client, id="missed", **EVERY)
    k = Keys()
    long_ago = (await store.redis.time())[0] * 1000 - 30_000  # thirty due times passed with no worker
    await store.redis.hset(k.schedule("missed"), "nextRunAt", long_ago)
    await store.redis.zadd(k.schedules, {"missed": long_ago})
    await start_worker(queues=("ticks",))

    async def caught_up() -> bool:
        return (await (await client.get("/api/schedules/missed")).json())["lastRunAt"] == long_ago

    await wait_until(caught_up, timeout=5)
    after = await (await client.get("/api/schedules/missed")).json()
    assert after["nextRunAt"] > long_ago + 29_000  # on to the future, not through every missed time
    jobs = await jobs_of(client, "missed")
    assert after["lastJobId"] in {j["id"] for j in jobs}
    assert len(jobs) <= 2  # the catch-up job (and at most the first regular one since), not ten


async def test_a_worker_killed_while_firing_leaves_one_job_for_that_due_time(
    client: Any, store: JobStore, start_worker: Any
) -> None:
    made = await create(client, id="crashy", cron="* * * * *", job={"name": "minutely", "type": "noop", "queue": "ticks"})
    k = Keys()
    due = (await store.redis.time())[0] * 1000 - 1000
    await store.redis.hset(k.schedule("crashy"), "nextRunAt", due)
    await store.redis.zadd(k.schedules, {"crashy": due})
    # The worker that died: it created the due time's job, then nothing (the schedule never moved on).
    schedule = await ScheduleStore(store).get("crashy")
    first = await store.enqueue(schedule.new_job(due))
    await start_worker(queues=("ticks",))

    async def moved_on() -> bool:
        return (await (await client.get("/api/schedules/crashy")).json())["lastRunAt"] == due

    await wait_until(moved_on, timeout=5)
    assert [j["id"] for j in await jobs_of(client, "crashy")] == [first.id]
    assert made["nextRunAt"] > due


async def test_trigger_creates_a_job_now_and_keeps_the_timetable(client: Any) -> None:
    made = await create(client, id="manual", cron="0 3 * * *", job={"name": "report", "queue": "ticks"})
    response = await client.post("/api/schedules/manual/trigger")
    assert response.status == 201
    job = await response.json()
    assert job["scheduleId"] == "manual" and job["name"] == "report"
    assert (await (await client.get("/api/schedules/manual")).json())["nextRunAt"] == made["nextRunAt"]
    assert (await client.post("/api/schedules/nope/trigger")).status == 404


async def test_a_paused_schedule_creates_nothing_until_resumed(client: Any, start_worker: Any) -> None:
    await start_worker(queues=("ticks",))
    await create(client, id="held", paused=True, **EVERY)
    await asyncio.sleep(1.5)
    assert await jobs_of(client, "held") == []
    resumed = await (await client.post("/api/schedules/held/resume")).json()
    assert resumed["paused"] is False

    async def fired() -> bool:
        return len(await jobs_of(client, "held")) >= 1

    await wait_until(fired, timeout=5)


def test_daylight_saving_changes_run_a_skipped_time_once_and_a_repeated_time_once() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    nightly = Schedule(id="n", job={"name": "x"}, cron="30 2 * * *", timezone="Europe/Berlin")

    def runs(start: datetime, count: int) -> list[datetime]:
        out, at = [], int(start.timestamp() * 1000)
        for _ in range(count):
            at = nightly.next_after(at)
            out.append(datetime.fromtimestamp(at / 1000, berlin))
        return out

    spring = runs(datetime(2026, 3, 28, 12, tzinfo=berlin), 2)  # 02:30 does not exist on March 29
    assert [(d.day, d.hour, d.minute) for d in spring] == [(29, 3, 0), (30, 2, 30)]
    autumn = runs(datetime(2026, 10, 24, 12, tzinfo=berlin), 2)  # 02:30 happens twice on October 25
    assert [(d.day, d.hour, d.minute) for d in autumn] == [(25, 2, 30), (26, 2, 30)]
    assert autumn[1].timestamp() - autumn[0].timestamp() == 25 * 3600  # once, not twice


async def test_schedules_survive_a_redis_restart_with_no_duplicate(tmp_path: Path, aiohttp_client: Any) -> None:
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisProcess(workdir, appendonly=True)
    server.start()
    worker = WorkerProcess(server.url, "--queue", "ticks", "--lease-ms", "1000")
    try:
        client = await aiohttp_client(create_app(Settings(redis_url=server.url)))
        made = await create(client, id="steady", **EVERY)
        await asyncio.sleep(2.2)
        server.stop()
        server.start()
        await asyncio.sleep(2.2)
        after = await (await client.get("/api/schedules/steady")).json()
        jobs = await jobs_of(client, "steady")
        served = (after["lastRunAt"] - made["nextRunAt"]) // 1000 + 1
        due_times = sorted(j["createdAt"] for j in jobs)
        assert len(jobs) == len({j["id"] for j in jobs}) >= 3
        assert len(jobs) <= served  # no due time twice (one catch-up job covers the restart)
        assert all(b - a >= 500 for a, b in zip(due_times, due_times[1:])), due_times
    finally:
        worker.kill()
        server.stop()
