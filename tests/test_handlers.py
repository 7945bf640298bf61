"""Handlers as people write them: plain `def` handlers in threads, saved state and custom events, and
a heartbeat that a blocked event loop does not stop.

Every worker here is a real `python worker.py --tasks tests.handlers` subprocess; the handlers are
at the end of tests/handlers.py."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

from jobline.keys import Keys
from tests.conftest import create_job, wait_until
from tests.test_worker import get_job, wait_all, wait_for_status

K = Keys()
FINISHED = ("completed", "failed", "cancelled")
LEASE_MS = 1000


async def workers(redis_client: Any) -> list[str]:
    return await redis_client.zrange(K.workers, 0, -1)


async def registered(redis_client: Any, count: int) -> None:
    async def enough() -> bool:
        return len(await workers(redis_client)) >= count

    await wait_until(enough, timeout=20)


async def reached(client: Any, job_id: str, **fields: Any) -> dict[str, Any]:
    """Wait until the job's fields have these values; return the job."""
    seen: dict[str, Any] = {}

    async def matches() -> bool:
        seen["job"] = await get_job(client, job_id)
        return all(seen["job"].get(name) == value for name, value in fields.items())

    await wait_until(matches, timeout=20)
    return seen["job"]


async def unchanged_for(client: Any, job_id: str, seconds: float) -> dict[str, Any]:
    """The job, read again and again for `seconds`: it must not change (no event to wait for:
    nothing happening is the point)."""
    first = await get_job(client, job_id)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        assert await get_job(client, job_id) == first
    return first


# -- plain `def` handlers ------------------------------------------------------------------------
async def test_a_plain_handler_runs_in_a_thread_with_a_blocking_ctx(client: Any, spawn_worker: Any) -> None:
    spawn_worker("--lease-ms", str(LEASE_MS))
    job = await create_job(client, type="plain_echo", data={"hello": "thread"})
    done = await wait_for_status(client, job["id"], *FINISHED)
    assert done["status"] == "completed", done
    assert done["result"]["data"] == {"hello": "thread"}
    assert done["result"]["thread"].startswith("jobline-handler-")  # not the event loop's thread
    assert done["progress"] == 100  # completing sets 100
    assert done["logs"] == ["plain progress", "plain log"]  # "plain progress" came with progress 50
    assert done["attemptsMade"] == 1


async def test_a_plain_handler_that_raises_fails_the_attempt_with_the_reason(client: Any, spawn_worker: Any) -> None:
    spawn_worker("--lease-ms", str(LEASE_MS))
    job = await create_job(client, type="plain_fail", data={"message": "no disk"}, maxAttempts=2, backoffMs=1)
    done = await wait_for_status(client, job["id"], "failed")
    assert done["failedReason"] == "ValueError: no disk"
    assert done["attemptsMade"] == 2  # retried like an async handler's failure
    assert sum("ValueError: no disk" in line for line in done["logs"]) == 2


async def test_plain_handlers_run_at_most_concurrency_at_once(client: Any, spawn_worker: Any) -> None:
    spawn_worker("--lease-ms", str(LEASE_MS), "--concurrency", "2")
    ids = [(await create_job(client, type="plain_sleep", data={"seconds": 0.5}))["id"] for _ in range(4)]
    done = await wait_all(client, ids, *FINISHED)
    assert [j["status"] for j in done] == ["completed"] * 4, done
    # the most runs in progress at any one time, from the handlers' own clocks
    edges = sorted([(j["result"]["start"], 1) for j in done] + [(j["result"]["end"], -1) for j in done])
    running = most = 0
    for _, change in edges:
        running += change
        most = max(most, running)
    assert most == 2, edges  # two at once, never three
    assert edges[-1][0] - edges[0][0] < 1.9  # two by two: about 1 s, not 2 s one after the other


async def test_cancel_of_a_plain_handler_ends_it_and_discards_what_its_thread_does_later(
    client: Any, spawn_worker: Any, tmp_path: Path
) -> None:
    spawn_worker("--lease-ms", str(LEASE_MS), "--concurrency", "1")
    marker = tmp_path / "late-calls-done"
    job = await create_job(client, type="plain_late", data={"seconds": 3, "marker": str(marker)})
    await reached(client, job["id"], status="active", progress=10)

    response = await client.post(f"/api/jobs/{job['id']}/cancel")
    assert response.status == 200, await response.text()
    cancelled_at = time.monotonic()
    await reached(client, job["id"], status="cancelled")
    assert time.monotonic() - cancelled_at < 1.5
    # the slot is free at once, though the abandoned thread is still asleep
    echo = await create_job(client, type="plain_echo")
    assert (await wait_for_status(client, echo["id"], *FINISHED))["status"] == "completed"
    assert not marker.exists()

    await wait_until(marker.exists, timeout=10)  # its late progress, state and event were no-ops
    after = await unchanged_for(client, job["id"], 0.5)  # and its result is never acked
    assert after["status"] == "cancelled" and after["progress"] == 10
    assert after["result"] is None and after["state"] == {} and after["events"] == []
    assert "too late" not in after["logs"]


async def test_a_plain_handler_past_its_timeout_fails_timed_out(client: Any, spawn_worker: Any) -> None:
    spawn_worker("--lease-ms", str(LEASE_MS))
    job = await create_job(client, type="plain_sleep", data={"seconds": 3}, timeoutMs=300, maxAttempts=1)
    started = time.monotonic()
    done = await wait_for_status(client, job["id"], *FINISHED)
    assert done["status"] == "failed", done
    assert done["failedReason"] == "timed out after 300 ms"
    assert time.monotonic() - started < 2.5  # it did not wait for the thread's 3 s


