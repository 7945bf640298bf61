"""`python server.py --processes N`: N server processes on one port.

Each process binds the port itself with SO_REUSEPORT, and the kernel spreads new connections over
them; each has its own event loop, Redis connections and stream subscriptions (and its own
MAX_STREAMS). Nothing is shared between them but Redis, which already holds every piece of state.

This process only starts them and stops them: SIGINT or SIGTERM is passed on to every one, each
finishes like a single server does (streams end, requests finish), and it exits once they all
have. If one ends on its own (it could not bind the port, it crashed), the others are stopped too
and the exit status says so: whatever runs the server (Docker, systemd) restarts the whole set. A
process whose parent died (kill -9) stops by itself (see `watch_parent`).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger("jobline.server")

STOP_GRACE_S = 20.0  # a process gets this long to finish after SIGTERM (its runner allows 10 s)


def supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def run(target: Callable[..., None], args: tuple[Any, ...], count: int) -> int:
    """Run `target(*args, index, count)` in `count` new processes until a signal, or until one of
    them ends. Returns the exit status for this process."""
    # spawn: each process starts a fresh interpreter, sharing no state (or sockets) with this one
    context = multiprocessing.get_context("spawn")
    children = [
        # daemon: should this process fail, multiprocessing still ends them as it exits
        context.Process(target=target, args=(*args, index, count), name=f"jobline-server-{index}", daemon=True)
        for index in range(1, count + 1)
    ]
    stopping = False
    told: set[int] = set()  # told to stop: once only (a second SIGTERM could land after its loop is gone)

    def stop(signum: int | None = None, frame: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = stopping or signum is not None
        for child in children:
            if child.pid is not None and child.pid not in told and child.exitcode is None:
                told.add(child.pid)
                os.kill(child.pid, signal.SIGTERM)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    for child in children:
        child.start()
    if stopping:  # a signal came while they were starting
        stop()
    log.info("serving on %d processes: %s", count, ", ".join(str(child.pid) for child in children))
    # Until the first one ends: after a signal, that is the first to finish stopping.
    ended = multiprocessing.connection.wait([child.sentinel for child in children])
    if not stopping:
        first = next(child for child in children if child.sentinel in ended)
        first.join()
        log.error("server process %d ended (exit status %s): stopping the others", first.pid, first.exitcode)
    stop()
    for child in children:
        child.join(STOP_GRACE_S)
        if child.exitcode is None:
            log.error("server process %d did not stop within %.0f s: killed", child.pid, STOP_GRACE_S)
            child.kill()
            child.join()
    statuses = [child.exitcode for child in children]
    if any(statuses):
        log.error("server processes ended with exit statuses %s", ", ".join(map(str, statuses)))
    return 0 if stopping and not any(statuses) else 1


def watch_parent(loop: asyncio.AbstractEventLoop, on_exit: Callable[[], None]) -> None:
    """In a process started by `run`: call `on_exit` when the parent is gone (killed without a
    chance to pass a signal on), so that no orphan keeps serving the port."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return
    sentinel = parent.sentinel  # the pipe from the parent: it closes (reads as ready) with the parent

    def parent_gone() -> None:
        loop.remove_reader(sentinel)  # ready for good: once is enough
        log.warning("the parent process is gone: stopping")
        on_exit()

    loop.add_reader(sentinel, parent_gone)
