"""Redis clients: a single Redis or a Redis Cluster, hiredis packing, bounded pools that let idle
connections go, clients to subscribe with, the errors that mean "Redis is unavailable", and what in
Redis's configuration could lose jobs."""

from __future__ import annotations

import time
from typing import Any

import hiredis
import redis as sync_redis
import redis.asyncio as redis
import redis.exceptions as errors
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import BlockingConnectionPool, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

Client = redis.Redis | RedisCluster

# Redis cannot answer now: down, unreachable, or (a cluster) failing over, resharding or missing a
# node. The API answers 503 `unavailable`; workers and streams retry. (RedisClusterException, which
# is not a RedisError, is what a cluster client raises when no node of the cluster answers.)
UNAVAILABLE: tuple[type[Exception], ...] = (
    errors.ConnectionError, errors.TimeoutError, errors.ClusterError, errors.TryAgainError,
    errors.MovedError, errors.AskError, errors.RedisClusterException,
)  # fmt: skip


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


def connect(
    url: str, pool_class: type[ConnectionPool] = IdleClosingPool, cluster: bool = False, **options: Any
) -> Client:
    """A client with text replies and timeouts, so a dead Redis fails fast instead of hanging. With
    `cluster`, a Redis Cluster client given any node's URL (`options` then set each node's pool)."""
    if cluster:
        return connect_cluster(url, **options)
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


async def redis_now_ms(client: redis.Redis) -> int:
    """Now, by the Redis clock."""
    seconds, micros = await client.time()
    return seconds * 1000 + micros // 1000


def connect_cluster(url: str, **options: Any) -> RedisCluster:
    """A cluster client: scripts go to their keys' node (one slot each, keys.py); one quick retry,
    so a cluster that is down answers within a second or two (a 503) instead of after its default
    backoff. Pool options of a single Redis (`timeout`, a pool class) do not apply."""
    options.pop("timeout", None)
    options.setdefault("socket_connect_timeout", 2)
    options.setdefault("retry", Retry(NoBackoff(), 1))
    return RedisCluster.from_url(url, decode_responses=True, **options)


def connect_sync(url: str, cluster: bool = False, **options: Any) -> sync_redis.Redis | sync_redis.RedisCluster:
    """The synchronous twin of `connect`, for threads of their own (the worker's heartbeat)."""
    if cluster:
        return sync_redis.RedisCluster.from_url(url, decode_responses=True, **options)
    return sync_redis.Redis.from_url(url, decode_responses=True, **options)


class Subscribers:
    """Clients to subscribe with. On a single Redis, `client` itself (a pool of its own, say). On a
    cluster, a plain client of one node (PUBLISH reaches the subscribers of every node), and after
    a failure the next node: a stream or a worker keeps listening while a node is down."""

    def __init__(self, client: Client, **options: Any) -> None:
        self.client, self.options = client, options
        self._nodes: dict[str, redis.Redis] = {}
        self._turn = 0

    async def get(self) -> redis.Redis:
        if not isinstance(self.client, RedisCluster):
            return self.client
        await self.client.initialize()
        nodes = sorted(self.client.get_primaries(), key=lambda n: n.name)
        node = nodes[self._turn % len(nodes)]
        if node.name not in self._nodes:
            options = {"socket_connect_timeout": 2, **self.options}
            self._nodes[node.name] = redis.Redis(host=node.host, port=node.port, decode_responses=True, **options)
        return self._nodes[node.name]

    def failed(self) -> None:
        """The node given last failed: the next `get` gives another."""
        self._turn += 1

    async def aclose(self) -> None:
        for node in self._nodes.values():
            await node.aclose()
        self._nodes.clear()


async def cluster_state_ok(client: RedisCluster) -> bool:
    """Every primary answers and says the cluster is ok."""
    replies = await client.execute_command("CLUSTER INFO", target_nodes=RedisCluster.PRIMARIES)
    by_node = replies if "cluster_state" not in replies else {"": replies}  # one node: not keyed by node
    return bool(by_node) and all(info.get("cluster_state") == "ok" for info in by_node.values())
