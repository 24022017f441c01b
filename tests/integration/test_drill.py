"""The fault drill on the real stack: a whole fleet under load, a service killed with SIGKILL and
the database link slowed through Toxiproxy; each recovers within its target and the invariant
checker passes. Then rows are changed behind the services' back in the run's own (throwaway)
schemas, and the same checker must see it: a checker that cannot fail proves nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from omnistock.platform.settings import Settings
from omnistock.sim.drill import Drill, DrillOptions
from omnistock.sim.fleet import SERVICES
from omnistock.sim.invariants import Verdict

pytestmark = pytest.mark.integration


async def tamper_and_check(drill: Drill) -> Verdict:
    """One stock row's on_hand moved without a movement, one order set back mid-saga with no
    step to move it on; then the checker, as after the drill."""
    inventory = await drill.fleet.connect("inventory")
    try:
        await inventory.execute(
            """UPDATE stock SET on_hand = on_hand + 1
               WHERE (sku, location_id) = (
                   SELECT sku, location_id FROM stock ORDER BY sku, location_id LIMIT 1)"""
        )
    finally:
        await inventory.close()
    orders = await drill.fleet.connect("orders")
    try:
        moved = await orders.fetchval(
            """UPDATE orders SET status = 'allocated', step = NULL, next_attempt_at = NULL
               WHERE order_id = (
                   SELECT order_id FROM orders
                   WHERE status IN ('confirmed', 'shipped', 'completed') LIMIT 1)
               RETURNING order_id"""
        )
    finally:
        await orders.close()
    assert moved is not None, "the drill left no order to tamper with"
    return await drill.checker.check(settled=True)


async def test_a_drill_recovers_within_target_and_its_checker_catches_a_planted_violation(
    settings: Settings, tmp_path: Path
) -> None:
    options = DrillOptions(
        tmp_path,
        seed=11,
        faults=("pricing", "pg-latency"),
        rate=15.0,
        load="builtin",
        # The storefront reads the shared compacted topics from their start on every start:
        # on a stack that benchmarks have filled, that alone can take minutes.
        services=tuple(s for s in SERVICES if s != "storefront"),
    )
    drill = Drill(options, settings, Console(stderr=True, width=120), epilogue=tamper_and_check)

    outcome = await drill.execute()

    for name in ("pricing", "pg-latency"):
        fault = outcome["faults"][name]
        assert fault["recovery_s"] is not None, fault
        assert fault["recovery_s"] <= fault["target_s"], fault
        assert fault["invariants_ok"], fault
    assert outcome["final"]["invariants_ok"], outcome["final"]
    assert (tmp_path / "drills.json").exists()

    planted: Verdict = drill.epilogue_result
    assert not planted.ok
    caught = {violation.invariant for violation in planted.violations}
    assert {"ledger_sums_to_on_hand", "orders_not_stuck"} <= caught, planted.as_dict()
