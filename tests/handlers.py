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
