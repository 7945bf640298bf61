"""Results: one `WorkloadResult` per workload, its `Metric`s (with an optional target), the table and
the JSON document."""

from __future__ import annotations

import json
import math
import operator
from dataclasses import asdict, dataclass, field
from typing import Any

_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq}


@dataclass(frozen=True)
class Target:
    op: str  # one of _OPS
    bound: float
    note: str = ""  # where the bound comes from, e.g. "best peer: taskiq"

    def met(self, value: float) -> bool:
        return bool(_OPS[self.op](value, self.bound))

    def __str__(self) -> str:
        text = f"{self.op} {self.bound:g}"
        return f"{text} ({self.note})" if self.note else text


@dataclass
class Metric:
    name: str
    value: float | None
    unit: str = ""
    target: Target | None = None

    @property
    def ok(self) -> bool | None:
        """None when there is nothing to check against."""
        if self.target is None or self.value is None:
            return None
        return self.target.met(self.value)


@dataclass
class WorkloadResult:
    name: str  # the --only key: w1, w2, ...
    title: str
    metrics: list[Metric] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # every raw number, for the JSON
    error: str | None = None

    def add(self, name: str, value: float | None, unit: str = "", target: Target | None = None) -> None:
        self.metrics.append(Metric(name, value, unit, target))


def pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list (the peers' harness does the same)."""
    if not sorted_values:
        return math.nan
    rank = round(p / 100.0 * len(sorted_values) + 0.5) - 1
    return sorted_values[max(0, min(len(sorted_values) - 1, rank))]


def latency_summary(values_ms: list[float]) -> dict[str, float]:
    """p50/p95/p99/max/mean of latencies in ms, rounded to 0.01 ms."""
    values = sorted(values_ms)
    if not values:
        return {"n": 0}
    summary = {f"p{p}_ms": pct(values, p) for p in (50, 95, 99)}
    summary.update(max_ms=values[-1], min_ms=values[0], mean_ms=sum(values) / len(values))
    return {"n": len(values), **{k: round(v, 2) for k, v in summary.items()}}


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"


def table(results: list[WorkloadResult]) -> str:
    rows = [("workload", "metric", "value", "target", "ok?")]
    for result in results:
        if result.error:
            rows.append((result.title, "ERROR", result.error[:80], "", "no"))
        for m in result.metrics:
            value = f"{_fmt(m.value)} {m.unit}".strip()
            ok = {True: "yes", False: "NO", None: ""}[m.ok]
            rows.append((result.title, m.name, value, str(m.target or ""), ok))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def document(results: list[WorkloadResult], meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON document: run metadata, then per workload its metrics (with targets) and details."""
    workloads = {}
    for r in results:
        metrics = [{**asdict(m), "target": str(m.target) if m.target else None, "ok": m.ok} for m in r.metrics]
        workloads[r.name] = {"title": r.title, "error": r.error, "metrics": metrics, "details": r.details}
    checked = [m.ok for r in results for m in r.metrics if m.ok is not None]
    return {
        **meta,
        "workloads": workloads,
        "targets_met": sum(checked),
        "targets_checked": len(checked),
        "errors": [r.name for r in results if r.error],
    }


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, allow_nan=False, default=str)
