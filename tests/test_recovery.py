"""Worker processes dying and stopping: kill -9 recovery, stalled poison jobs, graceful SIGTERM/SIGINT.

Every worker here is a real `python worker.py` subprocess (the `spawn_worker` fixture kills any
left running when the test ends)."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest

from jobline.keys import Keys
from tests.conftest import create_job, wait_until
from tests.test_worker import get_job, list_jobs, statuses, wait_all, wait_for_status

K = Keys()
LEASE_MS = 2000


async def worker_of(client: Any, ids: list[str]) -> str:
    """The one worker id running all of these jobs."""
    owners = {(await get_job(client, job_id))["workerId"] for job_id in ids}
    assert len(owners) == 1, owners
    return owners.pop()


async def exit_code(proc: Any, timeout: float) -> int:
    """The worker process's exit code; if it is still running after `timeout`, fail with its output."""
    try:
        return await proc.wait(timeout)
    except TimeoutError:
        raise AssertionError(f"worker still running {timeout} s after the signal; its output:\n{proc.output()}") from None


async def all_active(redis_client: Any, ids: list[str]) -> bool:
    return all(s == "active" for s in await statuses(redis_client, ids))


async def test_kill_9_with_five_active_jobs_they_all_complete_on_another_worker(
    client: Any, spawn_worker: Any, redis_client: Any
) -> None:
    ids = [
        (await create_job(client, name=f"agent-{i}", data={"steps": 20, "stepMs": 100}))["id"] for i in range(5)
    ]
    first = spawn_worker("--lease-ms", str(LEASE_MS))
    await wait_until(lambda: all_active(redis_client, ids), timeout=20)
    dead_id = await worker_of(client, ids)
    total_before = (await list_jobs(client))["total"]

    first.kill()  # SIGKILL: no chance to clean up
    killed_at = time.monotonic()
    assert first.proc.returncode == -signal.SIGKILL
    assert await redis_client.llen(K.processing("default", dead_id)) == 5  # the claims survive in Redis
    second = spawn_worker("--lease-ms", str(LEASE_MS))

    async def out_of_dead_hands() -> bool:
        now = await asyncio.gather(*(get_job(client, job_id) for job_id in ids))
        return all(j["workerId"] != dead_id or j["status"] == "waiting" for j in now) and (
            await redis_client.llen(K.processing("default", dead_id)) == 0
        )

    await wait_until(out_of_dead_hands, timeout=LEASE_MS / 1000 + 15, interval=0.05)
    recovery_s = time.monotonic() - killed_at
    print(f"\nkill -9 recovery: {recovery_s:.2f} s (lease {LEASE_MS} ms)")
    # within the lease plus a few seconds (reaper interval, process start-up, a busy machine)
    assert recovery_s < LEASE_MS / 1000 + 4, recovery_s

    done = await wait_all(client, ids, "completed", "failed", "cancelled", timeout=40)
    assert [j["status"] for j in done] == ["completed"] * 5, second.output()
    for job in done:
        assert job["workerId"] != dead_id
        assert job["attemptsMade"] == 2  # at-least-once: the interrupted attempt ran again
        assert job["progress"] == 100
        assert job["result"] == {"steps": 20, "message": "completed 20 web-agent steps"}
    # nothing left active, nothing lost, nothing duplicated
    assert set(await statuses(redis_client, ids)) == {"completed"}
    listed = await list_jobs(client)
    assert listed["total"] == total_before == 5
    assert sorted(j["id"] for j in listed["jobs"]) == sorted(ids)
    assert await redis_client.llen(K.processing("default", dead_id)) == 0
    assert await redis_client.llen(K.wait("default")) == 0
    # the dead worker is no longer listed
    assert await redis_client.zscore(K.workers, dead_id) is None


