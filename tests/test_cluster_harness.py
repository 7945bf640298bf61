"""The 3-master cluster harness itself: slots, key placement, and a master stopped and restarted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tests.cluster import SLOTS, RedisClusterProcess


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcess]:
    with RedisClusterProcess(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.fixture
async def cluster_client(cluster: RedisClusterProcess) -> AsyncIterator[RedisCluster]:
    cluster.flushall()
    # No retries: a down cluster should fail fast here, not after ~2.5 s of backoff.
    client = RedisCluster.from_url(cluster.url, decode_responses=True, retry=Retry(NoBackoff(), 0))
    await client.initialize()
    yield client
    await client.aclose()


def test_three_masters_cover_every_slot(cluster: RedisClusterProcess) -> None:
    with cluster.node_client(0) as node:
        info = node.cluster("info")
        slots = node.execute_command("CLUSTER", "SLOTS")
    assert info["cluster_state"] == "ok"
    assert int(info["cluster_known_nodes"]) == 3
    assert int(info["cluster_slots_assigned"]) == SLOTS
    owners = {int(master[1]) for _, _, master, *_ in slots}
    assert owners == set(cluster.ports)
    assert sum(end - start + 1 for start, end, *_ in slots) == SLOTS


async def test_hash_tags_land_on_different_nodes(
    cluster: RedisClusterProcess, cluster_client: RedisCluster
) -> None:
    assert len(cluster_client.get_primaries()) == 3
    keys = ["{a}:k", "{b}:k", "{c}:k"]  # slots 15495, 3300, 7365: one per third
    for key in keys:
        await cluster_client.set(key, key)
    owners = {key: cluster_client.get_node_from_key(key).port for key in keys}
    assert len(set(owners.values())) == 3
    for key, port in owners.items():
        # The owning node answers directly; asking another one is a MOVED.
        with redis.Redis(port=port, decode_responses=True) as node:
            assert node.get(key) == key
    other = next(p for p in cluster.ports if p != owners["{a}:k"])
    with redis.Redis(port=other) as node, pytest.raises(redis.exceptions.MovedError):
        node.get("{a}:k")


def test_flushall_empties_every_master(cluster: RedisClusterProcess) -> None:
    with redis.RedisCluster.from_url(cluster.url) as client:
        for tag in "abc":
            client.set(f"{{{tag}}}:k", 1)
        cluster.flushall()
        assert client.dbsize(target_nodes=redis.RedisCluster.PRIMARIES) == 0


async def test_stopped_master_fails_the_cluster_and_restart_recovers(
    cluster: RedisClusterProcess, cluster_client: RedisCluster
) -> None:
    keys = (f"{{{tag}}}:k" for tag in "abc")
    key = next(k for k in keys if cluster_client.get_node_from_key(k).port == cluster.ports[1])
    await asyncio.to_thread(cluster.stop_node, 1, True)
    with cluster.node_client(0) as node:
        assert node.cluster("info")["cluster_state"] == "fail"
    with pytest.raises((redis.ConnectionError, redis.exceptions.ClusterDownError)):
        await cluster_client.get(key)

    await asyncio.to_thread(cluster.start_node, 1)
    await cluster_client.set(key, "back")  # the same client finds its way again
    assert await cluster_client.get(key) == "back"
