"""Jobline adapter for the shared peer benchmark (/work/shared/bench-peers, see its README,
"Plugging in the project under test"). Runs under the harness's `.venv` (redis-py 5.3.1 and the
standard library), so it never imports Jobline's store/worker/server (they need redis-py 8):

* variant "" (lib `jobline`): one `POST /api/jobs` per job on ONE persistent HTTP/1.1 connection
  (stdlib http.client: the harness venv has no aiohttp/httpx) to `server.py`, which this adapter
  starts on a free port in the first setup() and stops after the last workload's teardown();
* variant "direct" (lib `jobline:direct`): the ENQUEUE Lua script that JobStore.enqueue runs,
  called here with redis-py 5.3.1's register_script and the same KEYS/ARGV as for a batch of one
  job (built from Jobline's `scripts`, `keys` and `models`, which import only the standard
  library); the queue's name goes into the queue registry when the script says the queue is new,
  as JobStore.enqueue does. No HTTP server.

Worker: `/work/main/.venv/bin/python /work/main/worker.py --redis-url $BENCH_REDIS_URL
--concurrency 5 --tasks bench.peers.jobline_bench_tasks`, started with cwd /work/main (via
`env -C`): the harness starts workers in its own folder, whose `bench.py` would shadow Jobline's
`bench` package. Completion: ZCARD of the queue's completed + failed status indexes (two ZCARDs,
one pipeline).

Run alone: `cd /tmp/bench-peers && EXTRA_ADAPTERS=/work/main/bench/peers .venv/bin/python bench.py --lib jobline`.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import http.client
import json
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version

import redis.asyncio as aioredis

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6390/0")
CONC = int(os.environ.get("BENCH_CONCURRENCY", 5))
HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.environ.get("JOBLINE_ROOT", os.path.abspath(os.path.join(HERE, "..", "..")))
PROJECT_PY = os.path.join(PROJECT, ".venv", "bin", "python")
QUEUE = "default"
WORKLOADS = ("drain_noop", "drain_sleep", "pickup_latency")  # bench.py's default plan


def _jobline_modules():
    """Jobline's `models`, `keys` and `scripts` (no third-party imports), from the `jobline` package
    installed in this environment: `pip install --no-deps -e PROJECT` (see README.md)."""
    from jobline import keys, models, scripts

    return models, keys, scripts


def _project_version() -> str:
    try:
        out = subprocess.run(["git", "-C", PROJECT, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", PROJECT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _project_pkg_version(pkg: str) -> str:
    try:
        return subprocess.run([PROJECT_PY, "-c", f"from importlib.metadata import version; print(version({pkg!r}))"],
                              capture_output=True, text=True, timeout=30).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the harness process dies (e.g. SIGKILLed by
    run_all.sh's `timeout -k`), so no server outlives the run."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _planned_workloads() -> int:
    """How many workloads bench.py will run in this process (its --workloads), so the server is
    stopped in the last teardown()."""
    argv = sys.argv
    plan = ",".join(WORKLOADS)
    for i, arg in enumerate(argv):
        if arg == "--workloads" and i + 1 < len(argv):
            plan = argv[i + 1]
        elif arg.startswith("--workloads="):
            plan = arg.split("=", 1)[1]
    return len([w for w in plan.split(",") if w.strip()])


class _Server:
    """`python server.py --port <free> --redis-url <BENCH_REDIS_URL>`, in its own process group."""

    def __init__(self) -> None:
        self.port = _free_port()
        log_dir = os.path.join(os.getcwd(), "results")
        if not os.path.isdir(log_dir):
            log_dir = tempfile.gettempdir()
        self.log_path = os.path.join(log_dir, f"jobline-server-{os.getpid()}.log")
        env = {k: v for k, v in os.environ.items() if k not in ("API_TOKEN", "PYTHONPATH")}
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [PROJECT_PY, os.path.join(PROJECT, "server.py"), "--host", "127.0.0.1", "--port", str(self.port),
                 "--redis-url", REDIS_URL],
                cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        atexit.register(self.stop)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jobline server exited with {self.proc.returncode} (log: {self.log_path})")
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                try:
                    conn.request("GET", "/healthz")
                    if conn.getresponse().status == 200:
                        return
                finally:
                    conn.close()
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"jobline server did not answer /healthz within 30 s (log: {self.log_path})")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        p = self.proc
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(5)


class Adapter:
    name = "jobline"

    def __init__(self, variant: str = "") -> None:
        if variant not in ("", "direct"):
            raise SystemExit(f"peer_jobline: unknown variant {variant!r} (use '' or 'direct')")
        self.variant = variant
        if variant:
            self.name = f"jobline-{variant}"
        self.concurrency = 5
        self.models, self.keysmod, self.scripts = _jobline_modules()
        self.k = self.keysmod.Keys()
        self.versions = {
            "jobline": _project_version(),
            "redis-py(worker)": _project_pkg_version("redis"),
            "hiredis(worker)": _project_pkg_version("hiredis"),
            "redis-py(adapter)": version("redis"),
        }
        if not variant:
            self.versions["aiohttp(server)"] = _project_pkg_version("aiohttp")
        self.notes = {
            "worker": "python worker.py (Jobline CLI), 1 process, asyncio, --concurrency 5; "
                      "--tasks bench.peers.jobline_bench_tasks (stamp); noop and sleep {ms: 50} are built-ins",
            "defaults": "claim: BLMOVE wait->processing (block 1 s) + CLAIM script; lease 10 s, heartbeat/reaper 2 s; "
                        "maxAttempts 3, backoff 1000 ms, no job timeout; every change: job hash, status indexes, "
                        "the queue's event log XADD (cap 10000) + PUBLISH",
            "enqueue": ("one POST /api/jobs per job (JSON {name,type,data}) on one keep-alive http.client "
                        "connection to server.py (aiohttp, access log on, to a file)") if not variant else
                       ("ENQUEUE Lua script (scripts.ENQUEUE, same KEYS/ARGV as store.JobStore.enqueue: one "
                        "job per call) via redis-py 5.3.1 register_script; reply not parsed into a Job"),
            "done_detection": f"ZCARD {self.k.queue_status_index(QUEUE, 'completed')} + ZCARD ...:status:failed "
                              "(one pipeline)",
        }
        self.redis: aioredis.Redis | None = None
        self.conn: http.client.HTTPConnection | None = None
        self.server: _Server | None = None
        self._enqueue_script = None
        self._torn_down = 0
        self._planned = _planned_workloads()
        self._done_keys = (self.k.queue_status_index(QUEUE, "completed"), self.k.queue_status_index(QUEUE, "failed"))
        # The ENQUEUE script's keys: the queue block and jobs index, then per job its hash and type index.
        self._static_keys = [*self.k.queue_block(QUEUE), self.k.queue_jobs(QUEUE)]

    # -- lifecycle (setup/teardown run around every workload) ---------------------------------
    async def setup(self) -> None:
        self.redis = aioredis.Redis.from_url(REDIS_URL)
        if self.variant == "direct":
            self._enqueue_script = self.redis.register_script(self.scripts.ENQUEUE)
            return
        if self.server is None or not self.server.alive():
            self.server = _Server()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def teardown(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None
        self._torn_down += 1
        if self.server is not None and self._torn_down >= self._planned:
            self.server.stop()
            self.server = None

    # -- jobs -----------------------------------------------------------------------------------
    @staticmethod
    def _job(kind: str, idx: int) -> tuple[str, dict]:
        if kind == "noop":
            return "noop", {}
        if kind == "sleep":
            return "sleep", {"ms": 50}
        return "stamp", {"idx": idx}

    async def enqueue(self, kind: str, idx: int) -> None:
        job_type, data = self._job(kind, idx)
        if self.variant == "direct":
            await self._enqueue_direct(job_type, data, idx)
        else:
            self._enqueue_http(job_type, data, idx)

    def _enqueue_http(self, job_type: str, data: dict, idx: int) -> None:
        body = json.dumps({"name": f"bench {idx}", "type": job_type, "data": data}, separators=(",", ":")).encode()
        self.conn.request("POST", "/api/jobs", body=body, headers={"Content-Type": "application/json"})
        response = self.conn.getresponse()
        payload = response.read()
        if response.status != 201:
            raise RuntimeError(f"POST /api/jobs -> {response.status}: {payload[:300]!r}")

    async def _enqueue_direct(self, job_type: str, data: dict, idx: int) -> None:
        # As store.JobStore.enqueue with the API's defaults (validation.parse_new_job): priority
        # normal, delay 0, maxAttempts 3, backoff 1000 ms, no timeout.
        m, k = self.models, self.k
        job = m.Job(id=self.keysmod.new_job_id(QUEUE), name=f"bench {idx}", type=job_type, queue=QUEUE, data=data)
        fields = self.scripts.enqueue_fields(job)
        keys = [*self._static_keys, k.job(job.id), k.type_index(QUEUE, job.type)]
        new_queue, *_ = await self._enqueue_script(
            keys=keys, args=["", job.id, k.job_channel(job.id), 0, 0, len(fields) // 2, *fields, 0]  # no children
        )
        if new_queue:  # the script leaves the global queue registry to its caller
            await self.redis.sadd(k.queues, QUEUE)

    async def done_count(self, n: int) -> int:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self._done_keys:
                pipe.zcard(key)
            completed, failed = await pipe.execute()
        return completed + failed

    def worker_cmd(self) -> list[str]:
        # cwd /work/main: the worker puts its cwd first on sys.path (for --tasks), and the
        # harness's cwd holds bench.py, which would shadow Jobline's `bench` package.
        return ["env", "-C", PROJECT, PROJECT_PY, os.path.join(PROJECT, "worker.py"),
                "--redis-url", os.environ.get("BENCH_REDIS_URL", REDIS_URL),
                "--concurrency", str(self.concurrency), "--tasks", "bench.peers.jobline_bench_tasks"]


if __name__ == "__main__":
    # As the peers' adapters: `python peer_jobline.py` from the harness folder (or with
    # BENCH_PEERS pointing at it), using the harness's bench.py.
    harness = os.environ.get("BENCH_PEERS", os.getcwd())
    spec = importlib.util.spec_from_file_location("bench", os.path.join(harness, "bench.py"))
    assert spec and spec.loader, harness
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = bench
    spec.loader.exec_module(bench)
    bench.main(Adapter)
