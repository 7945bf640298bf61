"""Every script call's keys are in one Redis Cluster slot, on a single Redis too: a key of another
slot would work here and fail only on a cluster. Each command that leaves the process is recorded
where it is packed, while a workload runs every script at least once."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
import redis.connection
from redis.crc import key_slot

from jobline import scripts
from jobline.connections import _HiredisPacking
from jobline.keys import Keys
from jobline.queue_settings import SettingsStore
from jobline.schedules import ScheduleStore
from jobline.store import JobStore
from tests.conftest import create_job, wait_all, wait_for_status

ScriptCall = tuple[str, list[str]]  # the script's name, its keys


def _script_names() -> dict[str, str]:
    """sha1 of each script's source -> its name (scripts.ENQUEUE -> "ENQUEUE")."""
    return {
        hashlib.sha1(source.encode()).hexdigest(): name
        for name, source in vars(scripts).items()
        if name.isupper() and isinstance(source, str) and "redis.call" in source
    }


@pytest.fixture
def script_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ScriptCall]]:
    names = _script_names()
    calls: list[ScriptCall] = []

    def record(args: tuple[Any, ...]) -> None:
        if args and str(args[0]).upper() == "EVALSHA":
            count = int(args[2])
            calls.append((names.get(str(args[1]), str(args[1])), [str(key) for key in args[3 : 3 + count]]))

    def recording(original: Any) -> Any:
        def pack_command(self: Any, *args: Any) -> Any:
            record(args)
            return original(self, *args)

        return pack_command

    # Our async clients pack with hiredis; the heartbeat thread's sync client with redis-py's own.
    monkeypatch.setattr(_HiredisPacking, "pack_command", recording(_HiredisPacking.pack_command))
    sync_pack = redis.connection.AbstractConnection.pack_command
    monkeypatch.setattr(redis.connection.AbstractConnection, "pack_command", recording(sync_pack))
    yield calls


async def test_every_script_call_keeps_its_keys_in_one_slot(
    client: Any, store: JobStore, start_worker: Any, script_calls: list[ScriptCall]
) -> None:
    # Creating: one job, a batch across two queues, with an Idempotency-Key.
    await create_job(client, name="one")
    batch = await client.post(
        "/api/jobs/batch",
        json={"jobs": [{"name": "a", "queue": "other"}, {"name": "b"}]},
        headers={"Idempotency-Key": "slots-1"},
    )
    assert batch.status == 201
    # API actions: priority, promote, cancel, retry, delete, pause and resume, a listing that
    # combines indexes, a bulk action, a clean, a queue removal.
    delayed = await create_job(client, name="later", delayMs=60_000)
    assert (await client.patch(f"/api/jobs/{delayed['id']}", json={"priority": "high"})).status == 200
    assert (await client.post(f"/api/jobs/{delayed['id']}/promote")).status == 200
    cancelled = await create_job(client, name="cancel me", delayMs=60_000)
    assert (await client.post(f"/api/jobs/{cancelled['id']}/cancel")).status == 200
    assert (await client.post(f"/api/jobs/{cancelled['id']}/retry")).status == 200
    assert (await client.delete(f"/api/jobs/{cancelled['id']}")).status in (200, 204)
    for action in ("pause", "resume"):
        assert (await client.post(f"/api/admin/queues/other/{action}")).status == 200
    limits = {"rateLimit": {"max": 100, "perMs": 1000}, "concurrency": 50, "retention": {"completed": {"maxAgeMs": 60_000}}}
    assert (await client.patch("/api/admin/queues/default", json=limits)).status == 200
    listed = await client.get("/api/jobs", params={"status": ["waiting", "delayed"], "type": "demo"})
    assert listed.status == 200
    searched = await client.get("/api/jobs", params={"q": "later", "tag": "t", "status": "waiting,delayed", "type": "demo"})
    assert searched.status == 200
    # Running: progress, logs, state, custom events, a failure with a retry, completions, a retry
    # that becomes due, a job put back when its worker stops.
    worker = await start_worker(queues=("default", "other", "slow"), grace_s=0.2)
    ran = [
        await create_job(client, name="events", type="async_state_and_events"),
        await create_job(client, name="echo", type="echo", data={"x": 1}),
        await create_job(client, name="fails", type="fail", maxAttempts=2, backoffMs=1),
    ]
    flow = await create_job(client, name="flow", type="collect", children=[
        {"name": "kid", "type": "fail", "maxAttempts": 1, "queue": "other"}, {"name": "kid 2", "type": "echo"},
    ])  # fmt: skip
    await wait_all(client, [job["id"] for job in ran], "completed", "failed")
    await wait_for_status(client, flow["id"], "failed")
    assert (await client.post(f"/api/jobs/{flow['id']}/retry")).status == 200  # with its failed child
    blocked = await create_job(client, name="block", type="block", queue="slow")
    await wait_for_status(client, blocked["id"], "active")
    worker.request_stop()  # puts the blocked job back (REQUEUE)
    await wait_for_status(client, blocked["id"], "waiting")
    # A job left active by a worker that is gone (the reaper's consistency check).
    await create_job(client, name="orphan", queue="orphans")
    [orphan] = await store.claim("orphans", "gone-worker", 1)
    assert await store.recover_orphans("orphans", min_age_ms=-1) == 1  # claimed this very millisecond, maybe
    assert (await client.get("/api/admin/failures")).status == 200
    bulk = await client.post("/api/jobs/bulk", json={"action": "retry", "status": "failed"})
    assert bulk.status == 200
    clean = await client.post("/api/admin/queues/default/clean", json={"status": "completed", "olderThanMs": 0})
    assert clean.status == 200
    await store.delete(orphan.id)
    await SettingsStore(store).sweep("default")  # the workers' retention sweep
    # A schedule that is due: the workers' firing.
    made = await client.post("/api/schedules", json={"id": "s", "everyMs": 1000, "job": {"name": "tick"}})
    due = (await made.json())["nextRunAt"] - 5000
    await store.redis.hset(Keys().schedule("s"), "nextRunAt", due)
    await store.redis.zadd(Keys().schedules, {"s": due})
    assert await ScheduleStore(store).fire_due() == 1
    assert (await client.delete("/api/admin/queues/orphans")).status in (200, 204)

    used = {name for name, _ in script_calls}
    assert used >= set(_script_names().values()), f"scripts never called: {set(_script_names().values()) - used}"
    for name, keys in script_calls:
        slots = {key_slot(key.encode()) for key in keys}
        assert len(slots) <= 1, f"{name} was called with keys in {len(slots)} slots: {keys}"