async def test_a_stuck_plain_handler_does_not_keep_a_stopping_worker_alive(
    client: Any, spawn_worker: Any, tmp_path: Path
) -> None:
    proc = spawn_worker("--lease-ms", str(LEASE_MS), "--grace", "0.5")
    job = await create_job(client, type="plain_late", data={"seconds": 60, "marker": str(tmp_path / "m")})
    await reached(client, job["id"], status="active", progress=10)
    proc.signal(signal.SIGTERM)
    assert await proc.wait(10) == 0, proc.output()  # its thread cannot be stopped, and is not waited for
    back = await get_job(client, job["id"])
    assert back["status"] == "waiting" and back["attemptsMade"] == 1, back  # put back after the grace


# -- the heartbeat does not depend on the event loop ----------------------------------------------
async def test_an_async_handler_blocking_the_loop_past_the_lease_is_not_run_twice(
    client: Any, spawn_worker: Any, redis_client: Any
) -> None:
    # The watcher serves another queue: it only reaps, so a wrongly recovered job would go back to
    # waiting and run again on the blocked worker (attemptsMade 2).
    spawn_worker("--lease-ms", str(LEASE_MS), "--queue", "elsewhere")
    spawn_worker("--lease-ms", str(LEASE_MS))
    await registered(redis_client, 2)
    job = await create_job(client, type="block_loop", data={"seconds": 3.5})  # 3.5 leases
    blocked = await reached(client, job["id"], status="active", progress=1)

    done = await wait_for_status(client, job["id"], *FINISHED, timeout=20)
    assert done["status"] == "completed", done
    assert done["attemptsMade"] == 1 and done["result"] == {"attempt": 1}
    assert done["workerId"] == blocked["workerId"]
    assert not any("stalled" in line for line in done["logs"]), done["logs"]
    assert blocked["workerId"] in await workers(redis_client)  # never taken for dead


async def test_a_frozen_worker_is_still_recovered_within_the_lease(
    client: Any, spawn_worker: Any, redis_client: Any
) -> None:
    frozen = spawn_worker("--lease-ms", str(LEASE_MS))
    job = await create_job(client, type="block_loop", data={"seconds": 60})  # blocks on attempt 1 only
    first = await reached(client, job["id"], status="active", progress=1)
    frozen_id = first["workerId"]

    # Its loop is blocked, yet its heartbeat goes on: lastSeen advances twice.
    seen = [await redis_client.zscore(K.workers, frozen_id)]

    async def beat_again() -> bool:
        score = await redis_client.zscore(K.workers, frozen_id)
        if score != seen[-1]:
            seen.append(score)
        return len(seen) >= 3

    await wait_until(beat_again, timeout=LEASE_MS / 1000 * 3)
    spawn_worker("--lease-ms", str(LEASE_MS))
    await registered(redis_client, 2)

    frozen.signal(signal.SIGSTOP)  # the heartbeat thread freezes with the process
    stopped_at = time.monotonic()
    try:

        async def recovered() -> bool:
            now = await get_job(client, job["id"])
            return now["workerId"] != frozen_id or now["status"] == "waiting"

        await wait_until(recovered, timeout=LEASE_MS / 1000 + 15, interval=0.05)
        recovery_s = time.monotonic() - stopped_at
        print(f"\nSIGSTOP recovery: {recovery_s:.2f} s (lease {LEASE_MS} ms)")
        assert recovery_s < LEASE_MS / 1000 + 3, recovery_s
        done = await wait_for_status(client, job["id"], *FINISHED, timeout=20)
        assert done["status"] == "completed", done
        assert done["workerId"] != frozen_id and done["attemptsMade"] == 2
        assert done["result"] == {"attempt": 2}
        assert frozen_id not in await workers(redis_client)
    finally:
        frozen.kill()  # SIGKILL ends a stopped process too


# -- saved state and custom events ----------------------------------------------------------------
async def test_state_and_events_of_an_async_handler(client: Any, spawn_worker: Any) -> None:
    spawn_worker("--lease-ms", str(LEASE_MS))
    job = await create_job(client, type="async_state_and_events")
    done = await wait_for_status(client, job["id"], *FINISHED)
    assert done["status"] == "completed", done
    assert done["result"] == {"before": {}, "after": {"saved": True}, "refused": 5}
    assert done["state"] == {"saved": True}
    assert [(e["name"], e.get("data")) for e in done["events"]] == [("screenshot.taken", {"n": 1}), ("done", None)]


async def test_a_killed_job_resumes_on_another_worker_from_its_saved_step(
    client: Any, spawn_worker: Any, redis_client: Any
) -> None:
    first = spawn_worker("--lease-ms", str(LEASE_MS))
    job = await create_job(client, type="checkpointed", data={"steps": 10, "stepMs": 200})

    async def midway() -> bool:
        return (await get_job(client, job["id"])).get("state", {}).get("step", 0) >= 3

    await wait_until(midway, timeout=20)
    first.kill()  # SIGKILL, mid-way
    saved = (await get_job(client, job["id"]))["state"]["step"]
    assert 3 <= saved < 10
    spawn_worker("--lease-ms", str(LEASE_MS))

    done = await wait_for_status(client, job["id"], *FINISHED, timeout=30)
    assert done["status"] == "completed", done
    assert done["attemptsMade"] == 2
    assert done["result"] == {"resumedFrom": saved, "state": {"step": 10}}
    assert done["state"] == {"step": 10}
    starts = [line for line in done["logs"] if " starts at step " in line]
    assert starts == ["attempt 1 starts at step 0", f"attempt 2 starts at step {saved}"], done["logs"]
