"""``omnistock simulate``: a fresh fleet on the local stack, the seeded world loaded into it,
traffic until the duration is up, the Recorder's figures and the summary saved for the
report, and the fleet gone again."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import uvloop
from rich.console import Console
from rich.table import Table

from omnistock.platform.settings import Settings
from omnistock.sim.client import Answer, Api
from omnistock.sim.fleet import SERVICES, Fleet
from omnistock.sim.live import Lag, read_lag
from omnistock.sim.metrics import Recorder
from omnistock.sim.seed import seed
from omnistock.sim.traffic import SimOptions, run_simulation
from omnistock.sim.world import World, build

RUNS = Path(".omnistock") / "runs"
FRESH_S = 2.0


@dataclass(frozen=True)
class WorldSize:
    skus: int = 50_000
    brands: int = 3
    markets: int = 19


def default_out(options: SimOptions) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return RUNS / f"{stamp}-simulate-seed{options.seed}"


def save(out: Path, recorder: Recorder, summary: dict[str, Any]) -> None:
    """``metrics.json`` (second by second, for the report's plots) and ``summary.json``."""
    out.mkdir(parents=True, exist_ok=True)
    recorder.save(out / "metrics.json")
    (out / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))


async def start_fleet(fleet: Fleet, ready_within_s: float = 900) -> None:
    """``Fleet.start``, with more patience: a new storefront reads the shared compacted topics
    from their first offset, tens of millions of messages on a busy machine's broker, and
    may need longer than the two minutes the fleet waits for any service."""
    try:
        await fleet.start()
    except TimeoutError:
        await asyncio.gather(*(fleet.wait_ready(name, ready_within_s) for name in SERVICES))


async def storefront_caught_up(
    fleet: Fleet, world: World, console: Console, timeout_s: float = 300
) -> float:
    """Seconds until the storefront's read model holds the seeded world: fresh (it held all
    of both topics within the last ``FRESH_S``; the topics are shared, so other writers keep
    it a few messages behind at any moment) and a price and a stock figure for a sample of
    SKUs in the last channel loaded. A shop opens once its pages can show the catalogue."""
    started = time.monotonic()
    api = Api(fleet, Recorder(), timeout_s=10, retries=0)
    channel = world.channels[-1]
    sample = [s for s in world.skus if world.brand_of[s] == channel.brand][-100:]
    lag = Lag()
    try:
        with console.status("the storefront catches up with the seeded world") as status:
            while time.monotonic() - started < timeout_s:
                await read_lag(api, lag)
                page = await api.call(
                    "setup.listing",
                    "storefront",
                    "GET",
                    f"/v1/channels/{channel.channel_id}/skus",
                    headers=api.headers("sim-setup", ("storefront:read",)),
                    params={"skus": ",".join(sample)},
                )
                if lag.reads and lag.staleness_s < FRESH_S and _complete(page):
                    return time.monotonic() - started
                status.update(f"the storefront catches up: {lag.messages:,.0f} messages behind")
                await asyncio.sleep(0.5)
    finally:
        await api.close()
    raise TimeoutError(f"the storefront did not catch up within {timeout_s:.0f} s")


def _complete(page: Answer) -> bool:
    """Every SKU of a listing page known and priced, stock figures among them (a SKU out of
    stock everywhere may have none published yet)."""
    if not page.ok:
        return False
    entries = list(page.body["skus"].values())
    return all(entry is not None and entry["price"] is not None for entry in entries) and any(
        entry["versions"]["availability"] is not None for entry in entries
    )


async def simulate(
    settings: Settings, options: SimOptions, size: WorldSize, out: Path, console: Console
) -> dict[str, Any]:
    world = build(seed=options.seed, skus=size.skus, brands=size.brands, markets=size.markets)
    console.print(
        f"world: {len(world.skus):,} SKUs, {len(world.channels)} channels, "
        f"{len(world.locations)} locations, {world.units():,} units (seed {options.seed})"
    )
    fleet = Fleet(settings, uuid.uuid4().hex[:8], out / "fleet")
    setup: dict[str, float] = {}
    try:
        started = time.monotonic()
        with console.status("starting the fleet: every service, on schemas of this run"):
            await start_fleet(fleet)
        setup["fleet_s"] = time.monotonic() - started
        setup.update(await seed(fleet, world, console))
        setup["storefront_s"] = await storefront_caught_up(fleet, world, console)
        recorder = Recorder()
        summary = await run_simulation(fleet, world, options, recorder, console=console)
    finally:
        fleet.stop()
        await fleet.drop()
    summary["setup"] = {k: round(v, 1) for k, v in setup.items()}
    summary["out"] = str(out)
    save(out, recorder, summary)
    return summary


def report(summary: dict[str, Any], console: Console, as_json: bool) -> None:
    table = Table(title=f"omnistock simulate · seed {summary['seed']}")
    for column in ("operation", "calls", "errors", "per s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column == "operation" else "right")
    for op, figures in summary["ops"].items():
        table.add_row(
            op,
            f"{figures['count']:,}",
            f"{figures['errors']:,}",
            f"{figures['per_s']:,.1f}",
            f"{figures['p50_ms']:,.1f}",
            f"{figures['p99_ms']:,.1f}",
        )
    console.print(table)
    orders = summary["orders"]
    console.print(
        f"requests {summary['requests']:,} ({summary['requests_per_s']:,.1f}/s, browsing "
        f"{summary['browse_share']:.0%}) · orders placed {orders['placed']:,}, confirmed "
        f"{orders['confirmed']:,}, completed {orders['completed']:,}, cancelled "
        f"{orders['cancelled_by_reason']}"
    )
    console.print(f"refusals {summary['refusals']} · errors {summary['errors']}")
    verdict = "[green]0[/green]" if summary["oversold"] == 0 else f"[red]{summary['oversold']}"
    checked = summary["stock_checked"]
    console.print(
        f"oversold: {verdict} (reserved + allocated against on hand at {checked['rows']:,} "
        f"stock rows of {checked['skus']:,} SKUs) · saved in {summary['out']}"
    )
    if as_json:
        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
        sys.stdout.flush()


def main(
    settings: Settings,
    options: SimOptions,
    size: WorldSize,
    out: Path | None,
    as_json: bool,
) -> dict[str, Any]:
    """What the command does; the summary."""
    console = Console(stderr=True)
    # uvloop: the simulator's own loop spends less of the machine it shares with the fleet.
    summary = uvloop.run(simulate(settings, options, size, out or default_out(options), console))
    report(summary, console, as_json)
    return summary
