"""The Python client as the spec describes it: `from jobline import Client, SyncClient`, talking to
Redis directly with the same validation and results as the HTTP API.

Real Redis throughout; the API side of each comparison is the real app under `client` (the HTTP
test client fixture), so the client is called `jl` here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as redis

from jobline import Client, Job, Status, SyncClient
from jobline.client import InvalidJob, JobNotFound, JobStateConflict
from jobline.keys import Keys
from tests.conftest import ROOT

KEYS = Keys()
CAMEL = {
    "type": "type", "name": "name", "data": "data", "queue": "queue", "priority": "priority",
    "delay_ms": "delayMs", "max_attempts": "maxAttempts", "backoff_ms": "backoffMs",
    "max_backoff_ms": "maxBackoffMs", "timeout_ms": "timeoutMs",
}  # fmt: skip


@pytest.fixture
async def jl(redis_url: str) -> AsyncIterator[Client]:
    async with Client(redis_url) as client:
        yield client


async def api_job(client: Any, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/jobs/{job_id}")
    assert response.status == 200, await response.text()
    return await response.json()


def shown_by_api(job: Job, api: dict[str, Any]) -> bool:
    """Every field of the client's job is the API's value (the API's view may add e.g. logs)."""
    return job.to_api().items() <= api.items()


async def job_count(r: redis.Redis) -> int:
    """Jobs in every queue's index (a queue is in the registry from its first job)."""
    return sum([await r.zcard(KEYS.queue_jobs(queue)) for queue in await r.smembers(KEYS.queues)])


async def commands_seen(r: redis.Redis) -> dict[str, int]:
    """INFO commandstats since the last CONFIG RESETSTAT, without our own INFO and CONFIG."""
    stats = await r.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    return {name: n for name, n in calls.items() if name not in ("info", "config")}


# -- enqueue ---------------------------------------------------------------------------------------


async def test_enqueue_returns_the_job_the_api_shows(jl: Client, client: Any) -> None:
    job = await jl.enqueue("echo", name="crawl", data={"url": "https://example.com"})
    assert job.status is Status.WAITING and job.name == "crawl" and job.type == "echo"
    assert shown_by_api(job, await api_job(client, job.id))


async def test_defaults_are_the_apis(jl: Client, client: Any) -> None:
    job = await jl.enqueue(name="defaults")
    response = await client.post("/api/jobs", json={"name": "defaults"})
    by_api = await response.json()
    volatile = ("id", "createdAt")
    assert {k: v for k, v in job.to_api().items() if k not in volatile} == {
        k: v for k, v in by_api.items() if k not in volatile
    }


async def test_every_create_option_is_honoured(jl: Client, client: Any) -> None:
    options: dict[str, Any] = dict(
        name="report", data={"rows": [1, 2, 3], "nested": {"ok": True}}, queue="reports", priority="high",
        delay_ms=60_000, max_attempts=7, backoff_ms=250, max_backoff_ms=5000, timeout_ms=90_000,
    )  # fmt: skip
    job = await jl.enqueue("echo", **options)
    assert (job.type, job.name, job.queue, job.data) == ("echo", "report", "reports", options["data"])
    assert (job.priority.value, job.max_attempts, job.backoff_ms) == ("high", 7, 250)
    assert (job.max_backoff_ms, job.timeout_ms) == (5000, 90_000)
    assert job.status is Status.DELAYED and job.run_at == job.created_at + 60_000  # type: ignore[operator]

    # The same request over HTTP makes the same job.
    response = await client.post("/api/jobs", json={"type": "echo", **{CAMEL[k]: v for k, v in options.items()}})
    assert response.status == 201
    by_api = await response.json()
    volatile = ("id", "createdAt", "runAt")
    assert {k: v for k, v in job.to_api().items() if k not in volatile} == {
        k: v for k, v in by_api.items() if k not in volatile
    }
    assert shown_by_api(job, await api_job(client, job.id))


async def test_priority_may_be_the_enum_and_data_goes_through_json(jl: Client) -> None:
    from jobline.models import Priority

    job = await jl.enqueue("echo", name="p", priority=Priority.HIGH, data={"pair": (1, 2)})
    assert job.priority is Priority.HIGH
    assert job.data == {"pair": [1, 2]}  # what the API would have stored
    assert (await jl.get(job.id)).data == {"pair": [1, 2]}


INVALID: list[tuple[dict[str, Any], str]] = [
    (dict(name=""), "name"),
    (dict(name="x" * 201), "name"),
    (dict(name="nul\x00"), "name"),
    (dict(name="a", type=".."), "type"),
    (dict(name="a", queue="no spaces"), "queue"),
    (dict(name="a", priority="urgent"), "priority"),
    (dict(name="a", delay_ms=-1), "delayMs"),
    (dict(name="a", max_attempts=0), "maxAttempts"),
    (dict(name="a", max_attempts=True), "maxAttempts"),
    (dict(name="a", backoff_ms=1.5), "backoffMs"),
    (dict(name="a", max_backoff_ms=10**12), "maxBackoffMs"),
    (dict(name="a", timeout_ms=0), "timeoutMs"),
    (dict(name="a", data=[1, 2]), "data"),
    (dict(name="a", data={"big": "x" * 70_000}), "data"),
    (dict(name="a", type="demo", data={"steps": 0}), "data.steps"),
]


@pytest.mark.parametrize(("options", "field"), INVALID, ids=[f"{f}-{i}" for i, (_, f) in enumerate(INVALID)])
async def test_invalid_input_raises_the_apis_message_and_creates_nothing(
    jl: Client, client: Any, redis_client: redis.Redis, options: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidJob) as raised:
        await jl.enqueue(**options)
    response = await client.post("/api/jobs", json={CAMEL[k]: v for k, v in options.items()})
    assert response.status == 400
    error = (await response.json())["error"]
    assert isinstance(raised.value, ValueError)
    assert (str(raised.value), raised.value.field) == (error["message"], error["field"]) and field == error["field"]
    assert await job_count(redis_client) == 0
    assert await redis_client.keys(KEYS.job("*")) == []


@pytest.mark.parametrize("data", [{"x": float("nan")}, {"x": float("inf")}, {"x": {1, 2}}, {"x": object()}])
async def test_data_that_is_not_json_is_refused(jl: Client, redis_client: redis.Redis, data: dict[str, Any]) -> None:
    with pytest.raises(InvalidJob, match=r"^data: must be JSON") as raised:
        await jl.enqueue("echo", name="a", data=data)
    assert raised.value.field == "data"
    assert await job_count(redis_client) == 0


@pytest.mark.parametrize("option", ["color", "delayMs", "uniqueKey"])
async def test_an_unknown_option_is_a_type_error(jl: Client, redis_client: redis.Redis, option: str) -> None:
    with pytest.raises(TypeError, match=option):
        await jl.enqueue("echo", name="a", **{option: "x"})
    assert await job_count(redis_client) == 0


# -- enqueue_many ----------------------------------------------------------------------------------


async def test_enqueue_many_keeps_order_in_one_round_trip(
    jl: Client, client: Any, redis_client: redis.Redis, round_trips: list[int]
) -> None:
    await jl.enqueue(name="warm-up")  # the connection is open and the script known
    specs = [{"type": "echo", "name": f"job {i}", "data": {"i": i}, "priority": "high" if i % 3 else "normal"}
             for i in range(50)]  # fmt: skip
    await redis_client.config_resetstat()
    before = round_trips[0]
    jobs = await jl.enqueue_many(specs)
    assert round_trips[0] - before == 1
    seen = await commands_seen(redis_client)
    assert seen["evalsha"] == 1  # the queue's jobs in one script call
    # No SCRIPT EXISTS or LOAD (that would be a round trip): the script is known.
    assert not [name for name in seen if name.startswith("script")], seen

    assert [j.name for j in jobs] == [s["name"] for s in specs]
    assert [j.data for j in jobs] == [{"i": i} for i in range(50)]
    assert len({j.id for j in jobs}) == 50 and await job_count(redis_client) == 51
    for job in jobs[:5] + jobs[-5:]:
        assert shown_by_api(job, await api_job(client, job.id))
    assert [j.created_at for j in jobs] == sorted(j.created_at for j in jobs)  # type: ignore[type-var]


async def test_enqueue_many_with_an_invalid_item_creates_nothing(jl: Client, redis_client: redis.Redis) -> None:
    good = {"type": "echo", "name": "fine"}
    with pytest.raises(InvalidJob) as raised:
        await jl.enqueue_many([good, good, {"type": "echo", "name": "x", "max_attempts": 0}, good])
    assert raised.value.index == 2 and raised.value.field == "maxAttempts"
    assert str(raised.value) == "jobs[2]: maxAttempts: must be between 1 and 100"
    with pytest.raises(TypeError, match=r"^jobs\[1\]: .*color"):
        await jl.enqueue_many([good, {"name": "a", "color": "red"}])
    with pytest.raises(TypeError, match=r"^jobs\[0\]: .*name"):
        await jl.enqueue_many([{"type": "echo"}])
    with pytest.raises(TypeError, match=r"^jobs\[1\]: expected a dict"):
        await jl.enqueue_many([good, "not a dict"])  # type: ignore[list-item]
    assert await job_count(redis_client) == 0


async def test_enqueue_many_of_nothing_does_nothing(jl: Client, round_trips: list[int]) -> None:
    assert await jl.enqueue_many([]) == []
    assert round_trips[0] == 0


async def test_enqueue_many_works_on_a_redis_that_lost_its_scripts(jl: Client, redis_client: redis.Redis) -> None:
    await jl.enqueue_many([{"name": "first"}])
    await redis_client.script_flush()  # as after a Redis restart
    jobs = await jl.enqueue_many([{"name": "a"}, {"name": "b", "delay_ms": 1000}])
    assert [(j.name, j.status) for j in jobs] == [("a", Status.WAITING), ("b", Status.DELAYED)]


# -- get, cancel, retry, delete --------------------------------------------------------------------


async def test_get_cancel_retry_delete(jl: Client, client: Any) -> None:
    job = await jl.enqueue("echo", name="acted on")
    assert (await jl.get(job.id)).to_api() == job.to_api()

    cancelled = await jl.cancel(job.id)
    assert cancelled.status is Status.CANCELLED
    assert (await api_job(client, job.id))["status"] == "cancelled"
    with pytest.raises(JobStateConflict):
        await jl.cancel(job.id)

    retried = await jl.retry(job.id)
    assert retried.status is Status.WAITING and retried.rev > cancelled.rev
    with pytest.raises(JobStateConflict):
        await jl.retry(job.id)

    await jl.delete(job.id)
    assert (await client.get(f"/api/jobs/{job.id}")).status == 404
    for action in (jl.get, jl.cancel, jl.retry, jl.delete):
        with pytest.raises(JobNotFound):
            await action(job.id)


@pytest.mark.parametrize("job_id", ["nope", "has:colon", "x" * 65, ""])
async def test_an_unknown_or_malformed_id_is_not_found(jl: Client, job_id: str) -> None:
    job = await jl.enqueue(name="a")
    logs_key_shaped = f"{job.id}:logs"  # must never reach Redis as a key
    for bad in (job_id, logs_key_shaped):
        with pytest.raises(JobNotFound):
            await jl.get(bad)
        with pytest.raises(JobNotFound):
            await jl.wait(bad, timeout=1)


# -- wait ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job_type", "data", "status"),
    [("echo", {"hello": "world"}, Status.COMPLETED), ("fail", {"message": "nope"}, Status.FAILED),
     ("demo", {"steps": 4, "stepMs": 20}, Status.COMPLETED)],  # fmt: skip
)
async def test_wait_returns_the_job_a_worker_finished(
    jl: Client, start_worker: Any, job_type: str, data: dict[str, Any], status: Status
) -> None:
    await start_worker()
    job = await jl.enqueue(job_type, name="run me", data=data, max_attempts=1)
    done = await jl.wait(job.id, timeout=10)
    assert done.status is status and done.finished_at is not None
    if job_type == "echo":
        assert done.result == data
    if job_type == "fail":
        assert done.failed_reason and "nope" in done.failed_reason
    if job_type == "demo":  # four progress events came first and did not end the wait
        assert done.progress == 100