async def test_job_recovered_more_than_twice_fails_as_stalled(
    client: Any, spawn_worker: Any, redis_client: Any
) -> None:
    poison = await create_job(client, name="poison", type="die")
    behind = [(await create_job(client, name=f"noop-{i}", type="noop"))["id"] for i in range(3)]
    args = ("--lease-ms", "1000", "--concurrency", "1")

    current = spawn_worker(*args)
    deaths = 0
    deadline = time.monotonic() + 90
    while True:
        job = await get_job(client, poison["id"])
        if job["status"] in ("failed", "completed", "cancelled"):
            break
        assert time.monotonic() < deadline, f"poison job never failed: {job}"
        if current.proc.poll() is not None:
            assert current.proc.returncode == -signal.SIGKILL, current.output()
            deaths += 1
            assert deaths <= 5, job
            current = spawn_worker(*args)
        await asyncio.sleep(0.05)

    assert job["status"] == "failed", job
    assert "stalled" in job["failedReason"], job
    assert job["attemptsMade"] == 3
    assert deaths == 3  # ran three times, killing its worker each time; the third recovery fails it
    # the jobs in line behind it still run, on the worker that is still alive
    for done in await wait_all(client, behind, "completed", "failed", timeout=20):
        assert done["status"] == "completed", done
    assert current.proc.poll() is None
    assert "active" not in await statuses(redis_client, [poison["id"], *behind])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_graceful_stop_lets_active_jobs_finish_claims_nothing_new_and_exits_0(
    client: Any, spawn_worker: Any, redis_client: Any, sig: int
) -> None:
    proc = spawn_worker("--lease-ms", str(LEASE_MS), "--concurrency", "3")
    running = [(await create_job(client, name=f"run-{i}", data={"steps": 10, "stepMs": 100}))["id"] for i in range(3)]
    await wait_until(lambda: all_active(redis_client, running), timeout=20)
    # in line before the signal; slots free up as the running ones finish during the grace period
    extras = [(await create_job(client, name=f"extra-{i}", type="echo"))["id"] for i in range(3)]
    worker_id = await worker_of(client, running)

    proc.signal(sig)
    signalled_at = time.monotonic()
    code = await exit_code(proc, 20)
    elapsed = time.monotonic() - signalled_at
    assert code == 0, proc.output()
    assert elapsed < 10, elapsed  # well inside the default 25 s grace: it left when its jobs were done

    for job in [await get_job(client, job_id) for job_id in running]:
        assert job["status"] == "completed", job
        assert job["progress"] == 100 and len(job["logs"]) == 10
    for job in [await get_job(client, job_id) for job_id in extras]:
        assert job["status"] == "waiting", job
        assert job["attemptsMade"] == 0 and job["startedAt"] is None and job["workerId"] is None, job
    assert await redis_client.lrange(K.wait("default"), 0, -1) == extras
    assert await redis_client.llen(K.processing("default", worker_id)) == 0
    assert await redis_client.zscore(K.workers, worker_id) is None  # it signed off


async def test_graceful_stop_past_the_grace_period_puts_the_job_back_and_exits_0(
    client: Any, spawn_worker: Any, redis_client: Any
) -> None:
    proc = spawn_worker("--lease-ms", str(LEASE_MS), "--grace", "1")
    job = await create_job(client, type="block", data={"seconds": 3.5})
    await wait_for_status(client, job["id"], "active", timeout=20)
    old_id = await worker_of(client, [job["id"]])

    proc.signal(signal.SIGTERM)
    signalled_at = time.monotonic()
    code = await exit_code(proc, 15)
    elapsed = time.monotonic() - signalled_at
    assert code == 0, proc.output()
    assert elapsed < 1 + 5, elapsed  # grace 1 s, plus the claimer's 1 s blocking wait and slack

    back = await get_job(client, job["id"])
    assert back["status"] == "waiting", back
    assert back["failedReason"] is None and back["finishedAt"] is None, back
    assert await redis_client.lrange(K.wait("default"), 0, -1) == [job["id"]]
    assert await redis_client.llen(K.processing("default", old_id)) == 0

    spawn_worker("--lease-ms", str(LEASE_MS))
    done = await wait_for_status(client, job["id"], "completed", "failed", "cancelled", timeout=30)
    assert done["status"] == "completed", done
    assert done["workerId"] != old_id
    assert done["result"] == "unblocked"


