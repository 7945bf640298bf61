"""A task module without a TASKS dict: its public functions, async or plain, are its handlers."""

from __future__ import annotations

from asyncio import sleep as imported_coroutine  # noqa: F401  (async, but defined elsewhere: not a handler)
from typing import Any


async def greet(ctx: Any, data: dict[str, Any]) -> dict[str, str]:
    await ctx.log("greeting")
    return {"greeting": f"hello {data.get('who', 'world')}"}


async def shout(ctx: Any, data: dict[str, Any]) -> str:
    return str(data.get("text", "")).upper()


async def _private_helper(ctx: Any, data: dict[str, Any]) -> None:
    """Leading underscore: not a handler."""


def whisper(ctx: Any, data: dict[str, Any]) -> str:
    """A plain function: a handler too, run in a thread."""
    return str(data.get("text", "")).lower()


NOT_A_FUNCTION = "just a constant"
