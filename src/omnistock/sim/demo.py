"""``omnistock demo`` (what ``make demo`` runs): the whole platform at a demo size, one part after
another, each on a fleet of its own started from nothing: retail traffic through every service,
the cancellation experiment against the legacy model, and fault drills with the invariant
checker; then the report, and a short summary table."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from omnistock.platform.settings import get_settings
from omnistock.sim import experiment, report
from omnistock.sim.drill import Drill, DrillOptions
from omnistock.sim.simulate import WorldSize, simulate
from omnistock.sim.traffic import SimOptions

# Each kind of fault once: two services (the saga's and the stock's), the broker, the
# database, and a network fault on the database link. `omnistock drill` runs them all.
DEMO_FAULTS = ("inventory", "orders", "payments", "kafka", "postgres", "pg-latency")


@dataclass(frozen=True, slots=True)
class DemoOptions:
    out: Path
    seed: int = 7
    rate: float = 60.0
    seconds: float = 45.0
    skus: int = 2_000
    brands: int = 2
    markets: int = 19
    faults: tuple[str, ...] = DEMO_FAULTS


def default_out() -> Path:
    return Path("reports") / f"demo-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"


def run_demo(options: DemoOptions) -> int:
    console = Console(stderr=True)
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    settings = get_settings()

    console.rule("1/3 retail traffic through every service")
    began = time.monotonic()
    sim_options = SimOptions(
        seed=options.seed, rate=options.rate, duration_s=options.seconds, drain_s=20.0
    )
    size = WorldSize(skus=options.skus, brands=options.brands, markets=options.markets)
    traffic = asyncio.run(simulate(settings, sim_options, size, out / "simulate", console))
    recorded = json.loads((out / "simulate" / "metrics.json").read_text())
    (out / report.SIMULATE).write_text(json.dumps({"summary": traffic, "recorder": recorded}))
    timings["traffic_s"] = time.monotonic() - began

    console.rule("2/3 cancellations: the legacy model and omnistock on the same demand")
    began = time.monotonic()
    cancelled = asyncio.run(
        experiment.cancellations(
            experiment.Options(seed=options.seed), out / "cancellations", console
        )
    )
    experiment.print_table(cancelled, console)
    series = json.loads((out / "cancellations" / "series.json").read_text())
    (out / report.EXPERIMENT).write_text(json.dumps({"result": cancelled, "series": series}))
    timings["experiment_s"] = time.monotonic() - began

    console.rule("3/3 fault drills under load, then the invariant checker")
    began = time.monotonic()
    drill_options = DrillOptions(out=out / "drill", seed=options.seed, faults=options.faults)
    drilled = asyncio.run(Drill(drill_options, settings, console).execute())
    console.line()  # the drill's live board leaves its last line open
    shutil.copyfile(out / "drill" / "drills.json", out / report.DRILLS)
    timings["drills_s"] = time.monotonic() - began

    page = report.write_report(out)
    summary_table(console, traffic, cancelled, drilled, timings)
    console.print(f"\nthe report: [bold]{page.resolve()}[/bold] (figures beside it)")
    ok = bool(drilled.get("invariants_ok")) and traffic.get("oversold") == 0
    return 0 if ok else 1


def summary_table(
    console: Console,
    traffic: dict[str, Any],
    cancelled: dict[str, Any],
    drilled: dict[str, Any],
    timings: dict[str, float],
) -> None:
    table = Table(title="omnistock demo: what was shown")
    table.add_column("claim")
    table.add_column("measured", justify="right")
    orders = traffic.get("orders", {})
    table.add_row("requests served (per second)", f"{traffic.get('requests_per_s', 0):,}")
    table.add_row(
        "orders placed / completed / cancelled",
        f"{orders.get('placed', 0)} / {orders.get('completed', 0)} / {orders.get('cancelled', 0)}",
    )
    table.add_row("units oversold", str(traffic.get("oversold")))
    table.add_row(
        "cancelled for lack of stock: legacy",
        f"{cancelled.get('legacy_cancel_rate', 0) * 100:.2f} %",
    )
    table.add_row(
        "cancelled for lack of stock: omnistock",
        f"{cancelled.get('omnistock_cancel_rate', 0) * 100:.2f} %",
    )
    for name, fault in drilled.get("faults", {}).items():
        recovered = fault.get("recovery_s")
        held = "invariants hold" if fault.get("invariants_ok") else "INVARIANT BROKEN"
        took = f"{recovered:.1f} s" if recovered is not None else "not recovered"
        table.add_row(f"recovery after {name}", f"{took}, {held}")
    table.add_row("time taken", " + ".join(f"{k[:-2]} {v:.0f} s" for k, v in timings.items()))
    console.print(table)