async def test_frozen_worker_loses_its_job_and_cannot_touch_it_after_it_wakes(
    client: Any, spawn_worker: Any, redis_client: Any
) -> None:
    # SIGSTOP a worker mid-job: its lease runs out, another worker reruns the job, and when the
    # frozen one wakes up (SIGCONT) its late progress, logs and completion must all be refused.
    frozen = spawn_worker("--lease-ms", "1500")
    job = await create_job(client, name="agent", data={"steps": 10, "stepMs": 150})

    async def some_progress() -> bool:
        return (await get_job(client, job["id"]))["progress"] >= 20

    await wait_until(some_progress, timeout=20)
    frozen_id = await worker_of(client, [job["id"]])
    frozen.signal(signal.SIGSTOP)
    await asyncio.sleep(0.2)
    before = await get_job(client, job["id"])
    steps_before = len(before["logs"])
    assert before["progress"] == steps_before * 10

    spawn_worker("--lease-ms", "1500")

    async def taken_over() -> bool:
        j = await get_job(client, job["id"])
        return j["status"] == "active" and j["workerId"] != frozen_id

    await wait_until(taken_over, timeout=20, interval=0.05)
    frozen.signal(signal.SIGCONT)  # wakes in the middle of a step it thinks it still owns

    done = await wait_for_status(client, job["id"], "completed", "failed", "cancelled", timeout=30)
    assert done["status"] == "completed", done
    assert done["workerId"] != frozen_id
    assert done["attemptsMade"] == 2
    # the old run's lines, then exactly one full run of the new worker: nothing from the woken one
    assert len(done["logs"]) == steps_before + 10, done["logs"]
    new_run = [line.split(":")[0] for line in done["logs"][steps_before:]]
    assert new_run == [f"step {i}/10" for i in range(1, 11)], done["logs"]
    assert frozen.proc.poll() is None  # it lives on
    assert await redis_client.llen(K.processing("default", frozen_id)) == 0
    await asyncio.sleep(0.5)
    assert (await get_job(client, job["id"]))["status"] == "completed"


async def test_second_signal_skips_the_grace_period(client: Any, spawn_worker: Any, redis_client: Any) -> None:
    proc = spawn_worker("--lease-ms", str(LEASE_MS), "--grace", "60")
    job = await create_job(client, type="block")
    await wait_for_status(client, job["id"], "active", timeout=20)
    proc.signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    proc.signal(signal.SIGTERM)
    signalled_at = time.monotonic()
    code = await exit_code(proc, 15)
    assert code == 0, proc.output()
    assert time.monotonic() - signalled_at < 6  # nowhere near the 60 s grace
    back = await get_job(client, job["id"])
    assert back["status"] == "waiting", back
    assert back["failedReason"] is None


async def test_job_cancelled_while_its_worker_is_dead_is_not_recovered(
    client: Any, spawn_worker: Any, redis_client: Any
) -> None:
    ids = [(await create_job(client, type="block", data={"seconds": 1}))["id"] for _ in range(2)]
    first = spawn_worker("--lease-ms", str(LEASE_MS))
    await wait_until(lambda: all_active(redis_client, ids), timeout=20)
    dead_id = await worker_of(client, ids)
    first.kill()

    response = await client.post(f"/api/jobs/{ids[0]}/cancel")
    assert response.status == 200
    assert (await response.json())["status"] == "cancelled"

    spawn_worker("--lease-ms", str(LEASE_MS))
    recovered = await wait_for_status(client, ids[1], "completed", "failed", timeout=30)
    assert recovered["status"] == "completed" and recovered["workerId"] != dead_id
    cancelled = await get_job(client, ids[0])
    assert cancelled["status"] == "cancelled", cancelled
    assert cancelled["attemptsMade"] == 1 and cancelled["workerId"] == dead_id
    assert await redis_client.llen(K.processing("default", dead_id)) == 0


