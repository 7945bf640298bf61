"""Jobline's worker: runs jobs from Redis, at most `--concurrency` (5) at a time.

    python worker.py [--queue NAME ...] [--concurrency 5] [--redis-url URL] [--tasks MODULE ...]

The implementation is the `jobline` package (`jobline.worker`, `jobline.worker_main`); this file is the entry point, the
same as the `jobline-worker` command. Your `--tasks` modules are imported from the folder you start
it in, and no module of Jobline's can shadow them: Jobline's own live in the package.
"""

from jobline.worker import Worker, WorkerSettings
from jobline.worker_main import main

__all__ = ["Worker", "WorkerSettings", "main"]

if __name__ == "__main__":
    main()
