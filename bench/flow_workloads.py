"""Issue 12's two figures: what a flow costs per child, and that schedules make one job per due time.

- `flow`: one `POST /api/jobs`, a `noop` parent with 999 `noop` children (a flow is at most 1,000
  jobs, parent included), run by 1, then 2 `python worker.py` (5 slots each), each on a flushed
  Redis: the create call until a 20 ms poll sees the parent `completed`; per child, Redis commands
  (CONFIG RESETSTAT, then INFO commandstats; our own calls taken out), EVALSHA calls, and Redis CPU
  (INFO cpu, less an idle baseline with the same workers and polling). Then the same 999 jobs with
  no parent (`POST /api/jobs/batch`): the difference is the flow's overhead per child.
- `schedules`: 3 workers serving queue `ticks`, idle for a baseline, then 1,000 schedules with
  `everyMs: 1000` served for 30 s, then the workers stop. Jobs created (with a scheduleId) against
  due times served, the sum over schedules of (lastRunAt - first nextRunAt) / everyMs + 1. A job's
  id is derived from its schedule and due time (schedules.py), so each job is matched to its due
  time: due times skipped, duplicates, the lag to the job's createdAt; and the Redis CPU and
  commands per second the schedules add.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from jobline.schedules import Schedule

from .harness import POLL_S, QUEUE, QUICK, ROOT, Harness, Process, check_alive
from .report import Target, WorkloadResult, latency_summary
from .settings_workloads import machine_busy_s, process_cpu_s

SLOTS = 5  # --concurrency of every worker started here
WORKER_SETUPS = (1, 2)  # worker processes for the flow runs
SCHEDULE_WORKERS = 3
TICKS = "ticks"
EVERY_MS = 1000
SCRIPT_CALLS = ("evalsha", "eval")
CREATE_IN_FLIGHT = 16  # concurrent POST /api/schedules
TOP = 8
ADDITIVE = ("redis_cpu_us_per_s", "redis_cmds_per_s", "script_calls_per_s", "workers_cpu_cores")
FLOW_ROWS = (("Redis commands", "redis_cmds_per_job", "cmds"), ("EVALSHA", "evalsha_per_job", "calls"),
             ("Redis CPU", "redis_cpu_us_per_job", "us"), ("worker CPU", "workers_cpu_us_per_job", "us"))  # fmt: skip


@dataclass(frozen=True)
class FlowSizes:
    children: int  # 999: with its parent, the largest flow
    idle_s: float  # each flow run's idle baseline
    schedules: int
    run_s: float  # schedules served for this long once all are created, after a baseline of:
    baseline_s: float


FULL = FlowSizes(children=999, idle_s=2.0, schedules=1000, run_s=30.0, baseline_s=5.0)
SMALL = FlowSizes(children=100, idle_s=0.5, schedules=50, run_s=5.0, baseline_s=1.0)


def _sizes(h: Harness) -> FlowSizes:
    return SMALL if h.sizes == QUICK else FULL


class _Window:
    """Between `start()` and `stop()`: Redis's commands (ours taken out) and CPU, the workers' CPU."""

    def __init__(self, h: Harness, workers: list[Process]) -> None:
        self.h, self.workers = h, workers

    async def _read(self) -> tuple[float, ...]:
        info = await self.h.redis.info("cpu")
        workers = sum(process_cpu_s(w.pid) for w in self.workers)
        redis_s = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return time.perf_counter(), redis_s, workers, machine_busy_s()

    async def start(self) -> None:
        await self.h.redis.config_resetstat()  # commandstats only: used_cpu_* are never reset
        self.t0 = await self._read()

    async def stop(self, own: dict[str, int] | None = None) -> dict[str, Any]:
        t1 = await self._read()
        stats = await self.h.redis.info("commandstats")
        wall, redis_s, workers_s, machine_s = (b - a for a, b in zip(self.t0, t1, strict=True))
        mine = {"config": 1, "info": 2, **(own or {})}  # RESETSTAT, INFO cpu twice, the polls
        calls = {key.removeprefix("cmdstat_"): int(value["calls"]) for key, value in stats.items()}
        calls = {name: n - mine.get(name, 0) for name, n in calls.items() if n > mine.get(name, 0)}
        return {"wall_s": wall, "redis_cpu_s": redis_s, "workers_cpu_s": workers_s, "machine_busy_s": machine_s,
                "calls": calls}  # fmt: skip


def _rates(window: dict[str, Any]) -> dict[str, float]:
    """Per second: Redis CPU (us), commands, script calls, and the workers' CPU (cores)."""
    wall, calls = window["wall_s"], window["calls"]
    return {
        "seconds": round(wall, 2),
        "redis_cpu_us_per_s": round(window["redis_cpu_s"] * 1e6 / wall, 1),
        "redis_cmds_per_s": round(sum(calls.values()) / wall, 1),
        "script_calls_per_s": round(sum(calls.get(c, 0) for c in SCRIPT_CALLS) / wall, 1),
        "workers_cpu_cores": round(window["workers_cpu_s"] / wall, 3),
        "machine_busy_cores": round(window["machine_busy_s"] / wall, 2),  # everything, other sessions too
        "top_cmds_per_s": {c: round(v / wall, 1) for c, v in sorted(calls.items(), key=lambda kv: -kv[1])[:TOP]},
    }


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with session.post(url, json=body) as response:
        payload = await response.json()
        if response.status != 201:
            raise RuntimeError(f"POST {url}: {response.status} {str(payload)[:200]}")
    return payload


