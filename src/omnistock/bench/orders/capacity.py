"""``omnistock bench capacity``: how an orders deployment's confirmation latency grows with
the rate it is offered, and where it stops keeping up.

The same four services as ``omnistock bench orders``, on the same stack. Orders that reserve
their lines themselves are offered at a trickle first (``TRICKLE_PER_S``, the baseline: the
saga's latency with the machine to itself), then at ``STEPS`` rates up to ``rate``, each for
``seconds``, on a machine as quiet as idle. For each rate: the rate accepted, the confirmation
latency (the 201 to the ``confirmed`` event read from Kafka), the CPU time an order cost the
services, PostgreSQL and Kafka beyond their idle use, and the cores that comes to (the load
generator left out). ``within_target_per_s``: the highest rate offered at which p99 stayed
under ``TARGET_P99_MS`` with nearly every order accepted. A plot of the curve is written beside
the run's other reports.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt

from omnistock.bench.common import broker_warmth, console, percentile, report, run_id
from omnistock.bench.orders.client import LoadClient
from omnistock.bench.orders.cpu import costed_open_loop, deployment_ms, idle_cpu_ms_per_s
from omnistock.bench.orders.load import LINES, Outcomes, closed_loop, order_body
from omnistock.bench.orders.stack import seed, started, stock_check
from omnistock.platform.settings import Settings, get_settings

RATE, STEPS, SKUS, CLIENTS = 200.0, 8, 2_000, 32
TRICKLE_PER_S = 10.0
TARGET_P99_MS = 500.0
ACCEPTED_SHARE = 0.95  # of the offered rate, for a rate to count as kept up with
WARM_UP_S = 2.0
SETTLE_S = 120.0  # a rate beyond the machine leaves a queue this long to work off at most
PLOTS = Path("reports")


def run(*, as_json: bool, seconds: float, rate: float | None = None) -> None:
    top = rate or RATE
    rates = [round(top * step / STEPS, 1) for step in range(1, STEPS + 1)]
    warmth = broker_warmth()
    result = asyncio.run(_run(get_settings(), rates, seconds))
    report({**result, **warmth}, as_json)


async def _run(settings: Settings, rates: list[float], seconds: float) -> dict[str, Any]:
    rid = run_id()
    console.print(f"[bold]services[/bold]: inventory, pricing, payments, orders ({rid})")
    async with started(settings, rid) as stack:
        await seed(stack, SKUS)
        idle = await idle_cpu_ms_per_s(stack)
        outcomes = Outcomes(settings)
        outcomes.start()
        rng = random.Random(11)
        headers = stack.token("bench-storefront", ["orders:write", "inventory:reserve"])
        client = LoadClient(stack.urls["orders"], headers)
        try:
            endless = (order_body(rng, SKUS) for _ in itertools.count())
            await closed_loop(client, endless, CLIENTS, WARM_UP_S, outcomes, "warm-up")
            await outcomes.settle(SETTLE_S, "saga catching up")
            points = []
            for offered in [TRICKLE_PER_S, *rates]:
                console.print(f"[bold]offered[/bold]: {offered:g} orders/s for {seconds:g} s")
                tally, cost = await costed_open_loop(
                    stack,
                    client,
                    lambda: order_body(rng, SKUS),
                    offered,
                    seconds,
                    outcomes,
                    idle,
                    SETTLE_S,
                )
                latencies = outcomes.confirm_latencies_ms(tally.placed)
                ms_per_order = deployment_ms(cost)
                points.append(
                    {
                        "offered_per_s": offered,
                        "accepted_per_s": round(tally.per_s, 1),
                        "confirm_p50_ms": round(percentile(latencies, 0.5), 1),
                        "confirm_p99_ms": round(percentile(latencies, 0.99), 1),
                        "refused": sum(tally.refused.values()),
                        "cpu_ms_per_order": ms_per_order,
                        # What the rate accepted takes on top of idle: past what the machine
                        # has, the orders queue.
                        "cores_needed": round(
                            (ms_per_order * tally.per_s + deployment_ms(idle)) / 1000, 2
                        ),
                    }
                )
        finally:
            await client.aclose()
            outcomes.stop()
        checked = await stock_check(settings, stack.schemas["inventory"])
    trickle, curve = points[0], points[1:]
    kept_up = [p for p in curve if _kept_up(p)]
    ended = outcomes.settled()
    plot = _plot(trickle, curve)
    return {
        "bench": "capacity",
        "within_target_per_s": max((p["offered_per_s"] for p in kept_up), default=0.0),
        "target_p99_ms": TARGET_P99_MS,
        "trickle_per_s": TRICKLE_PER_S,
        "trickle_p50_ms": trickle["confirm_p50_ms"],
        "trickle_p99_ms": trickle["confirm_p99_ms"],
        "idle_cores": round(deployment_ms(idle) / 1000, 2),
        "seconds": seconds,
        "plot": str(plot),
        "placed": len(outcomes.replied),
        "confirmed": ended["confirmed"],
        "cancelled": ended["cancelled"],
        "confirmed_units": ended["confirmed"] * LINES,
        "lost": len(outcomes.unsettled()),
        **checked,
        "points": curve,
    }


def _kept_up(point: dict[str, Any]) -> bool:
    p99: float = point["confirm_p99_ms"]
    accepted: float = point["accepted_per_s"]
    return p99 < TARGET_P99_MS and accepted >= ACCEPTED_SHARE * point["offered_per_s"]


def _plot(trickle: dict[str, Any], curve: list[dict[str, Any]]) -> Path:
    """Latency against the offered rate (log scale: past the knee it is seconds), and the
    cores needed and CPU per order beside it."""
    offered = [p["offered_per_s"] for p in curve]
    figure, (latency, cpu) = plt.subplots(1, 2, figsize=(12, 4.5))
    latency.plot(offered, [p["confirm_p99_ms"] for p in curve], "o-", label="p99")
    latency.plot(offered, [p["confirm_p50_ms"] for p in curve], "s--", label="p50")
    latency.axhline(TARGET_P99_MS, color="#c0392b", linewidth=1, label="p99 target")
    latency.axhline(
        trickle["confirm_p99_ms"],
        color="#777",
        linestyle=":",
        label=f"p99 at a trickle ({TRICKLE_PER_S:g}/s)",
    )
    latency.set_yscale("log")
    latency.set_xlabel("orders offered per second")
    latency.set_ylabel("placed → confirmed (ms)")
    latency.set_title("confirmation latency")
    latency.legend()
    needed = [p["cores_needed"] for p in curve]
    cpu.plot(offered, needed, "o-", color="#3a9d5d", label="cores needed")
    cores = os.cpu_count() or 1
    cpu.axhline(cores, color="#555", linewidth=1, linestyle=":", label="cores of this machine")
    cpu.set_xlabel("orders offered per second")
    cpu.set_ylabel("cores")
    per_order = cpu.twinx()
    per_order.plot(
        offered, [p["cpu_ms_per_order"] for p in curve], "s--", color="#e07a1f", label="ms/order"
    )
    per_order.set_ylabel("CPU ms per order")
    per_order.set_ylim(bottom=0)
    cpu.set_title("CPU: the four services, PostgreSQL and Kafka")
    lines = cpu.get_legend_handles_labels()
    more = per_order.get_legend_handles_labels()
    cpu.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right")
    figure.tight_layout()
    PLOTS.mkdir(parents=True, exist_ok=True)
    path = PLOTS / f"capacity-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
