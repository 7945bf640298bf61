"""Handlers for the tests, loaded by workers with `--tasks tests.handlers`."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any


async def block(ctx: Any, data: dict[str, Any]) -> str:
    """Runs until cancelled (or `data.seconds`), reporting progress once at the start."""
    await ctx.progress(1, "blocking")
    await asyncio.sleep(data.get("seconds", 3600))
    return "unblocked"


async def fail(ctx: Any, data: dict[str, Any]) -> None:
    raise RuntimeError(data.get("message", "boom"))


async def echo(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
    await ctx.log("echoing")
    return data


async def die(ctx: Any, data: dict[str, Any]) -> None:
    """Kills its own worker process, every time (a poison job)."""
    os.kill(os.getpid(), signal.SIGKILL)


async def unserializable(ctx: Any, data: dict[str, Any]) -> object:
    return object()


TASKS = {"block": block, "fail": fail, "echo": echo, "die": die, "unserializable": unserializable}


async def nan_result(ctx: Any, data: dict[str, Any]) -> dict[str, float]:
    """A result json.dumps accepts by default but JSON (and the API) cannot carry."""
    return {"value": float("nan")}


TASKS["nan_result"] = nan_result


async def html_everywhere(ctx: Any, data: dict[str, Any]) -> None:
    """Puts HTML in every text a job shows: its action, a log line and (raised) its failed reason."""
    await ctx.progress(50, "<img src=x onerror=alert(3)>")
    await ctx.log("<img src=x onerror=alert(4)>")
    await asyncio.sleep(data.get("holdMs", 0) / 1000)
    raise RuntimeError("<img src=x onerror=alert(5)>")


TASKS["html_everywhere"] = html_everywhere


# -- plain `def` handlers, state and events (tests/test_handlers.py) -------------------------------
import threading  # noqa: E402  (imports of the handlers below)
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def plain_echo(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
    """A plain handler: progress and a log line through the blocking ctx, then its data back."""
    ctx.progress(50, "halfway", log="plain progress")
    ctx.log("plain log")
    return {"data": data, "thread": threading.current_thread().name}


def plain_fail(ctx: Any, data: dict[str, Any]) -> None:
    raise ValueError(data.get("message", "plain boom"))


def plain_sleep(ctx: Any, data: dict[str, Any]) -> dict[str, float]:
    """Sleeps `data.seconds` in its thread; returns when it ran, by the wall clock."""
    started = time.time()
    time.sleep(data.get("seconds", 0.5))
    return {"start": started, "end": time.time()}


def plain_late(ctx: Any, data: dict[str, Any]) -> str:
    """Reports 10%, sleeps `data.seconds`, then reports 99% and writes `data.marker` (a file path)
    to say its late calls are done: by then the worker has long stopped waiting for it."""
    ctx.progress(10, "started")
    time.sleep(data.get("seconds", 2))
    ctx.progress(99, "too late", log="too late")
    ctx.save_state({"late": True})
    ctx.emit("late", {"too": "late"})
    Path(data["marker"]).write_text("done")
    return "too late"


async def block_loop(ctx: Any, data: dict[str, Any]) -> dict[str, int]:
    """An async handler that blocks its worker's event loop with time.sleep, on its first
    `data.blockAttempts` attempts (default 1)."""
    await ctx.progress(1, "blocking the loop")
    if ctx.job.attempts_made <= data.get("blockAttempts", 1):
        time.sleep(data.get("seconds", 3.5))
    return {"attempt": ctx.job.attempts_made}


def checkpointed(ctx: Any, data: dict[str, Any]) -> dict[str, int]:
    """`data.steps` steps of `data.stepMs`, saving {"step": n} after each: a new attempt resumes
    from the saved step."""
    start = ctx.state.get("step", 0)
    ctx.log(f"attempt {ctx.job.attempts_made} starts at step {start}")
    for step in range(start + 1, data.get("steps", 10) + 1):
        time.sleep(data.get("stepMs", 200) / 1000)
        ctx.save_state({"step": step})
        ctx.progress(step * 100 // data.get("steps", 10), f"step {step}")
    return {"resumedFrom": start, "state": ctx.state}


async def async_state_and_events(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
    """Saves a state and emits an event, then tries what the ctx must refuse."""
    before = dict(ctx.state)
    await ctx.save_state({"saved": True})
    await ctx.emit("screenshot.taken", {"n": 1})
    await ctx.emit("done")
    refused = []
    for bad in (lambda: ctx.save_state([1]), lambda: ctx.save_state({"x": "y" * 70_000}),
                lambda: ctx.emit("bad name!"), lambda: ctx.emit("big", "z" * 20_000),
                lambda: ctx.emit("nan", float("nan"))):  # fmt: skip
        try:
            await bad()
        except ValueError as error:
            refused.append(str(error)[:40])
    return {"before": before, "after": ctx.state, "refused": len(refused)}


TASKS.update(
    plain_echo=plain_echo, plain_fail=plain_fail, plain_sleep=plain_sleep, plain_late=plain_late,
    block_loop=block_loop, checkpointed=checkpointed, async_state_and_events=async_state_and_events,
)  # fmt: skip


async def rate_limited_once(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
    """Says "too many requests" on its first run (remembered in its state), then succeeds."""
    from jobline import RateLimited

    if not ctx.state.get("limited"):
        await ctx.save_state({"limited": True})
        raise RateLimited(data.get("ms", 300), "HTTP 429 from the API it calls")
    return {"attempt": ctx.job.attempts_made}


TASKS["rate_limited_once"] = rate_limited_once


async def collect(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
    """A parent: its children's results."""
    return {"children": await ctx.children_results()}


TASKS["collect"] = collect