# -- flow --------------------------------------------------------------------------------------


async def _measure(
    h: Harness, procs: list[Process], session: aiohttp.ClientSession, base: str, flow: bool
) -> dict[str, Any]:
    """The idle baseline (the same polling, no jobs), then the create call until all completed."""
    n, polls, key = _sizes(h).children, {"hget": 0, "zcard": 0}, h.keys.job("none-yet")

    async def done() -> bool:  # one command a poll: the parent's status, else the completed count
        polls["hget" if flow else "zcard"] += 1
        return await h.redis.hget(key, "status") == "completed" if flow else await h.completed() >= n

    window = _Window(h, procs)
    await window.start()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < _sizes(h).idle_s:
        await done()
        await asyncio.sleep(POLL_S)
    idle = _rates(await window.stop(polls))
    polls.update(hget=0, zcard=0)
    children = [{"name": f"c{i}", "type": "noop"} for i in range(n)]
    await window.start()
    t0 = time.perf_counter()
    if flow:
        parent = await _post(session, f"{base}/api/jobs", {"name": "fan-in", "type": "noop", "children": children})
        key = h.keys.job(parent["id"])
    else:
        await _post(session, f"{base}/api/jobs/batch", {"jobs": children})
    create_ms = (time.perf_counter() - t0) * 1000
    deadline = time.monotonic() + max(60, n / 10)
    while not await done():
        check_alive(procs)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{'the parent' if flow else 'the jobs'} did not complete in time")
        await asyncio.sleep(POLL_S)
    wall_ms = (time.perf_counter() - t0) * 1000
    run = await window.stop(polls)
    return {"idle": idle, "run": run, "create_ms": create_ms, "wall_ms": wall_ms,
            "parent_id": parent["id"] if flow else None}  # fmt: skip


async def _redis_clock(h: Harness, parent_id: str | None) -> dict[str, int]:
    """Redis's clock: the parent's createdAt to the last child's end, then to the parent's end.
    Checks that every job finished and that the parent counted each child once."""
    n, k = _sizes(h).children, h.keys
    if parent_id:
        ids = await h.redis.lrange(k.job_children(parent_id), 0, -1)
    else:
        ids = await h.redis.zrange(k.queue_jobs(QUEUE), 0, -1)
    async with h.redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(k.job(job_id), "finishedAt")
        ends = [int(x) for x in await pipe.execute() if x]
    if len(ends) != n:
        raise RuntimeError(f"{len(ends)} of {n} children finished")
    if not parent_id:
        return {}
    created, finished, counted = await h.redis.hmget(k.job(parent_id), ["createdAt", "finishedAt", "children"])
    if (json.loads(counted)["completed"], json.loads(counted)["pending"]) != (n, 0):
        raise RuntimeError(f"the parent counted {counted}, expected {n} completed")
    return {"created_to_last_child_done": max(ends) - int(created),
            "last_child_done_to_parent_done": int(finished) - max(ends),
            "created_to_parent_done": int(finished) - int(created)}  # fmt: skip


