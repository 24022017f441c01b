"""Benchmarks: commands run against the local stack, never timed tests. Each prints one JSON
object as its last line and measures its own baseline in the same run, since shared machines
drift in absolute numbers while ratios hold."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import typer

BENCHMARKS = {
    "outbox": "omnistock.bench.outbox",
    "codec": "omnistock.bench.codec",
    "reservations": "omnistock.bench.reservations",
    "pricing": "omnistock.bench.pricing",
    "storefront": "omnistock.bench.storefront",
    "orders": "omnistock.bench.orders",
    "capacity": "omnistock.bench.orders.capacity",
}


def run_benchmark(
    name: str, *, as_json: bool, seconds: float, options: dict[str, Any] | None = None
) -> None:
    """``options``: the benchmark's own knobs (rate, clients, ...), given only when set."""
    if name not in BENCHMARKS:
        raise typer.BadParameter(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    run = importlib.import_module(BENCHMARKS[name]).run
    given = options or {}
    unknown = sorted(set(given) - set(inspect.signature(run).parameters))
    if unknown:
        raise typer.BadParameter(f"bench {name} takes no {', '.join('--' + o for o in unknown)}")
    run(as_json=as_json, seconds=seconds, **given)
