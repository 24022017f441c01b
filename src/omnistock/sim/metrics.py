"""What a run measured, second by second: per operation the calls, errors and latency
percentiles; named gauges (event lag, stock figures); and marks (a fault injected, traffic
flowing again). The simulator, the drills and the report share it, and it saves as JSON."""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def percentile(sorted_values: list[float], share: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(share * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class _Second:
    count: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)


@dataclass
class Recorder:
    """Thread-unsafe by design: one event loop records."""

    clock: Callable[[], float] = time.monotonic
    started: float = field(default=0.0)
    _ops: dict[str, dict[int, _Second]] = field(default_factory=lambda: defaultdict(dict))
    _gauges: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    marks: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.started = self.started or self.clock()

    def now(self) -> float:
        """Seconds since the run started."""
        return self.clock() - self.started

    def record(self, op: str, latency_s: float, ok: bool, at: float | None = None) -> None:
        second = int(self.now() if at is None else at)
        bucket = self._ops[op].setdefault(second, _Second())
        bucket.count += 1
        if ok:
            bucket.latencies_ms.append(latency_s * 1000)
        else:
            bucket.errors += 1

    def gauge(self, name: str, value: float, at: float | None = None) -> None:
        self._gauges[name].append((self.now() if at is None else at, value))

    def mark(self, label: str, **details: Any) -> None:
        self.marks.append({"t": round(self.now(), 3), "label": label, **details})

    def ops(self) -> list[str]:
        return sorted(self._ops)

    def series(self, op: str) -> list[dict[str, float]]:
        """One point per second: calls, errors, p50 and p99 (ms) of the successful ones."""
        points = []
        for second in sorted(self._ops[op]):
            bucket = self._ops[op][second]
            ordered = sorted(bucket.latencies_ms)
            points.append(
                {
                    "t": second,
                    "count": bucket.count,
                    "errors": bucket.errors,
                    "p50_ms": round(percentile(ordered, 0.50), 2),
                    "p99_ms": round(percentile(ordered, 0.99), 2),
                }
            )
        return points

    def summary(self, op: str, since: float = 0.0, until: float = math.inf) -> dict[str, float]:
        buckets = [b for s, b in self._ops[op].items() if since <= s < until]
        ordered = sorted(x for b in buckets for x in b.latencies_ms)
        count = sum(b.count for b in buckets)
        span = max(1, len(buckets))
        return {
            "count": count,
            "errors": sum(b.errors for b in buckets),
            "per_s": round(count / span, 1),
            "p50_ms": round(percentile(ordered, 0.50), 2),
            "p99_ms": round(percentile(ordered, 0.99), 2),
        }

    def last_error_at(self, since: float = 0.0) -> float | None:
        """The latest second with a failed call after ``since``, if any."""
        found = [
            s
            for buckets in self._ops.values()
            for s, b in buckets.items()
            if s >= since and b.errors
        ]
        return max(found) if found else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ops": {op: self.series(op) for op in self.ops()},
            "summary": {op: self.summary(op) for op in self.ops()},
            "gauges": {
                name: [{"t": round(t, 3), "value": v} for t, v in points]
                for name, points in sorted(self._gauges.items())
            },
            "marks": self.marks,
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=1))