async def _one_run(h: Harness, session: aiohttp.ClientSession, base: str, workers: int, flow: bool) -> dict[str, Any]:
    """On a flushed Redis with `workers` fresh workers: the flow (or the same jobs without a
    parent) from the create call until all is completed, per child."""
    await h.fresh_store()
    procs = [h.spawn_worker(concurrency=SLOTS)[0] for _ in range(workers)]
    try:
        await h.wait_workers(workers, procs)
        m = await _measure(h, procs, session, base, flow)
    finally:
        h.procs.stop(*procs)
    clock = await _redis_clock(h, m["parent_id"])
    n, calls, run = _sizes(h).children, m["run"]["calls"], m["run"]
    cpu_us, idle_us = run["redis_cpu_s"] * 1e6, m["idle"]["redis_cpu_us_per_s"] * run["wall_s"]
    return {
        "workers": workers, "jobs": n, "create_call_ms": round(m["create_ms"], 1),
        "wall_ms": round(m["wall_ms"], 1),  # the create call until a poll saw everything completed
        "jobs_per_s": round(n / (m["wall_ms"] / 1000), 1),
        "redis_cmds_per_job": round(sum(calls.values()) / n, 2),
        "evalsha_per_job": round(sum(calls.get(c, 0) for c in SCRIPT_CALLS) / n, 3),
        # FLOW_STEP calls: its SADD to the parent's done set (nothing else SADDs per job); 1 is needed
        "flow_step_calls_per_job": round(calls.get("sadd", 0) / n, 3),
        "redis_cpu_us_per_job": round((cpu_us - idle_us) / n, 1), "redis_cpu_us_per_job_raw": round(cpu_us / n, 1),
        "workers_cpu_us_per_job": round(run["workers_cpu_s"] * 1e6 / n, 1),
        "machine_busy_cores": round(run["machine_busy_s"] / run["wall_s"], 2),  # other sessions' too
        "redis_clock_ms": clock, "idle_baseline": m["idle"],
        "calls_per_job": {c: round(v / n, 3) for c, v in sorted(calls.items(), key=lambda kv: -kv[1])},
    }  # fmt: skip


async def flow(h: Harness) -> WorkloadResult:
    n = _sizes(h).children
    r = WorkloadResult("flow", f"Flow: 1 parent, {n:,} children")
    server, base = await h.spawn_server()
    runs: dict[str, dict[str, Any]] = {}
    try:
        async with aiohttp.ClientSession() as session:
            for workers in WORKER_SETUPS:
                runs[f"flow_{workers}w"] = await _one_run(h, session, base, workers, flow=True)
                runs[f"plain_{workers}w"] = await _one_run(h, session, base, workers, flow=False)
    finally:
        h.procs.stop(server)
    await h.redis.flushall()
    r.details = {"children": n, "worker_slots": SLOTS, **runs}
    for workers in WORKER_SETUPS:
        f, p = runs[f"flow_{workers}w"], runs[f"plain_{workers}w"]
        r.add(f"{workers} worker(s) x {SLOTS}: create -> parent completed", f["wall_ms"], "ms")
        r.add("  same jobs, no parent: create -> all completed", p["wall_ms"], "ms")
        r.add("  create call (flow / batch)", f["create_call_ms"], "ms")
        clock = f["redis_clock_ms"]["last_child_done_to_parent_done"]
        r.add("  last child done -> parent done (Redis clock)", clock, "ms")
        r.add("  FLOW_STEP calls per child (1 counts, the rest repeat)", f["flow_step_calls_per_job"], "calls")
        for what, key, unit in FLOW_ROWS:
            r.add(f"  {what} per child", f[key], unit)
            r.add(f"  {what} per job, no parent", p[key], unit)
            if key != "evalsha_per_job":
                r.add(f"  {what}: flow overhead per child", round(f[key] - p[key], 1), unit)
    return r


# -- schedules -----------------------------------------------------------------------------------


def _spawn_tick_worker(h: Harness) -> Process:
    """`python worker.py --queue ticks`, as Harness.spawn_worker starts one for the default queue."""
    options = ["--redis-url", h.redis_url, "--queue", TICKS, "--concurrency", str(SLOTS), "--grace", "5"]
    return h.procs.start("worker", [sys.executable, str(ROOT / "worker.py"), *options])


