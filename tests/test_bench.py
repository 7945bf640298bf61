"""The benchmark (`python -m bench`) must not rot: a --quick run of every workload, as a subprocess
that starts its own Redis, server and workers. It is a smoke test: it never asserts on speed."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = {
    "client", "w1", "w2", "w3", "http", "listing", "fanout", "memory", "rediscost", "batch", "retention", "flow",
    "schedules", "search", "jobstreams",
}  # fmt: skip


def bench(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_quick_run_measures_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = bench("--quick", "--json", str(out), timeout=120)
    assert run.returncode == 0, f"stdout:\n{run.stdout[-4000:]}\nstderr:\n{run.stderr[-4000:]}"

    doc = json.loads(out.read_text())
    assert doc["errors"] == []
    assert set(doc["workloads"]) == WORKLOADS
    for name, workload in doc["workloads"].items():
        assert workload["error"] is None, name
        assert workload["metrics"], name
        for metric in workload["metrics"]:
            value = metric["value"]
            assert isinstance(value, (int, float)) and not isinstance(value, bool), (name, metric)
            assert math.isfinite(value), (name, metric)
            assert metric["ok"] in (True, False, None), (name, metric)
    assert doc["workloads"]["w1"]["details"]["redis_commands"]["total_per_job"] > 0
    assert doc["workloads"]["fanout"]["details"]["deliveries"] > 0
    assert doc["workloads"]["rediscost"]["details"]["redis_cmds_per_noop_job"] > 0

    # stdout: the table, then the same document
    assert "workload" in run.stdout and "ok?" in run.stdout
    assert json.loads(run.stdout[run.stdout.index("\n{") :]) == doc


def test_unknown_workload_is_a_usage_error() -> None:
    run = bench("--only", "w1,nope", timeout=30)
    assert run.returncode == 2
    assert "nope" in run.stderr
