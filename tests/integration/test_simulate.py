"""The traffic simulator against every service as a process of its own, on the real
PostgreSQL and Kafka: a short seeded run on a tiny world places orders of every payment
method and sees them through to completion, with no server error and nothing oversold. And
its demand is the seed's alone: the same seed intends the same checkouts, however fast."""

from __future__ import annotations

import io
import itertools
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from rich.console import Console

from omnistock.platform.settings import Settings
from omnistock.sim import demand as streams
from omnistock.sim.fleet import Fleet
from omnistock.sim.metrics import Recorder
from omnistock.sim.seed import seed
from omnistock.sim.simulate import save, start_fleet, storefront_caught_up
from omnistock.sim.traffic import SimOptions, run_simulation
from omnistock.sim.world import World, build

pytestmark = pytest.mark.integration

SEED = 11
METHODS = ("card", "pay_later", "try_before_you_buy")


def tiny_world() -> World:
    return build(seed=SEED, skus=240, brands=2, markets=2, stores_per_market=1, store_range=60)


def test_the_same_seed_intends_the_same_demand_whatever_the_rate() -> None:
    world = tiny_world()
    flash = streams.FlashSale(start=30, customers=12)
    first = list(streams.demand(world, SEED, 200, flash))
    assert first == list(streams.demand(world, SEED, 200, flash))
    assert first != list(streams.demand(world, SEED + 1, 200, flash))
    assert [c.number for c in first if c.flash] == list(range(30, 42))
    hot = set(streams.hot_skus(world, SEED))
    assert {c.lines[0].sku for c in first if c.flash} <= hot
    assert {c.payment_method for c in first} == set(METHODS)

    def checkouts(rate: float) -> list[streams.Checkout]:
        sent = streams.intentions(world, SEED, rate, flash=flash)
        found: list[streams.Checkout] = []
        for _, intention in itertools.islice(sent, 20_000):
            if isinstance(intention, streams.Crowd):
                found.extend(intention.checkouts)
            elif isinstance(intention, streams.Checkout):
                found.append(intention)
        return found

    slow, fast = checkouts(50), checkouts(500)
    assert len(slow) > 100
    assert slow[:100] == fast[:100] == first[:100]
    views = list(itertools.islice(streams.browsing(world, SEED), 50))
    assert views == list(itertools.islice(streams.browsing(world, SEED), 50))
    changes = list(itertools.islice(streams.stock_events(world, SEED), 50))
    assert changes == list(itertools.islice(streams.stock_events(world, SEED), 50))


@pytest.fixture
async def fleet(settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[Fleet, World]]:
    world = tiny_world()
    running = Fleet(settings, uuid.uuid4().hex[:8], tmp_path / "fleet")
    quiet = Console(file=io.StringIO())
    try:
        await start_fleet(running)
        await seed(running, world, quiet)
        await storefront_caught_up(running, world, quiet, timeout_s=120)
        yield running, world
    finally:
        running.stop()
        await running.drop()


async def test_a_short_seeded_run_completes_orders_of_every_payment_method_and_oversells_nothing(
    fleet: tuple[Fleet, World], tmp_path: Path
) -> None:
    running, world = fleet
    options = SimOptions(
        seed=SEED,
        rate=20,
        duration_s=12,
        drain_s=120,  # only as long as open orders need: a loaded machine may need it all
        checkout_share=0.3,
        stock_share=0.05,
        flash_customers=16,
        flash_at=0.2,
        pace=0.2,
        live=False,
    )
    recorder = Recorder()
    summary = await run_simulation(running, world, options, recorder)
    save(tmp_path / "run", recorder, summary)

    assert summary["server_errors"] == 0, summary["error_samples"]
    assert not {k: n for k, n in summary["errors"].items() if not k.startswith("timeout")}, summary[
        "error_samples"
    ]
    orders = summary["orders"]
    # The seed's first ten orders already use every payment method.
    assert orders["placed"] >= 10, summary["checkouts"]
    for method in METHODS:
        reached = orders["by_payment"].get(method, {})
        assert reached.get("completed", 0) >= 1, (method, orders)
    # Every order placed ended, and for the run's own reasons only.
    assert orders["open_at_end"] == {}, orders
    assert set(orders["cancelled_by_reason"]) <= {"payment_declined", "cancelled_by_customer"}
    assert summary["flash_sale"]["intended"] == 16
    assert summary["stock_checked"]["rows"] > 0
    assert summary["stock_unread"] == 0
    assert summary["oversold"] == 0, summary["oversold_rows"]
    assert summary["ops"]["browse.product"]["count"] > summary["ops"]["browse.listing"]["count"] > 0
    assert (tmp_path / "run" / "metrics.json").exists()
    assert (tmp_path / "run" / "summary.json").exists()