async def test_dead_worker_jobs_in_a_queue_the_reaper_does_not_serve_are_recovered(
    client: Any, spawn_worker: Any, redis_client: Any
) -> None:
    job = await create_job(client, type="block", queue="other", data={"seconds": 1})
    first = spawn_worker("--lease-ms", str(LEASE_MS), "--queue", "other")
    await wait_for_status(client, job["id"], "active", timeout=20)
    dead_id = await worker_of(client, [job["id"]])
    first.kill()

    spawn_worker("--lease-ms", str(LEASE_MS), "--queue", "default")  # reaps, but does not serve "other"
    back = await wait_for_status(client, job["id"], "waiting", timeout=LEASE_MS / 1000 + 15)
    assert back["failedReason"] is None
    assert await redis_client.lrange(K.wait("other"), 0, -1) == [job["id"]]
    assert await redis_client.llen(K.processing("other", dead_id)) == 0

    spawn_worker("--lease-ms", str(LEASE_MS), "--queue", "other")
    done = await wait_for_status(client, job["id"], "completed", "failed", timeout=30)
    assert done["status"] == "completed", done


async def test_recovered_jobs_go_back_to_the_front_of_the_line_in_their_original_order(
    client: Any, spawn_worker: Any, redis_client: Any
) -> None:
    ids = [(await create_job(client, name=f"job-{i}", type="block", data={"seconds": 1}))["id"] for i in range(7)]
    first = spawn_worker("--lease-ms", str(LEASE_MS))
    await wait_until(lambda: all_active(redis_client, ids[:5]), timeout=20)
    assert await redis_client.lrange(K.wait("default"), 0, -1) == ids[5:]
    first.kill()

    spawn_worker("--lease-ms", str(LEASE_MS), "--queue", "elsewhere")  # reaps without taking work

    async def all_back() -> bool:
        return await redis_client.llen(K.wait("default")) == 7

    await wait_until(all_back, timeout=LEASE_MS / 1000 + 15)
    line = await redis_client.lrange(K.wait("default"), 0, -1)
    names = {job_id: f"job-{i}" for i, job_id in enumerate(ids)}
    assert [names[i] for i in line] == [f"job-{i}" for i in range(7)], [names[i] for i in line]


async def test_job_claimed_for_a_worker_whose_reply_was_lost_is_put_back_and_run(
    client: Any, spawn_worker: Any, redis_client: Any, store: Any
) -> None:
    """A claim whose reply never reached the worker (a Redis blip mid-command) leaves the job
    active in its processing list while the worker runs nothing of it: its lease check puts the job
    back, and it runs."""
    spawn_worker("--lease-ms", str(LEASE_MS), "--concurrency", "1")
    busy = (await create_job(client, name="busy", type="sleep", data={"ms": 3000}))["id"]
    await wait_for_status(client, busy, "active")
    worker_id = await worker_of(client, [busy])
    lost = (await create_job(client, name="lost reply", type="noop"))["id"]
    # The claim the worker's own command would have made, had its reply not been lost:
    [claimed] = await store.claim("default", worker_id, 1)
    assert claimed.id == lost and (await get_job(client, lost))["status"] == "active"

    await wait_for_status(client, lost, "waiting", timeout=10)  # two lease checks: ~0.8 s
    assert (await get_job(client, busy))["status"] == "active"  # put back while the slot was still busy
    assert await redis_client.lrange(K.processing("default", worker_id), 0, -1) == [busy]
    done = await wait_for_status(client, lost, "completed", "failed", timeout=20)
    assert done["status"] == "completed", done


async def registered(redis_client: Any) -> set[str]:
    return set(await redis_client.zrange(K.workers, 0, -1))