async def test_wait_returns_at_once_for_a_finished_job(jl: Client) -> None:
    job = await jl.enqueue(name="a")
    await jl.cancel(job.id)
    t0 = time.monotonic()
    assert (await jl.wait(job.id, timeout=5)).status is Status.CANCELLED
    assert time.monotonic() - t0 < 1


async def test_wait_wakes_up_when_the_job_finishes(jl: Client) -> None:
    jobs = [await jl.enqueue(name=f"w{i}") for i in range(10)]
    waits = [asyncio.create_task(jl.wait(j.id, timeout=10)) for j in jobs]
    await asyncio.sleep(0.2)
    assert not any(w.done() for w in waits)
    t0 = time.monotonic()
    for job in jobs:
        await jl.cancel(job.id)
    finished = await asyncio.gather(*waits)
    assert [j.status for j in finished] == [Status.CANCELLED] * 10
    assert [j.id for j in finished] == [j.id for j in jobs]
    assert time.monotonic() - t0 < 1


async def test_wait_times_out_on_a_job_nobody_runs(jl: Client) -> None:
    job = await jl.enqueue("echo", name="no worker")
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        await jl.wait(job.id, timeout=0.3)
    assert 0.3 <= time.monotonic() - t0 < 1.5
    assert (await jl.get(job.id)).status is Status.WAITING


