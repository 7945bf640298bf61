"""`rediscost`: the Redis server's own CPU per job (issue 11), read from INFO, not from the client.

Per job type, two phases on a freshly flushed Redis: the enqueue (JobStore.enqueue, one awaited call
per job, as the API does), then the claim + complete (a real `python worker.py`, 5 slots, from its
spawn until the last job completed). Each phase: CONFIG RESETSTAT, `INFO cpu`, the work, `INFO cpu`,
`INFO commandstats`. Two figures per job:

- CPU: the delta of used_cpu_user + used_cpu_sys (the whole redis-server process, from getrusage)
  minus an idle baseline: Redis's CPU per second with no jobs, measured just before (serverCron at
  10 Hz, plus for the drain the benchmark's own 20 ms completion polling), times the phase's wall time.
- commandstats: the usec Redis spent in script calls (EVAL*, FCALL*, whose usec includes the commands
  the script runs) and blocking commands (BLMOVE ...), which a script cannot run. It leaves out idle
  work, syscalls and event-loop overhead, so it is lower than the CPU figure. Other commands are
  listed per job too, but their usec is not added: most of them run inside scripts (counted twice).

The benchmark's own commands (CONFIG RESETSTAT, two INFO and its ZCARD polls) are taken out of the
counts. The worker's own overhead (start-up, heartbeats, its BLMOVE once the queue is empty) stays in:
it is what users run. used_cpu_* count the whole server: with --redis-url, nothing else may use it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .harness import POLL_S, QUICK, Harness, Process, check_alive, new_job
from .report import Target, WorkloadResult

TARGET_NOOP_US = 200  # issue 11: one Redis core carries >= 5,000 no-op jobs/s
TARGET_DEMO_US = 1000
DEMO_DATA = {"steps": 10, "stepMs": 0}  # the demo's default 10 steps (10 updates, 1 custom event), no waits
SCRIPT_CALLS = ("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro")
BLOCKING = ("blmove", "brpoplpush", "blpop", "brpop", "blmpop", "bzpopmin", "bzpopmax", "bzmpop")
TOP = 5


async def _cpu_s(h: Harness) -> float:
    info = await h.redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _wait_completed(h: Harness, n: int, worker: Process, timeout: float) -> int:
    """Poll the completed count every 20 ms (as Harness.wait_completed) until n; returns the polls."""
    deadline, polls = time.monotonic() + timeout, 0
    while True:
        polls += 1
        done = await h.completed()
        if done >= n:
            return polls
        check_alive([worker])
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {done} of {n} jobs completed within {timeout:.0f} s")
        await asyncio.sleep(POLL_S)


async def _idle_us_per_s(h: Harness, seconds: float, polling: bool) -> float:
    """Redis CPU per second with no jobs, with or without the completion polling of a drain."""
    cpu0, t0 = await _cpu_s(h), time.perf_counter()
    if polling:
        while time.perf_counter() - t0 < seconds:
            await h.completed()
            await asyncio.sleep(POLL_S)
    else:
        await asyncio.sleep(seconds)
    cpu1, t1 = await _cpu_s(h), time.perf_counter()
    return (cpu1 - cpu0) * 1e6 / (t1 - t0)


class _Phase:
    """One measured phase: `await start()`, the work, `await stop(...)` for its figures per job."""

    def __init__(self, h: Harness, idle_us_per_s: float) -> None:
        self.h, self.idle_us_per_s = h, idle_us_per_s

    async def start(self) -> None:
        await self.h.redis.config_resetstat()  # commandstats only: used_cpu_* are never reset
        self.cpu0, self.t0 = await _cpu_s(self.h), time.perf_counter()

    async def stop(self, n: int, polls: int = 0) -> dict[str, Any]:
        cpu1, t1 = await _cpu_s(self.h), time.perf_counter()
        stats = await self.h.redis.info("commandstats")
        wall_s = t1 - self.t0
        cpu_us, idle_us = (cpu1 - self.cpu0) * 1e6, self.idle_us_per_s * wall_s
        return {
            "jobs": n,
            "wall_s": round(wall_s, 3),
            "cpu_us": round(cpu_us),
            "idle_us_subtracted": round(idle_us),
            "cpu_us_per_job": round((cpu_us - idle_us) / n, 1),
            "cpu_us_per_job_raw": round(cpu_us / n, 1),
            **_commands(stats, n, own={"config": 1, "info": 2, "zcard": polls}),
        }


def _commands(stats: dict[str, Any], n: int, own: dict[str, int]) -> dict[str, Any]:
    """Calls and usec per job by command, without the benchmark's own calls (their usec taken out
    at the command's mean usec per call)."""
    per_command: dict[str, dict[str, float]] = {}
    for key, value in stats.items():
        name = key.removeprefix("cmdstat_")
        calls, usec = int(value["calls"]), float(value["usec"])
        mine = min(own.get(name, 0), calls)
        usec -= usec * mine / calls if calls else 0
        calls -= mine
        if calls:
            per_command[name] = {"calls": calls, "usec": usec}
    return _summary(per_command, n)


