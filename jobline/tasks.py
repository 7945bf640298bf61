"""Built-in job handlers, and loading the user's. A handler is `handler(ctx, data) -> JSON-able
result`, an `async def` or a plain `def` (run in a thread, with ctx methods as plain calls).

`ctx.progress(percent, action, log=None)` publishes progress, `ctx.log(text)` appends a log line,
`ctx.save_state(obj)` saves a checkpoint the next attempt starts with (`ctx.state`), `ctx.emit(name,
data)` sends a custom event, and `ctx.job` is the job. Raise to fail the attempt (it is retried with
backoff until maxAttempts).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import JobContext

Handler = Callable[[Any, dict[str, Any]], Awaitable[Any] | Any]  # async, or plain (run in a thread)

WEB_AGENT_ACTIONS = (
    "Navigating to page",
    "Clicking button",
    "Typing text",
    "Scrolling",
    "Taking screenshot",
    "Reading page content",
    "Filling form",
    "Waiting for network",
    "Extracting data",
    "Submitting form",
)


class DemoFailure(RuntimeError):
    """The demo's simulated failure (failRate / failAtStep)."""


def _number(data: dict[str, Any], field: str, default: float, low: float, high: float) -> float:
    value = data.get(field, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"data.{field} must be a number between {low} and {high}")
    return value


SCREENSHOT = "Taking screenshot"


async def demo(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """A "web agent": `steps` actions of `stepMs` each, progress after every step."""
    steps = int(_number(data, "steps", 10, 1, 1000))  # validation.MAX_DEMO_STEPS
    step_ms = _number(data, "stepMs", 1000, 0, 3_600_000)
    fail_rate = _number(data, "failRate", 0, 0, 1)
    fail_at = data.get("failAtStep")
    if fail_at is not None:
        fail_at = int(_number(data, "failAtStep", 0, 1, steps))
    for step in range(1, steps + 1):
        action = WEB_AGENT_ACTIONS[(step - 1) % len(WEB_AGENT_ACTIONS)]
        await asyncio.sleep(step_ms / 1000)
        if step == fail_at or (fail_rate and random.random() < fail_rate):
            raise DemoFailure(f"{action} failed at step {step} of {steps}")
        await ctx.progress(step * 100 // steps, action, log=f"step {step}/{steps}: {action}")
        if action == SCREENSHOT:  # a custom event: the dashboard's detail view shows a timeline
            await ctx.emit("screenshot", {"step": step, "url": f"https://example.com/shots/{step}.png"})
    return {"steps": steps, "message": f"completed {steps} web-agent steps"}


async def noop(ctx: JobContext, data: dict[str, Any]) -> None:
    """Returns at once (for benchmarks)."""
    return None


async def sleep(ctx: JobContext, data: dict[str, Any]) -> dict[str, float]:
    """Sleeps `data.ms` milliseconds (for benchmarks)."""
    ms = _number(data, "ms", 50, 0, 3_600_000)
    await asyncio.sleep(ms / 1000)
    return {"slept": ms}


TASKS: dict[str, Handler] = {"demo": demo, "noop": noop, "sleep": sleep}


def load_handlers(modules: Sequence[str]) -> dict[str, Handler]:
    """Built-in tasks, then each module's `TASKS` dict or else its public functions defined in it.
    A handler may be `async def` (run on the worker's event loop) or a plain `def` (run in a
    thread, see threads.py); TASKS may hold either."""
    handlers = dict(TASKS)
    for name in modules:
        module = importlib.import_module(name)
        found = getattr(module, "TASKS", None)
        if found is None:
            found = {
                fn_name: fn
                for fn_name, fn in vars(module).items()
                if not fn_name.startswith("_") and inspect.isfunction(fn) and fn.__module__ == module.__name__
            }
        for task, fn in found.items():
            if not callable(fn):
                raise TypeError(f"{name}.TASKS[{task!r}] is not a function")
        handlers.update(found)
    return handlers