async def test_wait_does_not_poll(jl: Client, redis_client: redis.Redis) -> None:
    job = await jl.enqueue("echo", name="no worker")
    await redis_client.config_resetstat()
    with pytest.raises(TimeoutError):
        await jl.wait(job.id, timeout=1.0)
    seen = await commands_seen(redis_client)
    # SUBSCRIBE and one read of the job, plus what its subscription's new connection says on
    # connect (HELLO, CLIENT SETINFO, a PING): a handful, however long it waits.
    setup = {name: n for name, n in seen.items() if name in ("hello", "client", "ping", "select", "auth")}
    assert {name: n for name, n in seen.items() if name not in setup} == {"subscribe": 1, "hgetall": 1}
    assert sum(setup.values()) <= 6, seen


async def test_wait_survives_a_dropped_subscription(jl: Client, redis_client: redis.Redis) -> None:
    """Redis cuts the subscription and the job finishes before the client resubscribes: the
    event is lost, so the wait reads the job again once it is subscribed again."""
    job = await jl.enqueue(name="a")
    waiting = asyncio.create_task(jl.wait(job.id, timeout=5))
    await asyncio.sleep(0.2)
    assert await redis_client.execute_command("CLIENT", "KILL", "TYPE", "pubsub") == 1
    await jl.cancel(job.id)
    assert (await asyncio.wait_for(waiting, 2)).status is Status.CANCELLED