async def test_late_blmove_reply_of_a_frozen_worker_cannot_claim_a_job_the_reaper_put_back(
    client: Any, spawn_worker: Any, redis_client: Any
) -> None:
    """Issue 18: an idle worker frozen in BLMOVE, a job moved to it meanwhile, put back by a
    reaper, then the worker wakes (its late reply in hand) and is killed. The job must still run."""
    busy_one = spawn_worker("--lease-ms", "3000", "--concurrency", "1")
    busy = (await create_job(client, name="keeps the reaper's worker busy", type="block", data={"seconds": 8}))["id"]
    await wait_for_status(client, busy, "active")
    before = await registered(redis_client)
    frozen = spawn_worker("--lease-ms", "3000", "--concurrency", "1")
    await wait_until(lambda: _more_workers(redis_client, before), timeout=20)
    [frozen_id] = await registered(redis_client) - before
    await wait_until(lambda: _blocked_clients(redis_client, 1), timeout=10)  # its BLMOVE is waiting
    frozen.signal(signal.SIGSTOP)  # blocked in BLMOVE: Redis still hands it the next job

    job = (await create_job(client, name="moved to a frozen worker", type="block", data={"seconds": 1}))["id"]
    frozen_list = K.processing("default", frozen_id)
    await wait_until(lambda: _holds(redis_client, frozen_list, job), timeout=10)
    # its lease runs out; the busy worker's reaper puts the job back in line, still waiting
    await wait_until(lambda: _gone(redis_client, frozen_id), timeout=15, interval=0.05)
    assert await redis_client.lrange(K.wait("default"), 0, -1) == [job]
    assert (await get_job(client, job))["status"] == "waiting"

    frozen.signal(signal.SIGCONT)  # reads the late reply and claims with it
    await wait_for_status(client, job, "active", timeout=10)
    frozen.kill()  # kill -9 while it runs the job

    done = await wait_for_status(client, job, "completed", "failed", timeout=30)
    assert done["status"] == "completed", (done, busy_one.output())
    assert done["workerId"] != frozen_id
    assert await redis_client.llen(K.wait("default")) == 0  # no stale copy left behind


async def test_active_job_of_a_dead_worker_outside_every_processing_list_is_put_back_and_run(
    client: Any, spawn_worker: Any, redis_client: Any
) -> None:
    """The reaper's consistency check: however a job came to be active with its id in no
    processing list (a bug, a late reply), once its worker is gone the job runs again."""
    doomed = spawn_worker("--lease-ms", str(LEASE_MS), "--concurrency", "1")
    job = (await create_job(client, name="orphan", type="block", data={"seconds": 1}))["id"]
    await wait_for_status(client, job, "active")
    owner = await worker_of(client, [job])
    assert await redis_client.lrem(K.processing("default", owner), 1, job) == 1  # the inconsistency
    doomed.kill()
    spawn_worker("--lease-ms", str(LEASE_MS), "--concurrency", "1")

    done = await wait_for_status(client, job, "completed", "failed", timeout=LEASE_MS / 1000 + 15)
    assert done["status"] == "completed", done
    assert done["workerId"] != owner and done["attemptsMade"] == 2


async def _more_workers(redis_client: Any, before: set[str]) -> bool:
    return len(await registered(redis_client) - before) == 1


async def _blocked_clients(redis_client: Any, count: int) -> bool:
    return (await redis_client.info("clients"))["blocked_clients"] == count


async def _holds(redis_client: Any, key: str, job_id: str) -> bool:
    return job_id in await redis_client.lrange(key, 0, -1)


async def _gone(redis_client: Any, worker_id: str) -> bool:
    return worker_id not in await registered(redis_client) and await redis_client.llen(K.wait("default")) == 1


async def test_job_claimed_after_its_worker_was_written_off_is_recovered_when_it_dies(
    client: Any, spawn_worker: Any, redis_client: Any
) -> None:
    """An ack's claim of the next job may land after a reaper wrote the worker off (it froze, was
    reaped, woke and acked): the job sits in the processing list of a worker no reaper will look
    at. If that worker dies before its next heartbeat re-registers it, the job must still run."""
    doomed = spawn_worker("--lease-ms", str(LEASE_MS), "--concurrency", "1")
    job = (await create_job(client, name="claimed by a written-off worker", type="block", data={"seconds": 1}))["id"]
    await wait_for_status(client, job, "active")
    owner = await worker_of(client, [job])
    doomed.signal(signal.SIGSTOP)
    await redis_client.zrem(K.workers, owner)  # written off by a reaper, its list already swept
    doomed.kill()
    spawn_worker("--lease-ms", str(LEASE_MS), "--concurrency", "1")

    done = await wait_for_status(client, job, "completed", "failed", timeout=LEASE_MS / 1000 + 15)
    assert done["status"] == "completed", done
    assert done["workerId"] != owner
    assert await redis_client.llen(K.processing("default", owner)) == 0