def _summary(per_command: dict[str, dict[str, float]], n: int) -> dict[str, Any]:
    def total(names: tuple[str, ...], field: str) -> float:
        return sum(per_command[c][field] for c in names if c in per_command)

    ranked = sorted(per_command.items(), key=lambda kv: -kv[1]["usec"])
    return {
        "commands_per_job": round(sum(c["calls"] for c in per_command.values()) / n, 2),
        "script_calls_per_job": round(total(SCRIPT_CALLS, "calls") / n, 3),
        "blocking_calls_per_job": round(total(BLOCKING, "calls") / n, 3),
        "commandstats_usec_per_job": round((total(SCRIPT_CALLS, "usec") + total(BLOCKING, "usec")) / n, 1),
        "top_commands": [
            {
                "command": name,
                "calls_per_job": round(c["calls"] / n, 3),
                "usec_per_job": round(c["usec"] / n, 1),
                "usec_per_call": round(c["usec"] / c["calls"], 2),
            }
            for name, c in ranked[:TOP]
        ],
        "by_command": {name: {"calls": int(c["calls"]), "usec": round(c["usec"])} for name, c in ranked},
    }


def _both(enqueue: dict[str, Any], drain: dict[str, Any], n: int) -> dict[str, Any]:
    """Enqueue + claim + complete, per job."""
    merged: dict[str, dict[str, float]] = {}
    for phase in (enqueue, drain):
        for name, c in phase["by_command"].items():
            into = merged.setdefault(name, {"calls": 0, "usec": 0.0})
            into["calls"] += c["calls"]
            into["usec"] += c["usec"]
    summary = _summary(merged, n)
    del summary["by_command"]
    return {
        "cpu_us_per_job": round(enqueue["cpu_us_per_job"] + drain["cpu_us_per_job"], 1),
        "cpu_us_per_job_raw": round(enqueue["cpu_us_per_job_raw"] + drain["cpu_us_per_job_raw"], 1),
        **summary,
    }


async def _end_to_end(
    h: Harness, job_type: str, data: dict[str, Any], n: int, quiet: float, polling: float
) -> dict[str, Any]:
    """Enqueue n jobs, then one worker drains them: each phase measured, and both together."""
    store = await h.fresh_store()
    phase = _Phase(h, quiet)
    await phase.start()
    for _ in range(n):
        await store.enqueue(new_job(job_type, data))
    enqueue = await phase.stop(n)
    phase = _Phase(h, polling)
    await phase.start()
    worker, _ = h.spawn_worker(concurrency=5)
    try:
        polls = await _wait_completed(h, n, worker, timeout=max(60, n / 10))
        drain = await phase.stop(n, polls)
    finally:
        h.procs.stop(worker)
    return {"enqueue": enqueue, "claim_complete": drain, "total": _both(enqueue, drain, n)}


async def redis_cost(h: Harness) -> WorkloadResult:
    r = WorkloadResult("rediscost", "Redis CPU per job")
    quick = h.sizes == QUICK
    n_noop, n_demo = h.sizes.w1_jobs, h.sizes.memory_jobs  # 5,000 and 1,000 (300 and 50 with --quick)
    idle_s = 0.5 if quick else 2.0
    await h.fresh_store()
    quiet = await _idle_us_per_s(h, idle_s, polling=False)
    polling = await _idle_us_per_s(h, idle_s, polling=True)
    noop = await _end_to_end(h, "noop", {}, n_noop, quiet, polling)
    demo = await _end_to_end(h, "demo", DEMO_DATA, n_demo, quiet, polling)
    noop_us, demo_us = noop["total"]["cpu_us_per_job"], demo["total"]["cpu_us_per_job"]
    r.details = {
        "redis_cpu_us_per_noop_job": noop_us,
        "redis_cmds_per_noop_job": noop["total"]["commands_per_job"],
        "redis_cpu_us_per_demo_job": demo_us,
        "redis_cmds_per_demo_job": demo["total"]["commands_per_job"],
        "idle_baseline": {
            "method": "idle Redis CPU per second (no jobs, just flushed), measured before the phases, "
            "times each phase's wall time, subtracted; the drain's baseline includes the 20 ms polling",
            "seconds": idle_s,
            "quiet_us_per_s": round(quiet, 1),
            "polling_us_per_s": round(polling, 1),
        },
        "demo_data": DEMO_DATA,
        "noop": noop,
        "demo": demo,
    }
    noop_in, noop_out = noop["enqueue"], noop["claim_complete"]
    r.add("redis_cpu_us_per_noop_job", noop_us, "us", Target("<=", TARGET_NOOP_US, "issue 11"))
    r.add("  of which enqueue", noop_in["cpu_us_per_job"], "us")
    r.add("  of which claim + complete (worker)", noop_out["cpu_us_per_job"], "us")
    r.add("noop jobs/s per Redis core (1e6 / cpu per job)", round(1e6 / noop_us) if noop_us > 0 else None, "jobs/s",
          Target(">=", 1e6 / TARGET_NOOP_US, "issue 11"))  # fmt: skip
    r.add("redis_cmds_per_noop_job (incl. in Lua)", noop["total"]["commands_per_job"], "cmds")
    r.add("  of which enqueue", noop_in["commands_per_job"], "cmds")
    r.add("  of which claim + complete (worker)", noop_out["commands_per_job"], "cmds")
    r.add("redis_commandstats_us_per_noop_job", noop["total"]["commandstats_usec_per_job"], "us")
    r.add("redis_cpu_us_per_demo_job", demo_us, "us", Target("<=", TARGET_DEMO_US, "issue 11"))
    r.add("redis_cmds_per_demo_job (incl. in Lua)", demo["total"]["commands_per_job"], "cmds")
    r.add("redis_commandstats_us_per_demo_job", demo["total"]["commandstats_usec_per_job"], "us")
    r.add("idle Redis CPU subtracted (drain phases)", round(polling), "us/s")
    return r
