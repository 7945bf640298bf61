"""Redis clients: hiredis packing, bounded pools that let idle connections go, and what in Redis's
configuration could lose jobs."""

from __future__ import annotations

import time
from typing import Any

import hiredis
import redis.asyncio as redis
from redis.asyncio.connection import BlockingConnectionPool, ConnectionPool


class _HiredisPacking:
    """Commands packed by hiredis, in C. redis-py's asyncio connections pack in Python, and every
    script call here sends 20-odd keys: 62 us to pack one in Python, 6 us in hiredis."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:  # e.g. "CONFIG GET": separate arguments
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as error:  # None or a bool, which redis-py refuses too
            raise redis.DataError(f"invalid argument in {args[0]!r}: {error}") from None


class _IdleClosing:
    """A pool that remembers when each connection was handed back, so that `close_idle` can close
    the ones nobody used for a while: a burst of requests must not hold Redis connections forever."""

    _available_connections: list[Any]

    async def release(self, connection: Any) -> None:
        connection.idle_since = time.monotonic()
        await super().release(connection)  # type: ignore[misc]

    async def close_idle(self, max_idle_s: float) -> int:
        """Disconnect every pooled connection idle for longer than `max_idle_s` (it reconnects on its
        next use). Returns how many were closed."""
        cutoff = time.monotonic() - max_idle_s
        stale = [c for c in self._available_connections if c.is_connected and getattr(c, "idle_since", 0) < cutoff]
        for connection in stale:
            if connection in self._available_connections:  # not taken meanwhile
                await connection.disconnect()
        return len(stale)


class IdleClosingPool(_IdleClosing, ConnectionPool):
    pass


class IdleClosingBlockingPool(_IdleClosing, BlockingConnectionPool):
    """Waits for a free connection instead of opening more than `max_connections`."""


def connect(url: str, pool_class: type[ConnectionPool] = IdleClosingPool, **options: Any) -> redis.Redis:
    """A client with text replies and timeouts, so a dead Redis fails fast instead of hanging."""
    options.setdefault("socket_connect_timeout", 2)
    options.setdefault("health_check_interval", 15)
    pool = pool_class.from_url(url, decode_responses=True, **options)
    pool.connection_class = type(pool.connection_class.__name__, (_HiredisPacking, pool.connection_class), {})
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # aclose() closes the pool, as with Redis.from_url
    return client


async def durability_warnings(client: redis.Redis) -> list[str]:
    """What in Redis's configuration could lose jobs: eviction, or no persistence at all."""
    try:
        config = await client.config_get("maxmemory-policy")
        config.update(await client.config_get("appendonly"))
        config.update(await client.config_get("save"))
    except redis.ResponseError:  # CONFIG is disabled on some managed Redis services
        return []
    warnings = []
    policy = config.get("maxmemory-policy", "noeviction")
    if policy != "noeviction":
        warnings.append(f"Redis maxmemory-policy is {policy!r}: under memory pressure it may evict jobs; use noeviction")
    if config.get("appendonly") != "yes" and not config.get("save"):
        warnings.append("Redis has no persistence (appendonly no, no save points): a Redis restart loses every job")
    return warnings