async def test_wait_on_a_job_deleted_meanwhile_is_not_found(jl: Client) -> None:
    job = await jl.enqueue(name="doomed")
    waiting = asyncio.create_task(jl.wait(job.id, timeout=10))
    await asyncio.sleep(0.2)
    await jl.delete(job.id)
    with pytest.raises(JobNotFound):
        await waiting


# -- SyncClient ------------------------------------------------------------------------------------


def test_sync_client_from_a_plain_thread(redis_url: str) -> None:
    with SyncClient(redis_url) as jl:
        job = jl.enqueue("echo", name="sync", data={"a": 1})
        assert jl.get(job.id).to_api() == job.to_api()
        many = jl.enqueue_many([{"name": "s1"}, {"name": "s2", "queue": "other"}])
        assert [(j.name, j.queue) for j in many] == [("s1", "default"), ("s2", "other")]
        with pytest.raises(InvalidJob, match="^name: "):
            jl.enqueue(name="")
        with pytest.raises(TimeoutError):
            jl.wait(job.id, timeout=0.2)
        assert jl.cancel(job.id).status is Status.CANCELLED
        assert jl.wait(job.id).status is Status.CANCELLED
        assert jl.retry(job.id).status is Status.WAITING
        jl.delete(job.id)
        with pytest.raises(JobNotFound):
            jl.get(job.id)
    with pytest.raises(RuntimeError, match="closed"):
        jl.get(job.id)
    jl.close()  # twice is fine


def test_sync_client_is_thread_safe(redis_url: str) -> None:
    with SyncClient(redis_url) as jl:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(lambda i: jl.enqueue(name=f"t{i}").id, range(200)))
        assert len(set(ids)) == 200
        assert {jl.get(i).name for i in ids} == {f"t{i}" for i in range(200)}


def test_sync_client_close_stops_a_call_in_progress(redis_url: str) -> None:
    jl = SyncClient(redis_url)
    job = jl.enqueue(name="never run")
    outcome: list[BaseException] = []

    def wait() -> None:
        try:
            jl.wait(job.id, timeout=30)
        except BaseException as error:  # noqa: BLE001 - recorded for the assertion
            outcome.append(error)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.2)
    jl.close()
    waiter.join(2)
    assert not waiter.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], concurrent.futures.CancelledError)


async def test_sync_client_waits_for_a_worker(redis_url: str, start_worker: Any) -> None:
    await start_worker()
    jl = await asyncio.to_thread(SyncClient, redis_url)
    try:
        job = await asyncio.to_thread(jl.enqueue, "echo", name="sync run", data={"n": 1})
        done = await asyncio.to_thread(jl.wait, job.id, 10)
        assert done.status is Status.COMPLETED and done.result == {"n": 1}
    finally:
        await asyncio.to_thread(jl.close)


# -- the package -----------------------------------------------------------------------------------


