"""The cancellation experiment end to end: the command against the real MariaDB and the real
services, on a demand scarce enough that the old shop's stale stock copies oversell. The old
shop has to cancel orders it accepted; omnistock must cancel none for stock; and the baseline,
replayed again from the same seed, must count the same."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from omnistock.platform.settings import Settings
from omnistock.sim.experiment import (
    Kind,
    Options,
    counts,
    demand,
    legacy_outcomes,
    run_legacy,
    scarce_world,
)

pytestmark = pytest.mark.integration

# One brand in the eight markets one warehouse serves first, thin stock, stores carrying only
# the head: the copies of eight channels go stale against the same few units.
SCARCE = Options(
    seed=11,
    events=400,
    markets=8,
    brands=1,
    skus=60,
    stores_per_market=1,
    store_range=10,
    stock_scale=0.05,
)


def flags(options: Options) -> list[str]:
    return [
        *("--seed", str(options.seed), "--events", str(options.events)),
        *("--markets", str(options.markets), "--brands", str(options.brands)),
        *("--skus", str(options.skus), "--stores-per-market", str(options.stores_per_market)),
        *("--store-range", str(options.store_range), "--stock-scale", str(options.stock_scale)),
    ]


async def run_command(out: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "omnistock.cli", "experiment", "cancellations", "--json"]
    finished = await asyncio.to_thread(
        subprocess.run,
        [*command, *flags(SCARCE), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    summary: dict[str, Any] = json.loads(finished.stdout.strip().splitlines()[-1])
    return summary


async def test_the_old_shop_cancels_accepted_orders_for_stock_and_omnistock_cancels_none(
    settings: Settings, tmp_path: Path
) -> None:
    summary = await run_command(tmp_path)

    assert summary["legacy_cancelled_for_stock"] > 0, summary
    assert summary["legacy_cancel_rate"] == round(
        summary["legacy_cancelled_for_stock"] / summary["legacy_accepted"], 4
    )
    assert (summary["omnistock_cancelled_for_stock"], summary["omnistock_cancel_rate"]) == (0, 0)
    # Scarce for real: omnistock said no at checkout, and what it accepted it shipped.
    assert summary["omnistock_refused_at_checkout"] > 0, summary
    omnistock = json.loads((tmp_path / "omnistock.json").read_text())
    assert omnistock["fulfilled"] == summary["omnistock_accepted"] > 0, omnistock
    assert omnistock["cancel_reasons"] == {}
    assert summary["web_orders"] == (
        summary["omnistock_accepted"]
        + summary["omnistock_refused_at_checkout"]
        + summary["omnistock_refused_at_order"]
    )
    assert (summary["seed"], summary["events"], summary["sync_minutes"]) == (11, 400, 5.0)

    legacy = json.loads((tmp_path / "legacy.json").read_text())
    assert len(legacy["cancelled"]) == summary["legacy_cancelled_for_stock"]
    series = json.loads((tmp_path / "series.json").read_text())
    assert sum(s.get("legacy_cancelled_for_stock", 0) for s in series) == len(legacy["cancelled"])
    assert sum(s.get("omnistock_accepted", 0) for s in series) == summary["omnistock_accepted"]

    # The same seed, the same old shop: the same counts, to the order.
    world = scarce_world(SCARCE)
    events = demand(world, SCARCE.seed, SCARCE.events, SCARCE.events_per_minute)
    assert events == demand(world, SCARCE.seed, SCARCE.events, SCARCE.events_per_minute)
    assert sum(e.kind is Kind.WEB_ORDER for e in events) == summary["web_orders"]
    again = await asyncio.to_thread(
        run_legacy, settings.legacy_mysql_url, world, events, SCARCE.timing, lambda: None
    )
    replayed = counts(legacy_outcomes(events, again))
    assert (
        replayed["accepted"],
        replayed["cancelled_for_stock"],
        replayed["refused_at_checkout"],
    ) == (
        summary["legacy_accepted"],
        summary["legacy_cancelled_for_stock"],
        summary["legacy_refused_at_checkout"],
    )