async def _create_schedules(session: aiohttp.ClientSession, base: str, n: int) -> dict[str, int]:
    """n schedules, CREATE_IN_FLIGHT requests at a time; {id: its first nextRunAt}."""
    body = {"everyMs": EVERY_MS, "job": {"name": "tick", "type": "noop", "queue": TICKS}}
    first: dict[str, int] = {}
    todo = iter(range(n))

    async def lane() -> None:
        for _ in todo:
            shown = await _post(session, f"{base}/api/schedules", body)
            first[shown["id"]] = shown["nextRunAt"]

    await asyncio.gather(*(lane() for _ in range(CREATE_IN_FLIGHT)))
    return first


async def _tick_jobs(h: Harness) -> list[tuple[str, str | None, int, str]]:
    """(id, scheduleId, createdAt, status) of every job in the ticks queue."""
    ids = await h.redis.zrange(h.keys.queue_jobs(TICKS), 0, -1)
    rows = []
    for at in range(0, len(ids), 1000):
        async with h.redis.pipeline(transaction=False) as pipe:
            for job_id in ids[at : at + 1000]:
                pipe.hmget(h.keys.job(job_id), ["scheduleId", "createdAt", "status"])
            for job_id, (schedule_id, created_at, status) in zip(ids[at : at + 1000], await pipe.execute()):
                rows.append((job_id, schedule_id, int(created_at), status))
    return rows


def _match(schedules: list[dict[str, Any]], first: dict[str, int], jobs: list[Any], stop_ms: int) -> dict[str, Any]:
    """Each job to its due time by its id (derived from schedule and due time), and the counts."""
    by_id = {job_id: (schedule_id, created_at) for job_id, schedule_id, created_at, _ in jobs if schedule_id}
    due_served = due_elapsed = 0
    lags: list[float] = []
    skipped_per_schedule: list[int] = []
    matched: set[str] = set()
    for shown in schedules:
        start, last, upcoming = first[shown["id"]], shown["lastRunAt"], shown["nextRunAt"]
        schedule = Schedule(id=shown["id"], job=shown["job"], every_ms=shown["everyMs"])
        if last is not None:
            due_served += (last - start) // EVERY_MS + 1
        if stop_ms >= start:
            due_elapsed += (stop_ms - start) // EVERY_MS + 1
        skipped = 0
        for due in range(start, max(last or 0, upcoming or 0, start) + 1, EVERY_MS):
            job_id = schedule.new_job(due).job_id
            if job_id in by_id:
                matched.add(job_id)
                lags.append(by_id[job_id][1] - due)
            elif last is not None and due <= last:
                skipped += 1
        skipped_per_schedule.append(skipped)
    return {
        "jobs_with_schedule_id": len(by_id),
        "due_times_served": due_served,
        "due_times_elapsed_by_stop": due_elapsed,
        "due_times_with_their_job": len(matched),
        "due_times_skipped": sum(skipped_per_schedule),
        "schedules_that_skipped": sum(1 for x in skipped_per_schedule if x),
        "jobs_matching_no_due_time": len(by_id) - len(matched),
        "job_pairs_under_half_period_apart": _close_pairs(by_id.values()),
        "lag_ms": latency_summary(lags),
    }


def _close_pairs(jobs: Any) -> int:
    """Jobs of one schedule created less than everyMs / 2 after the one before: (scheduleId, createdAt)."""
    per_schedule: dict[str, list[int]] = {}
    for schedule_id, created_at in jobs:
        per_schedule.setdefault(schedule_id, []).append(created_at)
    times = [sorted(t) for t in per_schedule.values()]
    return sum(1 for t in times for a, b in zip(t, t[1:]) if b - a < EVERY_MS / 2)


async def _serve(h: Harness, s: FlowSizes) -> dict[str, Any]:
    """A baseline of idle workers, then the schedules served for `run_s`, then the workers stopped."""
    server, base = await h.spawn_server()
    workers: list[Process] = []
    try:
        workers = [_spawn_tick_worker(h) for _ in range(SCHEDULE_WORKERS)]
        await h.wait_workers(SCHEDULE_WORKERS, workers)
        window = _Window(h, workers)
        await window.start()
        await asyncio.sleep(s.baseline_s)
        baseline = _rates(await window.stop())
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CREATE_IN_FLIGHT)) as session:
            t0 = time.perf_counter()
            first = await _create_schedules(session, base, s.schedules)
            create_s = time.perf_counter() - t0
            jobs_before = await h.redis.zcard(h.keys.queue_jobs(TICKS))
            await window.start()
            while time.perf_counter() - t0 - create_s < s.run_s:
                check_alive([server, *workers])
                await asyncio.sleep(0.5)
            loaded = _rates(await window.stop())
            made = await h.redis.zcard(h.keys.queue_jobs(TICKS)) - jobs_before
            h.procs.stop(*workers)
            stop_s, stop_us = await h.redis.time()
            async with session.get(f"{base}/api/schedules") as response:
                shown = (await response.json())["schedules"]
    finally:
        h.procs.stop(*workers, server)
    added = {key: round(loaded[key] - baseline[key], 3) for key in ADDITIVE}
    return {
        "create_s": round(create_s, 2), "jobs_created_per_s": round(made / loaded["seconds"], 1),
        "idle_baseline": baseline, "with_schedules": loaded, "added_by_schedules": added,
        "first": first, "shown": shown, "stop_ms": stop_s * 1000 + stop_us // 1000,
    }  # fmt: skip


