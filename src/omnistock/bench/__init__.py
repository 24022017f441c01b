"""Benchmarks: commands run against the local stack, never timed tests. Each prints one JSON
object as its last line and measures its own baseline in the same run, since shared machines
drift in absolute numbers while ratios hold."""

from __future__ import annotations

import importlib

import typer

BENCHMARKS = {
    "outbox": "omnistock.bench.outbox",
    "codec": "omnistock.bench.codec",
    "reservations": "omnistock.bench.reservations",
    "pricing": "omnistock.bench.pricing",
    "storefront": "omnistock.bench.storefront",
}


def run_benchmark(name: str, *, as_json: bool, seconds: float) -> None:
    if name not in BENCHMARKS:
        raise typer.BadParameter(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    importlib.import_module(BENCHMARKS[name]).run(as_json=as_json, seconds=seconds)