def test_the_package_exports_the_client_lazily() -> None:
    """The model, key names and scripts import free of redis and aiohttp (the peers adapter uses
    them alone); `from jobline import ...` works."""
    code = (
        "import sys, jobline, jobline.models, jobline.keys, jobline.scripts\n"
        "assert not {'redis', 'aiohttp'} & set(sys.modules)\n"
        "from jobline import Client, SyncClient, Job, Status, InvalidJob, JobNotFound\n"
        "import jobline.client, jobline.models, jobline.store\n"
        "assert Client is jobline.client.Client and Job is jobline.models.Job\n"
        "assert JobNotFound is jobline.store.JobNotFound and issubclass(InvalidJob, ValueError)\n"
        "from jobline import store, scripts\n"
        "try:\n    jobline.nope\nexcept AttributeError:\n    pass\nelse:\n    raise SystemExit('no AttributeError')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


async def test_a_unique_key_returns_the_unfinished_holder(jl: Client) -> None:
    first = await jl.enqueue("echo", name="a", unique_key="report:7", delay_ms=60_000)
    again = await jl.enqueue("echo", name="b", unique_key="report:7")
    assert (again.id, again.name, again.unique_key) == (first.id, "a", "report:7")


async def test_queue_settings_are_set_as_the_api_sets_them(jl: Client, client: Any) -> None:
    shown = await jl.set_queue_settings("mail", rate_limit={"max": 10, "perMs": 1000}, concurrency=3)
    assert shown == {"rateLimit": {"max": 10, "perMs": 1000}, "concurrency": 3, "retention": None}
    assert (await jl.set_queue_settings("mail", concurrency=None))["rateLimit"] == {"max": 10, "perMs": 1000}
    queues = (await (await client.get("/api/admin/queues")).json())["queues"]
    assert next(q for q in queues if q["name"] == "mail")["settings"]["concurrency"] is None
    with pytest.raises(InvalidJob) as raised:
        await jl.set_queue_settings("mail", concurrency=0)
    assert raised.value.field == "concurrency"
    with pytest.raises(TypeError, match="paused"):
        await jl.set_queue_settings("mail", paused=True)


async def test_a_flow_and_a_schedule_from_the_client(jl: Client, client: Any) -> None:
    parent = await jl.enqueue(
        "collect", name="fan-in", children=[{"type": "echo", "name": "a"}, {"type": "echo", "name": "b", "queue": "q2"}]
    )
    assert parent.status.value == "waiting-children" and parent.children["total"] == 2
    assert [kid.name for kid in await jl.children(parent.id)] == ["a", "b"]
    made = await jl.add_schedule({"type": "noop", "name": "nightly"}, cron="0 3 * * *", timezone="Europe/Berlin", id="n")
    assert made["id"] == "n" and [s["id"] for s in await jl.schedules()] == ["n"]
    job = await jl.trigger_schedule("n")
    assert job.schedule_id == "n"
    with pytest.raises(InvalidJob) as raised:
        await jl.add_schedule({"name": "x"}, cron="nope")
    assert raised.value.field == "cron"
    await jl.remove_schedule("n")
    assert await jl.schedules() == []


async def test_tags_and_find_as_the_api_searches(jl: Client, client: Any) -> None:
    tagged = await jl.enqueue(name="Nightly Report", tags=["customer:42"], queue="reports")
    await jl.enqueue(name="other report", queue="reports")
    assert tagged.tags == ["customer:42"]
    jobs, total = await jl.find("REPORT", tags=["customer:42"], status="waiting")
    assert [j.id for j in jobs] == [tagged.id] and total == 1
    api = await (await client.get("/api/jobs", params={"q": "report"})).json()
    jobs, total = await jl.find("report")
    assert [j.id for j in jobs] == [j["id"] for j in api["jobs"]] and total == api["total"] == 2
    with pytest.raises(InvalidJob) as raised:
        await jl.find(tags=["no spaces"])
    assert raised.value.field == "tag"


async def test_failure_groups_as_the_api_shows_them(jl: Client, client: Any) -> None:
    job = await jl.enqueue(name="fails", max_attempts=1)
    [claimed] = await jl.store.claim("default", "w", 1)
    await jl.store.fail(claimed, "KeyError: user 7", retry=False)
    [group] = await jl.failure_groups()
    assert group["jobIds"] == [job.id] and group["count"] == 1
    jobs, total = await jl.find(failure_group=group["fingerprint"])
    assert [j.id for j in jobs] == [job.id] and total == 1
    assert (await (await client.get("/api/admin/failures")).json())["groups"] == [group]