async def schedules(h: Harness) -> WorkloadResult:
    s = _sizes(h)
    r = WorkloadResult("schedules", f"Schedules: {s.schedules:,} x every {EVERY_MS} ms, {SCHEDULE_WORKERS} workers")
    await h.fresh_store()
    served = await _serve(h, s)
    first, shown, stop_ms = served.pop("first"), served.pop("shown"), served.pop("stop_ms")
    jobs = await _tick_jobs(h)
    counts = _match(shown, first, jobs, stop_ms)
    await h.redis.flushall()
    r.details = {
        "schedules": s.schedules, "every_ms": EVERY_MS, "workers": SCHEDULE_WORKERS, "worker_slots": SLOTS,
        "run_s": s.run_s, "jobs_needed_per_s": s.schedules * 1000 / EVERY_MS, **counts, **served,
        "tick_jobs_total": len(jobs), "tick_jobs_completed_by_stop": sum(1 for *_, st in jobs if st == "completed"),
    }  # fmt: skip
    _schedule_rows(r, counts, served)
    return r


def _schedule_rows(r: WorkloadResult, counts: dict[str, Any], served: dict[str, Any]) -> None:
    jobs_n, due_n, lag = counts["jobs_with_schedule_id"], counts["due_times_served"], counts["lag_ms"]
    baseline, added, per_s = served["idle_baseline"], served["added_by_schedules"], served["jobs_created_per_s"]
    r.add("jobs created (with a scheduleId)", jobs_n, "jobs")
    r.add("due times served (lastRunAt - first nextRunAt) / everyMs + 1", due_n, "due times")
    r.add("jobs created - due times served", jobs_n - due_n, "jobs", Target("==", 0, "issue 12: equal"))
    r.add("  due times skipped (no job)", counts["due_times_skipped"], "due times", Target("==", 0))
    r.add("  schedules that skipped a due time", counts["schedules_that_skipped"], "schedules")
    r.add("  due times elapsed by the stop", counts["due_times_elapsed_by_stop"], "due times")
    r.add("  duplicates: jobs matching no due time", counts["jobs_matching_no_due_time"], "jobs", Target("==", 0))
    r.add("  jobs of one schedule < 500 ms apart", counts["job_pairs_under_half_period_apart"], "pairs",
          Target("==", 0))  # fmt: skip
    r.add(f"  jobs created per second (due: {r.details['jobs_needed_per_s']:,.0f}/s)", per_s, "jobs/s")
    r.add("lag due time -> job created, p50", lag.get("p50_ms"), "ms")
    r.add("lag due time -> job created, p99", lag.get("p99_ms"), "ms")
    r.add("Redis CPU, idle workers", round(baseline["redis_cpu_us_per_s"] / 1e4, 2), "% core")
    r.add("Redis CPU added by the schedules", round(added["redis_cpu_us_per_s"] / 1e4, 2), "% core")
    r.add("Redis commands/s, idle workers", baseline["redis_cmds_per_s"], "cmds/s")
    r.add("Redis commands/s added by the schedules", added["redis_cmds_per_s"], "cmds/s")
    if per_s:
        r.add("  per job created (firing it and running it)", round(added["redis_cmds_per_s"] / per_s, 1), "cmds")
        r.add("  Redis CPU per job created (firing it and running it)",
              round(added["redis_cpu_us_per_s"] / per_s, 1), "us")  # fmt: skip
    r.add(f"workers' CPU added ({SCHEDULE_WORKERS} processes)", added["workers_cpu_cores"], "cores")
